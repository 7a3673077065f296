import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { context, ROOT_CONTEXT, trace, TraceFlags } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import type { ContainerCreateCommand } from '@orangery/contracts';
import { AgentService } from './agent.service';
import { LABEL } from './container-spec';
import { InstanceEvents } from './instance-events';
import { silentDomainLog } from './testing/logs';
import { FakeArpProbe, FakeEngine, RecordingEvents } from './testing/fake-engine';
import { exitOf, stateOf, type HostRoutes } from './ports';

const IMAGE = 'orangery/service:1';
const ID = 'prod:web:0';
const cmd: ContainerCreateCommand = {
  instanceId: ID,
  env: 'prod',
  app: 'web',
  slot: 0,
  image: IMAGE,
  resources: { cpu: 1, memoryMb: 512 },
  network: { ip: '198.18.0.10', mac: '02:00:c6:12:00:0a', prefixLength: 24, gateway: '198.18.0.1', vlan: 0 },
};

class RecordingRoutes implements HostRoutes {
  readonly calls: string[] = [];
  async routeTo(parent: string, ip: string): Promise<void> {
    this.calls.push(`route ${parent} ${ip}`);
  }
  async unroute(parent: string, ip: string): Promise<void> {
    this.calls.push(`unroute ${parent} ${ip}`);
  }
}

/** An agent with one running instance, its engine's events followed into InstanceEvents. */
async function setup() {
  const engine = new FakeEngine({ images: [IMAGE], interfaces: ['eth1'] });
  const events = new RecordingEvents();
  const agent = new AgentService(engine, new FakeArpProbe(), events, {
    hostId: 'srv-1',
    uplink: 'eth1',
    reservedCpus: 1,
    totalCpus: 4,
    restartMaxRetries: 3,
    stopTimeoutSeconds: 10,
  });
  const routes = new RecordingRoutes();
  const watch = new InstanceEvents({ agent, events, routes, log: silentDomainLog }, { uplink: 'eth1' });
  const { containerId } = await agent.create(cmd);
  events.instances.length = 0;
  const following = new AbortController();
  const stream = engine.events(following.signal);
  const done = (async () => {
    for await (const e of stream) watch.on(e);
  })();
  /** lets the stream deliver what the engine emitted */
  const settle = () => new Promise((r) => setTimeout(r, 0));
  const stop = async () => {
    following.abort();
    await done;
  };
  return { engine, events, agent, routes, watch, containerId: containerId!, settle, stop };
}

describe('InstanceEvents', () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout'], shouldAdvanceTime: true }));
  afterEach(() => vi.useRealTimers());

  it('a docker stop from outside the agent is a stop, as a listing says, and is not restarted', async () => {
    const w = await setup();
    await w.engine.stop(w.containerId, 10); // `docker stop`: SIGTERM, exit 143
    await w.settle();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(w.events.instances.map((e) => e.what)).toEqual(['stopped']);
    expect(w.events.instances[0]!.data).toMatchObject({ exitCode: 143, reason: 'stopped outside the agent (exit 143: a stop signal)' });
    expect((await w.agent.get(ID)).state).toBe('stopped');
    expect(w.engine.stateOfInstance(ID)).toBe('exited');
    await w.stop();
  });

  it('a crash is a failure, restarted by the agent (instance.failed, then instance.running)', async () => {
    const w = await setup();
    w.engine.crash(w.containerId, 3);
    await w.settle();
    await vi.advanceTimersByTimeAsync(1_000);
    await w.settle();
    expect(w.events.instances.map((e) => [e.what, e.data['exitCode']])).toEqual([
      ['failed', 3],
      ['running', undefined],
    ]);
    expect(w.engine.stateOfInstance(ID)).toBe('running');
    await w.stop();
  });

  it("an OOM kill is a failure even though its exit code (137) is a stop signal's", async () => {
    const w = await setup();
    w.engine.crash(w.containerId, 137, true);
    await w.settle();
    expect(w.events.instances[0]).toMatchObject({ what: 'failed', data: { exitCode: 137, reason: 'killed by the kernel: out of memory' } });
    await w.stop();
  });

  it('a stop the agent was asked for is "stopped on request"; exit 0 is "exited by itself"', async () => {
    const w = await setup();
    await w.agent.stop({ instanceId: ID });
    await w.settle();
    expect(w.events.instances[0]).toMatchObject({ what: 'stopped', data: { reason: 'stopped on request', exitCode: 143 } });
    await w.agent.start(ID);
    await w.settle();
    w.engine.crash(w.containerId, 0);
    await w.settle();
    expect(w.events.instances.map((e) => [e.what, e.data['reason']])).toEqual([
      ['stopped', 'stopped on request'],
      ['running', undefined],
      ['stopped', 'exited by itself'],
    ]);
    await w.stop();
  });

  it('a removal is instance.removed; routes to the host shim follow starts and deaths', async () => {
    const w = await setup();
    await w.agent.remove(ID);
    await w.settle();
    expect(w.events.instances.map((e) => e.what)).toEqual(['stopped', 'removed']);
    w.watch.adopted([
      { id: 'c9', image: IMAGE, labels: { [LABEL.ip]: '198.18.0.9', [LABEL.vlan]: '12' }, engineState: 'running', exitCode: undefined, oomKilled: false },
    ]);
    expect(w.routes.calls).toEqual(['unroute eth1 198.18.0.10', 'route eth1.12 198.18.0.9']);
    await w.stop();
  });

  it('after stop() a failure is reported but not restarted', async () => {
    const w = await setup();
    w.watch.stop();
    w.engine.crash(w.containerId, 1);
    await w.settle();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(w.events.instances.map((e) => e.what)).toEqual(['failed']);
    expect(w.engine.stateOfInstance(ID)).toBe('exited');
    await w.stop();
  });

  it('instance.running of a container a command started is in the trace of that command', async () => {
    const manager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(manager);
    try {
      const engine = new FakeEngine({ images: [IMAGE], interfaces: ['eth1'] });
      const events = new RecordingEvents();
      const traceOf: Record<string, string | undefined> = {};
      const sink = {
        instance: (e: Parameters<RecordingEvents['instance']>[0]) => {
          traceOf[e.what] = trace.getSpanContext(context.active())?.traceId;
          events.instance(e);
        },
        host: events.host.bind(events),
      } as unknown as RecordingEvents;
      const agent = new AgentService(engine, new FakeArpProbe(), sink, {
        hostId: 'srv-1',
        uplink: 'eth1',
        reservedCpus: 1,
        totalCpus: 4,
        restartMaxRetries: 3,
        stopTimeoutSeconds: 10,
      });
      const watch = new InstanceEvents({ agent, events: sink, routes: undefined, log: silentDomainLog }, { uplink: 'eth1' });
      const following = new AbortController();
      const done = (async () => {
        for await (const e of engine.events(following.signal)) watch.on(e);
      })();
      const traceId = '0af7651916cd43dd8448eb211c80319c';
      const commandCtx = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED });
      // the engine's `start` event arrives outside the command's context, on the stream
      await context.with(commandCtx, () => agent.create(cmd));
      await new Promise((r) => setTimeout(r, 0));
      expect(events.instances.map((e) => e.what)).toContain('running');
      expect(traceOf['running']).toBe(traceId);
      following.abort();
      await done;
    } finally {
      context.disable();
    }
  });

  it('ignores events of containers without an instance id', async () => {
    const w = await setup();
    w.engine.emit({ kind: 'die', containerId: 'x', labels: {}, exitCode: 1 });
    await w.settle();
    expect(w.events.instances).toEqual([]);
    await w.stop();
  });
});

describe('exitOf: one rule for a listing and an event', () => {
  it.each([
    [0, false, 'stopped'],
    [130, false, 'stopped'],
    [137, false, 'stopped'],
    [143, false, 'stopped'],
    [1, false, 'failed'],
    [3, false, 'failed'],
    [255, false, 'failed'],
    [undefined, false, 'failed'],
    [137, true, 'failed'],
    [0, true, 'failed'],
  ] as const)('exit %s (OOM-killed: %s) is %s, in a listing and as an event', async (exitCode, oomKilled, verdict) => {
    expect(exitOf(exitCode, oomKilled)).toBe(verdict);
    expect(stateOf({ id: 'c1', image: IMAGE, labels: {}, engineState: 'exited', exitCode, oomKilled })).toBe(verdict);
    const events = new RecordingEvents();
    const agent = { expectedStops: new Set<string>(), fenced: false, restartAfterFailure: async () => false };
    const watch = new InstanceEvents({ agent, events, routes: undefined, log: silentDomainLog }, { uplink: 'eth1' });
    if (oomKilled) watch.on({ kind: 'oom', containerId: 'c1', labels: { [LABEL.instanceId]: ID } });
    watch.on({ kind: 'die', containerId: 'c1', labels: { [LABEL.instanceId]: ID }, exitCode });
    expect(events.instances.map((e) => e.what)).toEqual([verdict]);
  });
});

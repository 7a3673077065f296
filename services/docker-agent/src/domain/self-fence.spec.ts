import { describe, expect, it } from 'vitest';
import type { ContainerCreateCommand } from '@orangery/contracts';
import { AgentService } from './agent.service';
import type { IsolationTarget, LinkState } from './ports';
import { SelfFence, type FenceLog, type SelfFenceSettings } from './self-fence';
import { FakeArpProbe, FakeEngine, RecordingEvents } from './testing/fake-engine';

// ---- factories -------------------------------------------------------------------------

const IMAGE = 'orangery/service:1';
const GATEWAY = '198.18.0.1';
const FENCE_AFTER = 10_000;

const web = (slot: number): ContainerCreateCommand => ({
  instanceId: `prod:web:${slot}`,
  env: 'prod',
  app: 'web',
  slot,
  image: IMAGE,
  resources: { cpu: 1, memoryMb: 512 },
  network: { ip: `198.18.0.${10 + slot}`, mac: `02:00:c6:12:00:${(10 + slot).toString(16)}`, prefixLength: 24, gateway: GATEWAY, vlan: 0 },
});

class FakeLink implements Pick<LinkState, 'carrier'> {
  up: boolean | undefined = true;
  async carrier(): Promise<boolean | undefined> {
    return this.up;
  }
}

class RecordingLog implements FenceLog {
  readonly lines: { level: string; msg: string; fields: Record<string, unknown> }[] = [];
  info(fields: Record<string, unknown>, msg: string) {
    this.lines.push({ level: 'info', msg, fields });
  }
  warn(fields: Record<string, unknown>, msg: string) {
    this.lines.push({ level: 'warn', msg, fields });
  }
  error(fields: Record<string, unknown>, msg: string) {
    this.lines.push({ level: 'error', msg, fields });
  }
}

/** srv-1 with two running instances on VLAN 0 (network gateway 198.18.0.1), the gateway answering. */
async function world(opts: { settings?: Partial<SelfFenceSettings>; engineTimeoutMs?: number } = {}) {
  const engine = new FakeEngine({ images: [IMAGE], interfaces: ['eth1'] });
  const probe = new FakeArpProbe();
  const events = new RecordingEvents();
  const agent = new AgentService(engine, probe, events, {
    hostId: 'srv-1',
    uplink: 'eth1',
    reservedCpus: 1,
    totalCpus: 4,
    restartMaxRetries: 3,
    stopTimeoutSeconds: 10,
    engineTimeoutMs: opts.engineTimeoutMs ?? 2_000,
  });
  await agent.create(web(0));
  await agent.create(web(1));
  probe.onWire.add(GATEWAY);
  events.instances.length = 0;
  const link = new FakeLink();
  const log = new RecordingLog();
  const recovered: string[] = [];
  let mono = 5_000_000; // performance.now() is far from 0 in a long-lived process
  let wall = Date.parse('2026-12-01T12:00:00Z');
  const fence = new SelfFence(
    {
      agent,
      engine,
      probe,
      link,
      events,
      clock: { now: () => mono },
      wallTime: () => new Date(wall),
      log,
      onRecovered: (at) => recovered.push(at),
    },
    {
      uplink: 'eth1',
      fenceAfterMs: FENCE_AFTER,
      checkIntervalMs: 1_000,
      engineTimeoutMs: opts.engineTimeoutMs ?? 2_000,
      probeTimeoutMs: 1_000,
      addresses: undefined,
      stopGraceSeconds: 2,
      ...opts.settings,
    },
  );
  /** `seconds` checks, one per second of the monotonic clock; the wall clock moves by `wallStep` each. */
  const run = async (seconds: number, wallStep = 1_000) => {
    for (let i = 0; i < seconds; i++) {
      mono += 1_000;
      wall += wallStep;
      await fence.check();
      await fence.settled();
    }
  };
  const running = () => [...engine.containers.values()].filter((c) => c.engineState === 'running').length;
  return { engine, probe, events, agent, link, log, recovered, fence, run, running };
}

// ---- tests -----------------------------------------------------------------------------

describe('SelfFence: what does not fence', () => {
  it('NATS (and the whole control plane) unreachable alone never fences: the gateway answers, every instance keeps running', async () => {
    // The self-fence has no NATS input at all: events only queue meanwhile (RecordingEvents).
    const w = await world();
    await w.run((10 * FENCE_AFTER) / 1_000);
    expect(w.running()).toBe(2);
    expect(w.fence.fenced).toBe(false);
    expect(w.agent.fenced).toBe(false);
    expect(w.engine.calls.stop).toBe(0);
    expect(w.events.hosts).toEqual([]);
  });

  it('wall-clock steps of 15 s (forward and back) during a short isolation do not fence', async () => {
    const w = await world();
    await w.run(2);
    w.probe.onWire.delete(GATEWAY);
    await w.run(4, 15_000);
    await w.run(4, -15_000);
    expect(w.fence.isolated).toBe(true);
    expect(w.fence.fenced).toBe(false);
    expect(w.running()).toBe(2);
  });

  it('an isolation address that never answered does not arm: silence from the start never fences, and says so once', async () => {
    const w = await world();
    w.probe.onWire.delete(GATEWAY);
    await w.run((3 * FENCE_AFTER) / 1_000);
    expect(w.fence.isolated).toBe(false);
    expect(w.running()).toBe(2);
    const warnings = w.log.lines.filter((l) => l.msg.startsWith('no isolation address has ever answered'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.fields['addresses']).toEqual([GATEWAY]);
  });

  it('a network answering again before fenceAfter stops nothing', async () => {
    const w = await world();
    await w.run(1);
    w.probe.onWire.delete(GATEWAY);
    await w.run(FENCE_AFTER / 1_000 - 2);
    w.probe.onWire.add(GATEWAY);
    await w.run(1);
    w.probe.onWire.delete(GATEWAY);
    await w.run(FENCE_AFTER / 1_000 - 2);
    expect(w.running()).toBe(2);
    expect(w.fence.fenced).toBe(false);
  });
});

describe('SelfFence: fencing', () => {
  it('the gateway silent for fenceAfter: every instance stopped, host.isolated and instance.stopped, nothing starts while fenced', async () => {
    const w = await world();
    await w.run(1); // armed
    w.probe.onWire.delete(GATEWAY);
    // the count starts at the first silent sample: 10 samples span 9 s
    await w.run(FENCE_AFTER / 1_000);
    expect(w.fence.isolated).toBe(true);
    expect(w.running()).toBe(2);
    await w.run(1);
    expect(w.fence.fenced).toBe(true);
    expect(w.running()).toBe(0);
    expect(w.events.hosts).toEqual([
      {
        what: 'isolated',
        data: {
          at: expect.any(String),
          isolationAddresses: [GATEWAY],
          stopped: expect.arrayContaining(['prod:web:0', 'prod:web:1']),
          reason: 'no isolation address answered ARP',
        },
      },
    ]);
    expect(
      w.events.instances
        .filter((e) => e.what === 'stopped')
        .map((e) => e.instanceId)
        .sort(),
    ).toEqual(['prod:web:0', 'prod:web:1']);
    await expect(w.agent.start('prod:web:0')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await w.run(20);
    expect(w.events.hosts).toHaveLength(1); // one fence per isolation
  });

  it('the fence is measured on the monotonic clock: the wall clock standing still does not delay it', async () => {
    const w = await world();
    await w.run(1);
    w.probe.onWire.delete(GATEWAY);
    await w.run(FENCE_AFTER / 1_000 + 1, 0);
    expect(w.fence.fenced).toBe(true);
  });

  it('no carrier on the uplink fences after fenceAfter, even with no isolation address ever answering', async () => {
    const w = await world();
    w.probe.onWire.delete(GATEWAY);
    w.link.up = false;
    await w.run(FENCE_AFTER / 1_000 + 1);
    expect(w.running()).toBe(0);
    expect(w.events.hosts[0]).toMatchObject({ what: 'isolated', data: { reason: 'no carrier on eth1' } });
  });

  it('the network back: fence cleared, re-registered with fencedAt, the instances stay stopped', async () => {
    const w = await world();
    await w.run(1);
    w.probe.onWire.delete(GATEWAY);
    await w.run(FENCE_AFTER / 1_000 + 5);
    const starts = w.engine.calls.start;
    w.probe.onWire.add(GATEWAY);
    await w.run(5);
    expect(w.fence.fenced).toBe(false);
    expect(w.agent.fenced).toBe(false);
    expect(w.recovered).toEqual([w.events.hosts[0]!.data['at']]);
    expect(w.running()).toBe(0);
    expect(w.engine.calls.start).toBe(starts);
    // the control plane may start them again now
    expect((await w.agent.start('prod:web:0')).state).toBe('running');
  });

  it('configured isolation addresses replace the gateways', async () => {
    const target: IsolationTarget = { ip: '198.18.0.254', iface: 'eth1' };
    const w = await world({ settings: { addresses: [target] } });
    w.probe.onWire.add(target.ip);
    await w.run(1);
    const before = w.probe.calls.length;
    w.probe.onWire.delete(target.ip); // the gateway still answers: it is not an isolation address now
    await w.run(FENCE_AFTER / 1_000 + 1);
    expect(w.fence.fenced).toBe(true);
    expect(w.probe.calls.slice(before).every((c) => c.ip === target.ip)).toBe(true);
  });
});

describe('SelfFence: a hung engine', () => {
  it('does not hold the checks: the last known gateways are probed and the fence still comes', async () => {
    const w = await world({ engineTimeoutMs: 50 });
    await w.run(1);
    w.engine.listNetworks = () => new Promise(() => undefined); // dockerd SIGSTOPped
    w.probe.onWire.delete(GATEWAY);
    const t0 = performance.now();
    await w.run(6); // beyond the 5 s between reads of the gateways
    expect(performance.now() - t0).toBeLessThan(2_000);
    expect(w.fence.isolated).toBe(true);
  });

  it('stops that hang are reported still running and tried again while fenced', async () => {
    const w = await world({ engineTimeoutMs: 50, settings: { stopGraceSeconds: 0 } });
    await w.run(1);
    let hang = true;
    w.engine.hooks.beforeStop = () => (hang ? new Promise(() => undefined) : undefined);
    w.probe.onWire.delete(GATEWAY);
    await w.run(FENCE_AFTER / 1_000 + 1);
    expect(w.fence.fenced).toBe(true);
    expect(w.events.hosts[0]).toMatchObject({ what: 'isolated', data: { stopped: [], stillRunning: expect.arrayContaining(['prod:web:0', 'prod:web:1']) } });
    hang = false;
    await w.run(6);
    expect(w.running()).toBe(0);
    expect(w.events.instances.filter((e) => e.what === 'stopped')).toHaveLength(2);
  });
});

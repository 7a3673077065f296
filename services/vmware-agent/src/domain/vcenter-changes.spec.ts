import { describe, expect, it } from 'vitest';
import { context, ROOT_CONTEXT, trace, TraceFlags } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import type { VmCreateCommand } from '@orangery/contracts';
import { EsxiHosts } from './esxi-hosts';
import { HeartbeatSource } from './heartbeats';
import type { DomainLog } from './ports';
import { VcenterChanges } from './vcenter-changes';
import { LABEL } from './vm-spec';
import { esxiHost, FakeVcenter, RecordingEvents } from './testing/fake-vcenter';
import { VmwareAgentService } from './vmware-agent.service';

const H1 = 'esx01-lab-local';
const H2 = 'esx02-lab-local';

class RecordingLog implements DomainLog {
  readonly lines: string[] = [];
  info(_f: Record<string, unknown>, msg: string): void {
    this.lines.push(`info ${msg}`);
  }
  warn(_f: Record<string, unknown>, msg: string): void {
    this.lines.push(`warn ${msg}`);
  }
}

const create = (slot: number, ip: string): VmCreateCommand => ({
  instanceId: `prod:web:${slot}`,
  env: 'prod',
  app: 'web',
  slot,
  template: 'centos7-jdk8',
  resources: { cpu: 2, memoryMb: 1024 },
  network: { ip, mac: '02:4f:c6:12:09:01', prefixLength: 24, gateway: '198.18.9.254', vlan: 100 },
});

/** Two ESXi hosts in the inventory, the agent's domain wired as the module does, a clock the test moves. */
function world() {
  const vc = new FakeVcenter([esxiHost('esx01.lab.local'), esxiHost('esx02.lab.local')]);
  const events = new RecordingEvents();
  const log = new RecordingLog();
  const agent = new VmwareAgentService(vc, events, {
    extraConfig: {},
    guestIpTimeoutMs: 10,
    stopTimeoutSeconds: 0,
    tasksPerHost: 2,
    queuePerHost: 2,
    pollMs: 1,
  });
  let now = 1_000;
  const heartbeats = new HeartbeatSource(vc, agent, { reservedCpus: 1, reservedMemoryMb: 1024, readTimeoutMs: 50 });
  const hosts = new EsxiHosts(
    { agent, heartbeats, events, engine: 'vcsim 0.24', vcenter: 'vc.lab', now: () => now, log },
    { reservedCpus: 1, reservedMemoryMb: 1024 },
  );
  const changes = new VcenterChanges({ agent, hosts, events, now: () => now, log });
  return { vc, events, log, agent, hosts, changes, tick: (ms: number) => (now += ms) };
}

type World = ReturnType<typeof world>;

/** One VM of ours running on H1, adopted; the events so far forgotten. */
async function withOneVm(w: World): Promise<string> {
  w.hosts.inventory(await w.vc.hosts());
  const { vmId } = (await w.agent.create(H1, create(0, '198.18.9.1'))) as unknown as { vmId: string };
  await w.changes.adopt();
  w.events.instances.length = 0;
  w.events.hosts.length = 0;
  return vmId;
}

const seen = (w: World) => w.events.instances.map((e) => [e.what, e.instanceId, e.data['reason']]);

describe('VcenterChanges', () => {
  it('a power-off the agent asked for is "stopped on request", one done in vCenter says so; repeats say nothing', async () => {
    const w = world();
    const ref = await withOneVm(w);
    w.agent.expectedStops.add(ref);
    w.changes.vm({ ref, kind: 'modify', powerState: 'poweredOff' });
    w.changes.vm({ ref, kind: 'modify', powerState: 'poweredOff' });
    w.changes.vm({ ref, kind: 'modify', powerState: 'poweredOn' });
    w.changes.vm({ ref, kind: 'modify', guestIp: '198.18.9.1' });
    w.changes.vm({ ref, kind: 'modify', powerState: 'poweredOff' });
    expect(seen(w)).toEqual([
      ['stopped', 'prod:web:0', 'stopped on request'],
      ['running', 'prod:web:0', undefined],
      ['stopped', 'prod:web:0', 'poweredOff in vCenter'],
    ]);
    expect(w.agent.expectedStops.size).toBe(0);
  });

  it('instance.running of a VM a command powered on is in the trace of that command, though the change comes later', async () => {
    const manager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(manager);
    try {
      const w = world();
      const ref = await withOneVm(w);
      await w.agent.stop(H1, { instanceId: 'prod:web:0' });
      w.changes.vm({ ref, kind: 'modify', powerState: 'poweredOff' });
      const traceId = '0af7651916cd43dd8448eb211c80319c';
      const commandCtx = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED });
      await context.with(commandCtx, () => w.agent.start(H1, 'prod:web:0'));
      const traceOf: Record<string, string | undefined> = {};
      const record = w.events.instance.bind(w.events);
      w.events.instance = (e) => {
        traceOf[e.what] = trace.getSpanContext(context.active())?.traceId;
        record(e);
      };
      // vCenter's change feed, outside the command's context
      w.changes.vm({ ref, kind: 'modify', powerState: 'poweredOn' });
      expect(seen(w).map((x) => x[0])).toContain('running');
      expect(traceOf['running']).toBe(traceId);
    } finally {
      context.disable();
    }
  });

  it('a resync: a VM of ours gone while nobody watched is removed, one that came is reported, a foreign one is not', async () => {
    const w = world();
    const ref = await withOneVm(w);
    const mine = (await w.vc.vm(ref))!;
    w.changes.resync(
      [
        { ref: 'vm-900', kind: 'enter', name: 'someone-else', powerState: 'poweredOn', extraConfig: {} },
        { ref: 'vm-901', kind: 'enter', name: 'prod-web-1', powerState: 'poweredOn', extraConfig: { ...mine.extraConfig, [LABEL.instanceId]: 'prod:web:1' } },
      ],
      [],
    );
    expect(seen(w)).toEqual([
      ['running', 'prod:web:1', undefined],
      ['removed', 'prod:web:0', undefined],
    ]);
    expect(w.agent.index.ready).toBe(true);
    expect(w.agent.index.list().map((v) => v.ref)).toEqual(['vm-900', 'vm-901']);
  });

  it('a broken stream makes the index untrusted until the next resync; an outage is logged once, a new one after 10 s without errors', async () => {
    const w = world();
    await withOneVm(w);
    w.changes.resync([], []);
    for (let i = 0; i < 12; i++) {
      w.changes.error(new Error('session lost'));
      w.tick(1_000);
    }
    expect(w.agent.index.ready).toBe(false);
    w.tick(10_000);
    w.changes.error(new Error('session lost'));
    expect(w.log.lines.filter((l) => l.startsWith('warn vCenter change tracking'))).toHaveLength(2);
  });
});

describe('EsxiHosts', () => {
  it('registers each new host once, follows connection states, forgets a host gone from the inventory', async () => {
    const w = world();
    expect(w.hosts.inventory(await w.vc.hosts())).toEqual({ added: [H1, H2], removed: [] });
    expect(w.hosts.inventory(await w.vc.hosts())).toEqual({ added: [], removed: [] });
    const h1 = w.vc.hostList[0]!;
    w.changes.host(h1.ref, 'notResponding');
    w.changes.host(h1.ref, 'notResponding');
    w.changes.resync([], [{ ref: h1.ref, connectionState: 'connected' }]);
    expect(w.hosts.inventory([w.vc.hostList[0]!])).toEqual({ added: [], removed: [H2] });
    w.changes.host(w.vc.hostList[1]!.ref, 'disconnected'); // not served any more: nothing
    expect(w.events.hosts.map((h) => [h.hostId, h.what, h.data['reregistered'] ?? h.data['connectionState']])).toEqual([
      [H1, 'registered', 'connected'],
      [H2, 'registered', 'connected'],
      [H1, 'disconnected', 'notResponding'],
      [H1, 'registered', true],
    ]);
    expect(w.hosts.ids).toEqual([H1]);
  });

  it('no heartbeats while vCenter does not answer, one warning for the outage, and how long it lasted when it answers', async () => {
    const w = world();
    w.hosts.inventory(await w.vc.hosts());
    expect((await w.hosts.heartbeats()).map((hb) => [hb.hostId, hb.seq])).toEqual([
      [H1, 0],
      [H2, 0],
    ]);
    w.vc.freeze();
    expect(await w.hosts.heartbeats()).toEqual([]);
    w.tick(4_000);
    expect(await w.hosts.heartbeats()).toEqual([]);
    w.vc.thaw();
    expect((await w.hosts.heartbeats()).map((hb) => hb.seq)).toEqual([1, 1]);
    expect(w.log.lines).toEqual([
      'warn vCenter did not answer the heartbeat read in time; heartbeats stop until it does (the VMs are not touched)',
      'info vCenter answers again; heartbeats resume',
    ]);
  });

  it("a heartbeat round carries vCenter's word on a host: a disconnect is an event, maintenance is kept", async () => {
    const w = world();
    w.hosts.inventory(await w.vc.hosts());
    w.vc.hostList[1]!.connectionState = 'disconnected';
    w.vc.hostList[1]!.inMaintenanceMode = true;
    const round = await w.hosts.heartbeats();
    expect(round.map((hb) => [hb.hostId, hb.connectionState, hb.maintenance])).toEqual([
      [H1, 'connected', false],
      [H2, 'disconnected', true],
    ]);
    expect(w.events.hosts.slice(2).map((h) => [h.hostId, h.what])).toEqual([[H2, 'disconnected']]);
  });
});

describe('EsxiHosts.factsOf (orangery.agent.<hostId>.host.get, issue 13)', () => {
  it("answers a served host's facts, the same as its host.registered, and NOT_FOUND for a host it does not serve", async () => {
    const w = world();
    w.hosts.inventory(await w.vc.hosts());
    const registered = w.events.hosts.find((e) => e.hostId === H2 && e.what === 'registered');
    const facts = w.hosts.factsOf(H2);
    expect(facts).toMatchObject({ hostId: H2, backend: 'vmware' });
    expect(registered?.data).toMatchObject(facts);
    expect(() => w.hosts.factsOf('esx99-lab-local')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
  });
});

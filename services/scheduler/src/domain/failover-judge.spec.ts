import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Heartbeat } from '@orangery/contracts';
import { SchedulerCore, type CoreSettings } from './scheduler-core';
import { heartbeat, scaleMessage } from './testing/factories';
import { FakeAgents, FakeIpam, InMemorySchedulerStore, MemoryLog } from './testing/fakes';

/**
 * Where failover is decided: the core with its FailoverJudge against in-memory ports. The
 * core measures silence on a monotonic clock of its own (`mono`), advanced with the fake
 * timers; the wall clock (Date) can be stepped apart from it.
 */

const LOST_AFTER = 3_000;
const DEADLINE = 6_000; // fenceAfter + margin
const SETTINGS: CoreSettings = {
  source: 'orangery/scheduler/test',
  policy: 'binpack',
  startAttempts: 3,
  failedGraceMs: 300,
  fenceMarginMs: DEADLINE,
  leftoverRetentionMs: 3_600_000,
  lostAfterMs: LOST_AFTER,
  concurrency: 4,
  envBackends: () => undefined,
};

let core: SchedulerCore;
let store: InMemorySchedulerStore;
let agents: FakeAgents;
let mono = 0;
let monoBase = 0;
const live = new Map<string, Partial<Heartbeat>>();

async function world(hosts: Record<string, Partial<Heartbeat>>): Promise<void> {
  store = new InMemorySchedulerStore();
  agents = new FakeAgents();
  monoBase = performance.now();
  core = new SchedulerCore(
    { store, ipam: new FakeIpam().addPool('prod-pool', 100), agents, clock: { now: () => mono }, wallClock: { now: () => Date.now() }, log: new MemoryLog() },
    SETTINGS,
  );
  for (const [id, over] of Object.entries(hosts)) {
    live.set(id, over);
    if (over.backend) agents.backends.set(id, over.backend);
    core.heartbeat(heartbeat(id, over));
  }
  await core.start();
}

/** Time passes in 500 ms steps: live hosts beat, the runtime's host sweep runs. */
async function run(ms: number): Promise<void> {
  for (let t = 0; t < ms; t += 500) {
    mono += 500;
    for (const [id, over] of live) core.heartbeat(heartbeat(id, over));
    core.sweepHosts();
    await vi.advanceTimersByTimeAsync(500);
  }
}

const slot = (n: number) => core.slotList().find((s) => s.id === `prod:web:${n}`)!;
const stateOf = (id: string) => core.hosts.stateOf(core.hosts.get(id)!);
const eventsOf = (area: string, what: string) => store.eventsOf(area, what).map((e) => e.data as Record<string, unknown>);

async function oneOn(host: string, data: Record<string, unknown> = {}): Promise<{ ip: string }> {
  await core.handleScale(scaleMessage(1, { replicas: 1, ...data }));
  await run(2_000);
  const s = slot(0);
  expect(s).toMatchObject({ state: 'running', hostId: host });
  return { ip: s.ip! };
}

beforeEach(() => {
  vi.useFakeTimers();
  mono = 0;
  live.clear();
});

afterEach(async () => {
  const stopped = core.stop();
  await vi.advanceTimersByTimeAsync(10_000);
  await stopped;
  vi.useRealTimers();
  void monoBase;
});

describe('failover: two channels must both say gone', () => {
  it('a silent host whose instance still answers ARP stays unknown: nothing is replaced, however long', async () => {
    await world({ a: {}, b: {} });
    const { ip } = await oneOn('a');
    live.delete('a'); // agent frozen or cut from NATS; its container keeps serving
    await run(LOST_AFTER + 1_000);
    expect(stateOf('a')).toBe('unknown');
    expect(eventsOf('host', 'unknown')).toEqual([expect.objectContaining({ hostId: 'a' })]);
    await run(60_000);
    expect(stateOf('a')).toBe('unknown');
    expect(slot(0)).toMatchObject({ hostId: 'a', ip, state: 'running', phase: null });
    expect(agents.callsOf('create', 'b')).toEqual([]);
    expect(agents.callsOf('probe', 'b').length).toBeGreaterThan(0);
    expect(eventsOf('host', 'lost')).toEqual([]);
  });

  it('a silent host whose instances are off the wire is lost after fenceAfter + margin, and replaced with the same IP', async () => {
    await world({ a: {}, b: {} });
    const { ip } = await oneOn('a');
    live.delete('a');
    agents.offWire.add('a'); // dead: agent, engine and uplink gone
    await run(DEADLINE - 500);
    expect(agents.callsOf('probe')).toEqual([]);
    expect(agents.callsOf('create', 'b')).toEqual([]);
    await run(3_000);
    expect(stateOf('a')).toBe('lost');
    expect(eventsOf('host', 'lost')).toEqual([expect.objectContaining({ hostId: 'a', offWire: [ip], probedBy: 'b' })]);
    expect(slot(0)).toMatchObject({ hostId: 'b', ip, state: 'running', phase: null });
    // it comes back: heard again, its copy is stopped and kept, never started
    live.set('a', {});
    agents.offWire.delete('a');
    await run(1_000);
    expect(eventsOf('host', 'recovered')).toEqual([expect.objectContaining({ hostId: 'a' })]);
    core.agentList('a', agents.instancesOn('a'));
    await run(1_000);
    expect(agents.instancesOn('a')).toEqual([expect.objectContaining({ instanceId: 'prod:web:0', state: 'stopped' })]);
    expect(eventsOf('instance', 'orphaned')).toEqual([expect.objectContaining({ instanceId: 'prod:web:0', host: 'a' })]);
    expect(agents.callsOf('start', 'a')).toEqual([]);
  });

  it('with no live agent on the VLAN to probe, a silent host stays unknown (no evidence, no move)', async () => {
    await world({ a: {}, v: { backend: 'vmware', vlans: [100] } });
    await oneOn('a');
    live.delete('a');
    agents.offWire.add('a');
    await run(DEADLINE + 5_000);
    expect(stateOf('a')).toBe('unknown');
    expect(slot(0).hostId).toBe('a');
    expect(eventsOf('host', 'unknown')[0]).toMatchObject({ hostId: 'a' });
  });

  it('more than half of a backend silent at once pauses its failover, and failover resumes when they are back', async () => {
    await world({ a: {}, b: {}, c: {} });
    await oneOn('a');
    live.delete('a');
    live.delete('b');
    agents.offWire.add('a');
    await run(DEADLINE + 5_000);
    expect(eventsOf('fleet', 'failover_paused')).toEqual([expect.objectContaining({ backend: 'docker', hosts: 3, silent: 2 })]);
    expect(stateOf('a')).toBe('unknown');
    expect(slot(0).hostId).toBe('a');
    live.set('b', {});
    await run(4_000);
    expect(eventsOf('fleet', 'failover_resumed')).toHaveLength(1);
    expect(stateOf('a')).toBe('lost');
    expect(slot(0).hostId).not.toBe('a');
  });

  it('a silent vmware-agent makes its ESXi hosts unknown, never lost', async () => {
    await world({ esx1: { backend: 'vmware', vlans: [100] }, esx2: { backend: 'vmware', vlans: [100] }, d: {} });
    await core.handleScale(scaleMessage(1, { replicas: 1, backend: 'vmware', template: 'tpl', image: undefined }));
    await run(2_000);
    const host = slot(0).hostId!;
    live.delete(host);
    agents.offWire.add(host);
    await run(DEADLINE + 10_000);
    expect(stateOf(host)).toBe('unknown');
    expect(slot(0).hostId).toBe(host);
    expect(eventsOf('host', 'unknown')[0]!['reason']).toMatch(/vmware-agent is silent/);
  });

  it('an ESXi host vCenter reports notResponding, in a vSphere HA cluster, stays unknown (HA restarts its VMs)', async () => {
    await world({ esx1: { backend: 'vmware', vlans: [100], haProtected: true }, esx2: { backend: 'vmware', vlans: [100], haProtected: true }, d: {} });
    await core.handleScale(scaleMessage(1, { replicas: 1, backend: 'vmware', template: 'tpl', image: undefined }));
    await run(2_000);
    const host = slot(0).hostId!;
    live.set(host, { backend: 'vmware', vlans: [100], haProtected: true, connectionState: 'notResponding' });
    agents.offWire.add(host);
    await run(DEADLINE + 10_000);
    expect(stateOf(host)).toBe('unknown');
    expect(slot(0).hostId).toBe(host);
  });

  it('an agent that fenced itself (isolated) and says so has its instances moved once it confirms them stopped', async () => {
    await world({ a: {}, b: {} });
    const { ip } = await oneOn('a');
    agents.setState('a', 'prod:web:0', 'stopped');
    live.set('a', { fenced: true, isolated: true });
    await run(3_000);
    expect(agents.callsOf('stop', 'a').length).toBeGreaterThan(0);
    expect(slot(0)).toMatchObject({ hostId: 'b', ip, state: 'running' });
    expect(agents.instancesOn('a')).toEqual([expect.objectContaining({ state: 'stopped' })]);
  });

  it('a wall-clock step of the scheduler host neither fails a host over nor holds one back', async () => {
    await world({ a: {}, b: {} });
    await oneOn('a');
    vi.setSystemTime(Date.now() + 15_000);
    await run(1_000);
    vi.setSystemTime(Date.now() - 30_000);
    await run(1_000);
    expect(stateOf('a')).toBe('ready');
    expect(eventsOf('host', 'unknown')).toEqual([]);
    expect(slot(0).hostId).toBe('a');
  });

  it('a VM start is preceded by a wire probe from a docker-agent on its VLAN, and refused when the IP answers', async () => {
    await world({ esx1: { backend: 'vmware', vlans: [100] }, d: {} });
    // something already holds the address the slot will get
    agents.plant('d', { instanceId: 'prod:intruder:0', env: 'prod', app: 'intruder', slot: 0, ip: '10.0.0.10', state: 'running' });
    await core.handleScale(scaleMessage(1, { replicas: 1, backend: 'vmware', template: 'tpl', image: undefined }));
    await run(3_000);
    expect(agents.callsOf('probe', 'd').length).toBeGreaterThan(0);
    expect(agents.callsOf('create', 'esx1')).toEqual([]);
    // the only VM host refused: the request fails with the slot's reason, nothing was started
    const rejected = store.eventsOf<{ reason: { code: string; details: { slots: Record<string, { code: string }> } } }>('scale', 'rejected');
    expect(rejected).toHaveLength(1);
    expect(rejected[0]!.data.reason.code).toBe('START_FAILED');
    expect(rejected[0]!.data.reason.details.slots['0']).toMatchObject({ code: 'IP_IN_USE_ON_WIRE' });
  });
});

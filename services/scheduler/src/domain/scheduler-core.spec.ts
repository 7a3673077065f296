import { describe, it, expect, vi, beforeEach, afterEach, type Mock } from 'vitest';
import type { Amounts, InstancePlacedData, ScaleCompletedData, ScaleRejectedData, ScaleRequestData } from '@orangery/contracts';
import { NotLeaderError } from './ports';
import { RetryLater, SchedulerCore, type CoreSettings } from './scheduler-core';
import { heartbeat, scaleMessage, TRACEPARENT } from './testing/factories';
import { FakeAgents, FakeIpam, InMemorySchedulerStore, MemoryLog, permanentError, timeoutError, transientError } from './testing/fakes';

/**
 * The core against in-memory ports, on vitest's fake timers: backoffs and grace periods
 * pass in `settle`, so every test runs in milliseconds and never depends on the wall clock.
 * The clock the core reads is the faked Date, so timers and ages agree.
 */

const SETTINGS: CoreSettings = {
  source: 'orangery/scheduler/test',
  policy: 'binpack',
  startAttempts: 2,
  failedGraceMs: 300,
  fenceMarginMs: 12_000,
  leftoverRetentionMs: 24 * 3_600_000,
  // hosts beat once in these tests: time passing must not make them lost
  lostAfterMs: 3_600_000,
  concurrency: 4,
  envBackends: () => undefined,
};

interface World {
  core: SchedulerCore;
  store: InMemorySchedulerStore;
  ipam: FakeIpam;
  agents: FakeAgents;
  log: MemoryLog;
  deposed: Mock<() => void>;
}

let w: World;
const cores: SchedulerCore[] = [];

/** A started core with ready 8-CPU docker hosts and the pool prod-pool (VLAN 100). */
async function world(hosts: string[] = ['a', 'b'], settings: Partial<CoreSettings> = {}, ports: Partial<World> = {}): Promise<World> {
  const store = ports.store ?? new InMemorySchedulerStore();
  const ipam = ports.ipam ?? new FakeIpam().addPool('prod-pool', 100);
  const agents = ports.agents ?? new FakeAgents();
  const log = new MemoryLog();
  const deposed = vi.fn<() => void>();
  const core = new SchedulerCore({ store, ipam, agents, clock: { now: () => Date.now() }, log }, { ...SETTINGS, ...settings }, deposed);
  cores.push(core);
  for (const h of hosts) core.heartbeat(heartbeat(h));
  await core.start();
  return (w = { core, store, ipam, agents, log, deposed });
}

/** Lets backoffs, grace periods and completion checks run. */
const settle = (ms = 5_000) => vi.advanceTimersByTimeAsync(ms);

const scale = (seq: number, data: Partial<ScaleRequestData> = {}, opts: Parameters<typeof scaleMessage>[2] = {}) =>
  w.core.handleScale(scaleMessage(seq, data, opts));

const slotOf = (n: number, app = 'web') => w.core.slotList().find((s) => s.id === `prod:${app}:${n}`);
const completions = () => w.store.eventsOf<ScaleCompletedData>('scale', 'completed');
const rejections = () => w.store.eventsOf<ScaleRejectedData>('scale', 'rejected');
const placements = () => w.store.eventsOf<InstancePlacedData>('instance', 'placed');
const rejectionOf = (requestId: string) => rejections().filter((e) => e.data.requestId === requestId);
const completionOf = (requestId: string) => completions().filter((e) => e.data.requestId === requestId);
const free = (host: string): Amounts => w.core.hosts.inventory().free(host);
const FULL: Amounts = { cpu: 8, memoryMb: 16_384, diskMb: 102_400 };

/** Every slot of prod/web, by slot number: where it runs and with which IP. */
function layout(app = 'web'): Record<number, { host: string | null; ip: string | null; state: string }> {
  const out: Record<number, { host: string | null; ip: string | null; state: string }> = {};
  for (const s of w.core.slotList().filter((x) => x.app === app)) out[s.slot] = { host: s.hostId, ip: s.ip, state: s.state };
  return out;
}

/** Instances on the agents, each id -> the hosts it exists on. */
function onAgents(hosts: string[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const h of hosts) for (const i of w.agents.instancesOn(h)) (out[i.instanceId] ??= []).push(h);
  return out;
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(async () => {
  for (const c of cores.splice(0)) {
    const stopped = c.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    await stopped;
  }
  vi.useRealTimers();
});

// ---- accepting and converging ------------------------------------------------------------

describe('a scale request', () => {
  it('is accepted, placed slot by slot and completed once every slot runs', async () => {
    await world(['a', 'b']);
    await scale(1, { replicas: 2 }, { traceparent: TRACEPARENT });
    // accepted: the desired state is journaled with one placement per slot
    expect(w.store.requests.get('req-1')?.outcome).toBe('accepted');
    expect(
      placements()
        .map((e) => e.data.slot)
        .sort(),
    ).toEqual([0, 1]);
    expect(completions()).toHaveLength(0);

    await settle();
    const done = completions();
    expect(done).toHaveLength(1);
    expect(done[0]!.subject).toBe('prod:web');
    expect(done[0]!.traceparent).toBe(TRACEPARENT);
    expect(done[0]!.data).toMatchObject({ requestId: 'req-1', env: 'prod', app: 'web', replicas: 2 });
    const instances = done[0]!.data.instances;
    expect(instances.map((i) => i.slot)).toEqual([0, 1]);
    expect(new Set(instances.map((i) => i.ip)).size).toBe(2);
    expect(new Set(instances.map((i) => i.host)).size).toBe(2);
    for (const i of instances) {
      expect(i.backend).toBe('docker');
      // the IP is bound to the instance where it runs, and the agent runs it with that IP
      expect(w.ipam.allocations.get(i.ip)).toMatchObject({ state: 'bound', instanceId: i.id, host: i.host });
      expect(w.agents.instancesOn(i.host).find((x) => x.instanceId === i.id)).toMatchObject({ state: 'running', ip: i.ip });
    }
    expect(w.core.slotList().every((s) => s.state === 'running' && s.phase === null)).toBe(true);
    expect(w.core.app('prod', 'web')).toMatchObject({ outcome: 'completed', stable: { replicas: 2 } });
    expect(w.store.requests.get('req-1')?.outcome).toBe('completed');
    // the journal matches memory
    expect([...w.store.slots.values()]).toEqual(expect.arrayContaining(w.core.slotList()));

    await settle(60_000);
    expect(completions()).toHaveLength(1);
    expect(rejections()).toHaveLength(0);
    expect(w.agents.callsOf('create')).toHaveLength(2);
  });

  it('of zero replicas for a new app completes at once with no instance', async () => {
    await world();
    await scale(1, { replicas: 0 });
    await settle(100);
    expect(completionOf('req-1')[0]?.data).toMatchObject({ replicas: 0, instances: [] });
    expect(w.agents.calls).toHaveLength(0);
  });

  it('passes image, resources, network and environment to the agent', async () => {
    await world(['a']);
    await scale(1, { replicas: 1, image: 'web:2.1', resources: { cpu: 0.5, memoryMb: 512, heapMb: 256 }, environment: { MODE: 'x' } });
    await settle();
    const inst = w.agents.instancesOn('a')[0]!;
    expect(inst).toMatchObject({ instanceId: 'prod:web:0', image: 'web:2.1', resources: { cpu: 0.5, memoryMb: 512, heapMb: 256 } });
    expect(w.ipam.ofOwner('prod:web:0')).toMatchObject({ ip: inst.ip, vlan: 100, mac: inst.mac });
  });

  it('spreads the slots of an app over hosts when asked', async () => {
    await world(['a', 'b', 'c']);
    await scale(1, { replicas: 3, spread: 'host' });
    await settle();
    expect(new Set(Object.values(layout()).map((s) => s.host))).toEqual(new Set(['a', 'b', 'c']));
  });

  it('puts two per host when there are more slots than hosts', async () => {
    await world(['a', 'b']);
    await scale(1, { replicas: 4 });
    await settle();
    const perHost = Object.values(layout()).map((s) => s.host);
    expect(perHost.filter((h) => h === 'a')).toHaveLength(2);
    expect(perHost.filter((h) => h === 'b')).toHaveLength(2);
  });

  it('packs the slots on one host without spread (binpack)', async () => {
    await world(['a', 'b', 'c']);
    await scale(1, { replicas: 3, spread: 'none' });
    await settle();
    expect(new Set(Object.values(layout()).map((s) => s.host)).size).toBe(1);
  });

  it('reserves what it placed: the hosts show the slots as allocated', async () => {
    await world(['a']);
    await scale(1, { replicas: 3, spread: 'none', resources: { cpu: 2, memoryMb: 1024, diskMb: 10 } });
    await settle();
    expect(free('a')).toEqual({ cpu: 2, memoryMb: 16_384 - 3072, diskMb: 102_400 - 30 });
  });
});

describe('scaling up and down', () => {
  it('keeps the low slots and their IPs, releases the high ones, and gives them back on the way up', async () => {
    await world(['a', 'b', 'c']);
    await scale(1, { replicas: 3 });
    await settle();
    const first = layout();
    expect(Object.keys(first)).toHaveLength(3);

    await scale(2, { replicas: 1 });
    await settle();
    expect(completionOf('req-2')[0]?.data.instances).toEqual([expect.objectContaining({ slot: 0, ip: first[0]!.ip, host: first[0]!.host })]);
    expect(layout()).toEqual({ 0: first[0] });
    for (const n of [1, 2]) {
      expect(w.ipam.ofOwner(`prod:web:${n}`)?.state).toBe('released');
      expect(w.agents.whereIs(`prod:web:${n}`)).toEqual([]);
      expect(w.store.slots.has(`prod:web:${n}`)).toBe(false);
    }
    expect(w.ipam.ofOwner('prod:web:0')?.state).toBe('bound');
    // the removed slots' resources are free again
    for (const n of [1, 2]) expect(free(first[n]!.host!)).toEqual(FULL);

    await scale(3, { replicas: 3 });
    await settle();
    const again = layout();
    // sticky: every slot has the IP it had before
    expect([0, 1, 2].map((n) => again[n]?.ip)).toEqual([0, 1, 2].map((n) => first[n]!.ip));
    expect([0, 1, 2].map((n) => again[n]?.state)).toEqual(['running', 'running', 'running']);
    expect(completionOf('req-3')).toHaveLength(1);
    expect(w.ipam.live()).toHaveLength(3);
  });

  it('removes the highest slots first', async () => {
    await world(['a', 'b', 'c', 'd']);
    await scale(1, { replicas: 4 });
    await settle();
    await scale(2, { replicas: 2 });
    await settle();
    expect(Object.keys(layout()).map(Number).sort()).toEqual([0, 1]);
  });

  it('to zero removes everything and completes with no instance', async () => {
    await world(['a', 'b']);
    await scale(1, { replicas: 2 });
    await settle();
    await scale(2, { replicas: 0 });
    await settle();
    expect(w.core.slotList()).toEqual([]);
    expect(w.ipam.live()).toEqual([]);
    expect(onAgents(['a', 'b'])).toEqual({});
    expect(completionOf('req-2')[0]?.data.instances).toEqual([]);
    expect(free('a')).toEqual(FULL);
    expect(free('b')).toEqual(FULL);
  });
});

// ---- rejections at the door --------------------------------------------------------------

describe('rejections when a request is judged', () => {
  it('INSUFFICIENT_CAPACITY names the shortfall and changes nothing', async () => {
    await world(['a', 'b']);
    const commitsBefore = w.store.commits.length;
    await scale(1, { replicas: 3, resources: { cpu: 6, memoryMb: 1024 } });
    const [r] = rejectionOf('req-1');
    expect(r?.data.reason.code).toBe('INSUFFICIENT_CAPACITY');
    expect(r?.data.reason.message).toContain('2 of 3');
    expect(r?.data.reason.details).toMatchObject({ requested: 3, fit: 2 });
    expect(w.core.app('prod', 'web')).toBeUndefined();
    expect(w.core.slotList()).toEqual([]);
    // nothing reserved for the two slots that did fit
    expect(free('a')).toEqual(FULL);
    expect(free('b')).toEqual(FULL);
    expect(w.store.commits.length).toBe(commitsBefore + 1);
    expect(w.store.commits.at(-1)).toEqual({ requests: [expect.objectContaining({ requestId: 'req-1', outcome: 'rejected' })], events: [expect.anything()] });
    expect(placements()).toEqual([]);
    expect(w.ipam.calls.filter((c) => c.op !== 'pool')).toEqual([]);
    expect(w.agents.calls).toEqual([]);

    // the room is really there for a request that fits
    await scale(2, { replicas: 2, resources: { cpu: 6, memoryMb: 1024 } });
    await settle();
    expect(completionOf('req-2')).toHaveLength(1);
  });

  it('INSUFFICIENT_CAPACITY for a scale-up leaves the running app as it was', async () => {
    await world(['a', 'b']);
    await scale(1, { replicas: 1 });
    await settle();
    const app = w.core.app('prod', 'web');
    const before = layout();
    await scale(2, { replicas: 20 });
    expect(rejectionOf('req-2')[0]?.data.reason.code).toBe('INSUFFICIENT_CAPACITY');
    await settle();
    expect(w.core.app('prod', 'web')).toBe(app);
    expect(layout()).toEqual(before);
    expect(free('a').cpu + free('b').cpu).toBe(15);
  });

  it('POOL_NOT_FOUND for an unknown pool', async () => {
    await world();
    await scale(1, { pool: 'nowhere' });
    expect(rejectionOf('req-1')[0]?.data.reason).toMatchObject({ code: 'POOL_NOT_FOUND', details: { pool: 'nowhere' } });
    expect(w.core.app('prod', 'web')).toBeUndefined();
  });

  it.each<[string, Parameters<typeof scaleMessage>, string]>([
    ['replicas below zero', [1, { replicas: -1 }], 'data.replicas'],
    ['an unknown field', [1, { colour: 'red' } as Partial<ScaleRequestData>], 'data.colour'],
    ['backend docker without an image', [1, { backend: 'docker', image: undefined, template: 'tpl' }], 'data.image'],
    ['backend vmware without a template', [1, { backend: 'vmware' }], 'data.template'],
  ])('INVALID_REQUEST for %s, naming the field', async (_what, args, field) => {
    await world();
    const m = scaleMessage(...args);
    // JSON.stringify drops the undefined image: the request really has none
    await w.core.handleScale(m);
    const [r] = rejectionOf('req-1');
    expect(r?.data).toMatchObject({ env: 'prod', app: 'web', reason: { code: 'INVALID_REQUEST', details: { field } } });
    expect(r?.subject).toBe('prod:web');
    expect(w.core.app('prod', 'web')).toBeUndefined();
    expect(w.store.requests.get('req-1')?.outcome).toBe('rejected');
  });

  it("INVALID_REQUEST when the env's policy forbids every backend the request can use", async () => {
    await world(['a'], { envBackends: (env) => (env === 'prod' ? ['vmware'] : undefined) });
    await scale(1);
    expect(rejectionOf('req-1')[0]?.data.reason).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'data.backend' } });
  });

  it('a poison message is rejected and the next request is still served', async () => {
    await world(['a']);
    await w.core.handleScale({ seq: 1, subject: 'orangery.scale.prod.web', body: '{oops' });
    await scale(2, { replicas: 1 });
    await settle();
    expect(rejectionOf('js-1')[0]?.data.reason.code).toBe('INVALID_REQUEST');
    expect(completionOf('req-2')).toHaveLength(1);
  });

  it('a duplicate request id changes nothing', async () => {
    await world(['a', 'b']);
    await scale(1, { replicas: 1 });
    await settle();
    const commits = w.store.commits.length;
    const events = w.store.events.length;
    await scale(1, { replicas: 2 }); // redelivered under the same id and sequence
    await scale(5, { replicas: 2 }, { id: 'req-1' }); // or republished with the same id
    await settle();
    expect(w.store.commits.length).toBe(commits);
    expect(w.store.events.length).toBe(events);
    expect(Object.keys(layout())).toEqual(['0']);
  });

  it('a rejected request redelivered is not rejected twice', async () => {
    await world();
    await scale(1, { pool: 'nowhere' });
    await scale(1, { pool: 'nowhere' });
    expect(rejections()).toHaveLength(1);
  });

  it('RetryLater when ipam cannot say whether the pool exists; the redelivery is served', async () => {
    await world(['a']);
    w.ipam.fail({ op: 'pool' }, () => transientError('UNAVAILABLE', 'ipam did not answer'), 1);
    await expect(scale(1, { replicas: 1 })).rejects.toBeInstanceOf(RetryLater);
    expect(w.store.commits).toEqual([]);
    expect(w.store.requests.has('req-1')).toBe(false);
    await scale(1, { replicas: 1 });
    await settle();
    expect(completionOf('req-1')).toHaveLength(1);
  });

  it('RetryLater when the journal write fails, with nothing reserved; the redelivery is served', async () => {
    await world(['a']);
    w.store.failCommits(1);
    await expect(scale(1, { replicas: 2, spread: 'none', resources: { cpu: 4, memoryMb: 1024 } })).rejects.toBeInstanceOf(RetryLater);
    expect(w.core.app('prod', 'web')).toBeUndefined();
    expect(free('a')).toEqual(FULL);
    await scale(1, { replicas: 2, spread: 'none', resources: { cpu: 4, memoryMb: 1024 } });
    await settle();
    expect(completionOf('req-1')).toHaveLength(1);
  });
});

describe('superseding', () => {
  it('a newer request ends the one in flight with SUPERSEDED; only the newer one completes', async () => {
    await world(['a', 'b', 'c']);
    w.agents.pause();
    await scale(1, { replicas: 3 });
    await settle(100);
    expect(w.core.app('prod', 'web')?.outcome).toBe('pending');
    await scale(2, { replicas: 1 });
    const [r] = rejectionOf('req-1');
    expect(r?.data.reason).toMatchObject({ code: 'SUPERSEDED', details: { by: 'req-2' } });
    expect(w.store.requests.get('req-1')?.outcome).toBe('rejected');
    w.agents.resume();
    await settle();
    expect(completionOf('req-1')).toEqual([]);
    expect(completionOf('req-2')[0]?.data.instances.map((i) => i.slot)).toEqual([0]);
    expect(rejections()).toHaveLength(1);
    expect(Object.keys(layout())).toEqual(['0']);
    expect(onAgents(['a', 'b', 'c'])).toEqual({ 'prod:web:0': [layout()[0]!.host] });
    expect(w.ipam.live().map((a) => a.owner.slot)).toEqual([0]);
  });

  it('an older request arriving late is SUPERSEDED and changes nothing', async () => {
    await world(['a', 'b']);
    await scale(5, { replicas: 1 });
    await settle();
    const app = w.core.app('prod', 'web');
    const slots = w.core.slotList();
    const commits = w.store.commits.length;
    await scale(3, { replicas: 2 }, { id: 'older' });
    const [r] = rejectionOf('older');
    expect(r?.data.reason).toMatchObject({ code: 'SUPERSEDED', details: { by: 'req-5' } });
    expect(w.store.commits.slice(commits).flatMap((c) => [...(c.apps ?? []), ...(c.slots ?? [])])).toEqual([]);
    await settle();
    expect(w.core.app('prod', 'web')).toBe(app);
    expect(w.core.slotList()).toEqual(slots);
    expect(completions()).toHaveLength(1);
  });

  it('a completed request is not reported superseded by the next one', async () => {
    await world(['a', 'b']);
    await scale(1, { replicas: 1 });
    await settle();
    await scale(2, { replicas: 2 });
    await settle();
    expect(rejections()).toEqual([]);
    expect(completions().map((e) => e.data.requestId)).toEqual(['req-1', 'req-2']);
  });
});

// ---- starting slots -----------------------------------------------------------------------

describe('start failures', () => {
  it('START_FAILED after startAttempts hosts: rejected with each slot, nothing left behind', async () => {
    await world(['a', 'b', 'c']);
    w.agents.fail({ op: 'create' }, () => permanentError('IMAGE_NOT_FOUND', 'no such image web:1.0'));
    await scale(1, { replicas: 1 });
    await settle(10_000);
    const [r] = rejectionOf('req-1');
    expect(r?.data.reason.code).toBe('START_FAILED');
    expect(r?.data.reason.message).toContain('no such image');
    const details = r?.data.reason.details as { slots: Record<string, { code: string; host: string }>; tried: string[] };
    expect(details.slots['0']).toMatchObject({ code: 'IMAGE_NOT_FOUND' });
    expect(details.tried).toHaveLength(2);
    // tried on two different hosts, no more
    const creates = w.agents.callsOf('create');
    expect(creates).toHaveLength(2);
    expect(new Set(creates.map((c) => c.hostId)).size).toBe(2);
    // back to the last completed state: none
    expect(w.core.app('prod', 'web')).toMatchObject({ outcome: 'rejected', spec: { replicas: 0 } });
    expect(w.core.slotList()).toEqual([]);
    expect(w.store.slots.size).toBe(0);
    expect(w.ipam.ofOwner('prod:web:0')?.state).toBe('released');
    expect(onAgents(['a', 'b', 'c'])).toEqual({});
    for (const h of ['a', 'b', 'c']) expect(free(h)).toEqual(FULL);
    expect(completions()).toEqual([]);
    expect(w.store.requests.get('req-1')?.outcome).toBe('rejected');
  });

  it('START_FAILED falls back to the last completed spec: the running slots stay, the new one goes', async () => {
    await world(['a', 'b', 'c']);
    await scale(1, { replicas: 1 });
    await settle();
    const before = layout();
    w.agents.createAs({ instanceId: 'prod:web:1' }, 'failed', 'exec format error');
    await scale(2, { replicas: 2 });
    await settle(10_000);
    const [r] = rejectionOf('req-2');
    expect(r?.data.reason).toMatchObject({ code: 'START_FAILED', details: { slots: { 1: { code: 'START_FAILED', message: 'exec format error' } } } });
    expect(w.core.app('prod', 'web')).toMatchObject({ outcome: 'rejected', spec: { replicas: 1 } });
    expect(layout()).toEqual(before);
    expect(w.ipam.ofOwner('prod:web:1')?.state).toBe('released');
    expect(w.ipam.ofOwner('prod:web:0')?.state).toBe('bound');
    expect(Object.keys(onAgents(['a', 'b', 'c']))).toEqual(['prod:web:0']);
  });

  it('a timeout on one host is retried on another; the failed attempt leaves nothing there', async () => {
    await world(['a', 'b']);
    // the first create times out although the agent did create the container
    w.agents.fail({ op: 'create' }, timeoutError, { times: 1, completed: true });
    await scale(1, { replicas: 1 });
    await settle();
    const [first, second] = placements();
    expect(first?.data.attempt).toBe(1);
    expect(second?.data).toMatchObject({ attempt: 2, slot: 0 });
    const bad = first!.data.hostId;
    const good = second!.data.hostId;
    expect(good).not.toBe(bad);
    expect(completionOf('req-1')[0]?.data.instances).toEqual([expect.objectContaining({ host: good })]);
    expect(w.agents.callsOf('remove', bad)).not.toHaveLength(0);
    expect(onAgents(['a', 'b'])).toEqual({ 'prod:web:0': [good] });
    expect(free(bad)).toEqual(FULL);
    expect(free(good).cpu).toBe(7);
    expect(w.core.hosts.get(bad)!.placed.size).toBe(0);
    // the same IP throughout
    expect(w.ipam.allocations.size).toBe(1);
    expect(w.ipam.ofOwner('prod:web:0')).toMatchObject({ state: 'bound', host: good });
  });

  it('a slot whose host is lost before its start goes elsewhere', async () => {
    await world(['a', 'b'], { lostAfterMs: 500 });
    // the slot waits out an ipam hiccup (1 s backoff) while its host falls silent
    w.ipam.fail({ op: 'allocate' }, () => transientError(), 1);
    await scale(1, { replicas: 1, spread: 'none' });
    const first = placements()[0]!.data.hostId;
    const other = first === 'a' ? 'b' : 'a';
    for (let i = 0; i < 20; i++) {
      w.core.heartbeat(heartbeat(other));
      await settle(200);
    }
    expect(layout()[0]).toMatchObject({ host: other, state: 'running' });
    expect(w.agents.callsOf('create', first)).toEqual([]);
    expect(w.core.hosts.get(first)!.placed.size).toBe(0);
    expect(placements().at(-1)?.data).toMatchObject({ hostId: other, attempt: 2 });
  });

  it('transient ipam errors are retried on the same host', async () => {
    await world(['a']);
    w.ipam.fail({ op: 'allocate' }, () => transientError(), 2);
    await scale(1, { replicas: 1 });
    await settle();
    expect(w.ipam.calls.filter((c) => c.op === 'allocate').length).toBeGreaterThanOrEqual(3);
    expect(placements()).toHaveLength(1);
    expect(completionOf('req-1')).toHaveLength(1);
    expect(w.ipam.allocations.size).toBe(1);
  });

  it('an unexpected error from ipam (no refusal, e.g. a bug) is retried like a transient one, as isRetryable decides', async () => {
    await world(['a']);
    w.ipam.fail({ op: 'allocate' }, () => new TypeError('cannot read properties of undefined'), 1);
    await scale(1, { replicas: 1 });
    await settle();
    expect(w.ipam.calls.filter((c) => c.op === 'allocate').length).toBeGreaterThanOrEqual(2);
    expect(rejectionOf('req-1')).toEqual([]);
    expect(completionOf('req-1')).toHaveLength(1);
  });

  it('a transient bind error is retried and the instance is not created twice', async () => {
    await world(['a']);
    w.ipam.fail({ op: 'bind' }, () => transientError(), 1);
    await scale(1, { replicas: 1 });
    await settle();
    expect(completionOf('req-1')).toHaveLength(1);
    expect(w.ipam.ofOwner('prod:web:0')).toMatchObject({ state: 'bound', host: 'a' });
    expect(onAgents(['a'])).toEqual({ 'prod:web:0': ['a'] });
  });

  it('a permanent ipam error (pool exhausted) fails the request without trying other hosts', async () => {
    await world(['a', 'b']);
    w.ipam.fail({ op: 'allocate' }, () => permanentError('POOL_EXHAUSTED', 'no address left'));
    await scale(1, { replicas: 1 });
    await settle();
    expect(rejectionOf('req-1')[0]?.data.reason).toMatchObject({ code: 'START_FAILED', details: { slots: { 0: { code: 'POOL_EXHAUSTED' } } } });
    expect(w.agents.callsOf('create')).toEqual([]);
    expect(w.core.slotList()).toEqual([]);
  });
});

// ---- following the agents ---------------------------------------------------------------

describe('observations', () => {
  async function runningOne(hosts = ['a', 'b']): Promise<{ host: string; ip: string }> {
    await world(hosts);
    await scale(1, { replicas: 1 });
    await settle();
    const s = slotOf(0)!;
    expect(s.state).toBe('running');
    return { host: s.hostId!, ip: s.ip! };
  }

  it('a failed instance is replaced on another host with the same IP after the grace period', async () => {
    const { host, ip } = await runningOne();
    const other = host === 'a' ? 'b' : 'a';
    w.agents.setState(host, 'prod:web:0', 'failed', 'OOM killed');
    w.core.instanceEvent('failed', 'prod:web:0', host);
    await settle(SETTINGS.failedGraceMs - 50);
    expect(w.agents.callsOf('get')).toEqual([]);
    expect(slotOf(0)).toMatchObject({ hostId: host, state: 'running' });

    await settle();
    expect(slotOf(0)).toMatchObject({ hostId: other, ip, state: 'running', phase: null });
    // the failed copy is stopped and kept (its logs are evidence), never started again
    expect(onAgents(['a', 'b'])).toEqual({ 'prod:web:0': [host, other] });
    expect(w.agents.instancesOn(host)).toEqual([expect.objectContaining({ instanceId: 'prod:web:0', state: 'failed' })]);
    expect(w.store.eventsOf('instance', 'orphaned').map((e) => e.data)).toEqual([expect.objectContaining({ instanceId: 'prod:web:0', host })]);
    expect(w.ipam.ofOwner('prod:web:0')).toMatchObject({ ip, state: 'bound', host: other });
    expect(free(host)).toEqual(FULL);
    expect(placements().at(-1)?.data).toMatchObject({ hostId: other, slot: 0 });
    // a completed request is not completed again by a replacement
    expect(completions()).toHaveLength(1);
  });

  it('with no other host, a failed instance is started again on its own host later, same IP, no rejection', async () => {
    const { host, ip } = await runningOne(['a']);
    w.agents.setState(host, 'prod:web:0', 'failed', 'OOM killed');
    w.core.instanceEvent('failed', 'prod:web:0', host);
    await settle(1_000);
    expect(slotOf(0)).toMatchObject({ state: 'failed', hostId: null, lastError: { code: 'FAILED', message: 'OOM killed' } });
    expect(w.agents.instancesOn(host)).toEqual([expect.objectContaining({ state: 'failed', ip })]);
    await settle(40_000);
    expect(slotOf(0)).toMatchObject({ hostId: host, ip, state: 'running', phase: null });
    expect(w.agents.instancesOn(host)).toEqual([expect.objectContaining({ state: 'running', ip })]);
    expect(rejections()).toEqual([]);
  });

  it('a failure the agent recovers from within the grace period is left alone', async () => {
    const { host } = await runningOne();
    w.agents.setState(host, 'prod:web:0', 'failed', 'crashed');
    w.core.instanceEvent('failed', 'prod:web:0', host);
    await settle(100);
    w.agents.setState(host, 'prod:web:0', 'running');
    await settle();
    expect(slotOf(0)).toMatchObject({ hostId: host, state: 'running' });
    expect(w.agents.callsOf('create')).toHaveLength(1);
  });

  it('an event from a host the slot is not on is ignored', async () => {
    const { host } = await runningOne();
    const other = host === 'a' ? 'b' : 'a';
    w.core.instanceEvent('failed', 'prod:web:0', other);
    w.core.instanceEvent('removed', 'prod:web:0', other);
    await settle();
    expect(w.agents.callsOf('get')).toEqual([]);
    expect(slotOf(0)).toMatchObject({ hostId: host, state: 'running' });
  });

  it('a stopped instance is started again in place', async () => {
    const { host, ip } = await runningOne();
    w.agents.setState(host, 'prod:web:0', 'stopped');
    w.core.instanceEvent('stopped', 'prod:web:0', host);
    await settle();
    expect(w.agents.callsOf('start', host)).toHaveLength(1);
    expect(w.agents.instancesOn(host)[0]).toMatchObject({ state: 'running', ip });
    expect(slotOf(0)).toMatchObject({ hostId: host, state: 'running' });
  });

  it('an instance the agent lists but no record places there is stopped and kept, then removed after the retention', async () => {
    await world(['a', 'b'], { leftoverRetentionMs: 60_000 });
    await scale(1, { replicas: 1 });
    await settle();
    const host = slotOf(0)!.hostId!;
    const other = host === 'a' ? 'b' : 'a';
    w.agents.plant(host, { instanceId: 'prod:old:0', env: 'prod', app: 'old', slot: 0 });
    // a stale copy of our own slot on the wrong host (a returning host, after a failover)
    w.agents.plant(other, { instanceId: 'prod:web:0', env: 'prod', app: 'web', slot: 0 });
    w.core.agentList(host, w.agents.instancesOn(host));
    w.core.agentList(other, w.agents.instancesOn(other));
    await settle();
    const running = (h: string) =>
      w.agents
        .instancesOn(h)
        .filter((i) => i.state === 'running')
        .map((i) => i.instanceId);
    expect(running(host)).toEqual(['prod:web:0']);
    expect(running(other)).toEqual([]);
    expect(w.agents.callsOf('remove')).toEqual([]);
    expect(w.agents.callsOf('start')).toEqual([]);
    const orphaned = w.store.eventsOf<{ instanceId: string; host: string; keptUntil: string }>('instance', 'orphaned').map((e) => e.data);
    expect(orphaned.map((d) => [d.instanceId, d.host]).sort()).toEqual(
      [
        ['prod:old:0', host],
        ['prod:web:0', other],
      ].sort(),
    );
    expect(Date.parse(orphaned[0]!.keptUntil) - Date.now()).toBeGreaterThan(50_000);
    // seen again within the retention: kept, announced once
    w.core.agentList(other, w.agents.instancesOn(other));
    await settle(1_000);
    expect(w.agents.instancesOn(other)).toHaveLength(1);
    expect(w.store.eventsOf('instance', 'orphaned')).toHaveLength(2);
    // past it: removed
    await settle(60_000);
    w.core.agentList(other, w.agents.instancesOn(other));
    w.core.agentList(host, w.agents.instancesOn(host));
    await settle(1_000);
    expect(w.agents.instancesOn(other)).toEqual([]);
    expect(w.agents.instancesOn(host).map((i) => i.instanceId)).toEqual(['prod:web:0']);
    expect(slotOf(0)).toMatchObject({ hostId: host, state: 'running' });
    expect(w.core.slotList()).toHaveLength(1);
  });

  it('a slot missing from its agent is created again there with its IP', async () => {
    const { host, ip } = await runningOne();
    w.agents.vanish(host, 'prod:web:0');
    w.core.agentList(host, w.agents.instancesOn(host));
    await settle();
    expect(w.agents.callsOf('create', host)).toHaveLength(2);
    expect(w.agents.instancesOn(host)).toEqual([expect.objectContaining({ instanceId: 'prod:web:0', ip, state: 'running' })]);
    expect(slotOf(0)).toMatchObject({ hostId: host, ip, state: 'running', phase: null });
  });

  it('a removed event makes the slot be created again', async () => {
    const { host, ip } = await runningOne();
    w.agents.vanish(host, 'prod:web:0');
    w.core.instanceEvent('removed', 'prod:web:0', host);
    await settle();
    expect(w.agents.instancesOn(host)).toEqual([expect.objectContaining({ instanceId: 'prod:web:0', ip })]);
  });

  it('an agent list before the journal is loaded removes nothing', async () => {
    await world(['a']);
    await scale(1, { replicas: 1 });
    await settle();
    // a new leader: it hears an agent (re-registration -> list) before start() loaded the slots
    const next = new SchedulerCore({ store: w.store, ipam: w.ipam, agents: w.agents, clock: { now: () => Date.now() }, log: new MemoryLog() }, SETTINGS);
    cores.push(next);
    next.heartbeat(heartbeat('a'));
    next.agentList('a', w.agents.instancesOn('a'));
    await settle(100);
    expect(w.agents.callsOf('remove')).toEqual([]);
    await next.start();
    await settle();
    expect(onAgents(['a'])).toEqual({ 'prod:web:0': ['a'] });
  });
});

// ---- leadership ---------------------------------------------------------------------------

describe('leadership', () => {
  it('NotLeaderError on a commit: onDeposed once, and the core does nothing more', async () => {
    await world(['a', 'b']);
    await scale(1, { replicas: 1 });
    await settle();
    w.store.depose();
    await expect(scale(2, { replicas: 2 })).rejects.toBeInstanceOf(NotLeaderError);
    expect(w.deposed).toHaveBeenCalledTimes(1);
    await expect(scale(3, { replicas: 3 })).rejects.toBeInstanceOf(NotLeaderError);
    const agentCalls = w.agents.calls.length;
    const attempts = w.store.attempts;
    const host = slotOf(0)!.hostId!;
    w.agents.setState(host, 'prod:web:0', 'failed');
    w.core.instanceEvent('failed', 'prod:web:0', host);
    w.core.tick();
    await settle(60_000);
    expect(w.deposed).toHaveBeenCalledTimes(1);
    expect(w.agents.calls.length).toBe(agentCalls);
    expect(w.store.attempts).toBe(attempts);
  });

  it('deposed while slots are being worked on: onDeposed once, no further instance is created', async () => {
    await world(['a', 'b', 'c']);
    w.ipam.fail({ op: 'allocate' }, () => transientError(), 1);
    w.agents.pause();
    await scale(1, { replicas: 3 });
    await settle(100); // slots 1 and 2 wait in their creates, slot 0 in its backoff
    w.store.depose();
    const creates = w.agents.callsOf('create').length;
    w.agents.resume();
    await settle(30_000);
    expect(w.deposed).toHaveBeenCalledTimes(1);
    // slot 0 was waiting out its ipam backoff: it never reaches its agent
    expect(w.agents.callsOf('create').length).toBe(creates);
    expect(w.agents.callsOf('create').map((c) => c.instanceId)).not.toContain('prod:web:0');
  });

  it('a deposed core does not remove instances an agent lists', async () => {
    await world(['a']);
    await scale(1, { replicas: 1 });
    await settle();
    w.store.depose();
    await expect(scale(2, { replicas: 0 })).rejects.toBeInstanceOf(NotLeaderError);
    // the new leader placed another app here, which this core's stale records do not know
    w.agents.plant('a', { instanceId: 'prod:api:0', env: 'prod', app: 'api', slot: 0 });
    w.core.agentList('a', w.agents.instancesOn('a'));
    await settle();
    expect(w.agents.callsOf('remove')).toEqual([]);
    expect(onAgents(['a'])['prod:api:0']).toEqual(['a']);
  });

  it('a new leader starting from the journal of a crashed one converges without duplicates', async () => {
    await world(['a', 'b', 'c']);
    w.agents.pause();
    await scale(1, { replicas: 3 });
    await settle(50);
    // crash: the first core stops mid-scale, its creates still hanging
    const crashed = w.core.stop();
    w.agents.resume();
    await settle(10_000);
    await crashed;
    const { store, ipam, agents } = w;
    await world(['a', 'b', 'c'], {}, { store, ipam, agents });
    await settle();
    expect(completionOf('req-1')).toHaveLength(1);
    const where = onAgents(['a', 'b', 'c']);
    expect(Object.keys(where).sort()).toEqual(['prod:web:0', 'prod:web:1', 'prod:web:2']);
    for (const hosts of Object.values(where)) expect(hosts).toHaveLength(1);
    expect(ipam.live()).toHaveLength(3);
  });
});

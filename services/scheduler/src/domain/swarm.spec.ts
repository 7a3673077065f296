import { swarmCreateCommandOf } from './slot-records';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Heartbeat, SwarmCreateInstanceCommand } from '@orangery/contracts';
import { SchedulerCore, type CoreSettings } from './scheduler-core';
import { heartbeat, scaleMessage } from './testing/factories';
import { FakeAgents, FakeIpam, InMemorySchedulerStore, MemoryLog } from './testing/fakes';
import type { AppRecord, SlotRecord } from './model';
import { appRecord, runningSlot } from './testing/records';

/**
 * Swarm slots (issue 16) through the whole core against in-memory ports: swarm nodes are
 * hosts of one cluster; the agent picks and binds a task's address, answers the node it
 * runs on, and may move it; the scheduler records, follows and never replaces.
 */

const LOST_AFTER = 3_000;
const DEADLINE = 6_000;
const SETTINGS: CoreSettings = {
  source: 'orangery/scheduler/test',
  policy: 'least-loaded',
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
let ipam: FakeIpam;
let mono = 0;
const live = new Map<string, Partial<Heartbeat>>();
const swarmNode = (cluster = 'c1'): Partial<Heartbeat> => ({ backend: 'swarm', cluster });

async function world(hosts: Record<string, Partial<Heartbeat>>, journal: { apps?: AppRecord[]; slots?: SlotRecord[] } = {}): Promise<void> {
  store = new InMemorySchedulerStore();
  for (const a of journal.apps ?? []) store.apps.set(`${a.env}:${a.app}`, a);
  for (const s of journal.slots ?? []) store.slots.set(s.id, s);
  agents = new FakeAgents();
  ipam = new FakeIpam().addPool('prod-pool', 100);
  core = new SchedulerCore({ store, ipam, agents, clock: { now: () => mono }, wallClock: { now: () => Date.now() }, log: new MemoryLog() }, SETTINGS);
  for (const [id, over] of Object.entries(hosts)) {
    live.set(id, over);
    if (over.backend) agents.backends.set(id, over.backend);
    if (over.cluster) agents.swarmCluster.set(id, over.cluster);
    core.heartbeat(heartbeat(id, over));
  }
  await core.start();
}

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
const placedOn = (host: string) => [...(core.hosts.get(host)?.placed.keys() ?? [])].sort();

async function scale(replicas: number, seq = 1): Promise<void> {
  await core.handleScale(scaleMessage(seq, { replicas, backend: 'swarm' }, { id: `req-${seq}` }));
  await run(2_000);
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
});

describe('swarm slots', () => {
  it('creates on a swarm node without ipam: a SwarmCreateInstanceCommand with the pool, and the reply’s address recorded', async () => {
    await world({ n1: swarmNode(), n2: swarmNode() });
    await scale(2);

    for (const n of [0, 1]) expect(slot(n)).toMatchObject({ state: 'running', phase: null, backend: 'swarm', ip: expect.stringMatching(/^10\.7\.0\./) });
    // the agent binds; the scheduler neither allocates nor binds
    expect(ipam.calls.filter((c) => c.op !== 'pool')).toEqual([]);
    const cmd = agents.created.get(`${slot(0).hostId}/prod:web:0`) as SwarmCreateInstanceCommand;
    expect(cmd).toMatchObject({ instanceId: 'prod:web:0', image: 'web:1.0', pool: 'prod-pool', resources: { cpu: 1, memoryMb: 1024 } });
    expect(cmd).not.toHaveProperty('network');
    expect(eventsOf('scale', 'completed')).toHaveLength(1);
  });

  it('records the node the task actually runs on (another of the cluster), and the reservation follows it', async () => {
    await world({ n1: swarmNode(), n2: swarmNode() });
    agents.swarmNode = () => 'n2';
    await scale(2);
    expect(slot(0)).toMatchObject({ state: 'running', hostId: 'n2' });
    expect(slot(1)).toMatchObject({ state: 'running', hostId: 'n2' });
    expect(placedOn('n2')).toEqual(['prod:web:0', 'prod:web:1']);
    expect(placedOn('n1')).toEqual([]);
    expect(agents.callsOf('remove')).toEqual([]);
  });

  it('a reply naming a node of another cluster is not recorded: the attempt failed, the service removed', async () => {
    await world({ n1: swarmNode(), x1: swarmNode('other') });
    agents.swarmCluster.set('x1', 'c1'); // the fake puts it there, the heartbeats say another cluster
    agents.swarmNode = (host) => (host === 'n1' ? 'x1' : host);
    await core.handleScale(scaleMessage(1, { replicas: 1, backend: 'swarm', spread: 'none' }, { id: 'req-1' }));
    await run(500);
    expect(agents.callsOf('remove').length).toBeGreaterThan(0);
    expect(core.slotList().some((s) => s.hostId === 'x1' && s.state === 'running' && s.lastError?.host === 'n1')).toBe(false);
  });

  it('a running task whose address the agent does not know yet is asked for again, not removed', async () => {
    await world({ n1: swarmNode() });
    const create = agents.create.bind(agents);
    let answers = 0;
    agents.create = async (hostId, command) => {
      const inst = await create(hostId, command);
      return answers++ < 2 ? { ...inst, ip: '', mac: '' } : inst;
    };
    await core.handleScale(scaleMessage(1, { replicas: 1, backend: 'swarm' }, { id: 'req-1' }));
    await run(5_000);
    expect(slot(0)).toMatchObject({ state: 'running', hostId: 'n1', ip: expect.stringMatching(/^10\.7\.0\./) });
    expect(agents.callsOf('remove')).toEqual([]);
    expect(answers).toBe(3);
  });

  it('follows a task swarm moved to another node (listing, or an event verified by a bound get): nothing stopped, removed or created', async () => {
    await world({ n1: swarmNode(), n2: swarmNode() });
    agents.swarmNode = () => 'n1';
    await scale(2);
    const creates = agents.callsOf('create').length;
    agents.moveSwarmTask('prod:web:0', 'n2', '10.7.0.77');
    core.agentList('n2', agents.instancesOn('n2'));
    core.agentList('n1', agents.instancesOn('n1'));
    await run(1_000);
    expect(slot(0)).toMatchObject({ state: 'running', phase: null, hostId: 'n2', ip: '10.7.0.77', mac: '02:00:0a:07:00:4d' });
    expect(placedOn('n2')).toEqual(['prod:web:0']);
    expect(eventsOf('instance', 'running')).toEqual([expect.objectContaining({ instanceId: 'prod:web:0', hostId: 'n2', ip: '10.7.0.77', backend: 'swarm' })]);
    // an event (a hint) for the other slot: asked, then followed
    agents.moveSwarmTask('prod:web:1', 'n2', '10.7.0.78');
    core.instanceEvent('running', 'prod:web:1', 'n2', '10.7.0.78');
    await run(1_000);
    expect(slot(1)).toMatchObject({ hostId: 'n2', ip: '10.7.0.78' });
    expect(agents.callsOf('get').length).toBeGreaterThan(0);
    expect(agents.callsOf('stop')).toEqual([]);
    expect(agents.callsOf('remove')).toEqual([]);
    expect(agents.callsOf('create')).toHaveLength(creates);
    expect(eventsOf('instance', 'orphaned')).toEqual([]);
  });

  it('a forged event naming a node of the cluster changes nothing when the agent does not confirm it', async () => {
    await world({ n1: swarmNode(), n2: swarmNode() });
    agents.swarmNode = () => 'n1';
    await scale(1);
    const before = slot(0);
    core.instanceEvent('running', 'prod:web:0', 'n2', '10.7.0.99');
    await run(1_000);
    expect(slot(0)).toMatchObject({ hostId: 'n1', ip: before.ip });
    expect(eventsOf('instance', 'running')).toEqual([]);
  });

  it('a silent swarm node is unknown, never lost: nothing of it is replaced, no probe, no create elsewhere', async () => {
    // d1, a docker host, could probe the wire: swarm nodes are never judged by it
    await world({ n1: swarmNode(), n2: swarmNode(), n3: swarmNode(), d1: {} });
    agents.swarmNode = () => 'n1';
    await scale(2);
    const creates = agents.callsOf('create').length;
    live.delete('n1');
    agents.offWire.add('n1');
    await run(DEADLINE + 10_000);
    expect(stateOf('n1')).toBe('unknown');
    expect(eventsOf('host', 'unknown')).toEqual([expect.objectContaining({ hostId: 'n1', reason: expect.stringMatching(/swarm owns restarts/) })]);
    expect(eventsOf('host', 'lost')).toEqual([]);
    expect(agents.callsOf('probe')).toEqual([]);
    expect(agents.callsOf('create')).toHaveLength(creates);
    expect(slot(0)).toMatchObject({ hostId: 'n1', state: 'running', phase: null });
  });

  it('a new leader never judges a swarm node it has not heard from like a docker host: unknown, its slot not replaced', async () => {
    const spec = { ...appRecord().spec, backends: ['swarm' as const] };
    await world(
      { d1: {}, n2: swarmNode() },
      { apps: [appRecord({ spec, stable: spec, backend: 'swarm' })], slots: [runningSlot(0, 'n1', { backend: 'swarm', ip: '10.7.0.50' })] },
    );
    agents.offWire.add('n1');
    await run(DEADLINE + 10_000);
    expect(stateOf('n1')).toBe('unknown');
    expect(core.hosts.get('n1')?.backend).toBe('swarm');
    expect(eventsOf('host', 'lost')).toEqual([]);
    expect(agents.callsOf('probe')).toEqual([]);
    expect(agents.callsOf('create')).toEqual([]);
    expect(slot(0)).toMatchObject({ hostId: 'n1', ip: '10.7.0.50', state: 'running', phase: null });
  });

  it('a new leader follows a task listed on a live node when the recorded node is never heard from (it left the swarm): not stopped', async () => {
    const spec = { ...appRecord().spec, backends: ['swarm' as const] };
    await world(
      { n2: swarmNode(), n3: swarmNode() },
      { apps: [appRecord({ spec, stable: spec, backend: 'swarm' })], slots: [runningSlot(0, 'n1', { backend: 'swarm', ip: '10.7.0.50' })] },
    );
    agents.moveSwarmTask('prod:web:0', 'n2', '10.7.0.51');
    core.agentList('n2', agents.instancesOn('n2'));
    await run(1_000);
    expect(slot(0)).toMatchObject({ hostId: 'n2', ip: '10.7.0.51', state: 'running', phase: null });
    expect(agents.callsOf('stop')).toEqual([]);
    expect(agents.callsOf('create')).toEqual([]);
    expect(eventsOf('instance', 'orphaned')).toEqual([]);
  });

  it('scaling to 0 removes each service through its node (or a live node of the cluster), then releases the owner in ipam (kept in its block there)', async () => {
    await world({ n1: swarmNode(), n2: swarmNode(), n3: swarmNode() });
    agents.swarmNode = (host) => host;
    await scale(2);
    const silentHost = slot(0).hostId!;
    const otherHost = slot(1).hostId!;
    live.delete(silentHost);
    await run(LOST_AFTER + 1_000);
    await scale(0, 2);
    await run(2_000);
    expect(core.slotList()).toEqual([]);
    expect(
      agents
        .callsOf('remove')
        .map((c) => c.instanceId)
        .sort(),
    ).toEqual(['prod:web:0', 'prod:web:1']);
    // the silent node's service went through another node of the cluster
    expect(agents.callsOf('remove', silentHost)).toEqual([]);
    expect(agents.callsOf('remove', otherHost).length).toBeGreaterThan(0);
    expect(agents.whereIs('prod:web:0')).toEqual([]);
    // the agent unbinds when the task goes; the release covers an agent that missed it, and
    // comes only after the remove was confirmed (never allocate or bind)
    expect(
      ipam.calls
        .filter((c) => c.op !== 'pool')
        .map((c) => `${c.op} ${c.owner}`)
        .sort(),
    ).toEqual(['release prod:web:0', 'release prod:web:1']);
  });

  it('a task swarm ran on a node this leader has not heard from yet is asked for again, not removed; followed once the node is known', async () => {
    await world({ n1: swarmNode() });
    agents.swarmCluster.set('n9', 'c1');
    agents.swarmNode = () => 'n9';
    await core.handleScale(scaleMessage(1, { replicas: 1, backend: 'swarm' }, { id: 'req-1' }));
    await run(1_000);
    expect(agents.callsOf('remove')).toEqual([]);
    expect(slot(0).state).not.toBe('running');
    live.set('n9', swarmNode());
    await run(6_000);
    expect(slot(0)).toMatchObject({ state: 'running', hostId: 'n9' });
    expect(agents.callsOf('remove')).toEqual([]);
  });

  it("passes the env record's hostLabels to the swarm-agent (swarm places the task itself)", async () => {
    await world({ n1: { ...swarmNode(), labels: { zone: 'z1' } } });
    await core.handleScale(scaleMessage(1, { replicas: 1, backend: 'swarm' }, { id: 'req-1' }));
    await run(2_000);
    const plain = agents.created.get(`${slot(0).hostId}/prod:web:0`) as SwarmCreateInstanceCommand;
    expect(plain).not.toHaveProperty('hostLabels');
    const cmd = swarmCreateCommandOf(slot(0), { zone: 'z1' });
    expect(cmd.hostLabels).toEqual({ zone: 'z1' });
    expect(swarmCreateCommandOf(slot(0), {})).not.toHaveProperty('hostLabels');
  });

  it('refuses a migration into, out of or within swarm and a drain of a swarm node with IP_WOULD_CHANGE, nothing held', async () => {
    await world({ n1: swarmNode(), n2: swarmNode(), d1: {} });
    await scale(1);
    await expect(core.hold('prod:web:0', 'm-1')).rejects.toMatchObject({ code: 'IP_WOULD_CHANGE' });
    expect(slot(0).hold ?? null).toBeNull();
    await expect(core.setDrain('n1', true)).rejects.toMatchObject({ code: 'IP_WOULD_CHANGE', message: expect.stringMatching(/availability drain/) });
    expect(stateOf('n1')).toBe('ready');
    // a docker slot: toBackend swarm, or a swarm node as toHost
    await core.handleScale(scaleMessage(3, { app: 'api', replicas: 1, backend: 'docker' }, { id: 'req-3' }));
    await run(2_000);
    await core.hold('prod:api:0', 'm-2');
    await expect(core.reserveTarget('prod:api:0', 'm-2', { toBackend: 'swarm' })).rejects.toMatchObject({ code: 'IP_WOULD_CHANGE' });
    await expect(core.reserveTarget('prod:api:0', 'm-2', { toHost: 'n2' })).rejects.toMatchObject({ code: 'IP_WOULD_CHANGE' });
    expect(core.slotView('prod:api:0').hold).toEqual({ by: 'm-2' });
  });
});

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { hostFactsOf, type AgentInstance, type HostFacts, type InstanceOrphanedData } from '@orangery/contracts';
import { HostBook } from './host-book';
import { Leftovers } from './leftovers';
import type { SlotRecord } from './model';
import { Observations } from './observations';
import { SchedulerEvents } from './scheduler-events';
import { SlotBook } from './slot-book';
import { heartbeat } from './testing/factories';
import { FakeAgents, InMemorySchedulerStore, MemoryLog } from './testing/fakes';
import { appRecord, runningSlot } from './testing/records';

/**
 * What agents report, turned into work: Observations and Leftovers against a real
 * SlotBook, fake agents and fake timers; the slot workers are a spy (`kick`).
 */

const GRACE = 300;
const RETENTION = 3_600_000;

async function observationWorld(slots: SlotRecord[] = [runningSlot(0, 'a')], load = true) {
  const store = new InMemorySchedulerStore();
  store.apps.set('prod:web', appRecord({ spec: { ...appRecord().spec, replicas: 2 } }));
  for (const s of slots) store.slots.set(s.id, s);
  const hosts = new HostBook(
    3_600_000,
    () => Date.now(),
    () => Date.now(),
  );
  const book = new SlotBook(store, hosts, () => undefined);
  const agents = new FakeAgents();
  const log = new MemoryLog();
  const events = new SchedulerEvents('test');
  const leftovers = new Leftovers({ agents, log, save: (c) => book.save(c), wallNow: () => Date.now() }, RETENTION, events);
  const kick = vi.fn<(id: string) => void>();
  const judgeSilentHosts = vi.fn();
  const observations = new Observations(book, hosts, leftovers, events, { agents, log, kick, judgeSilentHosts }, { failedGraceMs: GRACE });
  for (const h of ['a', 'b']) observations.heartbeat(heartbeat(h));
  if (load) await book.load();
  for (const s of slots) if (s.hostId) agents.plant(s.hostId, { instanceId: s.id, env: s.env, app: s.app, slot: s.slot, state: 'running' });
  const listing = (host: string): AgentInstance[] => agents.instancesOn(host);
  return {
    leftovers,
    store,
    hosts,
    book,
    agents,
    observations,
    kick,
    judgeSilentHosts,
    listing,
    orphaned: () => store.eventsOf<InstanceOrphanedData>('instance', 'orphaned'),
  };
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe('Observations', () => {
  it('an instance that failed is replaced only after the grace period (the agent may restart it meanwhile)', async () => {
    const w = await observationWorld();
    w.agents.setState('a', 'prod:web:0', 'failed', 'exit 1');
    w.observations.instanceEvent('failed', 'prod:web:0', 'a');
    await vi.advanceTimersByTimeAsync(GRACE - 1);
    expect(w.kick).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(w.book.slot('prod:web:0')).toMatchObject({ phase: 'replace', state: 'failed', lastError: { code: 'FAILED', message: 'exit 1', host: 'a' } });
    expect(w.kick).toHaveBeenCalledWith('prod:web:0');
  });

  it('an instance that stopped by itself is started again where it is', async () => {
    const w = await observationWorld();
    w.agents.setState('a', 'prod:web:0', 'stopped');
    w.observations.instanceEvent('stopped', 'prod:web:0', 'a');
    await vi.advanceTimersByTimeAsync(1_000);
    expect(w.agents.callsOf('start', 'a')).toHaveLength(1);
    expect(w.book.slot('prod:web:0')?.phase).toBeNull();
    expect(w.kick).not.toHaveBeenCalled();
  });

  it('a verify in flight when the replica is deposed starts nothing (the new leader decides)', async () => {
    const w = await observationWorld();
    w.agents.setState('a', 'prod:web:0', 'stopped');
    const get = w.agents.get.bind(w.agents);
    w.agents.get = async (hostId, id) => {
      w.book.stop(); // deposed while the agent answers
      return get(hostId, id);
    };
    w.observations.instanceEvent('stopped', 'prod:web:0', 'a');
    await vi.advanceTimersByTimeAsync(1_000);
    expect(w.agents.callsOf('get', 'a')).toHaveLength(1);
    expect(w.agents.callsOf('start', 'a')).toEqual([]);
  });

  it('an event about another host, or a slot with work under way, changes nothing', async () => {
    const w = await observationWorld([runningSlot(0, 'a'), runningSlot(1, 'a', { phase: 'create' })]);
    w.observations.instanceEvent('removed', 'prod:web:0', 'b');
    w.observations.instanceEvent('removed', 'prod:web:1', 'a');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(w.agents.callsOf('get')).toEqual([]);
  });

  it('a slot missing from its host’s list is created again', async () => {
    const w = await observationWorld();
    w.agents.vanish('a', 'prod:web:0');
    w.observations.agentList('a', w.listing('a'));
    await vi.advanceTimersByTimeAsync(0);
    expect(w.book.slot('prod:web:0')).toMatchObject({ phase: 'create', state: 'placed', hostId: 'a' });
    expect(w.kick).toHaveBeenCalledWith('prod:web:0');
  });

  it('ignores agent lists before the journal is loaded (every instance would look like a leftover)', async () => {
    const w = await observationWorld([runningSlot(0, 'a')], false);
    w.observations.agentList('a', w.listing('a'));
    await vi.advanceTimersByTimeAsync(10_000);
    expect(w.agents.callsOf('stop')).toEqual([]);
    expect(w.orphaned()).toEqual([]);
  });

  it('marks every settled slot of a host for replacement (failover), once recorded', async () => {
    const w = await observationWorld([runningSlot(0, 'a'), runningSlot(1, 'a', { hold: { by: 'mig-1' } })]);
    w.observations.replaceAll('a', { code: 'HOST_LOST', message: 'gone', host: 'a' });
    await vi.advanceTimersByTimeAsync(0);
    expect(w.book.slot('prod:web:0')).toMatchObject({ phase: 'replace', state: 'failed', lastError: { code: 'HOST_LOST' } });
    expect(w.book.slot('prod:web:1')?.phase).toBeNull(); // held: the migration decides
    expect(w.kick.mock.calls).toEqual([['prod:web:0']]);
  });

  it('a host judged lost that re-registers before its first heartbeat is announced recovered, once', async () => {
    const w = await observationWorld();
    w.hosts.judge('a', 'lost');
    const { hostId, backend, capacity, total, reserved, labels, vlans } = heartbeat('a');
    w.observations.registered({ hostId, backend, capacity, total, reserved, labels, vlans });
    w.observations.heartbeat(heartbeat('a'));
    await vi.advanceTimersByTimeAsync(10);
    expect(w.store.eventsOf('host', 'recovered').map((e) => e.data)).toEqual([expect.objectContaining({ hostId: 'a' })]);
  });

  it('sweepHosts asks the failover judge, and replaces the instances of a host that fenced itself', async () => {
    const w = await observationWorld();
    w.observations.heartbeat(heartbeat('a', { fenced: true }));
    w.observations.sweepHosts();
    await vi.advanceTimersByTimeAsync(0);
    expect(w.judgeSilentHosts).toHaveBeenCalledTimes(1);
    expect(w.book.slot('prod:web:0')).toMatchObject({ phase: 'replace', lastError: { code: 'HOST_ISOLATED' } });
  });
});

describe('Leftovers', () => {
  it('a running copy no record places is stopped and kept, announced once; removed only after the retention', async () => {
    const w = await observationWorld([]);
    w.agents.plant('b', { instanceId: 'prod:web:7', env: 'prod', app: 'web', slot: 7, state: 'running' });
    w.observations.agentList('b', w.listing('b'));
    await vi.advanceTimersByTimeAsync(0);
    expect(w.agents.instancesOn('b')[0]?.state).toBe('stopped');
    expect(w.orphaned().map((e) => e.data)).toEqual([
      expect.objectContaining({ instanceId: 'prod:web:7', host: 'b', reason: 'found where no record places it' }),
    ]);

    w.observations.agentList('b', w.listing('b'));
    await vi.advanceTimersByTimeAsync(RETENTION);
    expect(w.agents.callsOf('remove')).toEqual([]);
    expect(w.orphaned()).toHaveLength(1);

    // kept until the retention's last millisecond
    await vi.advanceTimersByTimeAsync(1);
    w.observations.agentList('b', w.listing('b'));
    await vi.advanceTimersByTimeAsync(0);
    expect(w.agents.callsOf('remove', 'b')).toHaveLength(1);
    expect(w.agents.instancesOn('b')).toEqual([]);
    w.observations.agentList('b', w.listing('b'));
    expect(w.leftovers.keptCount()).toBe(0);
  });

  it('forgets a kept copy its host no longer lists (removed by someone else): the map does not grow with every copy ever seen', async () => {
    const w = await observationWorld([]);
    for (let i = 0; i < 50; i++) w.agents.plant('b', { instanceId: `prod:web:${i}`, env: 'prod', app: 'web', slot: i, state: 'stopped' });
    w.agents.plant('a', { instanceId: 'prod:api:1', env: 'prod', app: 'api', slot: 1, state: 'stopped' });
    w.observations.agentList('b', w.listing('b'));
    w.observations.agentList('a', w.listing('a'));
    expect(w.leftovers.keptCount()).toBe(51);
    // an operator removed b's copies by hand: b's next listing has one left
    w.observations.agentList('b', w.listing('b').slice(0, 1));
    expect(w.leftovers.keptCount()).toBe(2);
    // another host's kept copies are untouched, and nothing was removed by the scheduler
    expect(w.agents.callsOf('remove')).toEqual([]);
    // the copy still listed keeps its original deadline: announced once
    const still = w.listing('b')[0]!.instanceId;
    w.observations.agentList('b', w.listing('b').slice(0, 1));
    await vi.advanceTimersByTimeAsync(0);
    expect(w.orphaned().filter((e) => e.data.instanceId === still)).toHaveLength(1);
  });
});

describe('Observations: public events are hints, only bound replies are facts (issue 13)', () => {
  const factsOf = (hostId: string, over: Partial<HostFacts> = {}): HostFacts => hostFactsOf({ ...heartbeat(hostId), ...over });

  it('a forged host.registered for a phantom host registers nothing (no agent answers on its subject)', async () => {
    const w = await observationWorld();
    expect(await w.observations.confirmRegistration('phantom')).toBe('unreachable');
    expect(w.agents.callsOf('hostGet')).toEqual([{ op: 'hostGet', hostId: 'phantom' }]);
    expect(w.hosts.get('phantom')).toBeUndefined();
    expect([...w.hosts.all()].map((h) => h.id).sort()).toEqual(['a', 'b']);
  });

  it('a forged host.registered for an existing host does not change its capacity: what its own agent answers is registered', async () => {
    const w = await observationWorld();
    // the forger's event would claim 512 CPUs; the scheduler never reads it, it asks host a
    w.agents.facts.set('a', factsOf('a'));
    expect(await w.observations.confirmRegistration('a')).toBe('registered');
    expect(w.hosts.get('a')?.facts.capacity).toEqual({ cpu: 8, memoryMb: 16_384, diskMb: 102_400 });
    expect(w.hosts.inventory().free('a').cpu).toBe(7); // the running slot's CPU, nothing more
  });

  it("an agent's reply naming another host, or malformed, registers nothing", async () => {
    const w = await observationWorld();
    w.agents.facts.set('a', factsOf('b', { capacity: { cpu: 512, memoryMb: 1_048_576, diskMb: 1 } }));
    expect(await w.observations.confirmRegistration('a')).toBe('refused');
    w.agents.facts.set('c', { hostId: 'c', capacity: 'lots' });
    expect(await w.observations.confirmRegistration('c')).toBe('refused');
    expect(w.hosts.get('b')?.facts.capacity.cpu).toBe(8);
    expect(w.hosts.get('c')).toBeUndefined();
  });

  it('a forged host.registered does not keep a silent host alive; its own agent answering does', async () => {
    const w = await observationWorld();
    await vi.advanceTimersByTimeAsync(3_600_001);
    const a = () => w.hosts.get('a')!;
    expect(w.hosts.isSilent(a())).toBe(true);
    expect(await w.observations.confirmRegistration('a')).toBe('unreachable');
    expect(w.hosts.isSilent(a())).toBe(true);
    w.agents.facts.set('a', factsOf('a'));
    expect(await w.observations.confirmRegistration('a')).toBe('registered');
    expect(w.hosts.isSilent(a())).toBe(false);
  });

  it.each(['failed', 'stopped', 'removed'])(
    'a forged instance.%s for a running instance stops, recreates and moves nothing: it only makes the scheduler ask the recorded host',
    async (what) => {
      const w = await observationWorld();
      const before = w.book.slot('prod:web:0');
      w.observations.instanceEvent(what, 'prod:web:0', 'a');
      await vi.advanceTimersByTimeAsync(GRACE + 1_000);
      expect(w.agents.calls).toEqual([{ op: 'get', hostId: 'a', instanceId: 'prod:web:0' }]);
      expect(w.book.slot('prod:web:0')).toBe(before);
      expect(w.kick).not.toHaveBeenCalled();
      expect(w.agents.instancesOn('a')).toMatchObject([{ instanceId: 'prod:web:0', state: 'running' }]);
    },
  );

  it('a forged instance event naming another host than the record, or an unknown instance, asks nobody', async () => {
    const w = await observationWorld();
    w.observations.instanceEvent('removed', 'prod:web:0', 'b');
    w.observations.instanceEvent('failed', 'prod:web:7', 'a');
    await vi.advanceTimersByTimeAsync(GRACE + 1_000);
    expect(w.agents.calls).toEqual([]);
    expect(w.kick).not.toHaveBeenCalled();
  });
});

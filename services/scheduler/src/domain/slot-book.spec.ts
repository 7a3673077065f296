import { describe, expect, it, vi } from 'vitest';
import { HostBook } from './host-book';
import { NotLeaderError } from './ports';
import { SlotBook } from './slot-book';
import { heartbeat } from './testing/factories';
import { InMemorySchedulerStore } from './testing/fakes';
import { appRecord, runningSlot } from './testing/records';

/** The records in memory and their journal: write first, memory after the commit. */

function bookWorld() {
  const store = new InMemorySchedulerStore();
  const hosts = new HostBook(
    3_600_000,
    () => 0,
    () => 0,
  );
  for (const h of ['a', 'b']) hosts.heartbeat(heartbeat(h));
  const deposed = vi.fn<() => void>();
  const book = new SlotBook(store, hosts, deposed);
  return { store, hosts, book, deposed };
}

describe('SlotBook', () => {
  it('loads the journal: apps, slots by app, their reservations (a migration target too) and drained hosts', async () => {
    const w = bookWorld();
    w.store.apps.set('prod:web', appRecord({ spec: { ...appRecord().spec, replicas: 3 } }));
    w.store.slots.set('prod:web:0', runningSlot(0, 'a'));
    w.store.slots.set('prod:web:2', runningSlot(2, 'a', { hold: { by: 'mig-1', target: { hostId: 'b', backend: 'docker' } } }));
    const journal = { apps: [...w.store.apps.values()], slots: [...w.store.slots.values()], drained: ['b'] };
    w.store.load = () => Promise.resolve(journal);
    expect(w.book.loaded).toBe(false);
    expect(await w.book.load()).toEqual({ apps: 1, slots: 2 });
    expect(w.book.loaded).toBe(true);
    expect([...w.book.slotIdsOf('prod:web')].sort()).toEqual(['prod:web:0', 'prod:web:2']);
    expect(w.book.missingSlots('prod:web', 3)).toEqual([1]);
    expect(w.hosts.inventory().free('a').cpu).toBe(6);
    expect(w.hosts.inventory().free('b').cpu).toBe(7); // the target's reservation
    expect(w.hosts.stateOf(w.hosts.get('b')!)).toBe('draining');
    expect(w.book.addressesOn('a')).toEqual([
      { instanceId: 'prod:web:0', ip: '10.0.0.10', vlan: 100 },
      { instanceId: 'prod:web:2', ip: '10.0.0.12', vlan: 100 },
    ]);
    // a target reservation is no address of the target host: the instance is not there yet
    expect(w.book.addressesOn('b')).toEqual([]);
  });

  it('journals an update first and changes memory only after the commit', async () => {
    const w = bookWorld();
    w.store.slots.set('prod:web:0', runningSlot(0, 'a'));
    await w.book.load();
    const s = w.book.slot('prod:web:0')!;
    w.store.failCommits(1);
    await expect(w.book.update(s, { phase: 'remove' })).rejects.toThrow();
    expect(w.book.slot('prod:web:0')).toBe(s);
    const next = await w.book.update(s, { phase: 'remove' }, (n) => [{ area: 'instance', what: 'x', source: 't', subject: n.id, data: { phase: n.phase } }]);
    expect(w.book.slot('prod:web:0')).toBe(next);
    expect(w.store.commits.at(-1)).toEqual({ slots: [next], events: [expect.objectContaining({ data: { phase: 'remove' } })] });
  });

  it('is deposed once when a write finds another leader, and stops', async () => {
    const w = bookWorld();
    await w.book.load();
    w.store.depose();
    await expect(w.book.save({ events: [] })).rejects.toBeInstanceOf(NotLeaderError);
    await expect(w.book.save({ events: [] })).rejects.toBeInstanceOf(NotLeaderError);
    expect(w.deposed).toHaveBeenCalledTimes(1);
    expect(w.book.stopped).toBe(true);
    expect(w.book.writing).toBe(0);
  });

  it('putSlot indexes and reserves a new slot; dropSlot forgets it and gives its host back', async () => {
    const w = bookWorld();
    await w.book.load();
    const s = runningSlot(1, 'b');
    w.book.putSlot(s);
    expect(w.book.slotsOn('b')).toEqual(['prod:web:1']);
    expect(w.hosts.inventory().free('b').cpu).toBe(7);
    w.book.dropSlot(s);
    expect(w.book.slot(s.id)).toBeUndefined();
    expect([...w.book.slotIdsOf('prod:web')]).toEqual([]);
    expect(w.hosts.inventory().free('b').cpu).toBe(8);
  });
});

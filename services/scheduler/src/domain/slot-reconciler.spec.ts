import { describe, expect, it, vi } from 'vitest';
import { HostBook } from './host-book';
import type { AppRecord, SlotRecord } from './model';
import { SchedulerEvents } from './scheduler-events';
import { SlotBook } from './slot-book';
import { SlotReconciler, type AppLevel } from './slot-reconciler';
import { heartbeat } from './testing/factories';
import { FakeAgents, FakeIpam, InMemorySchedulerStore, MemoryLog, permanentError, transientError } from './testing/fakes';
import { appRecord, runningSlot } from './testing/records';
import { DONE, requeue, terminal } from './work-queue';

/**
 * One slot's steps and the Result each returns, with the app level (RequestJudge) and the
 * leftovers replaced by spies. Steps are taken one at a time with `step`, or until the slot
 * must wait with `reconcile`, the work queue's worker.
 */

async function reconcilerWorld(opts: { app?: AppRecord; slots?: SlotRecord[]; hosts?: string[] } = {}) {
  const store = new InMemorySchedulerStore();
  store.apps.set('prod:web', opts.app ?? appRecord());
  for (const s of opts.slots ?? []) store.slots.set(s.id, s);
  const hosts = new HostBook(
    3_600_000,
    () => 0,
    () => 0,
  );
  for (const h of opts.hosts ?? ['a', 'b']) hosts.heartbeat(heartbeat(h));
  const book = new SlotBook(store, hosts, () => undefined);
  await book.load();
  const ipam = new FakeIpam().addPool('prod-pool', 100);
  const agents = new FakeAgents();
  const apps = {
    rejectPending: vi.fn<AppLevel['rejectPending']>(async () => undefined),
    reconcileApp: vi.fn<AppLevel['reconcileApp']>(async () => undefined),
    checkAppSoon: vi.fn<AppLevel['checkAppSoon']>(),
  };
  const leftovers = { keep: vi.fn() };
  const reconciler = new SlotReconciler(
    book,
    hosts,
    apps,
    leftovers,
    new SchedulerEvents('test'),
    { ipam, agents, log: new MemoryLog(), proberFor: () => undefined },
    { policy: 'binpack', startAttempts: 2 },
  );
  return { store, hosts, book, ipam, agents, apps, leftovers, reconciler };
}

/** A slot to be created on `hostId` (its first attempt), or placed first when null. */
const toCreate = (slot: number, hostId: string | null, over: Partial<SlotRecord> = {}): SlotRecord =>
  runningSlot(slot, hostId ?? 'x', {
    state: 'placed',
    phase: 'create',
    hostId,
    backend: hostId ? 'docker' : null,
    ip: null,
    mac: null,
    attempts: hostId ? 1 : 0,
    ...over,
  });

describe('SlotReconciler', () => {
  it('creates a placed slot: allocate, create, bind, running, done', async () => {
    const w = await reconcilerWorld({ slots: [toCreate(0, 'a')] });
    expect(await w.reconciler.step('prod:web:0')).toEqual(DONE);
    expect(w.book.slot('prod:web:0')).toMatchObject({ state: 'running', phase: null, hostId: 'a', ip: '10.0.0.10' });
    expect(w.ipam.allocations.get('10.0.0.10')).toMatchObject({ state: 'bound', host: 'a' });
    expect(w.apps.checkAppSoon).toHaveBeenCalledWith('prod:web');
  });

  it('places an unplaced slot first and takes the next step at once', async () => {
    const w = await reconcilerWorld({ slots: [toCreate(0, null)] });
    expect(await w.reconciler.step('prod:web:0')).toEqual(requeue(0));
    expect(w.book.slot('prod:web:0')).toMatchObject({ hostId: expect.any(String), attempts: 1 });
    expect(w.store.eventsOf('instance', 'placed')).toHaveLength(1);
  });

  it('waits with backoff when ipam is away for a moment', async () => {
    const w = await reconcilerWorld({ slots: [toCreate(0, 'a')] });
    w.ipam.fail({ op: 'allocate' }, () => transientError(), 1);
    // 500 ms * 2^attempts
    expect(await w.reconciler.step('prod:web:0')).toEqual(requeue(1_000));
  });

  it('a start that fails on a host frees it and tries elsewhere after a short backoff', async () => {
    const w = await reconcilerWorld({ slots: [toCreate(0, 'a')] });
    w.agents.fail({ op: 'create', hostId: 'a' }, () => permanentError());
    expect(await w.reconciler.step('prod:web:0')).toEqual(requeue(400));
    expect(w.book.slot('prod:web:0')).toMatchObject({ hostId: null, tried: ['a'], lastError: { code: 'START_FAILED', host: 'a' } });
    expect(w.hosts.get('a')!.placed.size).toBe(0);
  });

  it('an unplaceable slot of a completed app looks again in 5 s; of a pending request it rejects the request', async () => {
    const full = { ...appRecord().spec, resources: { cpu: 64, memoryMb: 1024 } };
    const w = await reconcilerWorld({ app: appRecord({ spec: full }), slots: [toCreate(0, null)] });
    expect(await w.reconciler.step('prod:web:0')).toEqual(requeue(5_000));
    expect(w.apps.rejectPending).not.toHaveBeenCalled();

    const p = await reconcilerWorld({ app: appRecord({ spec: full, outcome: 'pending', requestId: 'req-2' }), slots: [toCreate(0, null)] });
    expect(await p.reconciler.step('prod:web:0')).toEqual(requeue(0));
    expect(p.apps.rejectPending).toHaveBeenCalledWith(
      'prod:web',
      'req-2',
      'INSUFFICIENT_CAPACITY',
      expect.stringContaining('no host can take'),
      expect.objectContaining({ slot: 0 }),
    );
  });

  it('a slot out of its attempts fails and is looked at again in 30 s (completed app)', async () => {
    const w = await reconcilerWorld({ slots: [toCreate(0, null, { attempts: 2, tried: ['a', 'b'] })] });
    expect(await w.reconciler.step('prod:web:0')).toEqual(requeue(30_000));
    expect(w.book.slot('prod:web:0')).toMatchObject({ state: 'failed', attempts: 0, tried: [] });
  });

  it('removes a slot nobody wants any more: phase first, then off its host, IP back, record gone', async () => {
    const w = await reconcilerWorld({ app: appRecord({ spec: { ...appRecord().spec, replicas: 0 } }), slots: [runningSlot(0, 'a')] });
    await w.ipam.allocate('prod-pool', { env: 'prod', app: 'web', slot: 0 });
    expect(await w.reconciler.step('prod:web:0')).toEqual(requeue(0));
    expect(w.store.slots.get('prod:web:0')?.phase).toBe('remove');
    expect(await w.reconciler.step('prod:web:0')).toEqual(DONE);
    expect(w.book.slot('prod:web:0')).toBeUndefined();
    expect(w.store.slots.has('prod:web:0')).toBe(false);
    expect(w.ipam.live()).toEqual([]);
    expect(w.agents.callsOf('remove', 'a')).toHaveLength(1);
    expect(w.apps.checkAppSoon).toHaveBeenCalledWith('prod:web');
  });

  it('replaces a failed copy: stopped and kept where it was, then created elsewhere', async () => {
    const w = await reconcilerWorld({ slots: [runningSlot(0, 'a', { phase: 'replace', state: 'failed' })] });
    w.agents.plant('a', { instanceId: 'prod:web:0', env: 'prod', app: 'web', slot: 0, state: 'failed' });
    expect(await w.reconciler.step('prod:web:0')).toEqual(requeue(0));
    expect(w.book.slot('prod:web:0')).toMatchObject({ phase: 'create', hostId: null, tried: ['a'], ip: '10.0.0.10' });
    expect(w.leftovers.keep).toHaveBeenCalledWith('a', 'prod:web:0', 'docker', expect.any(String), 'replaced elsewhere');
    expect(await w.reconciler.reconcile('prod:web:0')).toEqual(DONE);
    expect(w.book.slot('prod:web:0')).toMatchObject({ state: 'running', hostId: 'b' });
  });

  it('leaves a slot held by a migration alone', async () => {
    const w = await reconcilerWorld({ slots: [toCreate(0, 'a', { hold: { by: 'mig-1' } })] });
    expect(await w.reconciler.reconcile('prod:web:0')).toEqual(DONE);
    expect(w.agents.calls).toEqual([]);
    expect(w.ipam.calls).toEqual([]);
  });

  it('reconcile steps until the slot must wait, and stops for good when this replica was deposed', async () => {
    const w = await reconcilerWorld({ slots: [toCreate(0, null)] });
    expect(await w.reconciler.reconcile('prod:web:0')).toEqual(DONE);
    expect(w.book.slot('prod:web:0')?.state).toBe('running');

    const d = await reconcilerWorld({ slots: [toCreate(0, null)] });
    d.store.depose();
    expect(await d.reconciler.reconcile('prod:web:0')).toEqual(terminal('deposed'));
    expect(d.book.stopped).toBe(true);
  });

  it('rethrows what it cannot classify, for the work queue to retry with backoff', async () => {
    const w = await reconcilerWorld({ slots: [toCreate(0, 'a')] });
    w.store.failCommits(5);
    await expect(w.reconciler.reconcile('prod:web:0')).rejects.toThrow('database connection lost');
  });
});

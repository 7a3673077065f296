import { describe, expect, it } from 'vitest';
import { LeaderLease, leaseTiming, type LeaseRow, type LeaseStore } from './leader-lease';
import { ManualClock, MemoryLog } from './testing/fakes';

/** The lease row in memory, with the adapter's semantics (compare-and-set on epoch and counter). */
class MemoryLeaseStore implements LeaseStore {
  row: LeaseRow = { holder: null, epoch: 0, counter: 0 };
  /** every call throws while set (the database unreachable) */
  down = false;
  async read(): Promise<LeaseRow> {
    this.check();
    return { ...this.row };
  }
  async renew(epoch: number): Promise<boolean> {
    this.check();
    if (this.row.epoch !== epoch) return false;
    this.row.counter++;
    return true;
  }
  async takeOver(seen: LeaseRow, me: string): Promise<boolean> {
    this.check();
    const r = this.row;
    if (r.epoch !== seen.epoch || r.counter !== seen.counter || r.holder !== seen.holder) return false;
    this.row = { holder: me, epoch: r.epoch + 1, counter: 0 };
    return true;
  }
  async release(epoch: number): Promise<void> {
    this.check();
    if (this.row.epoch === epoch) this.row = { ...this.row, holder: null, counter: this.row.counter + 1 };
  }
  /** A journal write fenced like the MySQL store's: refused unless the row holds `epoch`. */
  write(epoch: number | undefined): boolean {
    if (epoch === undefined || this.row.epoch !== epoch) return false;
    this.row.counter++;
    return true;
  }
  private check(): void {
    if (this.down) throw new Error('connect ETIMEDOUT');
  }
}

const timing = leaseTiming(3); // lease 3 s, renew 1 s, step down 2.5 s, poll 0.5 s

function replica(store: MemoryLeaseStore, clock: ManualClock, name: string) {
  const events: string[] = [];
  const log = new MemoryLog();
  const lease = new LeaderLease(
    store,
    name,
    timing,
    clock,
    {
      elected: async (epoch) => void events.push(`elected ${epoch}`),
      deposed: async (reason) => void events.push(`deposed: ${reason}`),
    },
    log,
  );
  return { lease, events, log };
}

/** Lets queued hooks run (they are chained promises). */
const settle = () => new Promise((r) => setTimeout(r, 0));

/** Runs `who`'s steps at their own pace for `ms` of the manual clock, in 100 ms ticks. */
async function run(clock: ManualClock, ms: number, ...who: { lease: LeaderLease; next?: number }[]): Promise<void> {
  for (const w of who) w.next ??= clock.now();
  for (let t = 0; t < ms; t += 100) {
    for (const w of who) {
      w.lease.checkDeadline();
      if (clock.now() >= w.next!) {
        await w.lease.step();
        w.next = clock.now() + w.lease.nextStepMs;
      }
    }
    await settle();
    clock.advance(100);
  }
}

describe('leader lease', () => {
  it('a free lease is taken at once, and the leader may write in its epoch', async () => {
    const store = new MemoryLeaseStore();
    const clock = new ManualClock(0);
    const a = replica(store, clock, 'a');
    await a.lease.step();
    await settle();
    expect(a.events).toEqual(['elected 1']);
    expect(store.row).toMatchObject({ holder: 'a', epoch: 1 });
    expect(a.lease.validEpoch()).toBe(1);
    expect(store.write(a.lease.validEpoch())).toBe(true);
  });

  it('a candidate takes over only after the counter stood still for a whole lease', async () => {
    const store = new MemoryLeaseStore();
    const clock = new ManualClock(0);
    const a = { ...replica(store, clock, 'a') };
    const b = { ...replica(store, clock, 'b') };
    await a.lease.step();
    await settle();
    // a renews for 10 s: b never takes over
    await run(clock, 10_000, a, b);
    expect(b.events).toEqual([]);
    expect(store.row.holder).toBe('a');
    // a dies (stops renewing): b waits a lease from the last change it saw, no less
    const diedAt = clock.now();
    let tookOverAt: number | undefined;
    for (let t = 0; t < 10_000 && tookOverAt === undefined; t += 100) {
      await run(clock, 100, b);
      if (store.row.holder === 'b') tookOverAt = clock.now();
    }
    expect(tookOverAt).toBeDefined();
    expect(tookOverAt! - diedAt).toBeGreaterThanOrEqual(timing.leaseMs - timing.renewMs);
    expect(tookOverAt! - diedAt).toBeLessThanOrEqual(timing.leaseMs + 2 * timing.pollMs + 100);
    await settle();
    expect(b.events).toEqual(['elected 2']);
  });

  it('a leader that cannot renew steps down before any candidate can take over', async () => {
    const store = new MemoryLeaseStore();
    const clock = new ManualClock(0);
    const a = { ...replica(store, clock, 'a') };
    await a.lease.step();
    await settle();
    await run(clock, 3_000, a);
    const lastRenewal = clock.now() - 100; // run() advanced once past the last step
    // a candidate that saw the last renewal at the earliest possible moment
    const b = { ...replica(store, clock, 'b') };
    await b.lease.step();
    const bSawAt = clock.now();
    // the database goes away for a only (b keeps reading the row as it stands)
    const aStore = a.lease as unknown as { store: MemoryLeaseStore };
    const cut = new MemoryLeaseStore();
    cut.down = true;
    aStore.store = cut;
    let aStoppedAt: number | undefined;
    let bLeadsAt: number | undefined;
    for (let t = 0; t < 10_000 && bLeadsAt === undefined; t += 100) {
      await run(clock, 100, a, b);
      if (aStoppedAt === undefined && a.lease.validEpoch() === undefined) aStoppedAt = clock.now();
      if (store.row.holder === 'b') bLeadsAt = clock.now();
    }
    expect(aStoppedAt).toBeDefined();
    expect(bLeadsAt).toBeDefined();
    expect(aStoppedAt!).toBeLessThan(bLeadsAt!);
    expect(aStoppedAt! - lastRenewal).toBeLessThanOrEqual(timing.stepDownMs + 100);
    expect(bLeadsAt! - bSawAt).toBeGreaterThanOrEqual(timing.leaseMs);
    expect(a.events).toEqual(['elected 1', 'deposed: the lease was not renewed in time']);
    expect(a.log.lines.some((l) => l.msg === 'no longer the scheduler leader')).toBe(true);
  });

  it("a deposed leader's write is refused, locally and by the row's epoch", async () => {
    const store = new MemoryLeaseStore();
    const clock = new ManualClock(0);
    const a = replica(store, clock, 'a');
    await a.lease.step();
    await settle();
    const epoch = a.lease.validEpoch();
    expect(epoch).toBe(1);
    // frozen for longer than the lease (SIGSTOP): no timer ran, someone else took over
    clock.advance(timing.leaseMs + 1_000);
    store.row = { holder: 'b', epoch: 2, counter: 0 };
    // on resume, before its step-down timer ran: the lease itself says no
    expect(a.lease.validEpoch()).toBeUndefined();
    // and a write already carrying the old epoch is refused by the row
    expect(store.write(epoch)).toBe(false);
    await settle();
    expect(a.events).toEqual(['elected 1', 'deposed: the lease was not renewed in time']);
  });

  it('a renewal that finds another epoch steps down at once', async () => {
    const store = new MemoryLeaseStore();
    const clock = new ManualClock(0);
    const a = replica(store, clock, 'a');
    await a.lease.step();
    await settle();
    store.row = { holder: 'b', epoch: 2, counter: 0 };
    await a.lease.step();
    await settle();
    expect(a.lease.validEpoch()).toBeUndefined();
    expect(a.events).toEqual(['elected 1', 'deposed: another replica holds the lease']);
  });

  it('a slow renewal counts from its start: one that took longer than the step-down time does not extend the lease', async () => {
    const store = new MemoryLeaseStore();
    const clock = new ManualClock(0);
    const a = replica(store, clock, 'a');
    await a.lease.step();
    await settle();
    const slow = store.renew.bind(store);
    store.renew = async (e) => {
      clock.advance(timing.stepDownMs + 10);
      return slow(e);
    };
    await a.lease.step();
    await settle();
    expect(a.lease.validEpoch()).toBeUndefined();
    expect(a.events.at(-1)).toBe('deposed: the lease was not renewed in time');
  });

  it('of two candidates that saw the same expired row, exactly one takes over', async () => {
    const store = new MemoryLeaseStore();
    store.row = { holder: 'dead', epoch: 7, counter: 42 };
    const clock = new ManualClock(0);
    const b = { ...replica(store, clock, 'b') };
    const c = { ...replica(store, clock, 'c') };
    await run(clock, timing.leaseMs + 2 * timing.pollMs + 200, b, c);
    await settle();
    const leaders = [b, c].filter((r) => r.events.includes('elected 8'));
    expect(leaders).toHaveLength(1);
    expect(store.row.epoch).toBe(8);
  });

  it('a clean stop frees the lease: the next replica takes it without waiting a lease', async () => {
    const store = new MemoryLeaseStore();
    const clock = new ManualClock(0);
    const a = replica(store, clock, 'a');
    const b = replica(store, clock, 'b');
    await a.lease.step();
    await settle();
    await b.lease.step(); // sees a's lease
    await a.lease.stop();
    expect(store.row.holder).toBeNull();
    expect(a.events).toEqual(['elected 1', 'deposed: shutting down']);
    clock.advance(timing.pollMs);
    await b.lease.step();
    await settle();
    expect(b.events).toEqual(['elected 2']);
  });

  it('a leader that stepped down after a database hiccup takes its lease back at once when nobody else did', async () => {
    const store = new MemoryLeaseStore();
    const clock = new ManualClock(0);
    const a = replica(store, clock, 'a');
    await a.lease.step();
    await settle();
    store.down = true;
    clock.advance(timing.stepDownMs);
    a.lease.checkDeadline();
    await settle();
    store.down = false;
    await a.lease.step();
    await settle();
    expect(store.row).toMatchObject({ holder: 'a', epoch: 2 });
    expect(a.events).toEqual(['elected 1', 'deposed: the lease was not renewed in time', 'elected 2']);
  });

  it('writes are refused until the elected hook has been called, and from the moment of stepping down', async () => {
    const store = new MemoryLeaseStore();
    const clock = new ManualClock(0);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const seenInHook: (number | undefined)[] = [];
    const lease: LeaderLease = new LeaderLease(
      store,
      'a',
      timing,
      clock,
      {
        elected: async () => {
          seenInHook.push(lease.validEpoch());
          await gate;
        },
        deposed: async () => undefined,
      },
      new MemoryLog(),
    );
    // inside the elected hook the epoch is already valid (the core loads and writes from there)
    await lease.step();
    await settle();
    expect(seenInHook).toEqual([1]);
    void lease.stepDown('test');
    expect(lease.validEpoch()).toBeUndefined();
    release();
    await settle();
  });
});

import type { Clock, CoreLog } from './ports';

/**
 * Leadership among scheduler replicas as an expiring lease on one database row
 * (`sched_leader`): the holder renews it by bumping `counter`; a candidate that has seen
 * `(epoch, counter)` stand still for a whole lease on its own monotonic clock takes it
 * over with a compare-and-set that bumps `epoch`. No wall clocks are compared across
 * machines (database nodes' and replicas' clocks differ), no named lock is involved (a
 * named lock outlives a partitioned holder for as long as the server keeps its dead
 * connection, and on Galera it is per node).
 *
 * Why it is safe (times on the real timeline, clocks running at the same rate):
 * - a renewal that STARTED at t0 and succeeded lets the leader act until
 *   t0 + stepDownMs (< leaseMs);
 * - a candidate can only see the renewed counter in a read that ended after t0, so it
 *   starts its lease-long wait after t0 and cannot take over before t0 + leaseMs;
 * - the leader therefore stops acting (stepDownMs) strictly before any takeover, even when
 *   frozen (SIGSTOP) or cut off without a FIN: its writes are refused locally once the
 *   deadline has passed (`validEpoch`), and by the database (every journal transaction
 *   writes the lease row under its epoch) for anything already in flight.
 */
export interface LeaseRow {
  holder: string | null;
  epoch: number;
  counter: number;
}

/** The lease row's storage. Every method is one atomic statement (or a bounded retry of one). */
export interface LeaseStore {
  read(): Promise<LeaseRow>;
  /** `counter + 1` where the epoch is `epoch`; false when another epoch holds the row. */
  renew(epoch: number): Promise<boolean>;
  /** `holder = me, epoch + 1, counter = 0` only where the row still is `seen`; true when won. */
  takeOver(seen: LeaseRow, me: string): Promise<boolean>;
  /** `holder = NULL` where the epoch is `epoch` (a clean shutdown: the next replica need not wait). */
  release(epoch: number): Promise<void>;
}

export interface LeaseTiming {
  /** a candidate takes over after the row stood still this long */
  leaseMs: number;
  /** how often the leader renews */
  renewMs: number;
  /** the leader stops acting this long after the start of its last successful renewal */
  stepDownMs: number;
  /** how often a candidate reads the row */
  pollMs: number;
}

/**
 * The timings for a lease of `leaseSeconds`: renew three times a lease, step down at 5/6
 * of it (two failed renewals), poll six times a lease. With 3 s a dead leader is replaced
 * within lease + two polls (about 4 s) and the leader yields 0.5 s before anyone can take over.
 */
export function leaseTiming(leaseSeconds: number): LeaseTiming {
  const leaseMs = leaseSeconds * 1000;
  return { leaseMs, renewMs: leaseMs / 3, stepDownMs: (leaseMs * 5) / 6, pollMs: leaseMs / 6 };
}

export interface LeaseHooks {
  /** this replica leads now, in `epoch`; resolves once it has started leading */
  elected(epoch: number): Promise<void>;
  /** it does not any more; resolves once every leader activity has stopped */
  deposed(reason: string): Promise<void>;
}

export class LeaderLease {
  private role: 'follower' | 'leader' = 'follower';
  private epoch: number | undefined;
  /** the epoch whose leader activities run (set once `elected` is called, cleared at once on step-down) */
  private activeEpoch: number | undefined;
  /** monotonic time until which the leader may act */
  private validUntil = 0;
  /** the row as a candidate first saw it, and when (monotonic, at the end of that read) */
  private seen: { row: LeaseRow; at: number } | undefined;
  private campaignNotBefore = 0;
  /** elected/deposed run one after the other, never overlapping */
  private transitions: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly store: LeaseStore,
    private readonly me: string,
    private readonly timing: LeaseTiming,
    private readonly clock: Clock,
    private readonly hooks: LeaseHooks,
    private readonly log: CoreLog,
  ) {}

  get isLeader(): boolean {
    return this.validEpoch() !== undefined;
  }

  /** When the next step is due (ms): the leader renews, a candidate polls. */
  get nextStepMs(): number {
    return this.role === 'leader' ? this.timing.renewMs : this.timing.pollMs;
  }

  /** How long until the leader's deadline (for a timer that steps it down on time). */
  msUntilDeadline(): number | undefined {
    return this.role === 'leader' ? Math.max(0, this.validUntil - this.clock.now()) : undefined;
  }

  /**
   * The epoch to fence writes with, or undefined when this replica must not write: not
   * leading, not yet started leading, or past its deadline. Checked synchronously before
   * every write, so a replica resumed after a freeze refuses its writes even before its
   * step-down timer had a chance to run.
   */
  validEpoch(): number | undefined {
    if (this.role !== 'leader' || this.activeEpoch === undefined) return undefined;
    if (this.clock.now() >= this.validUntil) {
      void this.stepDown('the lease was not renewed in time');
      return undefined;
    }
    return this.activeEpoch;
  }

  /** One round: the leader renews, a follower campaigns. */
  async step(): Promise<void> {
    if (this.stopped) return;
    if (this.role === 'leader') await this.renew();
    else await this.campaign();
  }

  /** Steps down when the deadline has passed (the runtime's timer calls this on time). */
  checkDeadline(): void {
    if (this.role === 'leader' && this.clock.now() >= this.validUntil) void this.stepDown('the lease was not renewed in time');
  }

  /** Stops leading (at once: writes are refused from now on) and runs the deposed hook. */
  stepDown(reason: string): Promise<void> {
    if (this.role !== 'leader') return this.transitions;
    const epoch = this.epoch;
    this.role = 'follower';
    this.activeEpoch = undefined;
    this.seen = undefined;
    this.log.warn({ epoch, reason }, 'no longer the scheduler leader');
    return this.enqueue(() => this.hooks.deposed(reason));
  }

  /** Stops campaigning; a leader steps down and frees the lease so another replica need not wait. */
  async stop(): Promise<void> {
    this.stopped = true;
    const epoch = this.role === 'leader' ? this.epoch : undefined;
    await this.stepDown('shutting down');
    await this.transitions;
    if (epoch !== undefined) await this.store.release(epoch).catch((err: unknown) => this.log.warn({ err: String(err) }, 'could not free the leader lease'));
  }

  private async renew(): Promise<void> {
    const epoch = this.epoch!;
    const started = this.clock.now();
    let ok: boolean;
    try {
      ok = await this.store.renew(epoch);
    } catch (err) {
      this.log.warn({ epoch, err: String(err) }, 'could not renew the leader lease');
      this.checkDeadline();
      return;
    }
    if (this.role !== 'leader' || this.epoch !== epoch) return; // stepped down meanwhile: a late success changes nothing
    if (!ok) {
      await this.stepDown('another replica holds the lease');
      return;
    }
    // From the START of the renewal: a candidate may have read the old counter just before it.
    this.validUntil = Math.max(this.validUntil, started + this.timing.stepDownMs);
    this.checkDeadline();
  }

  private async campaign(): Promise<void> {
    const now0 = this.clock.now();
    if (now0 < this.campaignNotBefore) return;
    let row: LeaseRow;
    try {
      row = await this.store.read();
    } catch (err) {
      this.log.debug({ err: String(err) }, 'could not read the leader lease');
      return;
    }
    // The END of the read: the row may have been renewed at any time before it.
    const now = this.clock.now();
    if (!this.seen || !sameRow(this.seen.row, row)) this.seen = { row, at: now };
    // Free (released), or still ours from a term this replica gave up without anyone
    // taking it since: the compare-and-set alone decides, nobody's lease can be running.
    const free = row.holder === null || row.holder === this.me;
    if (!free && now - this.seen.at < this.timing.leaseMs) return;
    const started = this.clock.now();
    let won: boolean;
    try {
      won = await this.store.takeOver(row, this.me);
    } catch (err) {
      this.log.debug({ err: String(err) }, 'leader takeover failed; retrying');
      return;
    }
    this.seen = undefined;
    if (!won || this.stopped) return;
    const epoch = row.epoch + 1;
    this.role = 'leader';
    this.epoch = epoch;
    this.validUntil = started + this.timing.stepDownMs;
    this.log.info({ epoch, previous: row.holder }, 'elected scheduler leader');
    void this.enqueue(async () => {
      if (this.role !== 'leader' || this.epoch !== epoch) return;
      this.activeEpoch = epoch;
      try {
        await this.hooks.elected(epoch);
      } catch (err) {
        this.log.warn({ err: String(err) }, 'could not start leading; stepping down');
        this.campaignNotBefore = this.clock.now() + this.timing.leaseMs;
        void this.stepDown('start failed');
      }
    });
  }

  private enqueue(work: () => Promise<void>): Promise<void> {
    this.transitions = this.transitions.then(work).catch((err: unknown) => this.log.warn({ err: String(err) }, 'leadership change failed'));
    return this.transitions;
  }
}

const sameRow = (a: LeaseRow, b: LeaseRow): boolean => a.epoch === b.epoch && a.counter === b.counter && a.holder === b.holder;

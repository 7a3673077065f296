import { OrangeryError, type Reply } from '@orangery/contracts';

/**
 * Group commit for single requests (docs/ipam.md "Group commit"): concurrent single
 * `allocate` (or `bind`, or `release`) requests on one replica share one transaction, as
 * `allocate.batch` items do, and each is answered exactly as its single would be.
 *
 * - No added latency at low load: a request starts a group at once while fewer than
 *   `maxInFlight` groups of its kind run. Only when they all run do requests queue, and the
 *   next group takes whatever queued meanwhile (up to `maxSize`, in arrival order).
 * - A group of one runs the single path itself.
 * - Item errors (POOL_EXHAUSTED, IP_TAKEN, ...) are that item's answer only. A failure of
 *   the group's transaction: `UNAVAILABLE` (the database is unreachable; nothing of the
 *   group committed) is every item's answer; anything else (a bug) reruns every item alone
 *   as a single, so one bad item never fails the others.
 */
export interface GroupLimits {
  /** requests in one transaction at most */
  maxSize: number;
  /** groups of one kind running at once (each is one database transaction) */
  maxInFlight: number;
}

export const DEFAULT_GROUP_LIMITS: GroupLimits = { maxSize: 64, maxInFlight: 2 };

interface Waiting<T, R> {
  item: T;
  resolve: (r: R) => void;
  reject: (e: unknown) => void;
}

export class GroupCommitter<T, R> {
  private readonly queue: Waiting<T, R>[] = [];
  private inFlight = 0;
  /** groups run so far and requests they served (tests, metrics) */
  groups = 0;
  served = 0;

  constructor(
    /**
     * the items as one transaction: one reply per item, in item order. `committed` frees the
     * group's slot once its transaction committed: the next group may start while this one
     * still waits for its events' acks (the replies wait for them, as singles do).
     */
    private readonly runGroup: (items: T[], committed: () => void) => Promise<Reply<R>[]>,
    /** one item alone: the single request's path (throws its error); `committed` as for runGroup */
    private readonly runOne: (item: T, committed?: () => void) => Promise<R>,
    private readonly limits: GroupLimits = DEFAULT_GROUP_LIMITS,
  ) {}

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.limits.maxInFlight && this.queue.length > 0) {
      const group = this.queue.splice(0, Math.max(1, this.limits.maxSize));
      this.inFlight++;
      this.groups++;
      this.served += group.length;
      let freed = false;
      const free = () => {
        if (freed) return;
        freed = true;
        this.inFlight--;
        this.pump();
      };
      void this.run(group, free).finally(free);
    }
  }

  private async run(group: Waiting<T, R>[], free: () => void): Promise<void> {
    if (group.length === 1) {
      const [w] = group as [Waiting<T, R>];
      await this.runOne(w.item, free).then(w.resolve, w.reject);
      return;
    }
    let replies: Reply<R>[];
    try {
      replies = await this.runGroup(
        group.map((w) => w.item),
        free,
      );
      if (replies.length !== group.length) throw new Error(`group of ${group.length} answered ${replies.length} replies`);
    } catch (e) {
      if (e instanceof OrangeryError && e.code === 'UNAVAILABLE') {
        for (const w of group) w.reject(e);
        return;
      }
      // Not the database: rerun each alone, so whatever failed fails only its own request.
      await Promise.all(group.map((w) => this.runOne(w.item).then(w.resolve, w.reject)));
      return;
    }
    group.forEach((w, i) => {
      const r = replies[i]!;
      if (r.ok) w.resolve(r.data);
      else w.reject(new OrangeryError(r.error.code, r.error.message, r.error.details));
    });
  }
}

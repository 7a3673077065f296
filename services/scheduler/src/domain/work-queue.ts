import { Semaphore } from './sync';

/**
 * What a worker says happens next, as controller-runtime's reconcile Result does:
 * - `done`: converged (or nothing to do); only a new kick runs the key again.
 * - `requeue` after `afterMs`: look again later (0: at once, after this run ends).
 * - `terminal`: stop and do not retry (controller-runtime's TerminalError); e.g. this
 *   replica was deposed and must not write again.
 * A worker that throws is retried with per-key exponential backoff.
 */
export type Result =
  { readonly kind: 'done' } | { readonly kind: 'requeue'; readonly afterMs: number } | { readonly kind: 'terminal'; readonly reason: string };

export const DONE: Result = { kind: 'done' };
export const requeue = (afterMs = 0): Result => ({ kind: 'requeue', afterMs });
export const terminal = (reason: string): Result => ({ kind: 'terminal', reason });

export interface BackoffPolicy {
  /** the first retry after a failure */
  readonly baseMs: number;
  /** never longer than this, however many failures in a row */
  readonly maxMs: number;
}

/** The first retry comes after a second, as the fixed retry before it; then 2 s, 4 s... up to 30 s. */
export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 1_000, maxMs: 30_000 };

/** Delay before retry number `failures` (1 = the first failure in a row). */
export const backoffDelay = (failures: number, policy: BackoffPolicy = DEFAULT_BACKOFF): number =>
  Math.min(policy.baseMs * 2 ** Math.min(Math.max(0, failures - 1), 30), policy.maxMs);

export interface WorkQueueOptions<K> {
  /** the reconcile: reads the key's current state and does the next thing */
  readonly worker: (key: K) => Promise<Result>;
  /** keys worked on at once (different keys); one key never has two workers */
  readonly concurrency: number;
  readonly backoff?: BackoffPolicy;
  /** a worker threw: it runs again after `retryInMs` (for logging; the queue decides nothing on it) */
  readonly onError?: (key: K, error: unknown, retryInMs: number) => void;
  /** a worker returned `terminal`: the key is dropped until kicked again */
  readonly onTerminal?: (key: K, reason: string) => void;
}

/**
 * A keyed work queue (controller-runtime's workqueue, small): a request carries only the
 * key, never the event behind it, so duplicate kicks are harmless.
 *
 * - One worker per key at a time: a kick for a key that is being worked on marks it to run
 *   once more when the current run ends (a change made during the run is never missed).
 * - A delayed kick for a key that already has a timer is dropped: the earlier timer runs it.
 * - A run that throws is retried after a per-key exponential backoff, reset by the next run
 *   that does not throw.
 */
export class WorkQueue<K = string> {
  private readonly limit: Semaphore;
  private readonly running = new Set<K>();
  private readonly again = new Set<K>();
  private readonly timers = new Map<K, NodeJS.Timeout>();
  private readonly failures = new Map<K, number>();
  private stopped = false;

  constructor(private readonly options: WorkQueueOptions<K>) {
    this.limit = new Semaphore(options.concurrency);
  }

  /** Runs the key's worker now (or after `delayMs`). */
  kick(key: K, delayMs = 0): void {
    if (this.stopped) return;
    if (delayMs > 0) {
      if (!this.timers.has(key)) {
        this.timers.set(
          key,
          setTimeout(() => {
            this.timers.delete(key);
            this.kick(key);
          }, delayMs),
        );
      }
      return;
    }
    if (this.running.has(key)) {
      this.again.add(key);
      return;
    }
    this.run(key);
  }

  /** One run of the key's worker (the key is not running): then what its Result, or its failure, asks. */
  private run(key: K): void {
    this.running.add(key);
    void this.limit
      .run(() => this.options.worker(key))
      .then(
        (result) => {
          this.failures.delete(key);
          if (result.kind === 'requeue') this.kick(key, result.afterMs);
          else if (result.kind === 'terminal') this.options.onTerminal?.(key, result.reason);
        },
        (e: unknown) => {
          const failures = (this.failures.get(key) ?? 0) + 1;
          this.failures.set(key, failures);
          const retryInMs = backoffDelay(failures, this.options.backoff);
          this.options.onError?.(key, e, retryInMs);
          this.kick(key, retryInMs);
        },
      )
      .finally(() => {
        this.running.delete(key);
        if (this.again.delete(key)) this.kick(key);
      });
  }

  /** Whether a worker is running for the key right now. */
  isRunning(key: K): boolean {
    return this.running.has(key);
  }

  /** Workers running now (stop waits for none). */
  get busy(): number {
    return this.running.size;
  }

  /** Takes no new work and cancels pending timers; running workers finish on their own. */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}

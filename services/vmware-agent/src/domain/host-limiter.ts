import { OrangeryError } from '@orangery/contracts';

/**
 * Bounds vCenter work per ESXi host: at most `inFlight` tasks run at once on a host, at
 * most `queued` wait behind them; beyond that a command is refused at once (UNAVAILABLE,
 * retryable) rather than queued without bound. Waiting is in arrival order.
 */
export class HostLimiter {
  private readonly running = new Map<string, number>();
  private readonly waiting = new Map<string, (() => void)[]>();

  constructor(
    readonly inFlight: number,
    readonly queued: number,
  ) {
    if (inFlight < 1) throw new Error('inFlight must be at least 1');
  }

  async run<T>(hostId: string, work: () => Promise<T>): Promise<T> {
    await this.acquire(hostId);
    try {
      return await work();
    } finally {
      this.release(hostId);
    }
  }

  /** Tasks running and waiting on a host (for logs and tests). */
  load(hostId: string): { running: number; waiting: number } {
    return { running: this.running.get(hostId) ?? 0, waiting: this.waiting.get(hostId)?.length ?? 0 };
  }

  private acquire(hostId: string): Promise<void> {
    const n = this.running.get(hostId) ?? 0;
    if (n < this.inFlight) {
      this.running.set(hostId, n + 1);
      return Promise.resolve();
    }
    const queue = this.waiting.get(hostId) ?? [];
    if (queue.length >= this.queued) {
      return Promise.reject(
        new OrangeryError('UNAVAILABLE', `${hostId} has ${n} vCenter tasks in flight and ${queue.length} waiting; retry later`, {
          hostId,
          inFlight: n,
          waiting: queue.length,
          retryable: true,
        }),
      );
    }
    this.waiting.set(hostId, queue);
    // the slot passes straight from release() to the next waiter: `running` stays counted
    return new Promise((resolve) => queue.push(resolve));
  }

  private release(hostId: string): void {
    const next = this.waiting.get(hostId)?.shift();
    if (next) {
      next();
      return;
    }
    const n = (this.running.get(hostId) ?? 1) - 1;
    if (n <= 0) this.running.delete(hostId);
    else this.running.set(hostId, n);
  }
}

/**
 * Periodic background work that never overlaps itself: a run still going when the next
 * tick comes is not started again, a failure is logged and the next tick tries anew, and
 * `stop` ends it all (shutdown).
 */
export class PeriodicTasks {
  private readonly timers: NodeJS.Timeout[] = [];
  private stopped = false;

  constructor(private readonly onError: (err: unknown) => void) {}

  every(ms: number, fn: () => Promise<void>): void {
    let busy = false;
    this.timers.push(
      setInterval(() => {
        if (busy || this.stopped) return;
        busy = true;
        fn()
          .catch(this.onError)
          .finally(() => (busy = false));
      }, ms),
    );
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers.length = 0;
  }
}

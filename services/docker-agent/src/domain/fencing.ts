/**
 * Self-fencing: an agent that cannot reach NATS for `fenceAfterMs` must stop its instances,
 * because the migrator will start them elsewhere with the same IPs once `fenceAfter` plus a
 * margin has passed since the last heartbeat. The clock starts at the last successful
 * round trip to the server (a flush), not at a disconnect event, so a silent partition
 * (no TCP reset) fences just as fast as a closed connection.
 */
export class FenceClock {
  private lastContact: number;
  private fencedAt: number | undefined;

  constructor(
    private readonly fenceAfterMs: number,
    now: number,
  ) {
    this.lastContact = now;
  }

  contact(now: number): void {
    this.lastContact = Math.max(this.lastContact, now);
  }

  /** True exactly once per outage: when the outage reaches fenceAfter. */
  shouldFence(now: number): boolean {
    if (this.fencedAt !== undefined) return false;
    if (now - this.lastContact < this.fenceAfterMs) return false;
    this.fencedAt = now;
    return true;
  }

  get fenced(): boolean {
    return this.fencedAt !== undefined;
  }

  /** Contact came back after a fence: returns when the fence happened, and clears it. */
  takeRecovery(): number | undefined {
    if (this.fencedAt === undefined || this.lastContact <= this.fencedAt) return undefined;
    const at = this.fencedAt;
    this.fencedAt = undefined;
    return at;
  }

  get deadline(): number {
    return this.lastContact + this.fenceAfterMs;
  }
}

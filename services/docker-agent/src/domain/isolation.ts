/**
 * When is this host's instance network isolated, and when has it been isolated long enough
 * to fence? A pure state machine over samples of the wire, on a monotonic clock (ms).
 *
 * The network is isolated when
 *  (a) the uplink has no carrier, or
 *  (b) none of the isolation addresses answers ARP, but only among addresses that have
 *      answered at least once since the agent started: an address that never answered
 *      (a gateway that ignores probes, a typo in ORANGERY_ISOLATION_ADDRESSES) proves
 *      nothing, and silence from it must not stop every instance on the host.
 * Loss of NATS, the database or the scheduler is not an input at all: an agent cut from
 * the control plane keeps its instances running.
 *
 * It fences when the network has been isolated continuously for `fenceAfterMs`.
 * Continuously means sampled: a gap between two samples longer than `maxSampleGapMs` (the
 * agent was frozen, SIGSTOP or a stalled event loop) restarts the count at the sample after
 * the gap, because nothing is known of the time in between.
 */
export interface WireSample {
  /** false: the uplink has no carrier; undefined: could not be read (no evidence either way) */
  carrier: boolean | undefined;
  /** the isolation addresses probed this round and whether each answered; a probe that failed is absent */
  answers: ReadonlyMap<string, boolean>;
}

export type IsolationCause = 'no-carrier' | 'no-answer';

export type IsolationStep =
  | { kind: 'steady' }
  /** isolated for fenceAfter: stop every instance now (returned once per isolation) */
  | { kind: 'fence'; cause: IsolationCause; isolatedForMs: number; addresses: string[] }
  /** the network answers again after a fence */
  | { kind: 'recover'; fencedForMs: number };

export interface IsolationMonitorOptions {
  fenceAfterMs: number;
  maxSampleGapMs: number;
}

export class IsolationMonitor {
  private readonly everAnswered = new Set<string>();
  /** first time each address was probed (for the never-answered warning) */
  private readonly firstProbed = new Map<string, number>();
  private readonly warned = new Set<string>();
  private lastSampleAt: number | undefined;
  private isolatedSince: number | undefined;
  private currentCause: IsolationCause | undefined;
  private fencedAt: number | undefined;

  constructor(private readonly opts: IsolationMonitorOptions) {}

  observe(sample: WireSample, now: number): IsolationStep {
    const gap = this.lastSampleAt !== undefined && now - this.lastSampleAt > this.opts.maxSampleGapMs;
    this.lastSampleAt = now;
    let anyAnswer = false;
    let armed = 0;
    for (const [ip, answered] of sample.answers) {
      if (!this.firstProbed.has(ip)) this.firstProbed.set(ip, now);
      if (answered) {
        this.everAnswered.add(ip);
        anyAnswer = true;
      }
      if (this.everAnswered.has(ip)) armed++;
    }
    const cause: IsolationCause | undefined = sample.carrier === false ? 'no-carrier' : armed > 0 && !anyAnswer ? 'no-answer' : undefined;
    this.currentCause = cause;

    if (cause === undefined) {
      this.isolatedSince = undefined;
      if (this.fencedAt === undefined) return { kind: 'steady' };
      const fencedForMs = now - this.fencedAt;
      this.fencedAt = undefined;
      return { kind: 'recover', fencedForMs };
    }
    if (this.isolatedSince === undefined || gap) this.isolatedSince = now;
    const isolatedForMs = now - this.isolatedSince;
    if (this.fencedAt === undefined && isolatedForMs >= this.opts.fenceAfterMs) {
      this.fencedAt = now;
      return { kind: 'fence', cause, isolatedForMs, addresses: [...sample.answers.keys()] };
    }
    return { kind: 'steady' };
  }

  /** No carrier now, or no armed address answered in the last sample. */
  get isolated(): boolean {
    return this.currentCause !== undefined;
  }

  get cause(): IsolationCause | undefined {
    return this.currentCause;
  }

  get fenced(): boolean {
    return this.fencedAt !== undefined;
  }

  /** Whether silence can fence yet: some isolation address has answered since the start. */
  get armed(): boolean {
    return this.everAnswered.size > 0;
  }

  /**
   * Addresses probed for at least fenceAfter that have never answered, each returned once:
   * the agent logs them, since their silence will never fence (see the class comment).
   */
  takeNeverAnswered(now: number): string[] {
    const out: string[] = [];
    for (const [ip, first] of this.firstProbed) {
      if (this.everAnswered.has(ip) || this.warned.has(ip) || now - first < this.opts.fenceAfterMs) continue;
      this.warned.add(ip);
      out.push(ip);
    }
    return out;
  }
}

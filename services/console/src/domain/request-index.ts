/**
 * What the console knows of scale requests: the ids it saw published (ORANGERY_SCALE) and
 * the outcome events it saw (`scale.completed|rejected` on ORANGERY_EVENTS). Bounded: each
 * map keeps its newest `limit` entries (Map iteration order is insertion order, so the
 * oldest go first). A request older than the window is unknown (404), as is one that
 * never existed; the console holds no state of its own, so a restart reads it again.
 */
export type RequestState = 'pending' | 'completed' | 'rejected';

export interface RequestStatus {
  state: RequestState;
  reason?: { code: string; message: string; details?: Record<string, unknown> };
}

export class RequestIndex {
  private readonly requests = new Map<string, true>();
  private readonly outcomes = new Map<string, RequestStatus>();

  constructor(private readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new Error(`limit must be a positive integer, got ${limit}`);
  }

  /** A request was stored in JetStream (seen on the stream, or published by us). */
  noteRequest(id: string): void {
    if (this.requests.has(id)) return;
    this.requests.set(id, true);
    evictOldest(this.requests, this.limit);
  }

  /**
   * Its outcome event. Exactly one is published per request (CONTRACT.md); should a copy
   * be seen again (redelivery), the first one stays.
   */
  noteOutcome(id: string, status: RequestStatus): void {
    if (this.outcomes.has(id)) return;
    this.outcomes.set(id, status);
    evictOldest(this.outcomes, this.limit);
  }

  /** undefined: not within the window (never published, or too old). */
  status(id: string): RequestStatus | undefined {
    const done = this.outcomes.get(id);
    if (done) return done;
    return this.requests.has(id) ? { state: 'pending' } : undefined;
  }

  get size(): { requests: number; outcomes: number } {
    return { requests: this.requests.size, outcomes: this.outcomes.size };
  }
}

function evictOldest<K, V>(m: Map<K, V>, limit: number): void {
  while (m.size > limit) {
    const oldest = m.keys().next();
    if (oldest.done) return;
    m.delete(oldest.value);
  }
}

/**
 * The status an outcome event gives its request, or undefined when the event is not one
 * (another type, or no requestId in its data).
 */
export function outcomeOf(event: unknown): { requestId: string; status: RequestStatus } | undefined {
  if (typeof event !== 'object' || event === null) return undefined;
  const e = event as { type?: unknown; data?: { requestId?: unknown; reason?: unknown } };
  const requestId = e.data?.requestId;
  if (typeof requestId !== 'string' || requestId === '') return undefined;
  if (e.type === 'io.orangery.scale.completed') return { requestId, status: { state: 'completed' } };
  if (e.type === 'io.orangery.scale.rejected') {
    const r = e.data?.reason as { code?: unknown; message?: unknown; details?: unknown } | undefined;
    const reason = {
      code: typeof r?.code === 'string' ? r.code : 'INTERNAL',
      message: typeof r?.message === 'string' ? r.message : 'rejected',
      ...(r?.details && typeof r.details === 'object' ? { details: r.details as Record<string, unknown> } : {}),
    };
    return { requestId, status: { state: 'rejected', reason } };
  }
  return undefined;
}

import type { EventEnvelope } from '@orangery/contracts';
import type { Logger } from '@orangery/telemetry';
import type { SqlPool } from './sql-pool';

export interface PendingEvent {
  natsSubject: string;
  event: EventEnvelope;
}

/** Where events go: JetStream, with the event id as the message id (EventPublisher). */
export interface OutboxPublisher {
  publish(natsSubject: string, event: EventEnvelope): Promise<void>;
}

export interface OutboxTables {
  /** rows (id BIGINT AUTO_INCREMENT, at DATETIME(3), event_subject, event_json) written in the change's transaction */
  readonly events: string;
  /** one row (id = 1, last_id): how far the sweeper has republished */
  readonly cursor: string;
}

/**
 * How long after its commit the sweeper republishes an event. Rows are inserted in the
 * same round trip as their COMMIT, so a row is visible within milliseconds of its `at`;
 * 10 s is a wide margin for that, and far inside JetStream's 120 s duplicate window.
 */
const SWEEP_LAG_SECONDS = 10;
const SWEEP_EVERY_MS = 2_000;
const SWEEP_BATCH = 1_000;
/** A caller waits this long at most for its events to be acked; the sweeper does the rest. */
const PUBLISH_WAIT_MS = 2_000;
const TABLE = /^[a-z_][a-z0-9_]{0,63}$/;

/**
 * Errors that say this row can never be published, whatever NATS does: a stored event that
 * is not JSON, a subject or header the client refuses (CR/LF in a message id), a payload
 * over NATS' max_payload. Anything else (a timeout, no stream responding, the connection
 * closed or draining, JetStream answering 503) is transient: the sweep stops there and
 * tries again.
 */
const POISON_ERRORS = new Set(['SyntaxError', 'TypeError', 'RangeError', 'InvalidArgumentError', 'InvalidSubjectError', 'InvalidNameError']);
const POISON_MESSAGE = /max(imum)?[_ ]payload|message size exceeds|payload size|cannot contain \\r or \\n/i;

/** Whether a publish failure is permanent for that event (see POISON_ERRORS). */
export function isPoisonPublishError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return POISON_ERRORS.has(err.name) || POISON_ERRORS.has(err.constructor.name) || POISON_MESSAGE.test(err.message);
}

/** What the sweeper has done so far (for a metric the service exposes). */
export interface OutboxStats {
  /** rows the sweeper skipped because they can never be published (each logged at error) */
  readonly poisoned: number;
  /** the id of the last row skipped, if any */
  readonly lastPoisonedId: number | undefined;
}

/**
 * A transactional outbox. Each change's events are written in the change's transaction;
 * after the commit the caller publishes them at once (JetStream msg id = event id).
 * Independently, a sweeper (one replica at a time, through a locked cursor row) publishes
 * every event again once it is SWEEP_LAG_SECONDS old, and advances the cursor: an event
 * whose first publish was lost (NATS down, process killed between commit and publish) is
 * published then, and the copies of the others are dropped by JetStream's duplicate window.
 * No per-event bookkeeping on the hot path.
 */
export class OutboxRelay {
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private poisoned = 0;
  private lastPoisonedId: number | undefined;

  constructor(
    private readonly sql: SqlPool,
    private readonly publisher: OutboxPublisher,
    private readonly logger: Logger,
    private readonly tables: OutboxTables,
  ) {
    if (!TABLE.test(tables.events) || !TABLE.test(tables.cursor)) throw new Error('outbox table names must be plain identifiers');
  }

  stats(): OutboxStats {
    return { poisoned: this.poisoned, lastPoisonedId: this.lastPoisonedId };
  }

  start(): void {
    this.sweepTimer = setInterval(() => void this.sweep(), SWEEP_EVERY_MS);
  }

  async stop(): Promise<void> {
    clearInterval(this.sweepTimer);
  }

  async publishCommitted(events: readonly PendingEvent[]): Promise<void> {
    if (events.length === 0) return;
    const all = Promise.all(events.map((e) => this.publisher.publish(e.natsSubject, e.event))).catch((err: unknown) =>
      this.logger.warn({ err: String(err) }, 'event publish failed; the outbox sweeper will publish it'),
    );
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((r) => (timer = setTimeout(r, PUBLISH_WAIT_MS)))]);
    clearTimeout(timer);
  }

  async sweep(): Promise<number> {
    if (this.sweeping) return 0;
    this.sweeping = true;
    const { events, cursor: cursorTable } = this.tables;
    try {
      return await this.sql.transaction(async (q) => {
        // SKIP LOCKED: another replica is sweeping; it will do this batch.
        const [cursor] = await q.query<{ last_id: number }[]>(`SELECT last_id FROM ${cursorTable} WHERE id = 1 FOR UPDATE SKIP LOCKED`);
        if (!cursor) return 0;
        const rows = await q.query<{ id: number; event_subject: string | null; event_json: string | null }[]>(
          `SELECT id, event_subject, event_json FROM ${events}
           WHERE id > ? AND at < NOW(3) - INTERVAL ${SWEEP_LAG_SECONDS} SECOND ORDER BY id LIMIT ${SWEEP_BATCH}`,
          [Number(cursor.last_id)],
        );
        let last = Number(cursor.last_id);
        let published = 0;
        for (const r of rows) {
          if (r.event_subject && r.event_json) {
            try {
              await this.publisher.publish(r.event_subject, JSON.parse(r.event_json) as EventEnvelope);
              published++;
            } catch (err) {
              if (!isPoisonPublishError(err)) {
                this.logger.warn({ err: String(err), behind: rows.length - published }, 'outbox sweep: publish failed; will retry');
                break;
              }
              // A row that can never be published must not stall every later event: report it and move on.
              this.poisoned++;
              this.lastPoisonedId = Number(r.id);
              this.logger.error(
                { err: String(err), table: events, id: Number(r.id), subject: r.event_subject, poisoned: this.poisoned },
                'outbox sweep: an event can never be published; skipped (the row is kept)',
              );
            }
          }
          last = Number(r.id);
        }
        if (last > Number(cursor.last_id)) q.defer(`UPDATE ${cursorTable} SET last_id = ? WHERE id = 1`, [last]);
        return published;
      });
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'outbox sweep failed');
      return 0;
    } finally {
      this.sweeping = false;
    }
  }
}

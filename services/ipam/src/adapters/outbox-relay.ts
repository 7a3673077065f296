import type { SqlPool } from '@orangery/persistence';
import type { EventEnvelope } from '@orangery/contracts';
import type { EventPublisher } from '@orangery/messaging';
import type { Logger } from '@orangery/telemetry';

export interface PendingEvent {
  natsSubject: string;
  event: EventEnvelope;
}

/** Events older than this are the sweeper's: their own request's publish failed or died. */
const SWEEP_AFTER_MS = 3_000;
const SWEEP_EVERY_MS = 2_000;
const MARK_EVERY_MS = 500;
/** A reply waits this long at most for its events to be acked; the sweeper does the rest. */
const PUBLISH_WAIT_MS = 2_000;

/**
 * The transactional outbox of ipam_audit. Each change's event is written in the change's
 * transaction; after the commit the request publishes it at once (JetStream msg id = event
 * id) and marks it sent in a batch. A sweeper, shared by the replicas through SKIP LOCKED,
 * republishes whatever stayed pending (NATS down, replica killed between commit and ack):
 * no event is lost, and JetStream's duplicate window drops the ones sent twice.
 */
export class OutboxRelay {
  private readonly sent = new Set<string>();
  private markTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping = false;

  constructor(
    private readonly sql: SqlPool,
    private readonly publisher: EventPublisher,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.markTimer = setInterval(() => void this.markSent(), MARK_EVERY_MS);
    this.sweepTimer = setInterval(() => void this.sweep(), SWEEP_EVERY_MS);
  }

  async stop(): Promise<void> {
    clearInterval(this.markTimer);
    clearInterval(this.sweepTimer);
    await this.markSent();
  }

  async publishCommitted(events: readonly PendingEvent[]): Promise<void> {
    const all = Promise.all(
      events.map(async (e) => {
        await this.publisher.publish(e.natsSubject, e.event);
        this.sent.add(e.event.id);
      }),
    ).catch((err: unknown) => this.logger.warn({ err: String(err) }, 'event publish failed; the outbox sweeper will retry'));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((r) => (timer = setTimeout(r, PUBLISH_WAIT_MS)))]);
    clearTimeout(timer);
  }

  private async markSent(): Promise<void> {
    if (this.sent.size === 0) return;
    const ids = [...this.sent];
    this.sent.clear();
    try {
      // READ COMMITTED (the pool's sessions) and the unique index on event_id: this touches
      // only its own rows and takes no gap locks that would stall concurrent audit inserts.
      await this.sql.read((q) => q.query(`UPDATE ipam_audit SET event_pending = NULL WHERE event_id IN (?)`, [ids]));
    } catch (err) {
      // Still pending in the table: the sweeper will publish them again (deduplicated).
      this.logger.debug({ err: String(err) }, 'could not mark events sent');
    }
  }

  async sweep(): Promise<number> {
    if (this.sweeping) return 0;
    this.sweeping = true;
    try {
      const done = await this.sql.transaction(async (q) => {
        const rows = await q.query<{ id: number; event_subject: string; event_json: string }[]>(
          `SELECT id, event_subject, event_json FROM ipam_audit
           WHERE event_pending IS NOT NULL AND event_pending < NOW(3) - INTERVAL ? MICROSECOND
           ORDER BY event_pending, id LIMIT 500 FOR UPDATE SKIP LOCKED`,
          [SWEEP_AFTER_MS * 1000],
        );
        const sent: number[] = [];
        for (const r of rows) {
          try {
            await this.publisher.publish(r.event_subject, JSON.parse(r.event_json) as EventEnvelope);
            sent.push(Number(r.id));
          } catch (err) {
            this.logger.warn({ err: String(err), pending: rows.length - sent.length }, 'outbox sweep: publish failed');
            break;
          }
        }
        if (sent.length > 0) q.defer('UPDATE ipam_audit SET event_pending = NULL WHERE id IN (?)', [sent]);
        return sent.length;
      });
      if (done > 0) this.logger.info({ published: done }, 'outbox sweep published pending events');
      return done;
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'outbox sweep failed');
      return 0;
    } finally {
      this.sweeping = false;
    }
  }
}

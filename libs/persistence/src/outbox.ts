import type { EventEnvelope } from '@orangery/contracts';
import type { Logger } from '@orangery/telemetry';
import { Gauge, register } from 'prom-client';
import type { SqlPool } from './sql-pool';

export interface PendingEvent {
  natsSubject: string;
  event: EventEnvelope;
}

/**
 * Records the lowest AUTO_INCREMENT id of the outbox rows a transaction inserts: pass
 * `track` as SqlTx.defer's `onResult`, then `first` to OutboxRelay.publishCommitted.
 */
export class OutboxRowIds {
  first: number | undefined;
  readonly track = (result: unknown): void => {
    const id = Number((result as { insertId?: unknown } | undefined)?.insertId);
    if (Number.isSafeInteger(id) && id > 0 && (this.first === undefined || id < this.first)) this.first = id;
  };
}

/** Where events go: JetStream, with the event id as the message id (EventPublisher). */
export interface OutboxPublisher {
  publish(natsSubject: string, event: EventEnvelope): Promise<void>;
}

export interface OutboxTables {
  /**
   * rows (id BIGINT AUTO_INCREMENT, at DATETIME(3), event_id, event_subject, event_json,
   * sent TINYINT: 0 pending, 1 published, 2 poisoned) written in the change's transaction
   */
  readonly events: string;
  /** one row (id = 1, last_id): rows with id <= last_id predate the `sent` column and were published */
  readonly cursor: string;
}

export interface OutboxOptions {
  /** the owning service: the `service` label of the outbox metrics and log lines */
  readonly service: string;
  /** published rows (and poisoned ones) older than this are deleted; 0 keeps them forever */
  readonly retentionSeconds: number;
  /** a pending row older than this is logged at warn (default 60 s) */
  readonly lagWarnSeconds?: number;
  /** tests: how old a pending row must be before the sweeper publishes it (default 10 s) */
  readonly sweepLagSeconds?: number;
}

/**
 * How long after its commit the sweeper publishes an event nobody has marked published:
 * the caller publishes at once after its commit and marks the row within a fraction of a
 * second, so the sweeper only sees events whose first publish failed or was not confirmed.
 */
const SWEEP_LAG_SECONDS = 10;
const SWEEP_EVERY_MS = 2_000;
const SWEEP_BATCH = 1_000;
/** How often confirmed publishes are marked in the table (one UPDATE per replica per tick). */
const MARK_EVERY_MS = 250;
/** Confirmed publishes kept for marking while the database is down; beyond, the oldest go (the sweeper then republishes those, a duplicate at worst). */
const MARK_BUFFER_MAX = 50_000;
const PRUNE_EVERY_MS = 60_000;
const PRUNE_BATCH = 1_000;
/** Pending rows counted at most (the count is a gauge, not an audit). */
const PENDING_COUNT_CAP = 100_000;
/** A caller waits this long at most for its events to be acked; the sweeper does the rest. */
const PUBLISH_WAIT_MS = 2_000;
const TABLE = /^[a-z_][a-z0-9_]{0,63}$/;

export const OUTBOX_SENT = { pending: 0, published: 1, poisoned: 2 } as const;

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

/** The outbox's measure at its last check: what is not yet confirmed published. */
export interface OutboxLag {
  /** rows not yet confirmed published (counted up to 100,000) */
  readonly pending: number;
  /** age of the oldest of them, in seconds (0 when none) */
  readonly lagSeconds: number;
}

function gauge(name: string, help: string): Gauge<'service'> {
  return (register.getSingleMetric(name) as Gauge<'service'> | undefined) ?? new Gauge({ name, help, labelNames: ['service'] });
}

/** In prom-client's default register, which the service's /metrics endpoint exposes. */
const lagGauge = gauge('orangery_outbox_lag_seconds', 'Age of the oldest event of the outbox not yet confirmed published to JetStream');
const pendingGauge = gauge('orangery_outbox_pending', 'Events of the outbox not yet confirmed published to JetStream (counted up to 100000)');
const poisonedGauge = gauge('orangery_outbox_poisoned', 'Outbox rows this process skipped because they can never be published');

interface Confirmed {
  /** the lowest row id the publishing transaction inserted */
  fromId: number;
  eventIds: string[];
}

/**
 * A transactional outbox. Each change's events are written in the change's transaction
 * (`sent` = 0); after the commit the caller publishes them at once (JetStream msg id = event
 * id) and the rows whose publish JetStream acked are marked `sent` = 1 in one batched UPDATE
 * a fraction of a second later. A sweeper (one replica at a time, through the locked cursor
 * row) publishes every row still unmarked once it is SWEEP_LAG_SECONDS old, whatever its id:
 * a row committed long after rows with higher ids is found all the same (an id cursor would
 * have passed it). Because published rows are marked, an outbox behind by more than
 * JetStream's duplicate window does not store an event twice; only a process killed between
 * an ack and its mark (a quarter second) can leave an event to be republished, and that copy
 * is dropped by the duplicate window unless the sweeper is also two minutes behind.
 * Rows published or poisoned longer than the retention ago are deleted (pruning).
 */
export class OutboxRelay {
  private readonly timers: NodeJS.Timeout[] = [];
  private sweeping = false;
  private marking = false;
  private pruning = false;
  private poisoned = 0;
  private lastPoisonedId: number | undefined;
  private confirmed: Confirmed[] = [];
  private confirmedCount = 0;
  private lastLag: OutboxLag = { pending: 0, lagSeconds: 0 };
  private lastLagWarnAt = 0;
  private readonly sweepLagSeconds: number;
  private readonly lagWarnSeconds: number;

  constructor(
    private readonly sql: SqlPool,
    private readonly publisher: OutboxPublisher,
    private readonly logger: Logger,
    private readonly tables: OutboxTables,
    private readonly options: OutboxOptions,
  ) {
    if (!TABLE.test(tables.events) || !TABLE.test(tables.cursor)) throw new Error('outbox table names must be plain identifiers');
    this.sweepLagSeconds = Math.max(0, Math.floor(options.sweepLagSeconds ?? SWEEP_LAG_SECONDS));
    this.lagWarnSeconds = options.lagWarnSeconds ?? 60;
  }

  stats(): OutboxStats {
    return { poisoned: this.poisoned, lastPoisonedId: this.lastPoisonedId };
  }

  /** The last measure (see measure()). */
  lag(): OutboxLag {
    return this.lastLag;
  }

  start(): void {
    this.timers.push(
      setInterval(() => void this.sweep().then(() => this.measure()), SWEEP_EVERY_MS),
      setInterval(() => void this.markConfirmed(), MARK_EVERY_MS),
      setInterval(() => void this.prune(), PRUNE_EVERY_MS),
    );
  }

  async stop(): Promise<void> {
    for (const t of this.timers.splice(0)) clearInterval(t);
    // what JetStream acked is marked now, or the next replica's sweeper republishes it
    await this.markConfirmed();
  }

  /**
   * Publishes a committed transaction's events. `fromRowId` is the lowest outbox row id the
   * transaction inserted (SqlTx.defer's result `insertId`): with it, the rows JetStream acked
   * are marked published; without it the sweeper publishes them again later (deduplicated by
   * JetStream within its window).
   */
  async publishCommitted(events: readonly PendingEvent[], fromRowId?: number): Promise<void> {
    if (events.length === 0) return;
    const all = Promise.allSettled(events.map((e) => this.publisher.publish(e.natsSubject, e.event))).then((results) => {
      const acked = events.filter((_, i) => results[i]!.status === 'fulfilled').map((e) => e.event.id);
      if (fromRowId !== undefined && acked.length > 0) this.confirm({ fromId: fromRowId, eventIds: acked });
      const failed = results.find((r) => r.status === 'rejected');
      if (failed)
        this.logger.warn({ err: String(failed.reason), failed: events.length - acked.length }, 'event publish failed; the outbox sweeper will publish it');
    });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((r) => (timer = setTimeout(r, PUBLISH_WAIT_MS)))]);
    clearTimeout(timer);
  }

  private confirm(c: Confirmed): void {
    this.confirmed.push(c);
    this.confirmedCount += c.eventIds.length;
    // bounded while the database is down: a dropped mark costs a republish, never a loss
    while (this.confirmedCount > MARK_BUFFER_MAX && this.confirmed.length > 1) this.confirmedCount -= this.confirmed.shift()!.eventIds.length;
  }

  /** Marks the rows whose publish JetStream acked: one UPDATE for everything since the last tick. */
  async markConfirmed(): Promise<number> {
    if (this.marking || this.confirmed.length === 0) return 0;
    this.marking = true;
    const batch = this.confirmed;
    this.confirmed = [];
    this.confirmedCount = 0;
    try {
      const fromId = Math.min(...batch.map((c) => c.fromId));
      const ids = batch.flatMap((c) => c.eventIds);
      let marked = 0;
      for (let i = 0; i < ids.length; i += SWEEP_BATCH) {
        // The id bound keeps this a scan of the table's tail (no index on event_id needed).
        const r = await this.sql.transaction((q) =>
          q.query<{ affectedRows: number }>(
            `UPDATE ${this.tables.events} SET sent = ${OUTBOX_SENT.published} WHERE id >= ? AND sent = ${OUTBOX_SENT.pending} AND event_id IN (?)`,
            [fromId, ids.slice(i, i + SWEEP_BATCH)],
          ),
        );
        marked += Number(r.affectedRows ?? 0);
      }
      return marked;
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'outbox: could not mark published events yet; will retry');
      for (const c of batch) this.confirm(c);
      return 0;
    } finally {
      this.marking = false;
    }
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
        // last_id is fixed since the `sent` column exists: rows up to it were published by the id cursor.
        const rows = await q.query<{ id: number; event_subject: string | null; event_json: string | null }[]>(
          `SELECT id, event_subject, event_json FROM ${events}
           WHERE sent = ${OUTBOX_SENT.pending} AND id > ? AND at < NOW(3) - INTERVAL ${this.sweepLagSeconds} SECOND ORDER BY id LIMIT ${SWEEP_BATCH}`,
          [Number(cursor.last_id)],
        );
        const done: number[] = [];
        const poisoned: number[] = [];
        let published = 0;
        for (const r of rows) {
          if (r.event_subject && r.event_json) {
            try {
              await this.publisher.publish(r.event_subject, JSON.parse(r.event_json) as EventEnvelope);
              published++;
            } catch (err) {
              if (!isPoisonPublishError(err)) {
                // in id order: a later event is not published before an earlier one is
                this.logger.warn({ err: String(err), behind: rows.length - published }, 'outbox sweep: publish failed; will retry');
                break;
              }
              // A row that can never be published must not stall every later event: report it and move on.
              this.poisoned++;
              this.lastPoisonedId = Number(r.id);
              poisonedGauge.set({ service: this.options.service }, this.poisoned);
              this.logger.error(
                { err: String(err), table: events, id: Number(r.id), subject: r.event_subject, poisoned: this.poisoned },
                'outbox sweep: an event can never be published; skipped (the row is kept, sent = 2)',
              );
              poisoned.push(Number(r.id));
              continue;
            }
          }
          done.push(Number(r.id));
        }
        if (done.length > 0) q.defer(`UPDATE ${events} SET sent = ${OUTBOX_SENT.published} WHERE id IN (?) AND sent = ${OUTBOX_SENT.pending}`, [done]);
        if (poisoned.length > 0) q.defer(`UPDATE ${events} SET sent = ${OUTBOX_SENT.poisoned} WHERE id IN (?) AND sent = ${OUTBOX_SENT.pending}`, [poisoned]);
        return published;
      });
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'outbox sweep failed');
      return 0;
    } finally {
      this.sweeping = false;
    }
  }

  /**
   * Measures what is not yet confirmed published (gauges `orangery_outbox_pending` and
   * `orangery_outbox_lag_seconds`), and warns when the oldest is older than lagWarnSeconds.
   */
  async measure(): Promise<OutboxLag | undefined> {
    const { events, cursor } = this.tables;
    try {
      const lag = await this.sql.read(async (q) => {
        const [c] = await q.query<{ last_id: number }[]>(`SELECT last_id FROM ${cursor} WHERE id = 1`);
        const floor = Number(c?.last_id ?? 0);
        const [oldest, counted] = (await q.queryAll([
          {
            sql: `SELECT TIMESTAMPDIFF(MICROSECOND, at, NOW(3)) AS age_us FROM ${events} WHERE sent = ${OUTBOX_SENT.pending} AND id > ? ORDER BY id LIMIT 1`,
            params: [floor],
          },
          {
            sql: `SELECT COUNT(*) AS n FROM (SELECT 1 FROM ${events} WHERE sent = ${OUTBOX_SENT.pending} AND id > ? LIMIT ${PENDING_COUNT_CAP}) p`,
            params: [floor],
          },
        ])) as [{ age_us: number }[], { n: number }[]];
        return { pending: Number(counted[0]?.n ?? 0), lagSeconds: oldest[0] ? Math.max(0, Number(oldest[0].age_us) / 1e6) : 0 };
      });
      this.lastLag = lag;
      pendingGauge.set({ service: this.options.service }, lag.pending);
      lagGauge.set({ service: this.options.service }, lag.lagSeconds);
      if (lag.lagSeconds > this.lagWarnSeconds && Date.now() - this.lastLagWarnAt > 60_000) {
        this.lastLagWarnAt = Date.now();
        this.logger.warn(
          { table: events, pending: lag.pending, lagSeconds: Math.round(lag.lagSeconds) },
          'outbox is behind: events committed this long ago are not yet confirmed in JetStream',
        );
      }
      return lag;
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'outbox: could not measure the lag');
      return undefined;
    }
  }

  /**
   * Deletes rows published (or poisoned) more than retentionSeconds ago, oldest first, a batch
   * at a time. Rows still pending are never deleted, however old.
   */
  async prune(maxBatches = 20): Promise<number> {
    if (this.options.retentionSeconds <= 0 || this.pruning) return 0;
    this.pruning = true;
    const { events, cursor } = this.tables;
    let deleted = 0;
    try {
      for (let i = 0; i < maxBatches; i++) {
        const n = await this.sql.transaction(async (q) => {
          const [[c], [edge]] = (await q.queryAll([
            { sql: `SELECT last_id FROM ${cursor} WHERE id = 1` },
            { sql: `SELECT MAX(id) AS upto FROM (SELECT id FROM ${events} ORDER BY id LIMIT ${PRUNE_BATCH}) oldest` },
          ])) as [{ last_id: number }[], { upto: number | null }[]];
          if (!edge || edge.upto === null) return 0;
          const r = await q.query<{ affectedRows: number }>(
            `DELETE FROM ${events} WHERE id <= ? AND at < NOW(3) - INTERVAL ? SECOND AND (sent <> ${OUTBOX_SENT.pending} OR id <= ?)`,
            [Number(edge.upto), this.options.retentionSeconds, Number(c?.last_id ?? 0)],
          );
          return Number(r.affectedRows ?? 0);
        });
        deleted += n;
        if (n < PRUNE_BATCH / 2) break;
      }
      if (deleted > 0) this.logger.info({ table: events, deleted }, 'outbox pruned');
      return deleted;
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'outbox prune failed; will retry');
      return deleted;
    } finally {
      this.pruning = false;
    }
  }
}

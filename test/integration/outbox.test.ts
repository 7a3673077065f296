import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createConnection, type Connection } from 'mysql2/promise';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { register } from 'prom-client';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { buildEvent } from '@orangery/contracts';
import { ensureStream, EventPublisher, jetstreamManager } from '@orangery/messaging';
import {
  addOutboxSentColumns,
  createDataSource,
  initializeDatabase,
  OutboxRelay,
  OutboxRowIds,
  parseDbUrl,
  SqlPool,
  type PendingEvent,
} from '@orangery/persistence';
import { createLogger } from '@orangery/telemetry';
import { freshDatabase, HarnessDir, NatsServer } from '@orangery/testing';

// The transactional outbox (libs/persistence/src/outbox.ts) against a real MariaDB and a real
// nats-server: rows committed out of id order, a sweeper behind by more than JetStream's
// duplicate window, pruning, the lag measure, and the upgrade from the id cursor.
const dir = new HarnessDir('outbox');
const STREAM = 'OUTBOX_TEST';
const DUP_WINDOW_SECONDS = 1;
const logger = createLogger('outbox-test');
let nats: NatsServer;
let nc: NatsConnection;
let dbUrl: string;
let db: Connection;
let sql: SqlPool;

/** The outbox table as the first migrations made it (id cursor), before the `sent` column. */
class OldOutbox1700000000000 implements MigrationInterface {
  name = 'OldOutbox1700000000000';
  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE t_outbox (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      event_subject VARCHAR(255) NOT NULL,
      event_json MEDIUMTEXT NOT NULL,
      KEY ix_outbox_at (at)
    ) ENGINE=InnoDB`);
    await q.query('CREATE TABLE t_outbox_cursor (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, last_id BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB');
    await q.query('INSERT INTO t_outbox_cursor (id, last_id) VALUES (1, 0)');
  }
  async down(): Promise<void> {}
}

class OutboxSent1700000000001 implements MigrationInterface {
  name = 'OutboxSent1700000000001';
  async up(q: QueryRunner): Promise<void> {
    await addOutboxSentColumns(q, 't_outbox', true);
  }
  async down(): Promise<void> {}
}

const tables = { events: 't_outbox', cursor: 't_outbox_cursor' };
const newRelay = (retentionSeconds = 0) =>
  new OutboxRelay(sql, new EventPublisher(nc), logger, tables, { service: 'outbox-test', retentionSeconds, sweepLagSeconds: 0, lagWarnSeconds: 5 });

let seq = 0;
function event(): PendingEvent {
  seq++;
  const built = buildEvent({ area: 'test', what: 'outboxed', subject: `e${seq}`, source: 'outbox-test', data: { seq } });
  return { natsSubject: `t.outbox.e${seq}`, event: built.event };
}

const insertSql = 'INSERT INTO t_outbox (event_id, event_subject, event_json) VALUES (?, ?, ?)';
const params = (e: PendingEvent) => [e.event.id, e.natsSubject, JSON.stringify(e.event)];

async function rows<T>(text: string, values: unknown[] = []): Promise<T[]> {
  const [r] = await db.query(text, values);
  return r as T[];
}

/** How many times each subject is stored in the stream. */
async function stored(): Promise<Record<string, number>> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(STREAM, { subjects_filter: '>' });
  return (info.state.subjects ?? {}) as Record<string, number>;
}

async function connectDb(url: string): Promise<Connection> {
  const c = parseDbUrl(url);
  return createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database });
}

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  nc = await connect({ servers: nats.url });
  await ensureStream(nc, { name: STREAM, subjects: ['t.outbox.>'], maxAgeSeconds: 3600, duplicateWindowSeconds: DUP_WINDOW_SECONDS }, logger);
  dbUrl = await freshDatabase('outbox');
  const migrateOld = createDataSource({ db: parseDbUrl(dbUrl), service: 'outbox-test', migrations: [OldOutbox1700000000000], poolSize: 2 });
  await initializeDatabase(migrateOld, 'outbox-test', logger);
  db = await connectDb(dbUrl);
  // What the old code left: three rows, all published and passed by the id cursor.
  for (let i = 0; i < 3; i++) await db.query('INSERT INTO t_outbox (event_subject, event_json) VALUES (?, ?)', ['t.outbox.old', '{"id":"old"}']);
  await db.query('UPDATE t_outbox_cursor SET last_id = (SELECT MAX(id) FROM t_outbox) WHERE id = 1');
  await migrateOld.destroy();
  const migrateNew = createDataSource({
    db: parseDbUrl(dbUrl),
    service: 'outbox-test',
    migrations: [OldOutbox1700000000000, OutboxSent1700000000001],
    poolSize: 2,
  });
  await initializeDatabase(migrateNew, 'outbox-test', logger);
  await migrateNew.destroy();
  sql = new SqlPool(parseDbUrl(dbUrl), 4);
}, 60_000);

afterAll(async () => {
  await sql?.end();
  await db?.end();
  await nc?.close();
  await nats?.stop();
  await dir.cleanup();
});

beforeEach(async () => {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.purge(STREAM);
});

describe('the outbox on MariaDB and JetStream', () => {
  it('after the upgrade, rows the id cursor already passed are never published again; rows old replicas insert are', async () => {
    // an old replica (no event_id, no sent) inserts one more row during the rolling upgrade
    const e = event();
    await db.query('INSERT INTO t_outbox (event_subject, event_json) VALUES (?, ?)', [e.natsSubject, JSON.stringify(e.event)]);
    const relay = newRelay();
    expect(await relay.sweep()).toBe(1);
    expect(await stored()).toEqual({ [e.natsSubject]: 1 });
  });

  it('publishes exactly once a row committed after a row with a higher id was already swept', async () => {
    const relay = newRelay();
    const early = event();
    const late = event();
    const a = await connectDb(dbUrl);
    const b = await connectDb(dbUrl);
    try {
      await a.query('START TRANSACTION');
      const [ra] = (await a.query(insertSql, params(early))) as unknown as [{ insertId: number }];
      await b.query('START TRANSACTION');
      const [rb] = (await b.query(insertSql, params(late))) as unknown as [{ insertId: number }];
      expect(rb.insertId).toBeGreaterThan(ra.insertId);
      await b.query('COMMIT');
      expect(await relay.sweep()).toBe(1);
      expect(await stored()).toEqual({ [late.natsSubject]: 1 });
      // the lower id commits last: an id cursor would have passed it for good
      await a.query('COMMIT');
      expect(await relay.sweep()).toBe(1);
      expect(await relay.sweep()).toBe(0);
      expect(await stored()).toEqual({ [late.natsSubject]: 1, [early.natsSubject]: 1 });
      const sent = await rows<{ id: number; sent: number }>('SELECT id, sent FROM t_outbox WHERE id IN (?, ?) ORDER BY id', [ra.insertId, rb.insertId]);
      expect(sent.map((r) => Number(r.sent))).toEqual([1, 1]);
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('a sweeper behind by more than the duplicate window does not store an event twice', async () => {
    const relay = newRelay();
    const confirmed = [event(), event()];
    const lost = event();
    const ids = new OutboxRowIds();
    await sql.transaction(async (q) => {
      q.defer(`${insertSql.replace('VALUES (?, ?, ?)', 'VALUES (?, ?, ?), (?, ?, ?)')}`, confirmed.flatMap(params), ids.track);
      q.defer(insertSql, params(lost), ids.track);
    });
    expect(ids.first).toBeGreaterThan(0);
    // the caller's publish after commit: acked by JetStream, then marked
    await relay.publishCommitted(confirmed, ids.first);
    expect(await relay.markConfirmed()).toBe(2);
    // the sweeper comes back later than JetStream's duplicate window
    await new Promise((r) => setTimeout(r, (DUP_WINDOW_SECONDS + 1) * 1000));
    expect(await relay.sweep()).toBe(1);
    expect(await relay.sweep()).toBe(0);
    expect(await stored()).toEqual({ [confirmed[0]!.natsSubject]: 1, [confirmed[1]!.natsSubject]: 1, [lost.natsSubject]: 1 });
  });

  it('measures what is not yet confirmed published: pending rows and the age of the oldest', async () => {
    const relay = newRelay();
    const e = event();
    await db.query('INSERT INTO t_outbox (event_id, event_subject, event_json, at) VALUES (?, ?, ?, NOW(3) - INTERVAL 90 SECOND)', params(e));
    const lag = await relay.measure();
    expect(lag?.pending).toBe(1);
    expect(lag!.lagSeconds).toBeGreaterThanOrEqual(89);
    const text = await register.getSingleMetricAsString('orangery_outbox_lag_seconds');
    expect(text).toMatch(/orangery_outbox_lag_seconds\{service="outbox-test"\} (9\d|\d{3,})/);
    expect(await register.getSingleMetricAsString('orangery_outbox_pending')).toContain('orangery_outbox_pending{service="outbox-test"} 1');
    await relay.sweep();
    expect((await relay.measure())?.pending).toBe(0);
    expect((await relay.measure())?.lagSeconds).toBe(0);
  });

  it('prunes published rows past the retention, oldest first, and keeps pending ones however old', async () => {
    const relay = newRelay(3600);
    const old = 2_500;
    const values = Array.from({ length: old }, (_, i) => [`old-${i}`, 't.outbox.pruned', '{}', 1]);
    await db.query('INSERT INTO t_outbox (event_id, event_subject, event_json, sent) VALUES ?', [values]);
    await db.query('UPDATE t_outbox SET at = NOW(3) - INTERVAL 2 HOUR WHERE event_id LIKE ?', ['old-%']);
    const stuck = event();
    await db.query('INSERT INTO t_outbox (event_id, event_subject, event_json, at) VALUES (?, ?, ?, NOW(3) - INTERVAL 3 HOUR)', params(stuck));
    const before = Number((await rows<{ n: number }>('SELECT COUNT(*) AS n FROM t_outbox'))[0]!.n);
    const deleted = await relay.prune();
    expect(deleted).toBe(old);
    const after = Number((await rows<{ n: number }>('SELECT COUNT(*) AS n FROM t_outbox'))[0]!.n);
    expect(after).toBe(before - old);
    expect(await rows('SELECT 1 FROM t_outbox WHERE event_id = ?', [stuck.event.id])).toHaveLength(1);
    expect(await relay.prune()).toBe(0);
  });
});

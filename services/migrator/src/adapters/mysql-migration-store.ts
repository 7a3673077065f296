import { buildEvent, type NewEvent } from '@orangery/contracts';
import { OutboxRowIds, type OutboxRelay, type PendingEvent, type SqlPool, type SqlTx } from '@orangery/persistence';
import type { DrainRecord, MigrationRecord } from '../domain/model';
import { LeaseLostError, type MigrationStore } from '../domain/ports';

/** A transaction's events and the outbox rows that hold them. */
interface Outboxed {
  events: PendingEvent[];
  rowIds: OutboxRowIds;
}

interface Header {
  affectedRows: number;
}

interface MigrationRow {
  record: string | MigrationRecord;
}

const parse = (r: MigrationRow): MigrationRecord => (typeof r.record === 'string' ? (JSON.parse(r.record) as MigrationRecord) : r.record);

/**
 * Migrations and drains in MySQL. Leases use the database's clock (NOW(3)), so replicas
 * with skewed clocks agree on when one has expired. Every write of a running migration is
 * conditional on `lease_owner`: a replica whose lease was taken over cannot write, so it
 * learns it before its next action (MigrationSaga saves before each attempt).
 */
export class MysqlMigrationStore implements MigrationStore {
  constructor(
    private readonly sql: SqlPool,
    private readonly outbox: OutboxRelay,
    private readonly source: string,
    private readonly leaseSeconds: number,
  ) {}

  private writeEvents(q: SqlTx, events: NewEvent<unknown>[] | undefined): Outboxed {
    const built = (events ?? []).map((e) => buildEvent({ ...e, source: e.source || this.source }));
    const rowIds = new OutboxRowIds();
    for (const b of built) {
      q.defer(
        'INSERT INTO mig_outbox (event_id, event_subject, event_json) VALUES (?, ?, ?)',
        [b.event.id, b.natsSubject, JSON.stringify(b.event)],
        rowIds.track,
      );
    }
    return { events: built, rowIds };
  }

  private columns(m: MigrationRecord): unknown[] {
    return [m.state, m.step, JSON.stringify(m)];
  }

  async insert(m: MigrationRecord, owner: string | undefined, events?: NewEvent<unknown>[]): Promise<void> {
    const pending = await this.sql.transaction(async (q) => {
      q.defer(
        `INSERT INTO mig_migration (id, instance_id, drain_id, after_id, lease_owner, lease_until, state, step, record)
         VALUES (?, ?, ?, ?, ?, ${owner === undefined ? 'NULL' : 'NOW(3) + INTERVAL ? SECOND'}, ?, ?, ?)`,
        [m.id, m.instanceId, m.drainId ?? null, m.after ?? null, owner ?? null, ...(owner === undefined ? [] : [this.leaseSeconds]), ...this.columns(m)],
      );
      return this.writeEvents(q, events);
    });
    await this.outbox.publishCommitted(pending.events, pending.rowIds.first);
  }

  async insertDrain(d: DrainRecord, migrations: MigrationRecord[]): Promise<void> {
    await this.sql.transaction(async (q) => {
      q.defer('INSERT INTO mig_drain (id, host_id, state, migration_ids) VALUES (?, ?, ?, ?)', [d.id, d.hostId, d.state, JSON.stringify(d.migrationIds)]);
      for (const m of migrations) {
        q.defer(
          `INSERT INTO mig_migration (id, instance_id, drain_id, after_id, lease_owner, lease_until, state, step, record)
           VALUES (?, ?, ?, ?, NULL, NULL, ?, ?, ?)`,
          [m.id, m.instanceId, m.drainId ?? null, m.after ?? null, ...this.columns(m)],
        );
      }
    });
  }

  async save(m: MigrationRecord, owner: string, events?: NewEvent<unknown>[]): Promise<void> {
    const pending = await this.sql.transaction(async (q) => {
      const ended = m.state !== 'running';
      const r = await q.query<Header>(
        `UPDATE mig_migration SET state = ?, step = ?, record = ?${ended ? ', lease_until = NULL' : ''}
         WHERE id = ? AND lease_owner = ?`,
        [...this.columns(m), m.id, owner],
      );
      if (r.affectedRows !== 1) throw new LeaseLostError(m.id);
      return this.writeEvents(q, events);
    });
    await this.outbox.publishCommitted(pending.events, pending.rowIds.first);
  }

  async discard(id: string, owner: string): Promise<void> {
    await this.sql.transaction(async (q) => {
      q.defer('DELETE FROM mig_migration WHERE id = ? AND lease_owner = ?', [id, owner]);
    });
  }

  async get(id: string): Promise<MigrationRecord | undefined> {
    const rows = await this.sql.read((q) => q.query<MigrationRow[]>('SELECT record FROM mig_migration WHERE id = ?', [id]));
    return rows[0] ? parse(rows[0]) : undefined;
  }

  async claim(owner: string, limit: number): Promise<MigrationRecord[]> {
    const candidates = await this.sql.read((q) =>
      q.query<{ id: string }[]>(
        `SELECT m.id FROM mig_migration m
         WHERE m.state = 'running' AND (m.lease_until IS NULL OR m.lease_until < NOW(3))
           AND (m.after_id IS NULL OR NOT EXISTS (SELECT 1 FROM mig_migration p WHERE p.id = m.after_id AND p.state = 'running'))
         ORDER BY m.created_at, m.id LIMIT ${Math.max(1, Math.floor(limit))}`,
      ),
    );
    const claimed: MigrationRecord[] = [];
    for (const { id } of candidates) {
      // The same condition again, atomically: of two replicas racing here one gets 1 row.
      const got = await this.sql.transaction(async (q) => {
        const r = await q.query<Header>(
          `UPDATE mig_migration SET lease_owner = ?, lease_until = NOW(3) + INTERVAL ? SECOND
           WHERE id = ? AND state = 'running' AND (lease_until IS NULL OR lease_until < NOW(3))`,
          [owner, this.leaseSeconds, id],
        );
        if (r.affectedRows !== 1) return undefined;
        const rows = await q.query<MigrationRow[]>('SELECT record FROM mig_migration WHERE id = ?', [id]);
        return rows[0] ? parse(rows[0]) : undefined;
      });
      if (got) claimed.push(got);
    }
    return claimed;
  }

  async renew(owner: string, ids: string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const marks = ids.map(() => '?').join(', ');
    const held = await this.sql.transaction(async (q) => {
      const [, rows] = (await q.queryAll([
        {
          sql: `UPDATE mig_migration SET lease_until = NOW(3) + INTERVAL ? SECOND WHERE lease_owner = ? AND state = 'running' AND id IN (${marks})`,
          params: [this.leaseSeconds, owner, ...ids],
        },
        { sql: `SELECT id FROM mig_migration WHERE lease_owner = ? AND id IN (${marks})`, params: [owner, ...ids] },
      ])) as [unknown, { id: string }[]];
      return new Set(rows.map((r) => r.id));
    });
    return ids.filter((id) => !held.has(id));
  }

  async unlease(owner: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.sql.transaction(async (q) => {
      q.defer(`UPDATE mig_migration SET lease_until = NULL WHERE lease_owner = ? AND id IN (${ids.map(() => '?').join(', ')})`, [owner, ...ids]);
    });
  }

  async finishedDrains(): Promise<{ drain: DrainRecord; migrations: MigrationRecord[] }[]> {
    return this.sql.read(async (q) => {
      const drains = await q.query<{ id: string; host_id: string; state: string; migration_ids: string | string[]; created_at: Date }[]>(
        `SELECT d.id, d.host_id, d.state, d.migration_ids, d.created_at FROM mig_drain d
         WHERE d.state = 'running' AND NOT EXISTS (SELECT 1 FROM mig_migration m WHERE m.drain_id = d.id AND m.state = 'running')`,
      );
      const out: { drain: DrainRecord; migrations: MigrationRecord[] }[] = [];
      for (const d of drains) {
        const rows = await q.query<MigrationRow[]>('SELECT record FROM mig_migration WHERE drain_id = ?', [d.id]);
        out.push({
          drain: {
            id: d.id,
            hostId: d.host_id,
            state: 'running',
            migrationIds: typeof d.migration_ids === 'string' ? (JSON.parse(d.migration_ids) as string[]) : d.migration_ids,
            createdAt: new Date(d.created_at).toISOString(),
          },
          migrations: rows.map(parse),
        });
      }
      return out;
    });
  }

  async endDrain(id: string, state: 'completed' | 'failed', events: NewEvent<unknown>[]): Promise<boolean> {
    const result = await this.sql.transaction(async (q) => {
      const r = await q.query<Header>(`UPDATE mig_drain SET state = ?, ended_at = NOW(3) WHERE id = ? AND state = 'running'`, [state, id]);
      if (r.affectedRows !== 1) return undefined;
      return this.writeEvents(q, events);
    });
    if (!result) return false;
    await this.outbox.publishCommitted(result.events, result.rowIds.first);
    return true;
  }
}

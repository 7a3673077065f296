import { CURSORS, OrangeryError, pageOf, type EnvList, type EnvRecord, type PageQuery } from '@orangery/contracts';
import { keysetAfter, type SqlPool } from '@orangery/persistence';
import { MAX_ENV_RECORDS, type EnvPolicy } from '../domain/env-policy';

interface EnvRow {
  name: string;
  body: unknown;
  created_at: Date;
  updated_at: Date;
}

/**
 * Env records in `sched_envs` (docs/scheduler.md "Environments"). Any replica writes and
 * reads them; the leader reads one by primary key when it judges a scale request.
 */
export class MysqlEnvStore {
  constructor(
    private readonly sql: SqlPool,
    private readonly maxRecords = MAX_ENV_RECORDS,
  ) {}

  /**
   * Creates or replaces the record (`createdAt` kept on a replace). A new name beyond
   * `maxRecords` records is INVALID_REQUEST and changes nothing. The count is checked in the
   * transaction, so several replicas writing new names at once can pass the bound by at
   * most one each.
   */
  async put(env: EnvPolicy): Promise<{ record: EnvRecord; created: boolean }> {
    const now = new Date();
    return this.sql.transaction(async (tx) => {
      const [existing] = await tx.query<{ created_at: Date }[]>('SELECT created_at FROM sched_envs WHERE name = ? FOR UPDATE', [env.name]);
      if (!existing) {
        const [count] = await tx.query<{ n: number | string }[]>('SELECT COUNT(*) AS n FROM sched_envs');
        if (Number(count?.n ?? 0) >= this.maxRecords) {
          throw new OrangeryError('INVALID_REQUEST', `field 'name': there are ${this.maxRecords} env records already, the most kept; delete one first`, {
            field: 'name',
            reason: 'too many env records',
            limit: this.maxRecords,
          });
        }
      }
      tx.defer(
        `INSERT INTO sched_envs (name, body, created_at, updated_at) VALUES (?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE body = VALUES(body), updated_at = VALUES(updated_at)`,
        [env.name, JSON.stringify(env), now, now],
      );
      const createdAt = existing ? new Date(existing.created_at) : now;
      return { record: recordOf(env, createdAt, now), created: !existing };
    });
  }

  async get(name: string): Promise<EnvRecord | undefined> {
    const rows = await this.sql.read((q) => q.query<EnvRow[]>('SELECT name, body, created_at, updated_at FROM sched_envs WHERE name = ?', [name]));
    return rows[0] ? rowRecord(rows[0]) : undefined;
  }

  /** The policy the judge applies (undefined: no record). */
  async policy(name: string): Promise<EnvPolicy | undefined> {
    const r = await this.get(name);
    if (!r) return undefined;
    const { createdAt: _c, updatedAt: _u, ...policy } = r;
    return policy;
  }

  /** One page in name order (keyset: after the cursor's name, limit + 1 rows to know whether more remain). */
  async list(page: PageQuery<[string]>): Promise<EnvList> {
    const after = keysetAfter(['name'], page.after);
    const rows = await this.sql.read((q) =>
      q.query<EnvRow[]>(`SELECT name, body, created_at, updated_at FROM sched_envs ${after.sql ? `WHERE ${after.sql}` : ''} ORDER BY name LIMIT ?`, [
        ...after.params,
        page.limit + 1,
      ]),
    );
    const { items, nextCursor } = pageOf(CURSORS.envs, rows, page.limit, (r): [string] => [r.name]);
    return { envs: items.map(rowRecord), ...(nextCursor ? { nextCursor } : {}) };
  }

  /** false when there was no such record. */
  async delete(name: string): Promise<boolean> {
    const r = await this.sql.transaction(async (tx) => tx.query<{ affectedRows: number }>('DELETE FROM sched_envs WHERE name = ?', [name]));
    return r.affectedRows > 0;
  }

  /** Inserts the record unless one exists (several replicas starting at once: one wins, nothing is overwritten). true when inserted. */
  async insertIfAbsent(env: EnvPolicy): Promise<boolean> {
    const now = new Date();
    const r = await this.sql.transaction(async (tx) =>
      tx.query<{ affectedRows: number }>(
        // IGNORE: an existing row is left alone and counts 0 rows (ON DUPLICATE KEY UPDATE counts a found row with the client's FOUND_ROWS flag)
        'INSERT IGNORE INTO sched_envs (name, body, created_at, updated_at) VALUES (?, ?, ?, ?)',
        [env.name, JSON.stringify(env), now, now],
      ),
    );
    return r.affectedRows === 1;
  }
}

function recordOf(env: EnvPolicy, createdAt: Date, updatedAt: Date): EnvRecord {
  return { ...env, createdAt: createdAt.toISOString(), updatedAt: updatedAt.toISOString() };
}

/** mysql2 returns JSON columns parsed on MySQL and as text on MariaDB (JSON is LONGTEXT there). */
function rowRecord(r: EnvRow): EnvRecord {
  const body = (typeof r.body === 'string' ? JSON.parse(r.body) : r.body) as EnvPolicy;
  return recordOf({ ...body, name: r.name }, new Date(r.created_at), new Date(r.updated_at));
}

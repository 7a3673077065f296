import mysql from 'mysql2/promise';
import type { DbConfig } from '@orangery/persistence';
import { isConflict } from '@orangery/persistence';
import type { Logger } from '@orangery/telemetry';
import type { LeaseRow, LeaseStore } from '../domain/leader-lease';

/** Galera certification failures come back as deadlocks: the statement is simply run again. */
const CONFLICT_RETRIES = 3;

/**
 * The `sched_leader` row on a connection of its own (never queued behind the journal's
 * pool), every statement bounded by `timeoutMs`: a database cut off without a FIN never
 * answers, and a renewal that hangs must count as failed, not block the lease. A
 * connection that timed out or failed is destroyed and a new one opened next time.
 *
 * Galera: every statement here is a single-row autocommit write or a read of that row.
 * Reads run with `wsrep_sync_wait = 1` (causal: a candidate on a lagging node must not
 * think a renewed lease stood still); the writes are compare-and-set, so of a renewal and a
 * takeover certified on two nodes at once exactly one commits, the other comes back as a
 * deadlock and is run again against the row as it now is. On MariaDB/MySQL without Galera
 * the variable does nothing (or does not exist; the error is ignored).
 */
export class MysqlLeaseStore implements LeaseStore {
  private conn: mysql.Connection | undefined;
  private connecting: Promise<mysql.Connection> | undefined;
  /**
   * The database hosts, in order (several for a Galera cluster, when the configuration
   * lists them); a connection that fails moves the next one to the next host.
   */
  private readonly hosts: { host: string; port: number }[];
  private current = 0;

  constructor(
    private readonly db: DbConfig,
    private readonly timeoutMs: number,
    private readonly logger: Logger,
  ) {
    const listed = (db as DbConfig & { hosts?: { host: string; port: number }[] }).hosts;
    this.hosts = listed && listed.length > 0 ? listed : [{ host: db.host, port: db.port }];
  }

  async read(): Promise<LeaseRow> {
    const [rows] = await this.run<mysql.RowDataPacket[]>('SELECT holder, epoch, counter FROM sched_leader WHERE id = 1');
    const r = rows[0];
    if (!r) throw new Error('sched_leader has no row (migrations not run?)');
    return { holder: r['holder'] === null ? null : String(r['holder']), epoch: Number(r['epoch']), counter: Number(r['counter']) };
  }

  async renew(epoch: number): Promise<boolean> {
    const [res] = await this.run<mysql.ResultSetHeader>('UPDATE sched_leader SET counter = counter + 1 WHERE id = 1 AND epoch = ?', [epoch]);
    return res.affectedRows === 1;
  }

  async takeOver(seen: LeaseRow, me: string): Promise<boolean> {
    const [res] = await this.run<mysql.ResultSetHeader>(
      `UPDATE sched_leader SET holder = ?, epoch = epoch + 1, counter = 0, since = NOW(3)
       WHERE id = 1 AND epoch = ? AND counter = ? AND holder <=> ?`,
      [me, seen.epoch, seen.counter, seen.holder],
    );
    return res.affectedRows === 1;
  }

  async release(epoch: number): Promise<void> {
    await this.run('UPDATE sched_leader SET holder = NULL, counter = counter + 1 WHERE id = 1 AND epoch = ?', [epoch]);
  }

  async close(): Promise<void> {
    const c = this.conn;
    this.conn = undefined;
    if (c) await bounded(c.end(), this.timeoutMs).catch(() => c.destroy());
  }

  private async run<T>(sql: string, params: unknown[] = []): Promise<[T, unknown]> {
    for (let attempt = 0; ; attempt++) {
      const c = await this.connection();
      try {
        return (await bounded(c.query(sql, params), this.timeoutMs)) as [T, unknown];
      } catch (e) {
        if (isConflict(e) && attempt < CONFLICT_RETRIES) continue;
        // A timed-out statement may still be running, or its socket be dead: never reuse it.
        if (!isConflict(e)) this.drop(c);
        throw e;
      }
    }
  }

  private async connection(): Promise<mysql.Connection> {
    if (this.conn) return this.conn;
    this.connecting ??= this.open().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async open(): Promise<mysql.Connection> {
    const at = this.hosts[this.current]!;
    const pending = mysql.createConnection({
      host: at.host,
      port: at.port,
      user: this.db.user,
      password: this.db.password,
      database: this.db.database,
      connectTimeout: this.timeoutMs,
      enableKeepAlive: true,
      supportBigNumbers: true,
    });
    let c: mysql.Connection;
    try {
      c = await bounded(pending, this.timeoutMs);
    } catch (e) {
      void pending.then((late) => late.destroy()).catch(() => undefined);
      this.moveOn();
      throw e;
    }
    c.on('error', () => undefined); // surfaced by the next statement
    try {
      // a row lock held by a writer that vanished must not hold a renewal or a takeover for 50 s
      await bounded(c.query('SET SESSION innodb_lock_wait_timeout = 1'), this.timeoutMs);
      await bounded(c.query('SET SESSION wsrep_sync_wait = 1'), this.timeoutMs).catch((err: unknown) =>
        this.logger.debug({ err: String(err) }, 'wsrep_sync_wait not set (not a Galera node)'),
      );
    } catch (e) {
      c.destroy();
      throw e;
    }
    this.conn = c;
    return c;
  }

  private drop(c: mysql.Connection): void {
    if (this.conn === c) {
      this.conn = undefined;
      this.moveOn();
    }
    c.destroy();
  }

  private moveOn(): void {
    if (this.hosts.length > 1) this.current = (this.current + 1) % this.hosts.length;
  }
}

class StatementTimeout extends Error {
  constructor(ms: number) {
    super(`the database did not answer within ${ms} ms`);
    this.name = 'StatementTimeout';
  }
}

function bounded<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StatementTimeout(ms)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

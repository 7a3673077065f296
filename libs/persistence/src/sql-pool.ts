import mysql, { type Pool, type PoolConnection, type QueryError } from 'mysql2';
import type { DbConfig, DbHost } from './data-source';
import { DatabaseBusyError, DatabaseUnavailableError, errorText, isConflict, isConnectionError, isTooLarge } from './data-source';

/** Seconds a write transaction may sit idle on the server before it is rolled back (a vanished client). */
const IDLE_WRITE_TRANSACTION_TIMEOUT_S = 5;

/** Callers waiting for a connection at most, by default; beyond, DatabaseBusyError at once. */
export const DEFAULT_DB_QUEUE_LIMIT = 1_000;

/**
 * A lean transaction runner for hot paths, on mysql2's callback API. Why not TypeORM's
 * QueryRunner here: measured on the IPAM allocation path, its per-statement wrapper costs
 * ~0.15 ms of CPU and it sends each statement alone (an allocation took 9 round trips).
 * This runner:
 * - sets READ COMMITTED once per connection instead of once per transaction;
 * - sends START TRANSACTION together with the transaction's first statement;
 * - buffers writes (`defer`) and sends them with COMMIT in one round trip.
 * TypeORM still owns the schema (migrations) and the service's other, colder queries.
 */
export class SqlPool {
  /** one mysql2 pool per host of ORANGERY_DB_URL, made when first used */
  private readonly pools: (Pool | undefined)[];
  /** the host in use: every new connection goes there until it fails */
  private current = 0;
  /** per host: wsrep is on (a Galera node), learned on its first connection */
  private readonly galera: (boolean | undefined)[];

  /**
   * `queueLimit` bounds the callers waiting for one of the `size` connections (mysql2's own
   * queue is unbounded by default, so a stalled database turned into unbounded memory and
   * latency): the next caller gets DatabaseBusyError at once, which services answer as a
   * retryable UNAVAILABLE.
   */
  constructor(
    private readonly db: DbConfig,
    private readonly size: number,
    private readonly onFailover: (from: DbHost, to: DbHost, reason: string) => void = () => undefined,
    private readonly queueLimit = DEFAULT_DB_QUEUE_LIMIT,
  ) {
    this.pools = db.hosts.map(() => undefined);
    this.galera = db.hosts.map(() => undefined);
  }

  /** The host new transactions go to (tests and logs). */
  get host(): DbHost {
    return this.db.hosts[this.current] ?? { host: this.db.host, port: this.db.port };
  }

  private poolAt(i: number): Pool {
    const existing = this.pools[i];
    if (existing) return existing;
    const h = this.db.hosts[i] ?? { host: this.db.host, port: this.db.port };
    const pool = mysql.createPool({
      host: h.host,
      port: h.port,
      user: this.db.user,
      password: this.db.password,
      database: this.db.database,
      connectionLimit: this.size,
      queueLimit: this.queueLimit,
      maxIdle: this.size,
      idleTimeout: 60_000,
      multipleStatements: true,
      supportBigNumbers: true,
      bigNumberStrings: false,
      timezone: 'Z',
      charset: 'utf8mb4_bin',
      enableKeepAlive: true,
      connectTimeout: 5_000,
    });
    pool.on('connection', (c) => {
      c.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED');
      // Galera: a read waits until this node has applied every write the cluster committed
      // before it, so a replica that moved to another node (or shares the cluster with a
      // replica on another node) never decides on an older state. Ignored where wsrep is
      // off (plain MariaDB); an error (a server without the variable) is harmless.
      c.query('SET SESSION wsrep_sync_wait = 1', () => undefined);
      // A client that vanishes without a FIN (its host blackholed) in the middle of a
      // transaction would keep that transaction's row locks until the server noticed the
      // dead connection (hours): on Galera, where statements go one per round trip, the
      // scheduler's lease row among them. The server ends a write transaction left idle
      // this long; ours never wait between statements for more than milliseconds.
      c.query(`SET SESSION idle_write_transaction_timeout = ${IDLE_WRITE_TRANSACTION_TIMEOUT_S}`, () => undefined);
    });
    this.pools[i] = pool;
    return pool;
  }

  /**
   * Host `from` failed: new connections go to the next one. Only the first caller to see
   * `from` fail moves on (many transactions fail together when a node dies). Connections
   * still open on `from` are left to finish or fail on their own: closing them could cut a
   * COMMIT whose outcome would then be unknown.
   */
  private moveOn(from: number, reason: unknown): void {
    if (this.current !== from || this.db.hosts.length < 2) return;
    this.current = (from + 1) % this.db.hosts.length;
    this.onFailover(this.db.hosts[from]!, this.db.hosts[this.current]!, errorText(reason));
  }

  private async acquire(i: number): Promise<{ conn: PoolConnection; galera: boolean }> {
    const conn = await new Promise<PoolConnection>((res, rej) =>
      this.poolAt(i).getConnection((err, c) => (err ? rej(/Queue limit reached/i.test(err.message) ? new DatabaseBusyError(this.queueLimit) : err) : res(c))),
    );
    let galera = this.galera[i];
    if (galera === undefined) {
      galera = await new Promise<boolean>((res) =>
        // MySQL has no such variable (an error): not Galera
        conn.query('SELECT @@wsrep_on AS wsrep', (err: QueryError | null, rows: unknown) =>
          res(!err && Number((rows as { wsrep?: unknown }[])[0]?.wsrep) === 1),
        ),
      );
      this.galera[i] = galera;
    }
    return { conn, galera };
  }

  /**
   * Runs `work` in one transaction and commits. Deadlocks and lock-wait timeouts are
   * retried at once (the database picked a victim; running again is the documented
   * remedy); a lost connection is retried with backoff up to `unavailableAfterMs`, then
   * DatabaseUnavailableError. `work` must therefore be safe to run again from scratch.
   */
  async transaction<T>(work: (tx: SqlTx) => Promise<T>, unavailableAfterMs = 4_000): Promise<T> {
    return this.withRetry(async (host) => {
      const { conn, galera } = await this.acquire(host);
      const tx = new SqlTx(conn, true, galera);
      let broken = false;
      try {
        const result = await work(tx);
        await tx.commit();
        return result;
      } catch (e) {
        // the server closes the connection after a packet over max_allowed_packet
        broken = isConnectionError(e) || isTooLarge(e);
        if (!broken) await tx.rollback().catch(() => (broken = true));
        throw e;
      } finally {
        // A connection that failed mid-transaction is dropped, never reused.
        if (broken) conn.destroy();
        else conn.release();
      }
    }, unavailableAfterMs);
  }

  /** Autocommit reads, no transaction; same retry rules. */
  async read<T>(work: (tx: SqlTx) => Promise<T>, unavailableAfterMs = 4_000): Promise<T> {
    return this.withRetry(async (host) => {
      const { conn, galera } = await this.acquire(host);
      let broken = false;
      try {
        return await work(new SqlTx(conn, false, galera));
      } catch (e) {
        broken = isConnectionError(e);
        throw e;
      } finally {
        if (broken) conn.destroy();
        else conn.release();
      }
    }, unavailableAfterMs);
  }

  /**
   * Runs `run` on the current host. A conflict (deadlock, lock wait timeout, and on Galera a
   * certification failure, which comes back as a deadlock) runs it again at once; a lost
   * connection moves to the next host and runs it again there, pausing with backoff once
   * every host has failed, until `unavailableAfterMs`.
   */
  private async withRetry<T>(run: (host: number) => Promise<T>, unavailableAfterMs: number): Promise<T> {
    const deadline = Date.now() + unavailableAfterMs;
    let conflicts = 0;
    let delay = 100;
    let hostsTried = 0;
    for (;;) {
      const host = this.current;
      try {
        return await run(host);
      } catch (e) {
        if (isConflict(e) && conflicts < 30) {
          conflicts++;
          await sleep(Math.random() * 5 * conflicts);
          continue;
        }
        if (isConnectionError(e)) {
          this.moveOn(host, e);
          // the next host at once, until every host has been tried; then back off
          if (++hostsTried < this.db.hosts.length) continue;
          if (Date.now() + delay > deadline) throw new DatabaseUnavailableError(e);
          await sleep(delay);
          delay = Math.min(delay * 2, 1_000);
          continue;
        }
        throw e;
      }
    }
  }

  /** One round trip on a pooled connection (readiness); fails rather than retrying. */
  async ping(): Promise<void> {
    const { conn } = await this.acquire(this.current).catch((e: unknown) => {
      throw new DatabaseUnavailableError(e);
    });
    try {
      await new Promise<void>((res, rej) => conn.query('SELECT 1', (err: QueryError | null) => (err ? rej(err) : res())));
      conn.release();
    } catch (e) {
      conn.destroy();
      throw new DatabaseUnavailableError(e);
    }
  }

  async end(): Promise<void> {
    await Promise.all(this.pools.map((p) => (p ? new Promise<void>((r) => p.end(() => r())) : undefined)));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The `?` placeholders of a statement, outside quoted strings and identifiers. */
export function placeholders(sql: string): number {
  let n = 0;
  let quote: string | undefined;
  for (let i = 0; i < sql.length; i++) {
    const c = sql[i]!;
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = undefined;
    } else if (c === "'" || c === '"' || c === '`') quote = c;
    else if (c === '?') n++;
  }
  return n;
}

export class SqlTx {
  private begun = false;
  private readonly pending: { sql: string; params: unknown[]; onResult?: (result: unknown) => void }[] = [];

  /**
   * @param oneStatementPerTrip on a Galera node, every statement goes alone, COMMIT too.
   * Measured on MariaDB 10.11 + Galera 4 (docs/topology.md): when a transaction is aborted by
   * a conflicting write from another node (a brute-force abort) while a multi-statement
   * packet runs, the abort's deadlock can be lost, the rest of the packet runs outside any
   * transaction, and a COMMIT at its end answers OK for a transaction that was rolled back:
   * ipam answered an allocation that never existed. Alone, each statement (and COMMIT)
   * reports the abort, as Galera documents.
   */
  constructor(
    private readonly conn: PoolConnection,
    private readonly transactional: boolean,
    private readonly oneStatementPerTrip = false,
  ) {}

  private send(sql: string, params: unknown[]): Promise<unknown> {
    return new Promise((res, rej) =>
      this.conn.query({ sql, values: params }, (err: QueryError | null, rows: unknown) => (err ? rej(withoutStatement(err)) : res(rows))),
    );
  }

  /** Runs one statement now and returns its rows (buffered writes go first, in order). */
  async query<R = unknown>(sql: string, params: unknown[] = []): Promise<R> {
    const [rows] = await this.queryAll([{ sql, params }]);
    return rows as R;
  }

  /**
   * Runs several statements in one round trip and returns each one's rows. START
   * TRANSACTION (first statement of a transaction) and buffered writes go first, in order.
   */
  async queryAll(statements: { sql: string; params?: unknown[] }[]): Promise<unknown[]> {
    const stmts: string[] = [];
    const values: unknown[] = [];
    if (this.transactional && !this.begun) {
      stmts.push('START TRANSACTION');
      this.begun = true;
    }
    const flushed = this.pending.splice(0);
    const firstFlushed = stmts.length;
    for (const p of flushed) {
      stmts.push(p.sql);
      values.push(...p.params);
    }
    const skip = stmts.length;
    for (const st of statements) {
      stmts.push(st.sql);
      values.push(...(st.params ?? []));
    }
    const results = this.oneStatementPerTrip
      ? await this.sendEach(stmts, values)
      : stmts.length === 1
        ? [await this.send(stmts[0]!, values)]
        : ((await this.send(stmts.join(';\n'), values)) as unknown[]);
    flushed.forEach((p, i) => p.onResult?.(results[firstFlushed + i]));
    return results.slice(skip);
  }

  /**
   * Buffers a write; it is sent with the next query or with COMMIT. `onResult` gets the
   * statement's result header (e.g. `insertId`, the first AUTO_INCREMENT id it generated).
   */
  defer(sql: string, params: unknown[] = [], onResult?: (result: unknown) => void): void {
    this.pending.push({ sql, params, onResult });
  }

  async commit(): Promise<void> {
    if (!this.transactional) return;
    if (!this.begun && this.pending.length === 0) return;
    const flushed = this.pending.splice(0);
    const offset = this.begun ? 0 : 1;
    const stmts = [...(this.begun ? [] : ['START TRANSACTION']), ...flushed.map((p) => p.sql), 'COMMIT'];
    const values = flushed.flatMap((p) => p.params);
    this.begun = true;
    const results = this.oneStatementPerTrip ? await this.sendEach(stmts, values) : ((await this.send(stmts.join(';\n'), values)) as unknown[]);
    this.begun = false;
    // after COMMIT succeeded: a result seen only once the rows are durable
    flushed.forEach((p, i) => p.onResult?.(Array.isArray(results) ? results[offset + i] : results));
  }

  /** Sends `stmts` one per round trip, handing each its share of `values` (by its placeholders). */
  private async sendEach(stmts: string[], values: unknown[]): Promise<unknown[]> {
    const out: unknown[] = [];
    let at = 0;
    for (const sql of stmts) {
      const n = placeholders(sql);
      out.push(await this.send(sql, values.slice(at, at + n)));
      at += n;
    }
    return out;
  }

  async rollback(): Promise<void> {
    this.pending.length = 0;
    if (this.begun) await this.send('ROLLBACK', []);
    this.begun = false;
  }
}

/**
 * mysql2 puts the failed statement on its error (`sql`), with the values formatted in:
 * journaled records hold an app's `environment` (secrets), and a logged error object would
 * print them (issue 13: no secret in any log). The code, errno and server message stay.
 */
export function withoutStatement<E extends object>(err: E): E {
  if ('sql' in err) delete (err as { sql?: unknown }).sql;
  return err;
}

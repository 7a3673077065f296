import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { DataSource, type MigrationInterface, type EntitySchema } from 'typeorm';
import type { Logger } from '@orangery/telemetry';

export interface DbHost {
  host: string;
  port: number;
}

export interface DbConfig {
  /** the first host of `hosts`: the one a single-host deployment has */
  host: string;
  port: number;
  /**
   * Every host of ORANGERY_DB_URL, in order: the nodes of a Galera cluster (or a primary
   * and its standbys). Services use one at a time and move to the next when it fails.
   */
  hosts: DbHost[];
  user: string;
  password: string;
  database: string;
}

/** The same configuration pointed at one of its hosts. */
export function onHost(db: DbConfig, h: DbHost): DbConfig {
  return { ...db, host: h.host, port: h.port };
}

/**
 * Parses ORANGERY_DB_URL (`mysql://user:pass@host:port/db`, or several hosts
 * `mysql://user:pass@h1:3306,h2:3306,h3:3306/db`); throws a one-line reason.
 */
export function parseDbUrl(url: string): DbConfig {
  // WHATWG URLs hold one host: the list is split out first, and each entry checked alone.
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*@)?([^/?#@]*)(.*)$/i.exec(url.trim());
  const hostList = m ? m[3]!.split(',').map((h) => h.trim()) : [];
  if (m && hostList.length > 1) {
    if (hostList.some((h) => h === '')) throw new Error('ORANGERY_DB_URL has an empty host in its list (expected h1:3306,h2:3306,...)');
    const first = parseOneHost(`${m[1]}${m[2] ?? ''}${hostList[0]}${m[4]}`);
    const hosts = hostList.map((h) => {
      let u: URL;
      try {
        u = new URL(`mysql://${h}`);
      } catch {
        throw new Error(`ORANGERY_DB_URL host '${h}' is not host:port`);
      }
      if (u.hostname === '' || u.pathname !== '' || u.username !== '') throw new Error(`ORANGERY_DB_URL host '${h}' is not host:port`);
      return { host: u.hostname, port: u.port === '' ? 3306 : Number(u.port) };
    });
    return { ...first, hosts };
  }
  return parseOneHost(url);
}

function parseOneHost(url: string): DbConfig {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error('ORANGERY_DB_URL is not a URL (expected mysql://user:password@host:port/database)');
  }
  if (u.protocol !== 'mysql:' && u.protocol !== 'mariadb:') {
    throw new Error(`ORANGERY_DB_URL must start with mysql:// or mariadb://, not ${u.protocol}//`);
  }
  const database = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (!/^[A-Za-z0-9_$-]{1,64}$/.test(database)) {
    throw new Error('ORANGERY_DB_URL must name a database, e.g. mysql://orangery:orangery@127.0.0.1:3306/orangery');
  }
  if (u.hostname === '') throw new Error('ORANGERY_DB_URL has no host');
  const port = u.port === '' ? 3306 : Number(u.port);
  return {
    host: u.hostname,
    port,
    hosts: [{ host: u.hostname, port }],
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database,
  };
}

export interface DataSourceOptions {
  db: DbConfig;
  /** the owning service; its tables and migrations table carry this prefix */
  service: string;
  entities?: EntitySchema[];
  migrations: (new () => MigrationInterface)[];
  poolSize?: number;
}

export function createDataSource(o: DataSourceOptions): DataSource {
  return new DataSource({
    type: 'mysql',
    host: o.db.host,
    port: o.db.port,
    username: o.db.user,
    password: o.db.password,
    database: o.db.database,
    entities: o.entities ?? [],
    migrations: o.migrations,
    migrationsTableName: `${o.service.replace(/-/g, '_')}_migrations`,
    migrationsRun: false,
    synchronize: false,
    logging: false,
    charset: 'utf8mb4_bin',
    timezone: 'Z',
    supportBigNumbers: true,
    bigNumberStrings: false,
    connectTimeout: 5_000,
    poolSize: o.poolSize ?? 20,
    extra: { enableKeepAlive: true, idleTimeout: 60_000, maxIdle: o.poolSize ?? 20 },
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The table of migration locks, one row per service (see migrationLock). */
export const MIGRATION_LOCK_TABLE = 'orangery_migration_lock';
const LOCK_TTL_SECONDS = 60;
const LOCK_RENEW_MS = 10_000;
const LOCK_WAIT_MS = 300_000;

/**
 * Connects (waiting as long as the database is down: that is not a configuration error)
 * and brings the service's tables up to date, on the first host of ORANGERY_DB_URL that
 * answers; a host that fails on the way is left for the next one. Returns the data source,
 * initialized.
 */
export async function openMigratedDataSource(o: DataSourceOptions, logger: Logger, shouldStop: () => boolean = () => false): Promise<DataSource> {
  const holder = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  let delay = 250;
  for (let attempt = 0; ; attempt++) {
    const host = o.db.hosts[attempt % o.db.hosts.length] ?? { host: o.db.host, port: o.db.port };
    const ds = createDataSource({ ...o, db: onHost(o.db, host) });
    try {
      await initializeDatabase(ds, o.service, logger, () => true, holder);
      return ds;
    } catch (e) {
      // not reachable yet: any failure to connect; once connected, a lost connection only
      // (a migration that fails for another reason fails the start)
      const retry = !(e instanceof CredentialsRefusedError) && (!ds.isInitialized || isConnectionError(e));
      await ds.destroy().catch(() => undefined);
      if (!retry || shouldStop()) throw e;
      logger.warn({ host: `${host.host}:${host.port}`, err: errorText(e), retryInMs: delay }, 'database not reachable yet; retrying');
      // each host at once, then a pause once every host has failed
      if ((attempt + 1) % o.db.hosts.length === 0) {
        await sleep(delay);
        delay = Math.min(delay * 2, 5_000);
      }
    }
  }
}

/**
 * Connects (waiting as long as the database is down: that is not a configuration error,
 * unless `shouldStop` says to give up) and brings the service's tables up to date.
 * Replicas starting at once serialize on a lock row (migrationLock), so each migration
 * runs exactly once, on one server or across the nodes of a Galera cluster.
 */
export async function initializeDatabase(
  ds: DataSource,
  service: string,
  logger: Logger,
  shouldStop: () => boolean = () => false,
  holder = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`,
): Promise<void> {
  let delay = 250;
  for (;;) {
    try {
      await ds.initialize();
      break;
    } catch (e) {
      if (isAccessDenied(e)) throw new CredentialsRefusedError(e);
      if (shouldStop()) throw e;
      logger.warn({ err: errorText(e), retryInMs: delay }, 'database not reachable yet; retrying');
      await sleep(delay);
      delay = Math.min(delay * 2, 5_000);
    }
  }
  // Galera: a read waits for the writes the cluster committed before it (a replica that
  // migrated through another node). Every connection of this pool gets it, including the
  // one TypeORM opened while initializing (the pool's 'connection' event came too late for it).
  const pool = (ds.driver as unknown as { pool?: { on(ev: 'connection', f: (c: { query(sql: string, cb: () => void): void }) => void): void } }).pool;
  pool?.on('connection', (c) => c.query('SET SESSION wsrep_sync_wait = 1', () => undefined));
  await ds.query('SET SESSION wsrep_sync_wait = 1').catch(() => undefined);
  const lock = await migrationLock(ds, service, holder, logger);
  try {
    const ran = await ds.runMigrations({ transaction: 'each' });
    if (ran.length > 0) logger.info({ migrations: ran.map((m) => m.name) }, 'database migrated');
  } finally {
    await lock.release();
  }
}

/**
 * The migrations lock of `service`: a row, not GET_LOCK, because named locks are per
 * server and Galera nodes do not share them (two replicas on two nodes would both hold
 * it). Taking it is a write, so two nodes taking it at once are ordered by certification:
 * one commits, the other gets a deadlock and tries again. The row expires after
 * LOCK_TTL_SECONDS unless its holder renews it, so a replica killed while migrating holds
 * the others back for a minute at most. And since Galera commits a node's writes in the
 * cluster's order, once this node has committed our taking of the lock it has also applied
 * every migration that the previous holder ran through another node.
 */
export async function migrationLock(ds: DataSource, service: string, holder: string, logger: Logger): Promise<{ release(): Promise<void> }> {
  await ds.query(
    `CREATE TABLE IF NOT EXISTS ${MIGRATION_LOCK_TABLE} (name VARCHAR(64) NOT NULL PRIMARY KEY, holder VARCHAR(128) NOT NULL, expires_at DATETIME(3) NOT NULL) ENGINE=InnoDB`,
  );
  const name = service.slice(0, 64);
  const take = async (): Promise<boolean> => {
    // assignments run left to right: expires_at is renewed only when holder is ours after the first
    await ds.query(
      `INSERT INTO ${MIGRATION_LOCK_TABLE} (name, holder, expires_at) VALUES (?, ?, NOW(3) + INTERVAL ${LOCK_TTL_SECONDS} SECOND)
       ON DUPLICATE KEY UPDATE holder = IF(expires_at < NOW(3) OR holder = VALUES(holder), VALUES(holder), holder),
         expires_at = IF(holder = VALUES(holder), VALUES(expires_at), expires_at)`,
      [name, holder],
    );
    const [row] = (await ds.query(`SELECT holder FROM ${MIGRATION_LOCK_TABLE} WHERE name = ?`, [name])) as { holder: string }[];
    return row?.holder === holder;
  };
  const deadline = Date.now() + LOCK_WAIT_MS;
  let waited = false;
  for (;;) {
    const got = await take().catch((e: unknown) => {
      if (isConflict(e)) return false;
      throw e;
    });
    if (got) break;
    if (Date.now() > deadline) throw new Error(`could not take the migrations lock within ${LOCK_WAIT_MS / 1000} s`);
    if (!waited) logger.info({ service }, 'another replica is migrating; waiting for it');
    waited = true;
    await sleep(200 + Math.random() * 200);
  }
  const renew = setInterval(() => void take().catch(() => undefined), LOCK_RENEW_MS);
  return {
    release: async () => {
      clearInterval(renew);
      await ds.query(`DELETE FROM ${MIGRATION_LOCK_TABLE} WHERE name = ? AND holder = ?`, [name, holder]).catch(() => undefined);
    },
  };
}

export class CredentialsRefusedError extends Error {
  constructor(cause: unknown) {
    super(`database refused the credentials in ORANGERY_DB_URL: ${errorText(cause)}`);
    this.name = 'CredentialsRefusedError';
  }
}

export class DatabaseUnavailableError extends Error {
  /** read by the Responder (duck-typed; messaging does not import persistence): a retryable UNAVAILABLE */
  readonly unavailable = true;
  constructor(cause: unknown) {
    super(`database unavailable: ${errorText(cause)}`);
    this.name = 'DatabaseUnavailableError';
  }
}

/** Every connection is busy and `queueLimit` callers already wait: refused at once, never queued. */
export class DatabaseBusyError extends DatabaseUnavailableError {
  constructor(readonly queueLimit: number) {
    super(`database busy: ${queueLimit} requests already wait for a connection`);
    this.message = `database busy: ${queueLimit} requests already wait for a connection`;
    this.name = 'DatabaseBusyError';
  }
}

interface DriverErrorish {
  code?: string;
  errno?: number;
  message?: string;
  driverError?: DriverErrorish;
  cause?: unknown;
}

function driverError(e: unknown): DriverErrorish {
  const x = (e ?? {}) as DriverErrorish;
  return x.driverError ?? x;
}

export function errorText(e: unknown): string {
  const d = driverError(e);
  return [d.code, d.message].filter(Boolean).join(': ') || String(e);
}

export function isDuplicateKey(e: unknown): boolean {
  return driverError(e).code === 'ER_DUP_ENTRY';
}

/** A statement larger than the server's max_allowed_packet: sending it again cannot succeed. */
export function isTooLarge(e: unknown): boolean {
  const d = driverError(e);
  return d.code === 'ER_NET_PACKET_TOO_LARGE' || d.errno === 1153 || d.errno === 1301 || /max_allowed_packet/i.test(d.message ?? '');
}

export function isConflict(e: unknown): boolean {
  const code = driverError(e).code;
  return code === 'ER_LOCK_DEADLOCK' || code === 'ER_LOCK_WAIT_TIMEOUT' || code === 'ER_CHECKREAD';
}

function isAccessDenied(e: unknown): boolean {
  const code = driverError(e).code;
  return code === 'ER_ACCESS_DENIED_ERROR' || code === 'ER_DBACCESS_DENIED_ERROR' || code === 'ER_BAD_DB_ERROR';
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'ER_CON_COUNT_ERROR',
  'ER_SERVER_SHUTDOWN',
  'ER_CONNECTION_KILLED',
  'ER_QUERY_INTERRUPTED',
  'ER_UNKNOWN_COM_ERROR',
  'ER_NET_READ_ERROR',
  'ER_NET_ERROR_ON_WRITE',
  'CR_SERVER_GONE_ERROR',
  'CR_SERVER_LOST',
]);

export function isConnectionError(e: unknown): boolean {
  const d = driverError(e);
  if (d.code && CONNECTION_CODES.has(d.code)) return true;
  const msg = d.message ?? '';
  return /connection (is in closed state|lost)|Can't add new command when connection is in closed state|Pool is closed|read ECONNRESET|connect ECONNREFUSED|Connection terminated/i.test(
    msg,
  );
}

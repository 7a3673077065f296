import { createHash } from 'node:crypto';
import { DataSource, type MigrationInterface, type EntitySchema } from 'typeorm';
import type { Logger } from '@orangery/telemetry';

export interface DbConfig {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** Parses ORANGERY_DB_URL (`mysql://user:pass@host:port/db`); throws a one-line reason. */
export function parseDbUrl(url: string): DbConfig {
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

/**
 * Connects (waiting as long as the database is down: that is not a configuration error)
 * and brings the service's tables up to date. Replicas starting at once serialize on a
 * named lock, so each migration runs exactly once.
 */
export async function initializeDatabase(ds: DataSource, service: string, logger: Logger, shouldStop: () => boolean = () => false): Promise<void> {
  let delay = 250;
  for (;;) {
    try {
      await ds.initialize();
      break;
    } catch (e) {
      if (isAccessDenied(e)) throw new Error(`database refused the credentials in ORANGERY_DB_URL: ${errorText(e)}`);
      if (shouldStop()) throw e;
      logger.warn({ err: errorText(e), retryInMs: delay }, 'database not reachable yet; retrying');
      await sleep(delay);
      delay = Math.min(delay * 2, 5_000);
    }
  }
  const qr = ds.createQueryRunner();
  try {
    // server-wide name: the database is part of it (at most 64 characters, so hashed when long)
    const full = `orangery:${service}:migrations:${ds.options.database as string}`;
    const lock = full.length <= 64 ? full : `orangery:${service}:migrations:${createHash('sha256').update(full).digest('hex').slice(0, 24)}`;
    const [row] = (await qr.query('SELECT GET_LOCK(?, 120) AS got', [lock])) as { got: number }[];
    if (!row || Number(row.got) !== 1) throw new Error('could not take the migrations lock within 120 s');
    try {
      const ran = await ds.runMigrations({ transaction: 'each' });
      if (ran.length > 0) logger.info({ migrations: ran.map((m) => m.name) }, 'database migrated');
    } finally {
      await qr.query('SELECT RELEASE_LOCK(?)', [lock]).catch(() => undefined);
    }
  } finally {
    await qr.release();
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

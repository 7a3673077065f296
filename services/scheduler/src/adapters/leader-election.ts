import { createHash } from 'node:crypto';
import mysql from 'mysql2/promise';
import type { DbConfig } from '@orangery/persistence';
import type { Logger } from '@orangery/telemetry';

/**
 * Named locks are server-wide in MySQL, not per database: the name carries the database,
 * or two deployments sharing one server would share one leader (found when a benchmark and
 * a test ran side by side). At most 64 characters: long names are hashed.
 */
export function leaderLockName(database: string): string {
  const name = `orangery:scheduler:leader:${database}`;
  return name.length <= 64 ? name : `orangery:scheduler:leader:${createHash('sha256').update(database).digest('hex').slice(0, 32)}`;
}
const CHECK_EVERY_MS = 1_000;

export interface LeaderHooks {
  /** this replica leads now, in `epoch`; resolves once it has started leading */
  elected(epoch: number): Promise<void>;
  /** it does not any more (connection lost, shutdown); resolves once it has stopped */
  deposed(): Promise<void>;
}

/**
 * One leader among the scheduler replicas, through a MySQL named lock held on a
 * connection of its own. The lock goes with the connection, so a leader killed with
 * SIGKILL (its socket closed by the kernel) is replaced within about a second. On top of
 * the lock, each new leader increments `sched_leader.epoch`, and every journal write checks
 * it: a leader that lost its lock without noticing (a network partition from the
 * database) cannot write anything before it steps down.
 */
export class LeaderElection {
  private conn: mysql.Connection | undefined;
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private checking = false;
  private stopped = false;
  private readonly lock: string;

  constructor(
    private readonly db: DbConfig,
    private readonly replica: string,
    private readonly hooks: LeaderHooks,
    private readonly logger: Logger,
  ) {
    this.lock = leaderLockName(db.database);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    const loop = async () => {
      if (this.checking || this.stopped) return;
      this.checking = true;
      try {
        await (this.leading ? this.confirm() : this.campaign());
      } finally {
        this.checking = false;
        if (!this.stopped) this.timer = setTimeout(() => void loop(), CHECK_EVERY_MS);
      }
    };
    void loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    for (let i = 0; i < 100 && this.checking; i++) await new Promise((r) => setTimeout(r, 20));
    if (this.leading) await this.stepDown('shutting down');
    await this.conn?.end().catch(() => undefined);
    this.conn = undefined;
  }

  private async campaign(): Promise<void> {
    try {
      this.conn ??= await this.connect();
      const [rows] = await this.conn.query<mysql.RowDataPacket[]>('SELECT GET_LOCK(?, 0) AS got', [this.lock]);
      if (Number(rows[0]?.['got']) !== 1) return;
      await this.conn.query('UPDATE sched_leader SET epoch = epoch + 1, holder = ?, since = NOW(3) WHERE id = 1', [this.replica]);
      const [e] = await this.conn.query<mysql.RowDataPacket[]>('SELECT epoch FROM sched_leader WHERE id = 1');
      const epoch = Number(e[0]?.['epoch']);
      this.leading = true;
      this.logger.info({ epoch }, 'elected scheduler leader');
      try {
        await this.hooks.elected(epoch);
      } catch (err) {
        this.logger.error({ err: String(err) }, 'could not start leading; stepping down');
        await this.stepDown('start failed');
      }
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'leader campaign failed; retrying');
      await this.dropConnection();
    }
  }

  private async confirm(): Promise<void> {
    try {
      const [rows] = await this.conn!.query<mysql.RowDataPacket[]>('SELECT IS_USED_LOCK(?) = CONNECTION_ID() AS mine', [this.lock]);
      if (Number(rows[0]?.['mine']) === 1) return;
      await this.stepDown('the leader lock is held by another connection');
    } catch (err) {
      await this.stepDown(`lost the leader lock's connection: ${String(err)}`);
    }
  }

  /** Called by the service when a write found a newer epoch. */
  async stepDown(reason: string): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    this.logger.warn({ reason }, 'no longer the scheduler leader');
    await this.hooks.deposed().catch((err: unknown) => this.logger.error({ err: String(err) }, 'error while stepping down'));
    await this.conn?.query('SELECT RELEASE_LOCK(?)', [this.lock]).catch(() => undefined);
    await this.dropConnection();
  }

  private async connect(): Promise<mysql.Connection> {
    const c = await mysql.createConnection({
      host: this.db.host,
      port: this.db.port,
      user: this.db.user,
      password: this.db.password,
      database: this.db.database,
      connectTimeout: 5_000,
      enableKeepAlive: true,
    });
    c.on('error', () => undefined); // surfaced by the next check
    return c;
  }

  private async dropConnection(): Promise<void> {
    const c = this.conn;
    this.conn = undefined;
    if (c) await c.end().catch(() => c.destroy());
  }
}

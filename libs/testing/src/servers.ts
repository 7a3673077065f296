import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createConnection } from 'mysql2/promise';
import { freePort, spawn, stopChild, waitFor, type HarnessDir } from './processes';
import type { ChildProcess } from 'node:child_process';
import { connect as tcpConnect } from 'node:net';

const run = promisify(execFile);

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
export const portAnswers = (port: number): Promise<boolean> =>
  new Promise((r) => {
    const s = tcpConnect({ port, host: '127.0.0.1' }, () => {
      s.destroy();
      r(true);
    });
    s.on('error', () => r(false));
  });

/** A private nats-server with JetStream for one test file. `stop`/`start` keep its data. */
export class NatsServer {
  private child: ChildProcess | undefined;
  readonly url: string;

  private constructor(
    private readonly dir: HarnessDir,
    private readonly conf: string,
    readonly port: number,
  ) {
    this.url = `nats://127.0.0.1:${port}`;
  }

  /** The URL with a user's credentials in it. */
  urlFor(user: string, password: string): string {
    return `nats://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${this.port}`;
  }

  /** `extraConfig`: more nats-server configuration, e.g. an `authorization` block. */
  static async start(dir: HarnessDir, extraConfig = ''): Promise<NatsServer> {
    const port = await freePort();
    const store = dir.sub('nats-js');
    const conf = join(dir.path, 'nats.conf');
    writeFileSync(conf, `listen: 127.0.0.1:${port}\njetstream { store_dir: "${store}", max_memory_store: 64MB, max_file_store: 1GB }\n${extraConfig}\n`);
    const s = new NatsServer(dir, conf, port);
    await s.start();
    return s;
  }

  async start(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) return;
    this.child = spawn('nats-server', ['-c', this.conf], { stdio: 'ignore' });
    this.dir.track(this.child);
    await waitFor(`nats-server on ${this.port}`, () => portAnswers(this.port), 10_000);
  }

  async stop(): Promise<void> {
    if (this.child) await stopChild(this.child, 'SIGTERM', 5_000);
    this.child = undefined;
  }
}

/** Connection facts of the shared test MariaDB, from `infra.sh env test` (test/run.sh). */
export function sharedDbUrl(): string {
  const url = process.env['ORANGERY_DB_URL'];
  if (!url) throw new Error('ORANGERY_DB_URL is not set: run the tests with `npm test` (it starts MariaDB)');
  return url;
}

/**
 * A fresh, empty database in the shared test MariaDB, so each test file starts from zero
 * while the server is started once per run. Returns its URL.
 */
export async function freshDatabase(label: string, baseUrl = sharedDbUrl()): Promise<string> {
  const u = new URL(baseUrl);
  const name = `orangery_t_${label.replace(/[^a-z0-9]/gi, '_')}`.slice(0, 64);
  const conn = await createConnection({
    host: u.hostname,
    port: Number(u.port || 3306),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
  });
  try {
    await conn.query(`DROP DATABASE IF EXISTS \`${name}\``);
    await conn.query(`CREATE DATABASE \`${name}\``);
  } finally {
    await conn.end();
  }
  u.pathname = `/${name}`;
  return u.toString();
}

/**
 * A private MariaDB server for tests that stop and start the database under the services.
 * Costs a few seconds (mariadb-install-db), so only those files use one.
 */
export class PrivateMariadb {
  private child: ChildProcess | undefined;
  readonly url: string;

  private constructor(
    private readonly dir: HarnessDir,
    private readonly data: string,
    readonly port: number,
    private readonly extraArgs: readonly string[] = [],
  ) {
    this.url = `mysql://orangery:orangery@127.0.0.1:${port}/orangery`;
  }

  /** `extraArgs`: more mariadbd options, e.g. `--innodb-flush-log-at-trx-commit=2` for a benchmark. */
  static async start(dir: HarnessDir, extraArgs: readonly string[] = []): Promise<PrivateMariadb> {
    const port = await freePort();
    const data = dir.sub('mysql');
    const user = (await run('id', ['-un'])).stdout.trim();
    await run('mariadb-install-db', ['--no-defaults', `--user=${user}`, `--datadir=${data}`, '--auth-root-authentication-method=socket', '--skip-test-db']);
    const db = new PrivateMariadb(dir, data, port, extraArgs);
    await db.start();
    await run('mariadb', [
      '--protocol=socket',
      '-S',
      join(dir.path, 'mysqld.sock'),
      '-uroot',
      '-e',
      "CREATE DATABASE orangery; CREATE USER 'orangery'@'127.0.0.1' IDENTIFIED BY 'orangery'; GRANT ALL ON orangery.* TO 'orangery'@'127.0.0.1';",
    ]);
    return db;
  }

  async start(): Promise<void> {
    const user = (await run('id', ['-un'])).stdout.trim();
    this.child = spawn(
      'mariadbd',
      [
        '--no-defaults',
        `--user=${user}`,
        `--datadir=${this.data}`,
        `--socket=${join(this.dir.path, 'mysqld.sock')}`,
        `--pid-file=${join(this.dir.path, 'mysqld.pid')}`,
        `--port=${this.port}`,
        '--bind-address=127.0.0.1',
        '--innodb-buffer-pool-size=64M',
        '--skip-name-resolve',
        `--log-error=${join(this.dir.path, 'mysqld.err')}`,
        ...this.extraArgs,
      ],
      { stdio: 'ignore' },
    );
    this.dir.track(this.child);
    await waitFor(`mariadbd on ${this.port}`, () => portAnswers(this.port), 30_000);
  }

  /** SIGKILL, like a crash: what the services must survive. */
  async kill(): Promise<void> {
    if (this.child) await stopChild(this.child, 'SIGKILL', 5_000);
    this.child = undefined;
  }
}

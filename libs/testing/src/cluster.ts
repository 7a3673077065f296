import { execFile, type ChildProcess } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, spawn, stopChild, waitFor, type HarnessDir } from './processes';
import { portAnswers } from './servers';

const run = promisify(execFile);

const monitorJson = async (port: number, path: string): Promise<Record<string, unknown>> => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return (await res.json()) as Record<string, unknown>;
};

interface NatsNode {
  name: string;
  port: number;
  clusterPort: number;
  monitorPort: number;
  conf: string;
  child?: ChildProcess;
}

/**
 * nats-server nodes on localhost, routed into one cluster with JetStream (R3 capable), for
 * tests that kill a node under the services. Each node keeps its store across kill/start.
 */
export class NatsCluster {
  private constructor(
    private readonly dir: HarnessDir,
    private readonly nodes: NatsNode[],
  ) {}

  /** ORANGERY_NATS_URL listing every node. */
  get url(): string {
    return this.nodes.map((n) => `nats://127.0.0.1:${n.port}`).join(',');
  }

  urlOf(i: number): string {
    return `nats://127.0.0.1:${this.nodes[i]!.port}`;
  }

  get size(): number {
    return this.nodes.length;
  }

  static async start(dir: HarnessDir, size = 3, label = 'nats'): Promise<NatsCluster> {
    const nodes: NatsNode[] = [];
    for (let i = 0; i < size; i++) {
      nodes.push({ name: `${label}-${i}`, port: await freePort(), clusterPort: await freePort(), monitorPort: await freePort(), conf: '' });
    }
    for (const n of nodes) {
      const store = dir.sub(`${n.name}-js`);
      n.conf = join(dir.path, `${n.name}.conf`);
      const routes = nodes.filter((o) => o !== n).map((o) => `nats-route://127.0.0.1:${o.clusterPort}`);
      writeFileSync(
        n.conf,
        [
          `server_name: ${n.name}`,
          `listen: 127.0.0.1:${n.port}`,
          `http: 127.0.0.1:${n.monitorPort}`,
          `max_payload: 8MB`,
          `jetstream { store_dir: "${store}", max_memory_store: 64MB, max_file_store: 1GB }`,
          `cluster { name: ${label}, listen: 127.0.0.1:${n.clusterPort}, routes: [${routes.join(', ')}] }`,
          '',
        ].join('\n'),
      );
    }
    const c = new NatsCluster(dir, nodes);
    await Promise.all(nodes.map((_, i) => c.startNode(i)));
    await c.waitJetStreamReady();
    return c;
  }

  async startNode(i: number): Promise<void> {
    const n = this.nodes[i]!;
    if (n.child && n.child.exitCode === null && n.child.signalCode === null) return;
    n.child = spawn('nats-server', ['-c', n.conf], { stdio: 'ignore' });
    this.dir.track(n.child);
    await waitFor(`nats-server ${n.name} on ${n.port}`, () => portAnswers(n.port), 15_000);
  }

  /** SIGKILL, like a crash. */
  async killNode(i: number): Promise<void> {
    const n = this.nodes[i]!;
    if (n.child) await stopChild(n.child, 'SIGKILL', 5_000);
    n.child = undefined;
  }

  /** Every running node sees a JetStream meta leader and all the cluster's peers. */
  async waitJetStreamReady(timeoutMs = 30_000): Promise<void> {
    await waitFor(
      'a JetStream meta leader on every node',
      async () => {
        for (const n of this.nodes) {
          if (!n.child) continue;
          const jsz = (await monitorJson(n.monitorPort, '/jsz')) as { meta_cluster?: { leader?: string; cluster_size?: number } };
          if (!jsz.meta_cluster?.leader) return false;
        }
        return true;
      },
      timeoutMs,
      250,
    );
  }

  async stop(): Promise<void> {
    for (let i = 0; i < this.nodes.length; i++) await this.killNode(i);
  }
}

interface GaleraNode {
  name: string;
  port: number;
  gcommPort: number;
  istPort: number;
  sstPort: number;
  data: string;
  socket: string;
  child?: ChildProcess;
}

/**
 * A MariaDB Galera cluster on localhost: one mariadbd per node with its own ports (client,
 * gcomm, IST, rsync SST), the first bootstrapped, the others joining by SST. The database
 * `orangery` and user orangery/orangery exist on every node. About 15 s to start 3 nodes.
 */
export class GaleraCluster {
  private constructor(
    private readonly dir: HarnessDir,
    private readonly nodes: GaleraNode[],
    private readonly user: string,
  ) {}

  /** ORANGERY_DB_URL listing every node. */
  get url(): string {
    return `mysql://orangery:orangery@${this.nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}/orangery`;
  }

  urlOf(i: number): string {
    return `mysql://orangery:orangery@127.0.0.1:${this.nodes[i]!.port}/orangery`;
  }

  get size(): number {
    return this.nodes.length;
  }

  static async start(dir: HarnessDir, size = 3, label = 'galera'): Promise<GaleraCluster> {
    const user = (await run('id', ['-un'])).stdout.trim();
    const nodes: GaleraNode[] = [];
    for (let i = 0; i < size; i++) {
      const name = `${label}-${i}`;
      const data = dir.sub(`${name}-data`);
      // The rsync daemon that receives a state transfer drops to another user (nobody):
      // the joiner's data directory must be writable by it.
      chmodSync(data, 0o777);
      nodes.push({
        name,
        port: await freePort(),
        gcommPort: await freePort(),
        istPort: await freePort(),
        sstPort: await freePort(),
        data,
        socket: join(dir.path, `${name}.sock`),
      });
    }
    const c = new GaleraCluster(dir, nodes, user);
    // Only the first node gets system tables; the others receive everything by SST (files
    // made by mariadb-install-db would belong to a user the rsync daemon cannot overwrite).
    await run('mariadb-install-db', [
      '--no-defaults',
      `--user=${user}`,
      `--datadir=${nodes[0]!.data}`,
      '--auth-root-authentication-method=socket',
      '--skip-test-db',
    ]);
    chmodSync(nodes[0]!.data, 0o777);
    await c.startNode(0, { bootstrap: true });
    await c.sql(0, "CREATE DATABASE orangery; CREATE USER 'orangery'@'127.0.0.1' IDENTIFIED BY 'orangery'; GRANT ALL ON orangery.* TO 'orangery'@'127.0.0.1';");
    for (let i = 1; i < size; i++) await c.startJoiner(i);
    await c.waitSynced();
    return c;
  }

  private args(n: GaleraNode, bootstrap: boolean): string[] {
    const members = this.nodes.map((o) => `127.0.0.1:${o.gcommPort}`).join(',');
    return [
      '--no-defaults',
      `--user=${this.user}`,
      `--datadir=${n.data}`,
      `--socket=${n.socket}`,
      `--pid-file=${join(this.dir.path, `${n.name}.pid`)}`,
      `--port=${n.port}`,
      '--bind-address=127.0.0.1',
      '--innodb-buffer-pool-size=64M',
      '--innodb-log-file-size=48M',
      '--max-connections=400',
      '--character-set-server=utf8mb4',
      '--collation-server=utf8mb4_bin',
      '--skip-name-resolve',
      '--binlog-format=ROW',
      '--default-storage-engine=InnoDB',
      '--innodb-autoinc-lock-mode=2',
      // Galera's own durability is the cluster: a node that crashes rejoins by IST/SST
      '--innodb-flush-log-at-trx-commit=2',
      '--wsrep-on=ON',
      '--wsrep-provider=/usr/lib/galera/libgalera_smm.so',
      `--wsrep-cluster-name=${this.dir.path.split('/').pop()!.slice(0, 30)}`,
      `--wsrep-cluster-address=gcomm://${members}`,
      `--wsrep-node-address=127.0.0.1:${n.gcommPort}`,
      `--wsrep-node-name=${n.name}`,
      `--wsrep-provider-options=base_port=${n.gcommPort};ist.recv_addr=127.0.0.1:${n.istPort};gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S;evs.install_timeout=PT6S`,
      `--wsrep-sst-receive-address=127.0.0.1:${n.sstPort}`,
      '--wsrep-sst-method=rsync',
      ...(bootstrap ? ['--wsrep-new-cluster'] : []),
      `--log-error=${join(this.dir.path, `${n.name}.err`)}`,
    ];
  }

  async startNode(i: number, o: { bootstrap?: boolean } = {}): Promise<void> {
    const n = this.nodes[i]!;
    if (n.child && n.child.exitCode === null && n.child.signalCode === null) return;
    n.child = spawn('mariadbd', this.args(n, o.bootstrap === true), { stdio: 'ignore' });
    this.dir.track(n.child);
    const child = n.child;
    let exited = false;
    await waitFor(
      `mariadbd ${n.name} on ${n.port}`,
      () => {
        // a node that died will not answer: stop waiting at once
        if (child.exitCode !== null || child.signalCode !== null) return (exited = true);
        return portAnswers(n.port);
      },
      120_000,
      200,
    );
    if (exited) throw new Error(`${n.name} exited (${child.exitCode ?? child.signalCode}); its log ends:\n${this.logTail(n)}`);
  }

  /** The last lines of a node's error log (the reason a join failed). */
  private logTail(n: GaleraNode, lines = 15): string {
    try {
      return readFileSync(join(this.dir.path, `${n.name}.err`), 'utf8')
        .trimEnd()
        .split('\n')
        .slice(-lines)
        .join('\n');
    } catch {
      return '(no log)';
    }
  }

  /**
   * A joining node that exits during its state transfer (seen once in CI, reason unknown: the
   * log is now in the error) is started again, up to three times: a retried join is what an
   * operator would do, and the test is about the cluster's behaviour, not its first join.
   */
  private async startJoiner(i: number): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.startNode(i);
        return;
      } catch (e) {
        if (attempt >= 3) throw e;
        process.stderr.write(`galera: ${String((e as Error).message)}\n  retrying the join (attempt ${attempt + 1} of 3)\n`);
      }
    }
  }

  /** SIGKILL, like a crash. */
  async killNode(i: number): Promise<void> {
    const n = this.nodes[i]!;
    if (n.child) await stopChild(n.child, 'SIGKILL', 5_000);
    n.child = undefined;
  }

  /** Runs SQL as root on node `i` over its socket; returns the tab-separated output. */
  async sql(i: number, statements: string): Promise<string> {
    const n = this.nodes[i]!;
    const out = await run('mariadb', ['--protocol=socket', '-S', n.socket, '-uroot', '-N', '-B', '-e', statements]);
    return out.stdout;
  }

  private async status(i: number, name: string): Promise<string> {
    return ((await this.sql(i, `SHOW STATUS LIKE '${name}'`)).split('\t')[1] ?? '').trim();
  }

  /** Every running node is Synced in a primary component of all running nodes. */
  async waitSynced(timeoutMs = 120_000): Promise<void> {
    const running = this.nodes.map((n, i) => (n.child ? i : -1)).filter((i) => i >= 0);
    await waitFor(
      `Galera nodes ${running.join(',')} synced`,
      async () => {
        for (const i of running) {
          if ((await this.status(i, 'wsrep_local_state_comment')) !== 'Synced') return false;
          if (Number(await this.status(i, 'wsrep_cluster_size')) !== running.length) return false;
        }
        return true;
      },
      timeoutMs,
      250,
    );
  }

  async stop(): Promise<void> {
    for (let i = 0; i < this.nodes.length; i++) await this.killNode(i);
  }
}

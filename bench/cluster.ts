/**
 * Topology benchmark (npm run bench:cluster), issue 14: the same scale burst on the
 * single-node topology (one nats-server, one MariaDB, one replica of ipam and scheduler)
 * and on the clustered one (3 nats-server nodes with JetStream R3, 3 Galera nodes, two
 * replicas of ipam and scheduler), in the same run, on two simulated servers
 * (libs/testing's SimulatedFleet: no network lab needed).
 *
 * The single node runs twice: with `innodb_flush_log_at_trx_commit=1` (an fsync per commit,
 * as one would deploy a lone database) and with `=2`, the Galera nodes' setting.
 *
 * 1. Burst (after one uncounted warm-up burst): BENCH_BURST scale requests (default 300), each for an app of its own at 2
 *    replicas, published at once; measured per request from its publish to its
 *    scale.completed event (time-to-running: completed means every replica runs), and the
 *    burst's throughput (requests / time from the first publish to the last outcome).
 *    BENCH_RUNS bursts (default 5) per topology: median and spread (min..max) of the runs.
 * 2. Leader takeover on the clustered topology: BENCH_KILLS times (default 10) the leading
 *    scheduler is killed with SIGKILL; measured from the kill to the other replica's
 *    "leading" log line (its own timestamp); the killed one is started again as a follower.
 *
 * Prints the machine and the tables, writes bench/results/cluster.md. Bounded: every wait
 * has a deadline (a burst 180 s, a takeover 60 s); progress on stderr.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { randomUUID } from 'node:crypto';
import { jetstream } from '@nats-io/jetstream';
import { SUBJECTS } from '@orangery/contracts';
import { ContractClient, GaleraCluster, HarnessDir, NatsCluster, NatsServer, PrivateMariadb, ServiceProcess, SimulatedFleet, waitFor } from '@orangery/testing';
import { fmt, percentile, table } from './lib';

const BURST = Math.max(10, Math.min(1_000, Number(process.env['BENCH_BURST'] ?? 300)));
const RUNS = Math.max(3, Math.min(20, Number(process.env['BENCH_RUNS'] ?? 5)));
const KILLS = Math.max(1, Math.min(50, Number(process.env['BENCH_KILLS'] ?? 10)));
const started = Date.now();
const log = (m: string) => process.stderr.write(`[bench:cluster +${Math.round((Date.now() - started) / 1000)}s] ${m}\n`);
const small = { cpu: 1, memoryMb: 256, heapMb: 128, diskMb: 500 };

interface Topology {
  name: string;
  natsUrl: string;
  /** ORANGERY_DB_URL per replica (the schedulers' lists start on the same node, see the cluster test) */
  ipamDb: string[];
  schedulerDb: string[];
}

interface BurstResult {
  seconds: number;
  perSecond: number;
  p50: number;
  p99: number;
  completed: number;
}

const serviceEnv = (natsUrl: string, dbUrl: string) => ({
  ORANGERY_NATS_URL: natsUrl,
  ORANGERY_DB_URL: dbUrl,
  LOG_LEVEL: 'info',
  ORANGERY_HEARTBEAT_SECONDS: '1',
  ORANGERY_LOST_AFTER_SECONDS: '4',
  ORANGERY_FENCE_AFTER_SECONDS: '6',
  ORANGERY_FENCE_MARGIN_SECONDS: '1',
  ORANGERY_RECONCILE_SECONDS: '1',
  ORANGERY_AGENT_TIMEOUT_SECONDS: '5',
});

const rotated = (url: string): string => {
  const m = /^(mysql:\/\/[^@]+@)([^/]+)(\/.*)$/.exec(url)!;
  const hosts = m[2]!.split(',');
  return `${m[1]}${[...hosts.slice(1), hosts[0]].join(',')}${m[3]}`;
};

/** The time (ms since the epoch) of the service's last "leading" log line after `since`, if any. */
function ledAt(s: ServiceProcess, since: number): number | undefined {
  for (let i = s.lines.length - 1; i >= 0; i--) {
    const l = s.lines[i]!;
    if (!l.includes('"msg":"leading: consuming scale requests"')) continue;
    const t = Date.parse(String((JSON.parse(l) as { time?: string }).time));
    if (t >= since) return t;
    return undefined;
  }
  return undefined;
}

class Stand {
  readonly ipams: ServiceProcess[] = [];
  readonly schedulers: ServiceProcess[] = [];
  client!: ContractClient;
  fleet!: SimulatedFleet;
  private readonly outcomes = new Map<string, number>();
  /** requests whose outcome was scale.rejected (counted, not in the time to running) */
  readonly rejected = new Set<string>();

  constructor(
    readonly dir: HarnessDir,
    readonly t: Topology,
  ) {}

  async start(): Promise<void> {
    this.client = await ContractClient.connect(this.t.natsUrl);
    this.ipams.push(...(await Promise.all(this.t.ipamDb.map((db) => ServiceProcess.start(this.dir, 'ipam', serviceEnv(this.t.natsUrl, db), 120_000)))));
    const pool = await this.client.requestWithRetry('orangery.ipam.pool.create', {
      name: 'sim',
      cidr: '198.19.0.0/18',
      gateway: '198.19.0.1',
      cooldownSeconds: 0,
    });
    if (!pool.ok) throw new Error(`pool.create: ${JSON.stringify(pool)}`);
    this.fleet = await SimulatedFleet.start({
      natsUrl: this.t.natsUrl,
      hosts: 2,
      idPrefix: 'bcl-',
      capacity: { cpu: 4_096, memoryMb: 4_194_304, diskMb: 100_000_000 },
      heartbeatSeconds: 1,
      fenceAfterSeconds: 6,
    });
    this.schedulers.push(
      ...(await Promise.all(this.t.schedulerDb.map((db) => ServiceProcess.start(this.dir, 'scheduler', serviceEnv(this.t.natsUrl, db), 120_000)))),
    );
    await this.leader();
    this.client.nc.subscribe(SUBJECTS.event('scale', '*'), {
      callback: (_e, m) => {
        const ev = m.json<{ type?: string; data?: { requestId?: string } }>();
        const id = String((ev.data ?? {}).requestId);
        if (this.outcomes.has(id)) return;
        this.outcomes.set(id, performance.now());
        if (ev.type === 'io.orangery.scale.rejected') this.rejected.add(id);
      },
    });
  }

  async leader(): Promise<number> {
    return waitFor(
      'one scheduler leading',
      () => {
        const alive = this.schedulers.map((s, i) => (s.child.exitCode === null && s.child.signalCode === null && ledAt(s, 0) !== undefined ? i : -1));
        // the leader is the live replica whose last leadership line is the latest
        let best = -1;
        for (const i of alive) if (i >= 0 && (best < 0 || ledAt(this.schedulers[i]!, 0)! > ledAt(this.schedulers[best]!, 0)!)) best = i;
        return best >= 0 ? best : undefined;
      },
      60_000,
      50,
    );
  }

  async burst(run: number): Promise<BurstResult> {
    const js = jetstream(this.client.nc, { timeout: 10_000 });
    const sent = new Map<string, number>();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: BURST }, async (_, k) => {
        const id = randomUUID();
        const app = `b${run}x${k}`;
        sent.set(id, performance.now());
        await js.publish(
          SUBJECTS.scale('bench', app),
          JSON.stringify({
            specversion: '1.0',
            id,
            source: '/bench/cluster',
            type: 'io.orangery.scale.requested',
            time: new Date().toISOString(),
            datacontenttype: 'application/json',
            data: { env: 'bench', app, replicas: 2, resources: small, image: 'svc:1', backend: 'docker', pool: 'sim' },
          }),
          { msgID: id },
        );
      }),
    );
    await waitFor(`${BURST} outcomes`, () => [...sent.keys()].every((id) => this.outcomes.has(id)), 180_000, 50);
    const rejected = [...sent.keys()].filter((id) => this.rejected.has(id)).length;
    if (rejected > 0) log(`burst ${run}: ${rejected} request(s) rejected`);
    const times = [...sent]
      .filter(([id]) => !this.rejected.has(id))
      .map(([id, at]) => this.outcomes.get(id)! - at)
      .sort((a, b) => a - b);
    const seconds = (Math.max(...[...sent.keys()].map((id) => this.outcomes.get(id)!)) - t0) / 1000;
    return { seconds, perSecond: times.length / seconds, p50: percentile(times, 50), p99: percentile(times, 99), completed: times.length };
  }

  /** Kills the leader, measures until the other replica leads, starts the killed one again. */
  async takeover(): Promise<number> {
    const leader = await this.leader();
    const other = 1 - leader;
    const killedAt = Date.now();
    await this.schedulers[leader]!.kill9();
    const at = await waitFor('the other scheduler leading', () => ledAt(this.schedulers[other]!, killedAt), 60_000, 20);
    const again = await ServiceProcess.start(this.dir, 'scheduler', serviceEnv(this.t.natsUrl, this.t.schedulerDb[leader]!), 120_000);
    this.schedulers[leader] = again;
    return at - killedAt;
  }

  async stop(): Promise<void> {
    await this.fleet?.stop();
    await this.client?.close();
  }
}

const median = (xs: number[]): number =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );
const spread = (xs: number[], digits: number): string => `${fmt(Math.min(...xs), digits)}..${fmt(Math.max(...xs), digits)}`;

async function main(): Promise<void> {
  const cpuList = cpus();
  const machine = `${cpuList.length} cores, ${cpuList[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}`;
  log(`machine: ${machine}; bursts of ${BURST} requests x ${RUNS} runs per topology; ${KILLS} leader kills`);
  const rows: (string | number)[][] = [];
  let takeovers: number[] = [];

  for (const kind of ['single', 'single-flush2', 'cluster'] as const) {
    const dir = new HarnessDir(`bench-${kind}`);
    let stand: Stand | undefined;
    try {
      let t: Topology;
      if (kind !== 'cluster') {
        const flush = kind === 'single' ? 1 : 2;
        const [nats, db] = await Promise.all([NatsServer.start(dir), PrivateMariadb.start(dir, [`--innodb-flush-log-at-trx-commit=${flush}`])]);
        t = {
          name: `single node: 1 NATS, 1 MariaDB (flush_log_at_trx_commit=${flush}), ipam x1, scheduler x1`,
          natsUrl: nats.url,
          ipamDb: [db.url],
          schedulerDb: [db.url],
        };
      } else {
        const [nats, galera] = await Promise.all([NatsCluster.start(dir, 3, 'bcl-nats'), GaleraCluster.start(dir, 3, 'bcl-galera')]);
        t = {
          name: 'cluster: 3 NATS (R3), 3 Galera (flush_log_at_trx_commit=2), ipam x2, scheduler x2',
          natsUrl: nats.url,
          ipamDb: [galera.url, rotated(galera.url)],
          schedulerDb: [rotated(galera.url), rotated(galera.url)],
        };
      }
      log(`${t.name}: starting the services`);
      stand = new Stand(dir, t);
      await stand.start();
      // a first burst warms the JIT, the pools and the caches; not counted
      await stand.burst(0);
      const results: BurstResult[] = [];
      for (let run = 1; run <= RUNS; run++) {
        const r = await stand.burst(run);
        results.push(r);
        log(`${kind} burst ${run}/${RUNS}: ${fmt(r.perSecond, 1)} req/s, p50 ${fmt(r.p50, 0)} ms, p99 ${fmt(r.p99, 0)} ms to running`);
      }
      rows.push([
        t.name,
        `${results.reduce((n, r) => n + r.completed, 0)} of ${RUNS * BURST}`,
        `${fmt(median(results.map((r) => r.perSecond)), 1)} (${spread(
          results.map((r) => r.perSecond),
          1,
        )})`,
        `${fmt(median(results.map((r) => r.p99)), 0)} (${spread(
          results.map((r) => r.p99),
          0,
        )})`,
        `${fmt(median(results.map((r) => r.p50)), 0)} (${spread(
          results.map((r) => r.p50),
          0,
        )})`,
      ]);
      if (kind === 'cluster') {
        for (let k = 1; k <= KILLS; k++) {
          const ms = await stand.takeover();
          takeovers.push(ms);
          log(`takeover ${k}/${KILLS}: ${ms} ms`);
        }
        takeovers = takeovers.sort((a, b) => a - b);
      }
    } finally {
      await stand?.stop();
      await dir.cleanup();
    }
  }

  const burstTable = table(['topology', 'completed', 'throughput, req/s: median (min..max)', 'p99 to running, ms', 'p50 to running, ms'], rows);
  const takeoverTable = table(
    ['leader takeover after SIGKILL', 'p50, ms', 'p95, ms', 'max, ms'],
    [
      [
        `${KILLS} kills (main's leader election: a named lock)`,
        fmt(percentile(takeovers, 50), 0),
        fmt(percentile(takeovers, 95), 0),
        fmt(takeovers.at(-1)!, 0),
      ],
    ],
  );
  const note =
    `Each burst: ${BURST} scale requests published at once, one app each at 2 replicas, on 2 simulated servers; ${RUNS} bursts per topology, ` +
    'median and (min..max) of the runs. Throughput counts completed requests only; a rejected one is in the completed column as missing. Time to running: publish to scale.completed. Takeover: from the SIGKILL to the other ' +
    'replica\'s own "leading" log line; both schedulers list the Galera nodes in the same order (see docs/topology.md).';
  console.log(`Machine: ${machine}\n\n${burstTable}\n\n${takeoverTable}\n\n${note}`);
  const header = `<!-- written by npm run bench:cluster on ${new Date().toISOString()}; ${cpuList.length}-core machine -->`;
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/cluster.md', `${header}\nMachine: ${machine}.\n\n${burstTable}\n\n${takeoverTable}\n\n${note}\n`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    log(`failed: ${String(e)}`);
    process.exit(1);
  },
);

/**
 * IPAM benchmark (npm run bench:ipam). Everything real: ipam replicas as processes, a
 * private NATS, the project's MariaDB. Prints tables and writes bench/results/ipam.md and
 * bench/results/ipam-growth.md. Every configuration runs REPEATS times (median and spread).
 *
 *  1. the raw MariaDB baseline: single-row INSERT + COMMIT from N connections, measured in
 *     the same run, once per repeat;
 *  2. single allocations/s and p50/p99 at 1, 16, 64 concurrent clients with 1 and 3
 *     replicas, group commit on (the default), and at 64 clients with group commit off
 *     (ORANGERY_IPAM_GROUP_MAX=1: every single its own transaction, the code before issue
 *     17): each as a ratio of the baseline at the same connection count;
 *  3. CPU per allocation of every process (ipam replicas, MariaDB, NATS, the load generator)
 *     at 64 clients, 3 replicas, group commit on and off, and for allocate.batch;
 *  4. allocate.batch of BATCH items from BATCH_CLIENTS clients with 1 and 3 replicas;
 *  5. allocations/s with 1, 10 and 100 pools (cost growth: same address count, spread);
 *  6. /16 pool creation time, and the latency of the first vs the 60,000th allocation.
 * Bounded: every phase runs for a fixed time or count and stops by itself.
 * Knobs: BENCH_SECONDS (4), BENCH_REPEATS (3, at least 3), BENCH_FILL (60000),
 * BENCH_REPLICAS ("1,3"), BENCH_PHASES (all: raw,singles,batch,growth,fill; results files are
 * written only when all run), BENCH_IPAM_ENV (extra replica settings, JSON).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createPool, type Pool } from 'mysql2/promise';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ServiceProcess } from '@orangery/testing';
import { closedLoop, cpuMs, fmt, fmtRepeated, machineLine, median, percentile, repeated, REPEATS, table, type LoadResult, type Repeated } from './lib';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 4);
const CLIENTS = [1, 16, 64];
const REPLICAS = (process.env['BENCH_REPLICAS'] ?? '1,3').split(',').map(Number);
/** extra environment of every ipam replica (JSON object), to try settings: BENCH_IPAM_ENV='{"ORANGERY_IPAM_GROUP_IN_FLIGHT":"4"}' */
const IPAM_ENV = JSON.parse(process.env['BENCH_IPAM_ENV'] ?? '{}') as Record<string, string>;
const FILL = Number(process.env['BENCH_FILL'] ?? 60_000);
const BATCH = 100;
const BATCH_CLIENTS = 4;
const BATCH_SECONDS = Math.min(SECONDS, 3);
const GROWTH_POOLS = [1, 10, 100];
/** phases to run (comma separated; default all): raw,singles,batch,growth,fill */
const PHASES = new Set((process.env['BENCH_PHASES'] ?? 'raw,singles,batch,growth,fill').split(','));

const log = (msg: string) => process.stderr.write(`[bench:ipam] ${msg}\n`);

function sqlPool(dbUrl: string, connections: number): Pool {
  const u = new URL(dbUrl);
  return createPool({
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
    connectionLimit: connections,
  });
}

async function rawBaseline(dbUrl: string, connections: number): Promise<LoadResult> {
  const pool = sqlPool(dbUrl, connections);
  await pool.query('CREATE TABLE IF NOT EXISTS bench_raw (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB');
  const res = await closedLoop(connections, SECONDS, async (seq) => {
    const c = await pool.getConnection();
    try {
      await c.query('START TRANSACTION');
      await c.query('INSERT INTO bench_raw (v) VALUES (?)', [seq]);
      await c.query('COMMIT');
      return true;
    } finally {
      c.release();
    }
  });
  await pool.end();
  return res;
}

/** Gives every address back (free, never used) between runs, so each run starts from the same pool. */
async function resetAddresses(dbUrl: string): Promise<void> {
  const pool = sqlPool(dbUrl, 1);
  await pool.query(
    `UPDATE ipam_address SET state = 'free', owner_key = NULL, owner_env = NULL, owner_app = NULL, owner_slot = NULL, live_owner = NULL,
       available_at = 0, released_at = NULL, instance_id = NULL, backend = NULL, host = NULL WHERE state <> 'free'`,
  );
  await pool.end();
}

interface Cluster {
  procs: ServiceProcess[];
  dbUrl: string;
  cpu(): Record<string, number>;
  stop(): Promise<void>;
}

async function main(): Promise<void> {
  const dir = new HarnessDir('bench-ipam');
  const nats = await NatsServer.start(dir);
  const clients: ContractClient[] = [];
  const natsPid = Number(
    execFileSync('pgrep', ['-n', '-f', `nats-server -c ${dir.path}`])
      .toString()
      .trim(),
  );
  const dbPid = Number(readFileSync(`${process.env['ORANGERY_LOCAL_RUN_DIR']}/mysqld.pid`, 'utf8'));
  let owner = 0;
  const nextOwner = (env: string) => {
    const slot = owner++;
    return { env, app: `a${Math.floor(slot / 10_000)}`, slot: slot % 10_000 };
  };

  async function cluster(label: string, replicas: number, extra: Record<string, string> = {}): Promise<Cluster> {
    const dbUrl = await freshDatabase(label);
    const env = { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl, LOG_LEVEL: 'info', ...IPAM_ENV, ...extra };
    const procs = await Promise.all(Array.from({ length: replicas }, () => ServiceProcess.start(dir, 'ipam', env)));
    return {
      procs,
      dbUrl,
      cpu: () => ({
        ipam: procs.reduce((a, p) => a + cpuMs(p.pid), 0),
        mariadb: cpuMs(dbPid),
        nats: cpuMs(natsPid),
        'load generator': cpuMs(process.pid),
      }),
      stop: async () => {
        await Promise.all(procs.map((p) => p.terminate()));
      },
    };
  }

  const createPoolOrThrow = async (name: string, cidr: string, gateway: string) => {
    const r = await clients[0]!.request('orangery.ipam.pool.create', { name, cidr, gateway }, 60_000);
    if (!r.ok) throw new Error(`pool.create failed: ${JSON.stringify(r)}`);
  };

  /** CPU ms per operation of each process and in all, over a set of runs. */
  const cpuTable: (string | number)[][] = [];
  const addCpu = (what: string, used: Record<string, number>, ops: number, seconds: number) => {
    let total = 0;
    for (const k of Object.keys(used)) {
      const ms = used[k]!;
      total += ms;
      cpuTable.push([what, k, fmt(ms / ops, 3), fmt(ms / 1000 / seconds, 2)]);
    }
    cpuTable.push([what, '**all processes**', `**${fmt(total / ops, 3)}**`, fmt(total / 1000 / seconds, 2)]);
  };

  try {
    for (let i = 0; i < 4; i++) clients.push(await ContractClient.connect(nats.url));
    const raw = new Map<number, LoadResult[]>();
    const rawRow = (n: number) => raw.get(n) ?? [];

    // 1. the raw baseline, REPEATS runs per connection count.
    if (PHASES.has('raw')) {
      const dbUrl = await freshDatabase('bench_raw');
      for (let rep = 0; rep < REPEATS; rep++) {
        for (const n of CLIENTS) {
          log(`raw MariaDB INSERT+COMMIT with ${n} connection(s), ${SECONDS} s (run ${rep + 1}/${REPEATS})`);
          raw.set(n, [...rawRow(n), await rawBaseline(dbUrl, n)]);
        }
      }
    }

    // 2./3. singles: group commit on at 1/16/64 clients, off at 64 clients.
    const singleRows: (string | number)[][] = [];
    let groupedAt64 = NaN;
    const configs: { replicas: number; group: boolean; clients: number[] }[] = [];
    for (const replicas of REPLICAS) {
      configs.push({ replicas, group: false, clients: [64] });
      configs.push({ replicas, group: true, clients: CLIENTS });
    }
    if (PHASES.has('singles')) {
      for (const cfg of configs) {
        const c = await cluster('bench_ipam', cfg.replicas, cfg.group ? {} : { ORANGERY_IPAM_GROUP_MAX: '1' });
        await createPoolOrThrow('bench', '198.19.0.0/16', '198.19.0.1');
        for (const n of cfg.clients) {
          const runs: LoadResult[] = [];
          const used: Record<string, number> = {};
          let ops = 0;
          let seconds = 0;
          for (let rep = 0; rep < REPEATS; rep++) {
            log(`${cfg.replicas} replica(s), group commit ${cfg.group ? 'on' : 'off'}, ${n} client(s), ${SECONDS} s (run ${rep + 1}/${REPEATS})`);
            await resetAddresses(c.dbUrl);
            const before = c.cpu();
            const r = await closedLoop(n, SECONDS, async (seq) => {
              const reply = await clients[seq % clients.length]!.request('orangery.ipam.allocate', { pool: 'bench', owner: nextOwner('bench') });
              return reply.ok === true;
            });
            const after = c.cpu();
            for (const k of Object.keys(after)) used[k] = (used[k] ?? 0) + after[k]! - before[k]!;
            ops += r.ops;
            seconds += r.seconds;
            runs.push(r);
          }
          if (n === 64) addCpu(`singles, ${cfg.replicas} replica(s), group commit ${cfg.group ? 'on' : 'off'}`, used, ops, seconds);
          const base = rawRow(n);
          const rate = repeated(runs.map((r) => r.perSecond));
          const ratio: Repeated | undefined = base.length === runs.length ? repeated(runs.map((r, i) => r.perSecond / base[i]!.perSecond)) : undefined;
          if (n === 64 && cfg.group && cfg.replicas === 3) groupedAt64 = rate.median;
          singleRows.push([
            cfg.replicas,
            cfg.group ? 'on' : 'off (before)',
            n,
            fmtRepeated(rate, 0),
            fmtRepeated(repeated(runs.map((r) => r.p50)), 2),
            fmtRepeated(repeated(runs.map((r) => r.p99)), 2),
            runs.reduce((a, r) => a + r.errors, 0),
            base.length > 0 ? fmtRepeated(repeated(base.map((r) => r.perSecond)), 0) : 'n/a',
            ratio ? fmtRepeated(ratio, 2) : 'n/a',
          ]);
        }
        await c.stop();
      }
    }

    // 4. allocate.batch.
    const batchRows: (string | number)[][] = [];
    if (PHASES.has('batch')) {
      for (const replicas of REPLICAS) {
        const c = await cluster('bench_batch', replicas);
        await createPoolOrThrow('bench-batch', '198.18.0.0/16', '198.18.0.1');
        const runs: LoadResult[] = [];
        const used: Record<string, number> = {};
        for (let rep = 0; rep < REPEATS; rep++) {
          log(`${replicas} replica(s), allocate.batch of ${BATCH} from ${BATCH_CLIENTS} clients, ${BATCH_SECONDS} s (run ${rep + 1}/${REPEATS})`);
          await resetAddresses(c.dbUrl);
          const before = c.cpu();
          runs.push(
            await closedLoop(BATCH_CLIENTS, BATCH_SECONDS, async (seq) => {
              const items = Array.from({ length: BATCH }, () => ({ pool: 'bench-batch', owner: nextOwner('batch') }));
              const reply = await clients[seq % clients.length]!.request('orangery.ipam.allocate.batch', { items }, 30_000);
              return reply.ok === true && (reply.data.results as { ok: boolean }[]).every((x) => x.ok);
            }),
          );
          const after = c.cpu();
          for (const k of Object.keys(after)) used[k] = (used[k] ?? 0) + after[k]! - before[k]!;
        }
        addCpu(
          `allocate.batch of ${BATCH}, ${replicas} replica(s)`,
          used,
          runs.reduce((a, r) => a + r.ops * BATCH, 0),
          runs.reduce((a, r) => a + r.seconds, 0),
        );
        batchRows.push([
          replicas,
          BATCH_CLIENTS,
          fmtRepeated(repeated(runs.map((r) => r.perSecond)), 1),
          fmtRepeated(repeated(runs.map((r) => r.perSecond * BATCH)), 0),
          fmtRepeated(repeated(runs.map((r) => r.p50)), 2),
          fmtRepeated(repeated(runs.map((r) => r.p99)), 2),
          runs.reduce((a, r) => a + r.errors, 0),
          fmt(groupedAt64, 0),
          fmt(median(runs.map((r) => r.perSecond * BATCH)) / groupedAt64, 1),
        ]);
        await c.stop();
      }
    }

    // 5. cost growth: 1, 10, 100 pools splitting the same /16, allocations spread over them.
    const growthRows: (string | number)[][] = [];
    if (PHASES.has('growth')) {
      let oneRate = NaN;
      for (const pools of GROWTH_POOLS) {
        const c = await cluster('bench_growth', 3);
        // /16 split into `pools` equal blocks (powers of two: 1 -> /16, 10 -> 16 x /20, 100 -> 128 x /23; only the first `pools` made)
        const bits = Math.ceil(Math.log2(pools));
        const prefix = 16 + bits;
        const blockSize = 2 ** (32 - prefix);
        const names: string[] = [];
        for (let p = 0; p < pools; p++) {
          const base = (198 << 24) + (19 << 16) + p * blockSize;
          const ip = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
          names.push(`g${p}`);
          await createPoolOrThrow(`g${p}`, `${ip(base)}/${prefix}`, ip(base + 1));
        }
        const runs: LoadResult[] = [];
        for (let rep = 0; rep < REPEATS; rep++) {
          log(`3 replicas, 64 clients, ${pools} pool(s), ${SECONDS} s (run ${rep + 1}/${REPEATS})`);
          await resetAddresses(c.dbUrl);
          runs.push(
            await closedLoop(64, SECONDS, async (seq) => {
              const reply = await clients[seq % clients.length]!.request('orangery.ipam.allocate', { pool: names[seq % pools]!, owner: nextOwner('growth') });
              return reply.ok === true;
            }),
          );
        }
        await c.stop();
        const rate = repeated(runs.map((r) => r.perSecond));
        if (pools === 1) oneRate = rate.median;
        growthRows.push([
          pools,
          `/${prefix}`,
          fmtRepeated(rate, 0),
          fmtRepeated(repeated(runs.map((r) => r.p99)), 2),
          runs.reduce((a, r) => a + r.errors, 0),
          fmt(rate.median / oneRate, 2),
        ]);
      }
    }

    // 6. pool size independence: a fresh /16, filled to FILL addresses by 64 clients.
    const fillRows: (string | number)[][] = [];
    if (PHASES.has('fill')) {
      log(`filling a fresh /16 with ${FILL} allocations (3 replicas, 64 clients)`);
      const c = await cluster('bench_fill', 3);
      const t0 = performance.now();
      await createPoolOrThrow('fill', '198.19.0.0/16', '198.19.0.1');
      const createMs = performance.now() - t0;
      const latency = new Array<number>(FILL);
      let next = 0;
      let failures = 0;
      await Promise.all(
        Array.from({ length: 64 }, async (_, w) => {
          for (;;) {
            const i = next++;
            if (i >= FILL) return;
            const s = performance.now();
            const r = await clients[w % clients.length]!.request(
              'orangery.ipam.allocate',
              { pool: 'fill', owner: { env: 'fill', app: `a${Math.floor(i / 10_000)}`, slot: i % 10_000 } },
              30_000,
            );
            latency[i] = performance.now() - s;
            if (!r.ok) failures++;
            if (i % 10_000 === 0) log(`  ${i} allocated`);
          }
        }),
      );
      await c.stop();
      const firstK = latency.slice(0, 1000).sort((a, b) => a - b);
      const lastK = latency.slice(FILL - 1000).sort((a, b) => a - b);
      fillRows.push(
        ['/16 pool.create (65,533 addresses)', `${fmt(createMs, 0)} ms`],
        ['first 1,000 allocations p50 / p99', `${fmt(percentile(firstK, 50), 2)} / ${fmt(percentile(firstK, 99), 2)} ms`],
        [`allocations ${FILL - 999}..${FILL} p50 / p99`, `${fmt(percentile(lastK, 50), 2)} / ${fmt(percentile(lastK, 99), 2)} ms`],
        ['last/first p50 ratio', fmt(percentile(lastK, 50) / percentile(firstK, 50), 2)],
        ['failed allocations', failures],
      );
    }

    const spread = `median (min-max) of ${REPEATS} runs of ${SECONDS} s`;
    const parts = [
      machineLine(),
      table(['replicas', 'group commit', 'clients', `alloc/s, ${spread}`, 'p50 ms', 'p99 ms', 'errors', 'raw INSERT+COMMIT/s (same run)', 'ratio'], singleRows),
      table(['configuration', 'process', 'CPU ms per allocation', 'cores busy'], cpuTable),
      table(
        [
          'replicas',
          `allocate.batch of ${BATCH}, clients`,
          'batches/s',
          'addresses/s',
          'p50 ms per batch',
          'p99 ms per batch',
          'errors',
          'singles alloc/s (64 clients, 3 replicas, group commit, same run)',
          'ratio',
        ],
        batchRows,
      ),
      table(['measure', 'value'], fillRows),
    ];
    const growth = `${machineLine()}\n\n${table(['pools', 'each', `alloc/s (3 replicas, 64 clients), ${spread}`, 'p99 ms', 'errors', 'vs 1 pool'], growthRows)}\n`;
    const out = `${parts.filter((p) => !p.startsWith('| ') || p.split('\n').length > 2).join('\n\n')}\n`;
    process.stdout.write(`\n${out}\n${growth}`);
    mkdirSync('bench/results', { recursive: true });
    const stamp = `<!-- written by npm run bench:ipam on ${new Date().toISOString()}; ${REPEATS} runs of ${SECONDS} s per row -->`;
    if (PHASES.size === 5) {
      writeFileSync('bench/results/ipam.md', `${stamp}\n${out}`);
      writeFileSync('bench/results/ipam-growth.md', `${stamp}\n${growth}`);
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await dir.cleanup();
  }
}

main().catch((e) => {
  process.stderr.write(`[bench:ipam] failed: ${String(e?.stack ?? e)}\n`);
  process.exit(1);
});

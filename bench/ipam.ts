/**
 * IPAM benchmark (npm run bench:ipam). Everything real: ipam replicas as processes, a
 * private NATS, the project's MariaDB. Prints a table and writes bench/results/ipam.md.
 *
 *  1. the raw MariaDB ceiling: single-row INSERT + COMMIT from N connections;
 *  2. allocations/s and p50/p99 at 1, 16, 64 concurrent clients with 1 and 3 replicas,
 *     as a ratio of the ceiling at the same connection count;
 *  3. allocate.batch of BATCH items from BATCH_CLIENTS clients with 1 and 3 replicas:
 *     addresses/s, p50/p99 per batch, CPU per address, and the ratio to the singles at 64
 *     clients measured in the same run;
 *  4. /16 pool creation time, and the latency of the first vs the 60,000th allocation.
 * Bounded: every phase runs for a fixed time or count and stops by itself.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createPool } from 'mysql2/promise';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ServiceProcess } from '@orangery/testing';
import { closedLoop, cpuMs, fmt, percentile, table, type LoadResult } from './lib';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 8);
const CLIENTS = [1, 16, 64];
const REPLICAS = [1, 3];
const FILL = Number(process.env['BENCH_FILL'] ?? 60_000);
const BATCH = 100;
const BATCH_CLIENTS = 4;
// A /16 holds 65,533 addresses: at most 5 s of batches keeps far from exhausting it.
const BATCH_SECONDS = Math.min(SECONDS, 5);

const log = (msg: string) => process.stderr.write(`[bench:ipam] ${msg}\n`);

async function rawCeiling(dbUrl: string, connections: number): Promise<LoadResult> {
  const u = new URL(dbUrl);
  const pool = createPool({
    host: u.hostname,
    port: Number(u.port),
    user: u.username,
    password: u.password,
    database: u.pathname.slice(1),
    connectionLimit: connections,
  });
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

async function main(): Promise<void> {
  const dir = new HarnessDir('bench-ipam');
  const nats = await NatsServer.start(dir);
  const clients: ContractClient[] = [];
  try {
    const rows: (string | number)[][] = [];
    const batchRows: (string | number)[][] = [];
    const cpuRows: (string | number)[][] = [];
    const ceilings = new Map<number, LoadResult>();
    for (const n of CLIENTS) {
      const dbUrl = await freshDatabase('bench_raw');
      log(`raw MariaDB INSERT+COMMIT ceiling with ${n} connection(s), ${SECONDS} s`);
      ceilings.set(n, await rawCeiling(dbUrl, n));
    }
    for (let i = 0; i < 4; i++) clients.push(await ContractClient.connect(nats.url));
    for (const replicas of REPLICAS) {
      const dbUrl = await freshDatabase('bench_ipam');
      const env = { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl, LOG_LEVEL: 'warn' };
      const procs = await Promise.all(Array.from({ length: replicas }, () => ServiceProcess.start(dir, 'ipam', { ...env, LOG_LEVEL: 'info' })));
      const created = await clients[0]!.request('orangery.ipam.pool.create', { name: 'bench', cidr: '198.19.0.0/16', gateway: '198.19.0.1' }, 60_000);
      if (!created.ok) throw new Error(`pool.create failed: ${JSON.stringify(created)}`);
      let owner = 0;
      let singlesAt64 = NaN;
      const natsPid = Number(
        execFileSync('pgrep', ['-n', '-f', `nats-server -c ${dir.path}`])
          .toString()
          .trim(),
      );
      const dbPid = Number(readFileSync(`${process.env['ORANGERY_LOCAL_RUN_DIR']}/mysqld.pid`, 'utf8'));
      const cpuOf = () => ({
        ipam: procs.reduce((a, p) => a + cpuMs(p.pid), 0),
        mariadb: cpuMs(dbPid),
        nats: cpuMs(natsPid),
        'load generator': cpuMs(process.pid),
      });
      for (const n of CLIENTS) {
        log(`${replicas} replica(s), ${n} client(s), ${SECONDS} s`);
        const cpuBefore = cpuOf();
        const r = await closedLoop(n, SECONDS, async (seq) => {
          const slot = owner++;
          const reply = await clients[seq % clients.length]!.request('orangery.ipam.allocate', {
            pool: 'bench',
            owner: { env: 'bench', app: `a${Math.floor(slot / 10_000)}`, slot: slot % 10_000 },
          });
          return reply.ok === true;
        });
        const cpuAfter = cpuOf();
        if (n === 64) {
          for (const k of Object.keys(cpuAfter) as (keyof typeof cpuAfter)[]) {
            cpuRows.push([replicas, k, fmt((cpuAfter[k] - cpuBefore[k]) / r.ops, 2), fmt((cpuAfter[k] - cpuBefore[k]) / 1000 / r.seconds, 2)]);
          }
        }
        const ceiling = ceilings.get(n)!;
        rows.push([
          replicas,
          n,
          fmt(r.perSecond, 0),
          fmt(r.p50, 2),
          fmt(r.p99, 2),
          r.errors,
          fmt(ceiling.perSecond, 0),
          fmt(r.perSecond / ceiling.perSecond, 2),
        ]);
        if (n === 64) singlesAt64 = r.perSecond;
      }

      // allocate.batch in its own /16 (the singles' pool is partly used by now).
      const batchPool = await clients[0]!.request('orangery.ipam.pool.create', { name: 'bench-batch', cidr: '198.18.0.0/16', gateway: '198.18.0.1' }, 60_000);
      if (!batchPool.ok) throw new Error(`pool.create failed: ${JSON.stringify(batchPool)}`);
      log(`${replicas} replica(s), allocate.batch of ${BATCH} from ${BATCH_CLIENTS} clients, ${BATCH_SECONDS} s`);
      let batchOwner = 0;
      const cpuBeforeBatch = cpuOf();
      const b = await closedLoop(BATCH_CLIENTS, BATCH_SECONDS, async (seq) => {
        const items = Array.from({ length: BATCH }, () => {
          const slot = batchOwner++;
          return { pool: 'bench-batch', owner: { env: 'batch', app: `a${Math.floor(slot / 10_000)}`, slot: slot % 10_000 } };
        });
        const reply = await clients[seq % clients.length]!.request('orangery.ipam.allocate.batch', { items }, 30_000);
        return reply.ok === true && (reply.data.results as { ok: boolean }[]).every((x) => x.ok);
      });
      const cpuAfterBatch = cpuOf();
      const addresses = b.ops * BATCH;
      for (const k of Object.keys(cpuAfterBatch) as (keyof typeof cpuAfterBatch)[]) {
        cpuRows.push([
          replicas,
          `${k} (batch of ${BATCH})`,
          fmt((cpuAfterBatch[k] - cpuBeforeBatch[k]) / addresses, 2),
          fmt((cpuAfterBatch[k] - cpuBeforeBatch[k]) / 1000 / b.seconds, 2),
        ]);
      }
      batchRows.push([
        replicas,
        BATCH_CLIENTS,
        fmt(b.perSecond, 1),
        fmt(addresses / b.seconds, 0),
        fmt(b.p50, 2),
        fmt(b.p99, 2),
        b.errors,
        fmt(singlesAt64, 0),
        fmt(addresses / b.seconds / singlesAt64, 1),
      ]);
      await Promise.all(procs.map((p) => p.terminate()));
    }

    // Pool size independence: a fresh /16, filled to FILL addresses by 64 clients.
    log(`filling a fresh /16 with ${FILL} allocations (3 replicas, 64 clients)`);
    const dbUrl = await freshDatabase('bench_fill');
    const env = { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl };
    const procs = await Promise.all([0, 1, 2].map(() => ServiceProcess.start(dir, 'ipam', env)));
    const t0 = performance.now();
    const created = await clients[0]!.request('orangery.ipam.pool.create', { name: 'fill', cidr: '198.19.0.0/16', gateway: '198.19.0.1' }, 60_000);
    const createMs = performance.now() - t0;
    if (!created.ok) throw new Error(`pool.create failed: ${JSON.stringify(created)}`);
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
            {
              pool: 'fill',
              owner: { env: 'fill', app: `a${Math.floor(i / 10_000)}`, slot: i % 10_000 },
            },
            30_000,
          );
          latency[i] = performance.now() - s;
          if (!r.ok) failures++;
          if (i % 10_000 === 0) log(`  ${i} allocated`);
        }
      }),
    );
    await Promise.all(procs.map((p) => p.terminate()));
    const firstK = latency.slice(0, 1000).sort((a, b) => a - b);
    const lastK = latency.slice(FILL - 1000).sort((a, b) => a - b);

    const main = table(['replicas', 'clients', 'alloc/s', 'p50 ms', 'p99 ms', 'errors', 'raw INSERT+COMMIT/s', 'ratio'], rows);
    const fill = table(
      ['measure', 'value'],
      [
        ['/16 pool.create (65,533 addresses)', `${fmt(createMs, 0)} ms`],
        ['first 1,000 allocations p50 / p99', `${fmt(percentile(firstK, 50), 2)} / ${fmt(percentile(firstK, 99), 2)} ms`],
        [`allocations ${FILL - 999}..${FILL} p50 / p99`, `${fmt(percentile(lastK, 50), 2)} / ${fmt(percentile(lastK, 99), 2)} ms`],
        ['last/first p50 ratio', fmt(percentile(lastK, 50) / percentile(firstK, 50), 2)],
        ['failed allocations', failures],
      ],
    );
    const batch = table(
      [
        'replicas',
        `allocate.batch of ${BATCH}, clients`,
        'batches/s',
        'addresses/s',
        'p50 ms per batch',
        'p99 ms per batch',
        'errors',
        'singles alloc/s (64 clients, same run)',
        'ratio',
      ],
      batchRows,
    );
    const cpu = table(['replicas', 'process (64 clients, or batches)', 'CPU ms per allocation', 'cores busy'], cpuRows);
    const out = `${main}\n\n${batch}\n\n${cpu}\n\n${fill}\n`;
    process.stdout.write(`\n${out}`);
    mkdirSync('bench/results', { recursive: true });
    writeFileSync(
      'bench/results/ipam.md',
      `<!-- written by npm run bench:ipam on ${new Date().toISOString()}; ${SECONDS} s per row; 2-core machine -->\n${out}`,
    );
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await dir.cleanup();
  }
}

main().catch((e) => {
  process.stderr.write(`[bench:ipam] failed: ${String(e?.stack ?? e)}\n`);
  process.exit(1);
});

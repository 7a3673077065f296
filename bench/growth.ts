/**
 * Cost growth benchmark (npm run bench:growth; issue 17): how the scheduler's costs grow
 * with what it manages. Real NATS, MariaDB, ipam and scheduler processes, and 5,000
 * simulated hosts (libs/testing SimulatedFleet). The journal is filled through the real
 * path, not seeded in the database: scale requests of 100 replicas each, placed, journaled,
 * created on the simulated agents and bound in ipam, until the scheduler manages 1,000, then
 * 10,000, then 100,000 instances. At each level:
 * - scheduler memory: the leader's RSS once the level is reached and the fleet is quiet;
 * - leader restart, REPEATS times: the leader is stopped (SIGTERM) and a new scheduler
 *   process started; measured from its spawn to `ready` (process up, connected), to
 *   `elected scheduler leader` (the lease taken), to `leading: consuming scale requests`
 *   (the journal loaded: elected -> leading is the journal load) and to its first served
 *   request (a 1-replica scale of a new app completed), and its RSS then;
 * - `hosts.list` and `instances.list` (default pages of 1,000): the first page and a full
 *   paged walk, REPEATS times each.
 * Ratios against the 1,000-instance level of the same run say whether a cost grows at most
 * linearly (x10 and x100 the instances). Writes bench/results/growth.md.
 * Bounded: every wait is capped; it stops by itself.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, SimulatedFleet, waitFor } from '@orangery/testing';
import { fmt, fmtRepeated, machineLine, REPEATS, repeated, table, type Repeated } from './lib';

const HOSTS = Number(process.env['BENCH_HOSTS'] ?? 5_000);
const LEVELS = (process.env['BENCH_GROWTH_LEVELS'] ?? '1000,10000,100000').split(',').map(Number);
const REPLICAS = 100;
const HEARTBEAT_SECONDS = 10;
const resources = { cpu: 0.1, memoryMb: 128 };
const started = Date.now();
const log = (m: string) => process.stderr.write(`[bench:growth +${Math.round((Date.now() - started) / 1000)}s] ${m}\n`);

/** Resident memory of a process, MiB (VmRSS). */
function rssMiB(pid: number): number {
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb ? Number(kb) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

interface Level {
  instances: number;
  leaderRss: number;
  restartReady: Repeated;
  restartElected: Repeated;
  journalLoad: Repeated;
  restartLeading: Repeated;
  restartServing: Repeated;
  restartRss: Repeated;
  hostsFirst: Repeated;
  hostsWalk: Repeated;
  hostsPages: number;
  instancesFirst: Repeated;
  instancesWalk: Repeated;
  instancesPages: number;
  instancesSeen: number;
}

async function main(): Promise<void> {
  const dir = new HarnessDir('bench-growth');
  const nats = await NatsServer.start(dir);
  const dbUrl = await freshDatabase('bench_growth');
  const client = await ContractClient.connect(nats.url);
  const scale = new ScaleWatcher(client.nc);
  let fleet: SimulatedFleet | undefined;
  const env = {
    ORANGERY_NATS_URL: nats.url,
    ORANGERY_DB_URL: dbUrl,
    // 5,000 hosts heartbeating every 2 s would be 2,500 messages/s on two shared cores
    ORANGERY_HEARTBEAT_SECONDS: String(HEARTBEAT_SECONDS),
    ORANGERY_LOST_AFTER_SECONDS: String(HEARTBEAT_SECONDS * 6),
  };
  let scheduler: ServiceProcess | undefined;
  try {
    const ipam = await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
    for (const [name, cidr] of [
      ['g0', '198.18.0.0/16'],
      ['g1', '198.19.0.0/16'],
    ]) {
      const pool = await client.request('orangery.ipam.pool.create', { name, cidr, gateway: cidr.replace('0/16', '1'), cooldownSeconds: 0 }, 60_000);
      if (!pool.ok) throw new Error(JSON.stringify(pool.error));
    }
    log(`starting ${HOSTS} simulated hosts`);
    fleet = await SimulatedFleet.start({
      natsUrl: nats.url,
      hosts: HOSTS,
      idPrefix: 'g-',
      capacity: { cpu: 64, memoryMb: 262_144, diskMb: 2_000_000 },
      labels: (i) => ({ rack: `r${i % 20}` }),
      heartbeatSeconds: HEARTBEAT_SECONDS,
      arpProbe: false,
    });
    scheduler = await ServiceProcess.start(dir, 'scheduler', env);
    await scheduler.waitForLog('leading: consuming scale requests', 120_000);
    await waitFor(
      `${HOSTS} ready hosts`,
      async () => {
        const n = (await walk('orangery.scheduler.hosts.list', 'hosts')).items;
        return n >= HOSTS || undefined;
      },
      120_000,
      1_000,
    );

    let apps = 0;
    let probes = 0;
    /** Scale requests of REPLICAS each until `total` instances, all completed. */
    const fill = async (total: number) => {
      const ids: string[] = [];
      for (; apps * REPLICAS < total; apps++) {
        ids.push(
          await scale.publish({
            env: 'growth',
            app: `a${apps}`,
            replicas: REPLICAS,
            resources,
            image: 'bench:1',
            backend: 'docker',
            pool: `g${apps % 2}`,
            spread: 'host',
          }),
        );
      }
      const outcomes = await Promise.all(ids.map((id) => scale.outcome(id, 1_800_000)));
      const failed = outcomes.filter((e) => e.type !== 'io.orangery.scale.completed');
      if (failed.length > 0) throw new Error(`${failed.length} scale requests not completed, e.g. ${JSON.stringify(failed[0]!.data)}`);
    };

    /** Every page of a list; the time of the first page and of the whole walk. */
    async function walk(subject: string, field: string): Promise<{ first: number; all: number; pages: number; items: number }> {
      const t0 = performance.now();
      let first = NaN;
      let cursor: string | undefined;
      let pages = 0;
      let items = 0;
      do {
        const r = await client.request(subject, cursor ? { cursor } : {}, 60_000);
        if (!r.ok) throw new Error(`${subject}: ${JSON.stringify(r.error)}`);
        if (pages === 0) first = performance.now() - t0;
        pages++;
        items += (r.data[field] as unknown[]).length;
        cursor = r.data.nextCursor as string | undefined;
      } while (cursor);
      return { first, all: performance.now() - t0, pages, items };
    }

    const levels: Level[] = [];
    for (const level of LEVELS) {
      log(`filling to ${level} instances`);
      const t0 = performance.now();
      await fill(level);
      log(`${level} instances in ${fmt((performance.now() - t0) / 1000, 0)} s`);
      await new Promise((r) => setTimeout(r, 3_000));
      const leaderRss = rssMiB(scheduler.pid);

      const ready: number[] = [];
      const elected: number[] = [];
      const loaded: number[] = [];
      const leading: number[] = [];
      const serving: number[] = [];
      const restartRss: number[] = [];
      for (let k = 0; k < REPEATS; k++) {
        await scheduler.terminate();
        const s0 = performance.now();
        scheduler = ServiceProcess.spawn(dir, 'scheduler', env);
        await scheduler.waitForLog('ready', 600_000);
        ready.push(performance.now() - s0);
        await scheduler.waitForLog('elected scheduler leader', 600_000);
        const e0 = performance.now();
        elected.push(e0 - s0);
        await scheduler.waitForLog('leading: consuming scale requests', 600_000);
        leading.push(performance.now() - s0);
        loaded.push(performance.now() - e0);
        const id = await scale.publish({ env: 'growth', app: `probe${probes++}`, replicas: 1, resources, image: 'bench:1', backend: 'docker', pool: 'g0' });
        const ev = await scale.outcome(id, 600_000);
        if (ev.type !== 'io.orangery.scale.completed') throw new Error(`probe after restart: ${JSON.stringify(ev.data)}`);
        serving.push(performance.now() - s0);
        restartRss.push(rssMiB(scheduler.pid));
        log(`${level}: restart ${k + 1}: leading ${fmt(leading.at(-1)!, 0)} ms, serving ${fmt(serving.at(-1)!, 0)} ms`);
      }

      const hf: number[] = [];
      const hw: number[] = [];
      const inf: number[] = [];
      const inw: number[] = [];
      let hostsPages = 0;
      let instancesPages = 0;
      let instancesSeen = 0;
      for (let k = 0; k < REPEATS; k++) {
        const h = await walk('orangery.scheduler.hosts.list', 'hosts');
        hf.push(h.first);
        hw.push(h.all);
        hostsPages = h.pages;
        const i = await walk('orangery.scheduler.instances.list', 'instances');
        inf.push(i.first);
        inw.push(i.all);
        instancesPages = i.pages;
        instancesSeen = i.items;
      }
      levels.push({
        instances: level,
        leaderRss,
        restartReady: repeated(ready),
        restartElected: repeated(elected),
        journalLoad: repeated(loaded),
        restartLeading: repeated(leading),
        restartServing: repeated(serving),
        restartRss: repeated(restartRss),
        hostsFirst: repeated(hf),
        hostsWalk: repeated(hw),
        hostsPages,
        instancesFirst: repeated(inf),
        instancesWalk: repeated(inw),
        instancesPages,
        instancesSeen,
      });
      log(`${level}: leader RSS ${fmt(leaderRss, 0)} MiB, instances.list walk ${fmtRepeated(repeated(inw), 0)} ms`);
    }

    const base = levels[0]!;
    const x = (v: number, b: number) => fmt(v / b, 1);
    const rows = levels.map((l) => [
      l.instances,
      `${fmt(l.leaderRss, 0)} (x${x(l.leaderRss, base.leaderRss)})`,
      `${fmtRepeated(l.restartReady, 0)} / ${fmtRepeated(l.restartElected, 0)}`,
      `${fmtRepeated(l.journalLoad, 0)} (x${x(l.journalLoad.median, base.journalLoad.median)})`,
      `${fmtRepeated(l.restartLeading, 0)} (x${x(l.restartLeading.median, base.restartLeading.median)})`,
      `${fmtRepeated(l.restartServing, 0)} (x${x(l.restartServing.median, base.restartServing.median)})`,
      fmtRepeated(l.restartRss, 0),
      `${fmtRepeated(l.hostsFirst, 1)} / ${fmtRepeated(l.hostsWalk, 0)} (${l.hostsPages} pages)`,
      `${fmtRepeated(l.instancesFirst, 1)} (x${x(l.instancesFirst.median, base.instancesFirst.median)})`,
      `${fmtRepeated(l.instancesWalk, 0)} (x${x(l.instancesWalk.median, base.instancesWalk.median)}, ${l.instancesPages} pages, ${l.instancesSeen} instances)`,
    ]);
    const out =
      table(
        [
          'instances',
          'leader RSS MiB',
          'restart: spawn -> ready / elected, ms',
          'journal load: elected -> leading, ms',
          'restart: spawn -> leading, ms',
          'restart: spawn -> first request served, ms',
          'new leader RSS MiB',
          `hosts.list (${HOSTS} hosts): first page / full walk, ms`,
          'instances.list first page, ms',
          'instances.list full walk, ms',
        ],
        levels.length > 0 ? rows : [],
      ) +
      `\n\n${HOSTS.toLocaleString('en')} simulated hosts (heartbeat every ${HEARTBEAT_SECONDS} s), one scheduler, one ipam process, NATS and MariaDB on ${cpus().length} cores; ` +
      `the journal filled through the real path (scale requests of ${REPLICAS} replicas, spread: host). ` +
      `Each cell: median (min-max) of ${REPEATS} runs, and in brackets the ratio to the ${base.instances.toLocaleString('en')}-instance level of the same run ` +
      `(linear growth would be x${LEVELS.map((l) => fmt(l / base.instances, 0)).join(', x')}). Pages of 1,000 (the default limit).\n\n${machineLine()}\n`;
    mkdirSync('bench/results', { recursive: true });
    writeFileSync('bench/results/growth.md', `<!-- written by npm run bench:growth on ${new Date().toISOString()}; ${cpus().length}-core machine -->\n${out}`);
    process.stdout.write(`\n${out}`);
    await Promise.all([scheduler.terminate(), ipam.terminate()]);
  } finally {
    scale.close();
    await fleet?.stop();
    await client.close();
    await dir.cleanup();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`[bench:growth] failed: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);

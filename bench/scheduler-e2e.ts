/**
 * Scheduler end-to-end benchmark (npm run bench:scheduler, second part): scale requests
 * on JetStream -> scheduler process -> ipam process -> 1,000 simulated agents (libs/testing
 * SimulatedFleet: they answer commands at once and heartbeat, so what is measured is the
 * control plane) -> scale.completed. Measured: instances/s from the first request's publish
 * to the last request's scale.completed, and per-request latency.
 *
 * Baseline, same run, same servers: the minimum the messages of one instance cost without
 * a scheduler: a client doing ipam allocate -> agent create -> ipam bind for the same number
 * of instances, batched like the scheduler batches its ipam calls. ratio = scheduler / baseline (1.0: the scheduler adds no cost).
 *
 * Each configuration runs REPEATS times (baseline, then scheduler, alternating on the same
 * servers and fleet; a fresh scheduler process per run, so every run starts from a leader
 * that has just loaded its journal); the table reports the median and the spread, the CPU
 * table the median CPU per instance of each process.
 *
 * Bounded: APPS x REPLICAS instances (default 400 x 10) per run, every wait capped; stops by itself.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, SimulatedFleet, waitFor } from '@orangery/testing';
import { cpuMs, fmt, fmtRepeated, machineLine, median, percentile, REPEATS, repeated, table } from './lib';

const HOSTS = Number(process.env['BENCH_HOSTS'] ?? 1_000);
const APPS = Number(process.env['BENCH_APPS'] ?? 400);
const REPLICAS = Number(process.env['BENCH_REPLICAS'] ?? 10);
const BASELINE_BATCH = 100;
const BASELINE_PIPELINES = 3;
const TARGET = 2_000;
const log = (m: string) => process.stderr.write(`[bench:scheduler-e2e] ${m}\n`);

const resources = { cpu: 0.5, memoryMb: 512 };

/**
 * The same messages without a scheduler, as cheaply as a client can send them: batches of
 * BASELINE_BATCH instances, each one allocate.batch, then its creates at once, then one
 * bind.batch; BASELINE_PIPELINES batches in flight.
 */
async function baseline(client: ContractClient, fleet: SimulatedFleet, count: number, run: number): Promise<{ perSecond: number; p50: number; p99: number }> {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: BASELINE_PIPELINES }, async () => {
      for (let first = next, n = Math.min(BASELINE_BATCH, count - first); n > 0; first = next, n = Math.min(BASELINE_BATCH, count - first)) {
        next += n;
        const s = performance.now();
        const owners = Array.from({ length: n }, (_, k) => {
          const i = first + k;
          return { env: 'base', app: `r${run}b${Math.floor(i / REPLICAS)}`, slot: i % REPLICAS };
        });
        const a = await client.request('orangery.ipam.allocate.batch', { items: owners.map((owner) => ({ pool: 'bench', owner })) });
        if (!a.ok) throw new Error(`baseline allocate: ${JSON.stringify(a.error)}`);
        const binds = await Promise.all(
          owners.map(async (owner, k) => {
            const r = a.data.results[k];
            if (!r.ok) throw new Error(`baseline allocate: ${JSON.stringify(r.error)}`);
            const host = fleet.hostIds[(first + k) % fleet.hostIds.length]!;
            const id = `${owner.env}:${owner.app}:${owner.slot}`;
            const c = await client.request(`orangery.agent.${host}.instance.create`, {
              instanceId: id,
              env: owner.env,
              app: owner.app,
              slot: owner.slot,
              image: 'bench:1',
              resources,
              network: { ip: r.data.ip, mac: r.data.mac, prefixLength: r.data.prefixLength, gateway: r.data.gateway, vlan: r.data.vlan },
            });
            if (!c.ok) throw new Error(`baseline create: ${JSON.stringify(c.error)}`);
            return { ip: r.data.ip, instanceId: id, backend: 'docker', host };
          }),
        );
        const b = await client.request('orangery.ipam.bind.batch', { items: binds });
        if (!b.ok || b.data.results.some((x: { ok: boolean }) => !x.ok)) throw new Error(`baseline bind: ${JSON.stringify(b)}`);
        const ms = performance.now() - s;
        for (let k = 0; k < n; k++) lat.push(ms);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return { perSecond: count / seconds, p50: percentile(lat, 50), p99: percentile(lat, 99) };
}

async function main(): Promise<void> {
  const dir = new HarnessDir('bench-scheduler');
  const nats = await NatsServer.start(dir);
  const dbUrl = await freshDatabase('bench_scheduler');
  const client = await ContractClient.connect(nats.url);
  const scale = new ScaleWatcher(client.nc);
  let fleet: SimulatedFleet | undefined;
  try {
    const ipam = await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
    const natsPid = Number(
      execFileSync('pgrep', ['-n', '-f', `nats-server -c ${dir.path}`])
        .toString()
        .trim(),
    );
    const dbPid = Number(readFileSync(`${process.env['ORANGERY_LOCAL_RUN_DIR']}/mysqld.pid`, 'utf8'));
    const pids: Record<string, number> = { ipam: ipam.pid, mariadb: dbPid, nats: natsPid, 'fleet + load generator': process.pid };
    const cpu = () => Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMs(pid)]));
    const pool = await client.request('orangery.ipam.pool.create', { name: 'bench', cidr: '198.19.0.0/16', gateway: '198.19.0.1', cooldownSeconds: 0 });
    if (!pool.ok) throw new Error(JSON.stringify(pool.error));
    log(`starting ${HOSTS} simulated hosts`);
    fleet = await SimulatedFleet.start({
      natsUrl: nats.url,
      hosts: HOSTS,
      idPrefix: 'sim-',
      capacity: { cpu: 64, memoryMb: 262_144, diskMb: 2_000_000 },
      labels: (i) => ({ rack: `r${i % 20}` }),
      arpProbe: false,
    });
    const total = APPS * REPLICAS;
    interface Run {
      perSecond: number;
      p50: number;
      p99: number;
    }
    const baseRuns: Run[] = [];
    const schedRuns: Run[] = [];
    /** phase -> process -> CPU ms per instance, one value per run */
    const cpuRuns = new Map<string, Map<string, number[]>>();
    const account = (phase: string, before: Record<string, number>, count: number) => {
      const after = cpu();
      let byProcess = cpuRuns.get(phase);
      if (!byProcess) cpuRuns.set(phase, (byProcess = new Map()));
      for (const k of Object.keys(before)) byProcess.set(k, [...(byProcess.get(k) ?? []), (after[k]! - before[k]!) / count]);
    };
    for (let run = 0; run < REPEATS; run++) {
      log(`run ${run + 1}/${REPEATS}: baseline: ${total} x (allocate, create, bind) in batches of ${BASELINE_BATCH}, ${BASELINE_PIPELINES} in flight`);
      delete pids['scheduler'];
      const baseCpu = cpu();
      const base = await baseline(client, fleet, total, run);
      account('baseline', baseCpu, total);
      baseRuns.push(base);
      log(`baseline ${fmt(base.perSecond, 0)} instances/s`);

      const scheduler = await ServiceProcess.start(dir, 'scheduler', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
      pids['scheduler'] = scheduler.pid;
      await scheduler.waitForLog('leading: consuming scale requests', 120_000);
      await waitFor(
        `${HOSTS} ready hosts`,
        async () => {
          const r = await client.request('orangery.scheduler.hosts.list', { limit: 10_000 }, 20_000);
          return r.ok && r.data.hosts.filter((h: { state: string }) => h.state === 'ready').length >= HOSTS;
        },
        60_000,
        500,
      );

      log(`run ${run + 1}/${REPEATS}: scheduler: ${APPS} scale requests x ${REPLICAS} replicas = ${total} instances`);
      const schedCpu = cpu();
      const t0 = performance.now();
      const sent = new Map<string, number>();
      const ids = await Promise.all(
        Array.from({ length: APPS }, async (_, n) => {
          const id = await scale.publish({
            env: 'bench',
            app: `r${run}a${n}`,
            replicas: REPLICAS,
            resources,
            image: 'bench:1',
            backend: 'docker',
            pool: 'bench',
            spread: 'host',
          });
          sent.set(id, performance.now());
          return id;
        }),
      );
      const done = await Promise.all(ids.map(async (id) => ({ id, ev: await scale.outcome(id, 600_000), at: performance.now() })));
      const seconds = (performance.now() - t0) / 1000;
      const failed = done.filter((d) => d.ev.type !== 'io.orangery.scale.completed');
      if (failed.length > 0) throw new Error(`${failed.length} requests not completed, e.g. ${JSON.stringify(failed[0]!.ev.data)}`);
      const lat = done.map((d) => d.at - sent.get(d.id)!).sort((a, b) => a - b);
      account('scheduler', schedCpu, total);
      const running = fleet.instances().filter((i) => i.instanceId.startsWith(`bench:r${run}a`) && i.state === 'running').length;
      if (running !== total) throw new Error(`the fleet runs ${running} bench instances of run ${run + 1}, expected ${total}`);
      schedRuns.push({ perSecond: total / seconds, p50: percentile(lat, 50), p99: percentile(lat, 99) });
      log(`scheduler ${fmt(total / seconds, 0)} instances/s`);
      // a clean stop (profiles, when ORANGERY_BENCH_NODE_ARGS asks for them, are written at exit)
      await scheduler.terminate();
    }

    const rate = (runs: Run[]) => repeated(runs.map((r) => r.perSecond));
    const ratios = repeated(schedRuns.map((r, k) => r.perSecond / baseRuns[k]!.perSecond));
    const rows = [
      [
        `baseline: allocate.batch + creates + bind.batch of ${BASELINE_BATCH}, ${BASELINE_PIPELINES} batches in flight, no scheduler`,
        total,
        fmtRepeated(rate(baseRuns), 0),
        fmt(median(baseRuns.map((r) => r.p50)), 1),
        fmt(median(baseRuns.map((r) => r.p99)), 1),
        '1.00',
      ],
      [
        `scheduler: ${APPS} scale requests x ${REPLICAS} replicas`,
        total,
        fmtRepeated(rate(schedRuns), 0),
        fmt(median(schedRuns.map((r) => r.p50)), 0),
        fmt(median(schedRuns.map((r) => r.p99)), 0),
        fmtRepeated(ratios, 2),
      ],
    ];
    const cpuRows: (string | number)[][] = [];
    for (const [phase, byProcess] of cpuRuns) {
      let sum = 0;
      for (const [k, runs] of byProcess) {
        sum += median(runs);
        cpuRows.push([phase, k, fmtRepeated(repeated(runs), 3)]);
      }
      cpuRows.push([phase, '**all processes**', fmt(sum, 3)]);
    }
    const out =
      table(
        [
          `path (${REPEATS} runs each)`,
          'instances per run',
          'instances/s, median (min-max)',
          'p50 ms',
          'p99 ms',
          'ratio (per run, vs the baseline run before it)',
        ],
        rows,
      ) +
      '\n\nCPU per instance, by process (median (min-max) of the runs):\n\n' +
      table(['phase', 'process', 'CPU ms / instance'], cpuRows);
    const perSecond = rate(schedRuns).median;
    const note =
      `${HOSTS} simulated hosts, one scheduler and one ipam process, NATS, MariaDB, the fleet and the load generator on ${cpus().length} cores. ` +
      `Latency: per batch of instances for the baseline, per scale request (publish to scale.completed) for the scheduler; p50 and p99 are medians over the runs. ` +
      `Target >= ${TARGET} instances/s: ${perSecond >= TARGET ? 'met' : 'not met'}; ratio >= 0.9: ${ratios.median >= 0.9 ? 'met' : 'not met'}.\n\n${machineLine()}`;
    mkdirSync('bench/results', { recursive: true });
    writeFileSync(
      'bench/results/scheduler-e2e.md',
      `<!-- written by npm run bench:scheduler on ${new Date().toISOString()}; ${cpus().length}-core machine -->\n${out}\n\n${note}\n`,
    );
    process.stdout.write(`${out}\n\n${note}\n`);
    await ipam.terminate();
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
    process.stderr.write(`[bench:scheduler-e2e] failed: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);

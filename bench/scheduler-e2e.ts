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
 * Bounded: APPS x REPLICAS instances (default 400 x 10), every wait capped; stops by itself.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, SimulatedFleet, waitFor } from '@orangery/testing';
import { cpuMs, fmt, percentile, table } from './lib';

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
async function baseline(client: ContractClient, fleet: SimulatedFleet, count: number): Promise<{ perSecond: number; p50: number; p99: number }> {
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
          return { env: 'base', app: `b${Math.floor(i / REPLICAS)}`, slot: i % REPLICAS };
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
    const cpuRows: (string | number)[][] = [];
    const account = (phase: string, before: Record<string, number>, count: number, seconds: number) => {
      const after = cpu();
      for (const k of Object.keys(pids)) cpuRows.push([phase, k, fmt((after[k]! - before[k]!) / count, 3), fmt((after[k]! - before[k]!) / 1000 / seconds, 2)]);
    };
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
    log(`baseline: ${total} x (allocate, create, bind) in batches of ${BASELINE_BATCH}, ${BASELINE_PIPELINES} in flight`);
    const baseCpu = cpu();
    const baseT0 = performance.now();
    const base = await baseline(client, fleet, total);
    account('baseline', baseCpu, total, (performance.now() - baseT0) / 1000);
    log(`baseline ${fmt(base.perSecond, 0)} instances/s`);

    const scheduler = await ServiceProcess.start(dir, 'scheduler', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
    pids['scheduler'] = scheduler.pid;
    await waitFor('scheduler to lead', () => scheduler.hasLog('leading: consuming scale requests') || undefined, 60_000).catch(() => undefined);
    await waitFor(
      `${HOSTS} ready hosts`,
      async () => {
        const r = await client.request('orangery.scheduler.hosts.list', {}, 20_000);
        return r.ok && r.data.hosts.filter((h: { state: string }) => h.state === 'ready').length >= HOSTS;
      },
      60_000,
      500,
    );

    log(`scheduler: ${APPS} scale requests x ${REPLICAS} replicas = ${total} instances`);
    const schedCpu = cpu();
    const t0 = performance.now();
    const sent = new Map<string, number>();
    const ids = await Promise.all(
      Array.from({ length: APPS }, async (_, n) => {
        const id = await scale.publish({
          env: 'bench',
          app: `a${n}`,
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
    const running = fleet.instances().filter((i) => i.instanceId.startsWith('bench:') && i.state === 'running').length;
    if (running !== total) throw new Error(`the fleet runs ${running} bench instances, expected ${total}`);
    const perSecond = total / seconds;
    account('scheduler', schedCpu, total, seconds);
    log(`scheduler ${fmt(perSecond, 0)} instances/s`);

    const rows = [
      [
        `baseline: allocate.batch + creates + bind.batch of ${BASELINE_BATCH}, ${BASELINE_PIPELINES} batches in flight, no scheduler`,
        total,
        fmt(base.perSecond, 0),
        fmt(base.p50, 1),
        fmt(base.p99, 1),
        '1.00',
      ],
      [
        `scheduler: ${APPS} scale requests x ${REPLICAS} replicas`,
        total,
        fmt(perSecond, 0),
        fmt(percentile(lat, 50), 0),
        fmt(percentile(lat, 99), 0),
        fmt(perSecond / base.perSecond, 2),
      ],
    ];
    const out =
      table(['path', 'instances', 'instances/s', 'p50 ms', 'p99 ms', 'ratio'], rows) +
      '\n\nCPU per instance, by process:\n\n' +
      table(['phase', 'process', 'CPU ms / instance', 'cores busy'], cpuRows);
    const note =
      `${HOSTS} simulated hosts, one scheduler and one ipam process, NATS, MariaDB, the fleet and the load generator on ${cpus().length} cores. ` +
      `Latency: per batch of instances for the baseline, per scale request (publish to scale.completed) for the scheduler. ` +
      `Target >= ${TARGET} instances/s: ${perSecond >= TARGET ? 'met' : 'not met'}.`;
    mkdirSync('bench/results', { recursive: true });
    writeFileSync(
      'bench/results/scheduler-e2e.md',
      `<!-- written by npm run bench:scheduler on ${new Date().toISOString()}; ${cpus().length}-core machine -->\n${out}\n\n${note}\n`,
    );
    process.stdout.write(`${out}\n\n${note}\n`);
    // a clean stop (profiles, when ORANGERY_BENCH_NODE_ARGS asks for them, are written at exit)
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
    process.stderr.write(`[bench:scheduler-e2e] failed: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);

/**
 * Swarm benchmark (npm run bench:swarm): scale 0 -> N (default 50) replicas on the swarm
 * backend (a swarm-agent on a lab swarm of 2 nodes) against 0 -> N on the docker backend
 * (a docker-agent on each of 2 lab servers) in the same run, through the whole control
 * plane (scale request on JetStream -> scheduler -> agents -> engines). Timed: from the
 * publish of the scale request until the scale completed and every instance's address
 * answers ARP on the fabric (probed from the lab's probe namespace, 10 at a time). Each
 * backend is measured REPEATS times, alternating, each from 0 (scaled back to 0 in between,
 * untimed); median and spread, the swarm/docker ratio, machineLine().
 * Bounded: every scale waits at most 15 minutes, every ARP wait 60 s.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { SUBJECTS } from '@orangery/contracts';
import { waitFor } from '@orangery/testing';
import { LAB_IMAGES } from '../test/lab';
import { LabCluster } from '../test/integration/fixtures/lab-cluster';
import { fmt, fmtRepeated, machineLine, REPEATS, repeated, table } from './lib';

const N = Number(process.env['BENCH_INSTANCES'] ?? 50);
const POOL = 'bench-net';
const CLUSTER = 'bsw';
const SCALE_TIMEOUT_MS = 15 * 60_000;
const log = (m: string) => process.stderr.write(`[bench:swarm] ${m}\n`);

type Backend = 'swarm' | 'docker';

async function main(): Promise<void> {
  if (!Number.isInteger(N) || N < 1 || N > 200) throw new Error('BENCH_INSTANCES: 1..200');
  const cluster = await LabCluster.start({ label: 'bench-swarm', lab: { servers: 2, legacyVms: 0 } });
  const { lab, client } = cluster;
  try {
    const swarm = await lab.addSwarm({ nodes: 2 });
    await cluster.startIpam(POOL);
    for (const s of lab.servers) await cluster.startDockerAgent(s, { ORANGERY_RESERVED_MEMORY_MB: '1024' });
    await cluster.startService('swarm-agent', {
      ORANGERY_NATS_URL: cluster.nats.url,
      ORANGERY_SWARM_MANAGER: swarm.managerUrl,
      ORANGERY_SWARM_CLUSTER: CLUSTER,
      ORANGERY_SWARM_UPLINK: swarm.uplink,
      ORANGERY_SWARM_NODE_ENGINES: swarm.nodeEngines,
      ORANGERY_SWARM_BLOCK_SIZE: '64',
      ORANGERY_RESERVED_CPUS: '0',
      ORANGERY_RESERVED_MEMORY_MB: '1024',
      ORANGERY_HEARTBEAT_SECONDS: '1',
    });
    await cluster.startScheduler({}, { leading: true });
    await cluster.waitHostsReady(4, { timeoutMs: 60_000 });

    const request = (backend: Backend, replicas: number) => ({
      env: 'bench',
      app: backend,
      replicas,
      resources: { cpu: 0.02, memoryMb: 32, diskMb: 10 },
      image: LAB_IMAGES.svc,
      pool: POOL,
      backend,
      spread: 'host' as const,
    });

    /** ms from t0 until every ip answers ARP (probed 10 at a time until it does). */
    const allAnswer = async (ips: string[], t0: number): Promise<number> => {
      const queue = [...ips];
      let last = 0;
      await Promise.all(
        Array.from({ length: 10 }, async () => {
          for (let ip = queue.shift(); ip; ip = queue.shift()) {
            const a = ip;
            await waitFor(`${a} answers ARP`, () => lab.arpProbe(a, { count: 1, timeoutSec: 1 }), 60_000, 50);
            last = Math.max(last, performance.now() - t0);
          }
        }),
      );
      return last;
    };

    const runOnce = async (backend: Backend): Promise<{ totalMs: number; completedMs: number }> => {
      const t0 = performance.now();
      const done = await cluster.scaleAndWait(request(backend, N), SCALE_TIMEOUT_MS);
      const completedMs = performance.now() - t0;
      if (done.type !== 'io.orangery.scale.completed') throw new Error(`${backend} 0 -> ${N}: ${JSON.stringify(done.data)}`);
      const list = await cluster.instances('bench', backend);
      const ips = list.map((i) => String(i.ip));
      if (list.length !== N || new Set(ips).size !== N || list.some((i) => i.state !== 'running')) {
        throw new Error(`${backend}: ${list.length} instances, ${new Set(ips).size} distinct addresses`);
      }
      const totalMs = Math.max(completedMs, await allAnswer(ips, t0));
      // back to 0, untimed; wait until ipam holds none of them
      const down = await cluster.scaleAndWait(request(backend, 0), SCALE_TIMEOUT_MS);
      if (down.type !== 'io.orangery.scale.completed') throw new Error(`${backend} -> 0: ${JSON.stringify(down.data)}`);
      await waitFor(
        `${backend} addresses unbound`,
        async () => {
          for (const ip of ips) {
            const a = await client.requestWithRetry(SUBJECTS.ipam.get, { ip });
            if (a.ok && a.data.state === 'bound') return false;
          }
          return true;
        },
        120_000,
        500,
      );
      return { totalMs, completedMs };
    };

    const results: Record<Backend, { totalMs: number; completedMs: number }[]> = { swarm: [], docker: [] };
    for (let k = 0; k < REPEATS; k++) {
      for (const backend of (k % 2 === 0 ? ['docker', 'swarm'] : ['swarm', 'docker']) as Backend[]) {
        const r = await runOnce(backend);
        results[backend].push(r);
        log(`run ${k + 1}/${REPEATS} ${backend}: completed ${fmt(r.completedMs / 1000)} s, all answer ARP ${fmt(r.totalMs / 1000)} s`);
      }
    }
    const total = (b: Backend) => repeated(results[b].map((r) => r.totalMs / 1000));
    const completed = (b: Backend) => repeated(results[b].map((r) => r.completedMs / 1000));
    const ratios = repeated(results.swarm.map((r, k) => r.totalMs / results.docker[k]!.totalMs));
    const rows = [
      ['docker backend (2 docker-agents, 2 servers)', fmtRepeated(completed('docker')), fmtRepeated(total('docker'))],
      ['swarm backend (1 swarm-agent, 2 swarm nodes)', fmtRepeated(completed('swarm')), fmtRepeated(total('swarm'))],
      ['ratio swarm / docker (per run pair)', '', fmtRepeated(ratios, 2)],
    ];
    const out = [
      table([`scale 0 -> ${N}, ${REPEATS} runs each: median (min-max)`, 'until scale.completed, s', 'until all answer ARP, s'], rows),
      '',
      `Same run, same control plane (1 scheduler, ipam, NATS, MariaDB); every run from 0, spread host, ${N} x orangery/svc:lab (0.02 CPU, 32 MiB).`,
      machineLine(),
      '',
    ].join('\n');
    process.stdout.write(`\n${out}`);
    mkdirSync('bench/results', { recursive: true });
    writeFileSync('bench/results/swarm.md', `<!-- written by npm run bench:swarm on ${new Date().toISOString()} -->\n${out}`);
    log('done');
  } finally {
    await cluster.close();
  }
}

main().catch((e) => {
  process.stderr.write(`[bench:swarm] failed: ${String(e?.stack ?? e)}\n`);
  process.exit(1);
});

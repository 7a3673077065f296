/**
 * docker-agent benchmark (npm run bench:agent): time from the create command to the
 * container answering ARP on the fabric, over 50 instances one after another, against raw
 * `docker run` of the same image on the same macvlan network in the same run. Both are
 * timed by the same watcher (arping from the lab's probe namespace, a probe every 50 ms)
 * started just before the command. Prints p50/p99, the ratio, and the agent's RSS. The
 * agent's time includes its own duplicate-address probe (RFC 5227: silence must be heard
 * for a while), which raw `docker run` skips.
 * Bounded: 50 + 50 instances, each waited for at most 15 s.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { ContractClient, HarnessDir, NatsServer, ServiceProcess } from '@orangery/testing';
import { Lab, LAB_IMAGES } from '../test/lab';
import { fmt, percentile, table } from './lib';

const N = Number(process.env['BENCH_INSTANCES'] ?? 50);
const log = (m: string) => process.stderr.write(`[bench:agent] ${m}\n`);

/**
 * Resolves with ms until `ip` first answers ARP in the probe namespace (or rejects after
 * 15 s). iputils arping sends at most one probe a second, so a fresh one-probe arping is
 * started every 50 ms: the first to see a reply (exit 1) dates the answer to within ~50 ms.
 */
function arpAnswered(ip: string, t0: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const live = new Set<ChildProcess>();
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearInterval(timer);
      for (const p of live) p.kill('SIGKILL');
      if (err) reject(err);
      else resolve(performance.now() - t0);
    };
    const timer = setInterval(() => {
      if (performance.now() - t0 > 15_000) return finish(new Error(`${ip} never answered ARP within 15 s`));
      const p = spawn('ip', ['netns', 'exec', 'olab-probe', 'arping', '-D', '-q', '-c', '1', '-w', '1', '-I', 'eth0', ip], { stdio: 'ignore' });
      live.add(p);
      p.on('exit', (code) => {
        live.delete(p);
        if (code === 1) finish();
      });
    }, 50);
  });
}

const rssMb = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};

async function main(): Promise<void> {
  const dir = new HarnessDir('bench-agent');
  const lab = await Lab.setup({ servers: 1 });
  const nats = await NatsServer.start(dir);
  const s = lab.servers[0]!;
  let client: ContractClient | undefined;
  try {
    const agent = await ServiceProcess.start(dir, 'docker-agent', {
      ORANGERY_NATS_URL: nats.url,
      ORANGERY_HOST_ID: s.id,
      DOCKER_HOST: s.dockerHost,
      ORANGERY_UPLINK: s.uplink,
    });
    client = await ContractClient.connect(nats.url);
    const viaAgent: number[] = [];
    for (let i = 0; i < N; i++) {
      const ip = `198.18.2.${i + 1}`;
      const t0 = performance.now();
      const answered = arpAnswered(ip, t0);
      const r = await client.request(
        `orangery.agent.${s.id}.instance.create`,
        {
          instanceId: `bench:svc:${i}`,
          env: 'bench',
          app: 'svc',
          slot: i,
          image: LAB_IMAGES.svc,
          resources: { cpu: 0.1, memoryMb: 32 },
          network: { ip, mac: `02:4f:c6:12:02:${(i + 1).toString(16).padStart(2, '0')}`, prefixLength: 16, gateway: lab.gateway, vlan: 0 },
        },
        30_000,
      );
      if (!r.ok) throw new Error(`create failed: ${JSON.stringify(r.error)}`);
      viaAgent.push(await answered);
    }
    const agentRss = rssMb(agent.pid);
    // The agent made the network; raw runs use it too.
    const network = (await lab.docker(s, ['network', 'ls', '--filter', 'name=orangery-v0', '--format', '{{.Name}}'])).trim();
    const raw: number[] = [];
    for (let i = 0; i < N; i++) {
      const ip = `198.18.3.${i + 1}`;
      const t0 = performance.now();
      const answered = arpAnswered(ip, t0);
      await new Promise<void>((res, rej) =>
        execFile(
          '/usr/bin/docker',
          [
            '-H',
            s.dockerHost,
            'run',
            '-d',
            '--network',
            network,
            '--ip',
            ip,
            '--mac-address',
            `02:4f:c6:12:03:${(i + 1).toString(16).padStart(2, '0')}`,
            '--memory',
            '32m',
            LAB_IMAGES.svc,
          ],
          (e) => (e ? rej(e) : res()),
        ),
      );
      raw.push(await answered);
    }
    for (const a of [viaAgent, raw]) a.sort((x, y) => x - y);
    const rows = [
      ['docker-agent create', fmt(percentile(viaAgent, 50), 0), fmt(percentile(viaAgent, 99), 0)],
      ['raw docker run', fmt(percentile(raw, 50), 0), fmt(percentile(raw, 99), 0)],
      ['ratio agent / raw', fmt(percentile(viaAgent, 50) / percentile(raw, 50), 2), fmt(percentile(viaAgent, 99) / percentile(raw, 99), 2)],
    ];
    const out = `${table([`create -> answers ARP (${N} instances)`, 'p50 ms', 'p99 ms'], rows)}\n\ndocker-agent RSS after the run: ${fmt(agentRss, 0)} MiB\n`;
    process.stdout.write(`\n${out}`);
    mkdirSync('bench/results', { recursive: true });
    writeFileSync('bench/results/agent.md', `<!-- written by npm run bench:agent on ${new Date().toISOString()}; 2-core machine -->\n${out}`);
    log('done');
  } finally {
    await client?.close();
    await dir.cleanup();
    await lab.teardown();
  }
}

main().catch((e) => {
  process.stderr.write(`[bench:agent] failed: ${String(e?.stack ?? e)}\n`);
  process.exit(1);
});

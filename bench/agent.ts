/**
 * docker-agent benchmark (npm run bench:agent), REPEATS runs of:
 *  - N creates through the agent and N raw `docker run`s of the same image on the same
 *    macvlan network, alternated one for one (agent i, raw i), each timed from the command
 *    to the container answering ARP on the fabric by the same watcher (arping from the
 *    lab's probe namespace, a fresh probe every 50 ms) started just before the command;
 *  - the agent's RSS (/proc/<pid>/status) after the N instances, against a bare Node
 *    process measured in the same run;
 *  - the agent's CPU over BENCH_IDLE_SECONDS (60) of idle with the N instances running
 *    (/proc/<pid>/stat user + system).
 * The agent's time includes its RFC 5227 duplicate-address probe (ORANGERY_ARP_PROBE_MS,
 * 300 ms of silence), which raw `docker run` skips: the target is agent <= 1.2 x raw + 0.3 s.
 * Each run starts a fresh agent; the medians and spreads over the runs are printed.
 * Bounded: REPEATS x 2N instances, each waited for at most 15 s.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { ContractClient, HarnessDir, NatsServer, ServiceProcess } from '@orangery/testing';
import { Lab, LAB_IMAGES } from '../test/lab';
import { cpuMs, fmt, fmtRepeated, machineLine, median, percentile, repeated, REPEATS, table } from './lib';

const N = Number(process.env['BENCH_INSTANCES'] ?? 50);
const IDLE_SECONDS = Number(process.env['BENCH_IDLE_SECONDS'] ?? 60);
const PROBE_MS = 300;
const BENCH_LABEL = 'io.orangery.bench=raw';
const log = (m: string) => process.stderr.write(`[bench:agent] ${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

/** VmRSS and its parts (RssAnon: the process's own memory; RssFile: mapped files, mostly the node binary, shared), MiB. */
function memOf(pid: number): { rss: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}
const rssMb = (pid: number): number => memOf(pid).rss;

/** CPU ms of the process's reaped children (the arping probes it runs), from /proc (cutime + cstime). */
function childrenCpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[13]) + Number(f[14])) * 10;
}

/** RSS of a bare Node process (same binary, same machine, same run): the floor. */
async function bareNodeMem(): Promise<{ rss: number; anon: number; file: number }> {
  const p = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await sleep(1_000);
  const m = memOf(p.pid!);
  p.kill('SIGKILL');
  return m;
}

const mac = (a: number, b: number, i: number) =>
  `02:4f:c6:${a.toString(16).padStart(2, '0')}:${b.toString(16).padStart(2, '0')}:${(i + 1).toString(16).padStart(2, '0')}`;

interface Run {
  agentP50: number;
  agentP99: number;
  rawP50: number;
  rawP99: number;
  rssAfterN: number;
  anonAfterN: number;
  fileAfterN: number;
  rssAfterIdle: number;
  idleCpuPct: number;
  idleChildrenCpuPct: number;
}

async function main(): Promise<void> {
  const dir = new HarnessDir('bench-agent');
  const lab = await Lab.setup({ servers: 1 });
  const nats = await NatsServer.start(dir);
  const s = lab.servers[0]!;
  let client: ContractClient | undefined;
  const runs: Run[] = [];
  const removeAll = async () => {
    for (const label of ['io.orangery.managed=true', BENCH_LABEL]) {
      const ids = (await lab.docker(s, ['ps', '-aq', '--filter', `label=${label}`])).split('\n').filter(Boolean);
      if (ids.length) await lab.docker(s, ['rm', '-f', ...ids]);
    }
  };
  try {
    client = await ContractClient.connect(nats.url);
    const bare = await bareNodeMem();
    const bareRss = bare.rss;
    for (let r = 0; r < REPEATS; r++) {
      // as production runs it: its node flags (dist/services/docker-agent/node-flags), no source maps
      process.env['ORANGERY_SOURCE_MAPS'] = 'off';
      const agent = await ServiceProcess.start(dir, 'docker-agent', {
        ORANGERY_NATS_URL: nats.url,
        ORANGERY_HOST_ID: s.id,
        DOCKER_HOST: s.dockerHost,
        ORANGERY_UPLINK: s.uplink,
        ORANGERY_ARP_PROBE_MS: String(PROBE_MS),
      });
      const viaAgent: number[] = [];
      const raw: number[] = [];
      let network = '';
      for (let i = 0; i < N; i++) {
        const ip = `198.18.${10 + 2 * r}.${i + 1}`;
        const t0 = performance.now();
        const answered = arpAnswered(ip, t0);
        const res = await client.request(
          `orangery.agent.${s.id}.instance.create`,
          {
            instanceId: `bench:svc:${i}`,
            env: 'bench',
            app: 'svc',
            slot: i,
            image: LAB_IMAGES.svc,
            resources: { cpu: 0.1, memoryMb: 32 },
            network: { ip, mac: mac(0x12, 10 + 2 * r, i), prefixLength: 16, gateway: lab.gateway, vlan: 0 },
          },
          30_000,
        );
        if (!res.ok) throw new Error(`create failed: ${JSON.stringify(res.error)}`);
        viaAgent.push(await answered);
        // The agent made the network; raw runs use it too.
        network ||= (await lab.docker(s, ['network', 'ls', '--filter', 'name=orangery-v0', '--format', '{{.Name}}'])).trim();
        const rawIp = `198.18.${11 + 2 * r}.${i + 1}`;
        const t1 = performance.now();
        const rawAnswered = arpAnswered(rawIp, t1);
        await new Promise<void>((res, rej) =>
          execFile(
            '/usr/bin/docker',
            [
              '-H',
              s.dockerHost,
              'run',
              '-d',
              '--label',
              BENCH_LABEL,
              '--network',
              network,
              '--ip',
              rawIp,
              '--mac-address',
              mac(0x12, 11 + 2 * r, i),
              '--memory',
              '32m',
              LAB_IMAGES.svc,
            ],
            (e) => (e ? rej(e) : res()),
          ),
        );
        raw.push(await rawAnswered);
      }
      const afterN = memOf(agent.pid);
      const cpu0 = cpuMs(agent.pid);
      const child0 = childrenCpuMs(agent.pid);
      const w0 = performance.now();
      await sleep(IDLE_SECONDS * 1000);
      const idleMs = performance.now() - w0;
      const idleCpuPct = ((cpuMs(agent.pid) - cpu0) / idleMs) * 100;
      const idleChildrenCpuPct = ((childrenCpuMs(agent.pid) - child0) / idleMs) * 100;
      const rssAfterIdle = rssMb(agent.pid);
      for (const a of [viaAgent, raw]) a.sort((x, y) => x - y);
      const run: Run = {
        agentP50: percentile(viaAgent, 50),
        agentP99: percentile(viaAgent, 99),
        rawP50: percentile(raw, 50),
        rawP99: percentile(raw, 99),
        rssAfterN: afterN.rss,
        anonAfterN: afterN.anon,
        fileAfterN: afterN.file,
        rssAfterIdle,
        idleCpuPct,
        idleChildrenCpuPct,
      };
      runs.push(run);
      log(`run ${r + 1}/${REPEATS}: ${JSON.stringify(run)}`);
      await agent.terminate();
      await removeAll();
    }
    const rep = (f: (x: Run) => number) => repeated(runs.map(f));
    const ratio50 = rep((x) => x.agentP50 / x.rawP50);
    const target = rep((x) => x.agentP50 / (1.2 * x.rawP50 + PROBE_MS));
    const met = (ok: boolean) => (ok ? 'met' : '**not met**');
    const timing = table(
      [`create -> answers ARP (${N} instances, ${REPEATS} runs)`, 'p50 ms', 'p99 ms'],
      [
        [
          'docker-agent create',
          fmtRepeated(
            rep((x) => x.agentP50),
            0,
          ),
          fmtRepeated(
            rep((x) => x.agentP99),
            0,
          ),
        ],
        [
          'raw docker run',
          fmtRepeated(
            rep((x) => x.rawP50),
            0,
          ),
          fmtRepeated(
            rep((x) => x.rawP99),
            0,
          ),
        ],
        [
          'ratio agent / raw',
          fmtRepeated(ratio50, 2),
          fmtRepeated(
            rep((x) => x.agentP99 / x.rawP99),
            2,
          ),
        ],
        [`agent / (1.2 x raw + ${PROBE_MS} ms probe): target <= 1`, fmtRepeated(target, 2), met(target.median <= 1)],
      ],
    );
    const rss = rep((x) => x.rssAfterN);
    const cpu = rep((x) => x.idleCpuPct);
    const resources = table(
      ['docker-agent resources', 'median (min-max)', 'target', ''],
      [
        [`RSS after ${N} instances, MiB`, fmtRepeated(rss, 0), '<= 80 MB (76 MiB)', met(rss.median * 1.048576 <= 80)],
        [
          `  of which RssAnon (the agent's own) / RssFile (node binary, shared), MiB`,
          `${fmtRepeated(
            rep((x) => x.anonAfterN),
            0,
          )} / ${fmtRepeated(
            rep((x) => x.fileAfterN),
            0,
          )}`,
          '',
          '',
        ],
        [
          `RSS after ${IDLE_SECONDS} s idle, MiB`,
          fmtRepeated(
            rep((x) => x.rssAfterIdle),
            0,
          ),
          '',
          '',
        ],
        [`bare Node process (same run): RSS / RssAnon / RssFile, MiB`, `${fmt(bareRss, 0)} / ${fmt(bare.anon, 0)} / ${fmt(bare.file, 0)}`, '', ''],
        [`RSS agent / bare Node`, fmtRepeated(repeated(runs.map((x) => x.rssAfterN / bareRss)), 2), '', ''],
        [`idle CPU over ${IDLE_SECONDS} s with ${N} instances, % of a core`, fmtRepeated(cpu, 2), '<= 1 %', met(cpu.median <= 1)],
        [
          `  plus its arping children (isolation probe every second), % of a core`,
          fmtRepeated(
            rep((x) => x.idleChildrenCpuPct),
            2,
          ),
          '',
          '',
        ],
      ],
    );
    const out = `${machineLine()}\n\n${timing}\n\n${resources}\n\nPer-run medians: agent ${runs.map((x) => fmt(x.agentP50, 0)).join(', ')} ms; raw ${runs
      .map((x) => fmt(x.rawP50, 0))
      .join(', ')} ms; overall agent / raw p50 ${fmt(median(runs.map((x) => x.agentP50)) / median(runs.map((x) => x.rawP50)), 2)}.\n`;
    process.stdout.write(`\n${out}`);
    mkdirSync('bench/results', { recursive: true });
    writeFileSync('bench/results/agent.md', `<!-- written by npm run bench:agent on ${new Date().toISOString()}; ${REPEATS} runs -->\n${out}`);
    log('done');
  } finally {
    await removeAll().catch(() => undefined);
    await client?.close();
    await dir.cleanup();
    await lab.teardown();
  }
}

main().catch((e) => {
  process.stderr.write(`[bench:agent] failed: ${String(e?.stack ?? e)}\n`);
  process.exit(1);
});

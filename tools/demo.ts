/**
 * The demo of `npm start` (issue 15): the platform at work on the local lab. deploy/local/start.sh
 * runs it in the background (output in .run/dev/logs/demo.log) when no agent is configured
 * (no ORANGERY_UPLINK, no ORANGERY_VCENTER_URL) and ORANGERY_DEMO is not 0, after the control
 * plane and the console are up. It
 *   1. takes the lab lock /tmp/orangery-lab.lock for as long as its lab exists (or runs under
 *      an ancestor that holds it, e.g. `flock /tmp/orangery-lab.lock npm test`); busy: one
 *      line naming the holder, exit 75, and start.sh runs without the demo
 *   2. sets up the lab (test/lab): 2 simulated servers, 1 legacy VM, vcsim with its 3 ESXi hosts,
 *      every VM a container on the same fabric (a crashed earlier demo is swept first)
 *   3. starts 2 docker-agents and 1 vmware-agent against it (the test suite's environments;
 *      logs in .run/dev/logs/demo-<agent>.log, pids in .run/dev/demo-<agent>.pid)
 *   4. creates the pool `demo-net` (198.18.0.0/16 less the lab's own addresses) and publishes
 *      two scale requests in env `demo`: app `hello` (backend docker, image orangery/svc:lab)
 *      and app `legacy` (backend vmware, template centos7-jdk8), 3 replicas each, spread host
 *   5. waits for the outcomes with a progress line, prints the instances and `demo: ready`
 *   6. on SIGTERM / SIGINT: scales both apps to 0, stops the agents, tears the lab down (its
 *      containers removed before its engines stop), releases the lock, exits 0.
 * It never sees the console's token: start.sh generates and prints it, this log holds no secret.
 *
 * Why two apps and not one with `backend: auto`: the scheduler scores docker and ESXi hosts
 * alike (least-loaded), so auto puts an app where the score says, not on both backends; and
 * each slot is placed when it is created, so three slots created together need not see each
 * other (measured in the lab: auto with 2 docker servers and 3 ESXi hosts put all 3 replicas
 * on the docker servers, 2 on one of them). One app per backend shows both, every time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SUBJECTS } from '@orangery/contracts';
import { ContractClient, ScaleWatcher } from '@orangery/testing';
import { Lab, LAB_IMAGES } from '../test/lab';
import { createLabPool, dockerAgentEnv, vmwareAgentEnv, waitHostsReady } from '../test/integration/fixtures/lab-cluster';

const LOCK = '/tmp/orangery-lab.lock';
const ROOT = process.cwd();
const RUN = process.env['ORANGERY_LOCAL_RUN_DIR'] ?? join(ROOT, '.run', 'dev');
const LOGS = join(RUN, 'logs');
const NATS_URL = process.env['ORANGERY_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const POOL = 'demo-net';
const ENV = 'demo';
const REPLICAS = 3;

const t0 = Date.now();
const say = (m: string) => process.stdout.write(`demo: ${m}\n`);
const secs = () => `${Math.round((Date.now() - t0) / 1000)} s`;

/** The process ids from here up to init. */
function ancestors(): Set<number> {
  const out = new Set<number>();
  let pid = process.pid;
  for (let i = 0; i < 64 && pid > 1; i++) {
    out.add(pid);
    try {
      pid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
    } catch {
      break;
    }
  }
  return out;
}

/** Pids holding a flock on the lock file (from /proc/locks, matched by inode). */
function lockHolders(): number[] {
  if (!existsSync(LOCK)) return [];
  const ino = statSync(LOCK).ino;
  const out: number[] = [];
  for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
    const m = /^\d+:\s+FLOCK\s+\S+\s+\S+\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(line);
    if (m && Number(m[2]) === ino) out.push(Number(m[1]));
  }
  return out;
}

const cmdline = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim().slice(0, 160);
  } catch {
    return '?';
  }
};

/**
 * The lab lock for as long as this process lives: a `flock -n` child holding it until our
 * end of its stdin closes (also when this process is killed). Undefined when an ancestor
 * already holds it. Throws `busy` with the holder when another process has it.
 */
async function takeLabLock(): Promise<ChildProcess | undefined> {
  const mine = ancestors();
  const holders = lockHolders();
  if (holders.some((p) => mine.has(p))) {
    say(`the lab lock ${LOCK} is held by an ancestor (pid ${holders.find((p) => mine.has(p))}): running under it`);
    return undefined;
  }
  const child = spawn('flock', ['-n', '-E', '75', LOCK, 'sh', '-c', 'echo locked; exec cat >/dev/null'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const got = await new Promise<boolean>((resolve) => {
    child.stdout!.once('data', () => resolve(true));
    child.once('exit', () => resolve(false));
    child.once('error', () => resolve(false));
  });
  if (!got) {
    const who = lockHolders()
      .map((p) => `pid ${p} (${cmdline(p)})`)
      .join(', ');
    throw Object.assign(new Error(`the lab is busy: ${LOCK} is held by ${who || 'another process'} (npm test or a lab test?)`), { busy: true });
  }
  return child;
}

interface Agent {
  name: string;
  child: ChildProcess;
  pidFile: string;
}

/** A built agent as a background process, its JSON log in .run/dev/logs/demo-<name>.log. */
async function startAgent(service: string, name: string, env: Record<string, string>): Promise<Agent> {
  const log = join(LOGS, `demo-${name}.log`);
  const fd = openSync(log, 'w');
  const child = spawn(process.execPath, ['--enable-source-maps', join(ROOT, 'dist', 'services', service, 'main.js')], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const pidFile = join(RUN, `demo-${name}.pid`);
  writeFileSync(pidFile, `${child.pid}\n`);
  const agent = { name, child, pidFile };
  agents.push(agent);
  const deadline = Date.now() + 60_000;
  while (!readFileSync(log, 'utf8').includes('"msg":"ready"')) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}; see ${log}`);
    if (Date.now() > deadline) throw new Error(`${name} not ready within 60 s; see ${log}`);
    await sleep(200);
  }
  return agent;
}

async function stopAgent(a: Agent): Promise<void> {
  if (a.child.exitCode === null && a.child.signalCode === null) {
    const done = new Promise((r) => a.child.once('exit', r));
    a.child.kill('SIGTERM');
    const t = setTimeout(() => a.child.kill('SIGKILL'), 25_000);
    await done;
    clearTimeout(t);
  }
  rmSync(a.pidFile, { force: true });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const agents: Agent[] = [];
let lab: Lab | undefined;
let client: ContractClient | undefined;
let scale: ScaleWatcher | undefined;
let lock: ChildProcess | undefined;
/** The lab's setup while it runs: a stop meanwhile waits for it, then tears it down. */
let setup: Promise<Lab> | undefined;
let stopping: Promise<void> | undefined;
let scaled = false;

/** The demo's apps: one per backend (see the header for why not one app with backend auto). */
const APPS = [
  { app: 'hello', backend: 'docker' as const },
  { app: 'legacy', backend: 'vmware' as const },
];

const request = (app: (typeof APPS)[number], replicas: number) => ({
  env: ENV,
  app: app.app,
  replicas,
  resources: { cpu: 0.5, memoryMb: 256, diskMb: 100 },
  ...(app.backend === 'docker' ? { image: LAB_IMAGES.svc } : { template: 'centos7-jdk8' }),
  backend: app.backend,
  pool: POOL,
  spread: 'host' as const,
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function instances(): Promise<any[]> {
  const out = [];
  for (const a of APPS) {
    const r = await client!.requestWithRetry(SUBJECTS.scheduler.instancesList, { env: ENV, app: a.app });
    if (r.ok) out.push(...r.data.instances);
  }
  return out;
}

/** Publishes one request per app and waits for every outcome. */
async function scaleAll(replicas: number, timeoutMs: number) {
  const ids = await Promise.all(APPS.map((a) => scale!.publish(request(a, replicas))));
  return Promise.all(ids.map((id) => scale!.outcome(id, timeoutMs)));
}

async function stop(code: number): Promise<void> {
  stopping ??= (async () => {
    say('stopping: scaling hello and legacy to 0, agents, lab');
    if (scaled && scale && agents.every((a) => a.child.exitCode === null)) {
      try {
        await scaleAll(0, 45_000);
      } catch (e) {
        say(`scale to 0 did not complete (${(e as Error).message}); the lab goes anyway`);
      }
    }
    scale?.close();
    await client?.close().catch(() => undefined);
    await Promise.all(agents.map(stopAgent));
    try {
      lab ??= await setup?.catch(() => undefined);
      await lab?.teardown();
    } catch (e) {
      say(`lab teardown: ${(e as Error).message} (the next start sweeps what is left)`);
    }
    lock?.stdin?.end();
    say(`stopped after ${secs()}`);
  })();
  await stopping;
  process.exit(code);
}

async function main(): Promise<void> {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => void stop(0));
  try {
    lock = await takeLabLock();
  } catch (e) {
    if ((e as { busy?: boolean }).busy) {
      say(`${(e as Error).message}; no demo this time`);
      process.exit(75);
    }
    throw e;
  }
  say('setting up the lab: 2 servers, 1 legacy VM, vcsim with 3 ESXi hosts (the first run builds images and vcsim: up to 2 minutes)');
  setup = Lab.setup({ servers: 2, legacyVms: 1, vcenter: true });
  lab = await setup;
  say(
    `lab up in ${Math.round(lab.timings.setupMs / 1000)} s: fabric ${lab.fabric} ${lab.subnet}, servers ${lab.servers.map((s) => s.id).join(' ')}, vCenter ${lab.vcenter!.url}`,
  );
  client = await ContractClient.connect(NATS_URL);
  scale = new ScaleWatcher(client.nc);
  await Promise.all([
    ...lab.servers.map((s) => startAgent('docker-agent', `docker-agent-${s.id}`, dockerAgentEnv(NATS_URL, s))),
    startAgent('vmware-agent', 'vmware-agent', vmwareAgentEnv(NATS_URL, lab.vcenter!)),
  ]);
  say('agents up: 2 docker-agents, 1 vmware-agent; waiting for the scheduler to see 5 hosts');
  await waitHostsReady(client, 5, { timeoutMs: 60_000 });
  const pool = await client.request(SUBJECTS.ipam.poolGet, { name: POOL }).catch(() => undefined);
  if (pool?.ok) say(`pool ${POOL} exists (from an earlier demo)`);
  else {
    await createLabPool(client, POOL);
    say(`pool ${POOL} created: 198.18.0.0/16, gateway ${lab.gateway}`);
  }
  say(`scale requests: env ${ENV}, app hello (backend docker) and app legacy (backend vmware), ${REPLICAS} replicas each, spread host`);
  let done: Awaited<ReturnType<typeof scaleAll>> | undefined;
  let failed: Error | undefined;
  scaled = true;
  scaleAll(REPLICAS, 180_000).then(
    (o) => (done = o),
    (e: Error) => (failed = e),
  );
  for (let last = ''; !done; await sleep(1_000)) {
    if (failed) throw failed;
    const list = await instances();
    const line = `progress: ${APPS.map((a) => `${a.app} ${list.filter((i) => i.app === a.app && i.state === 'running').length}/${REPLICAS}`).join(', ')} running`;
    if (line !== last) say(`${line} (${secs()})`);
    last = line;
  }
  for (const i of await instances()) say(`  ${i.id}  ${i.state}  ${i.backend}  ${i.host}  ${i.ip}`);
  done.forEach((o, n) =>
    say(
      o.type === 'io.orangery.scale.completed'
        ? `${APPS[n]!.app} scaled to ${REPLICAS} (${secs()})`
        : `${APPS[n]!.app}: scale request rejected: ${JSON.stringify(o.data)}`,
    ),
  );
  say('ready');
}

main().catch((e: Error) => {
  say(`failed: ${e.message}`);
  void stop(1);
});

// vCenter in the lab: vcsim (govmomi's simulator, built here from Debian's Go sources) on
// 127.0.0.1, whose VMs with extraConfig RUN.container run as containers on the lab's
// "ESXi" engine, on a macvlan network on the fabric. See README.md ("vCenter: vcsim").
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { REPO_ROOT } from '@orangery/testing';
import { alive, DOCKER_CLI, killPids, LAB_RUN_DIR, labVcsimProcesses, must, run } from './sys';

/** The Go main around simulator.VPX(); its hash keys the binary cache. */
export const VCSIM_MAIN = join(REPO_ROOT, 'test', 'lab', 'vcsim', 'main.go');
/** Survives the lab's sweeps (which remove .run/lab and /run/olab). */
export const VCSIM_CACHE = join(REPO_ROOT, '.run', 'vcsim');
export const VCSIM_RUN_DIR = join(LAB_RUN_DIR, 'vcsim');
const GOPATH = '/usr/share/gocode';
/** PATH for vcsim: it runs the first `docker` found, which must be Debian's 20.10 CLI. */
const VCSIM_PATH = '/usr/bin:/bin:/usr/sbin:/sbin';

export const VCSIM_DEB_PACKAGES = ['golang-go', 'golang-github-vmware-govmomi-dev'];

export interface VcenterOptions {
  /** Loopback port (default: any free port). */
  port?: number;
  user?: string;
  /** Default: random per lab. */
  password?: string;
  /** Serve https with a self-signed certificate. */
  tls?: boolean;
  /** Expire idle sessions after this many seconds (default never). */
  sessionIdleSeconds?: number;
  /** Per-method delays in ms, e.g. `{ PowerOnVM_Task: 2000 }` (slow vCenter, kill mid-call). */
  methodDelayMs?: Record<string, number>;
}

/** What tests and agents need to reach the lab's vCenter. */
export interface LabVcenter {
  /** e.g. http://127.0.0.1:40123/sdk (ORANGERY_VCENTER_URL). */
  url: string;
  user: string;
  password: string;
  /** The "ESXi" engine that runs the VMs' containers. */
  esxiEngineSocket: string;
  esxiDockerHost: string;
  /** The docker macvlan network on that engine, on the fabric (RUN.container --network). */
  macvlanNetwork: string;
  /** The image VMs run when RUN.container names none of their own (busybox, has tar). */
  busyboxImage: string;
  pid: number;
  logFile: string;
}

/** The cached vcsim binary for the current main.go, building it (~25 s) when missing. */
export async function buildVcsim(): Promise<{ binary: string; built: boolean; ms: number }> {
  const t0 = Date.now();
  const hash = createHash('sha256').update(readFileSync(VCSIM_MAIN)).digest('hex').slice(0, 16);
  const dir = join(VCSIM_CACHE, hash);
  const binary = join(dir, 'vcsim-lab');
  if (existsSync(binary)) return { binary, built: false, ms: Date.now() - t0 };
  mkdirSync(dir, { recursive: true });
  const tmp = `${binary}.${process.pid}.tmp`;
  const env = {
    ...process.env,
    GOPATH,
    GO111MODULE: 'off',
    GOFLAGS: '',
    GOCACHE: join(VCSIM_CACHE, 'gocache'),
    PATH: `${VCSIM_PATH}:${process.env.PATH ?? ''}`,
  };
  const r = await runIn(join(REPO_ROOT, 'test', 'lab', 'vcsim'), 'go', ['build', '-o', tmp, '.'], env, 600_000);
  if (r.code !== 0) throw new Error(`go build of ${VCSIM_MAIN} failed (${r.code}): ${r.stderr.trim().slice(-2000)}`);
  renameSync(tmp, binary); // atomic: a concurrent build never leaves half a binary
  return { binary, built: true, ms: Date.now() - t0 };
}

function runIn(cwd: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number) {
  return new Promise<{ code: number; stderr: string }>((resolve) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: 127, stderr: e.message });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 124, stderr });
    });
  });
}

/** A running vcsim started by this lab. */
export class VcsimProcess {
  private constructor(
    readonly child: ChildProcess,
    readonly info: LabVcenter,
  ) {}

  static async start(
    binary: string,
    opts: VcenterOptions,
    esxi: { socketPath: string; dockerHost: string },
    macvlanNetwork: string,
    busyboxImage: string,
    labDir: string,
    pidsFile: string,
  ): Promise<VcsimProcess> {
    const base = join(labDir, 'vcsim');
    const ds = join(base, 'datastore1');
    const tmp = join(base, 'tmp');
    // A fresh datastore per start: vcsim recreates the templates' files and refuses to overwrite.
    rmSync(ds, { recursive: true, force: true });
    mkdirSync(ds, { recursive: true });
    mkdirSync(tmp, { recursive: true });
    mkdirSync(VCSIM_RUN_DIR, { recursive: true });
    const logFile = join(base, 'vcsim.log');
    const user = opts.user ?? 'orangery@vsphere.local';
    const password = opts.password ?? randomBytes(12).toString('base64url');
    const port = opts.port ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`vcenter.port: bad port ${port}`);
    const args = ['-listen', `127.0.0.1:${port}`, '-datastore-dir', ds, '-pidfile', join(VCSIM_RUN_DIR, 'vcsim.pid')];
    if (opts.tls) args.push('-tls');
    if (opts.sessionIdleSeconds) args.push('-session-idle', `${opts.sessionIdleSeconds}s`);
    if (opts.methodDelayMs) args.push('-method-delay', JSON.stringify(opts.methodDelayMs));
    const log = openSync(logFile, 'a');
    const child = spawn(binary, args, {
      stdio: ['ignore', 'pipe', log],
      env: {
        PATH: VCSIM_PATH,
        HOME: tmp,
        TMPDIR: tmp,
        DOCKER_HOST: esxi.dockerHost,
        VCSIM_BUSYBOX: busyboxImage,
        // Credentials by environment: never on a command line that `ps` shows.
        VCSIM_USERNAME: user,
        VCSIM_PASSWORD: password,
      },
    });
    closeSync(log);
    if (child.pid) appendFileSync(pidsFile, `${child.pid}\n`);
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`vcsim did not start within 30 s; log: ${tailOf(logFile)}`)), 30_000);
      const lines = createInterface({ input: child.stdout! });
      lines.once('line', (line) => {
        clearTimeout(timer);
        try {
          resolve((JSON.parse(line) as { url: string }).url);
        } catch {
          reject(new Error(`vcsim printed ${JSON.stringify(line)} instead of its URL`));
        }
      });
      child.once('exit', (code, sig) => {
        clearTimeout(timer);
        reject(new Error(`vcsim exited (${code ?? sig}) at start; log: ${tailOf(logFile)}`));
      });
    });
    child.stdout?.resume();
    return new VcsimProcess(child, {
      url,
      user,
      password,
      esxiEngineSocket: esxi.socketPath,
      esxiDockerHost: esxi.dockerHost,
      macvlanNetwork,
      busyboxImage,
      pid: child.pid!,
      logFile,
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null && alive(this.child.pid ?? -1);
  }

  /** SIGTERM: vcsim removes its VMs' containers, then exits. `SIGKILL` simulates a crash. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const pid = this.child.pid;
    if (pid === undefined || !this.running) return;
    await killPids([pid], 20_000, signal);
  }
}

/** Containers (and their DMI volumes) that vcsim left on the ESXi engine, e.g. after a SIGKILL. */
export async function removeVcsimContainers(dockerHost: string): Promise<number> {
  const host = ['-H', dockerHost];
  const ids = (await run(DOCKER_CLI, [...host, 'ps', '-aq', '--filter', 'name=^vcsim-'], { timeoutMs: 10_000 })).stdout.split('\n').filter(Boolean);
  if (ids.length > 0) await run(DOCKER_CLI, [...host, 'rm', '-f', '-v', ...ids], { timeoutMs: 30_000 });
  const vols = (await run(DOCKER_CLI, [...host, 'volume', 'ls', '-q', '--filter', 'name=^vcsim-'], { timeoutMs: 10_000 })).stdout.split('\n').filter(Boolean);
  if (vols.length > 0) await run(DOCKER_CLI, [...host, 'volume', 'rm', '-f', ...vols], { timeoutMs: 30_000 });
  return ids.length;
}

export async function createMacvlanNetwork(dockerHost: string, name: string, subnet: string, gateway: string, parent: string): Promise<void> {
  await must(DOCKER_CLI, ['-H', dockerHost, 'network', 'create', '-d', 'macvlan', '--subnet', subnet, '--gateway', gateway, '-o', `parent=${parent}`, name]);
}

/** Stops every lab vcsim (ours or a crashed run's) by PID, then forgets its run dir. */
export async function sweepVcsim(): Promise<number[]> {
  const pids = labVcsimProcesses();
  await killPids(pids, 20_000);
  rmSync(VCSIM_RUN_DIR, { recursive: true, force: true });
  return pids;
}

function tailOf(file: string, lines = 15): string {
  if (!existsSync(file)) return '(no log)';
  return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
}

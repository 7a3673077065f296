// Low-level host helpers for the lab: running tools with argument arrays, reading /proc,
// and sweeping away everything a lab (this one or a crashed earlier one) left behind.
//
// Safety: every name this file touches starts with LAB_PREFIX; processes are signalled by
// PID only, and only when they provably belong to the lab (a pid file plus a command line
// that names the lab's run directory, a lab cgroup, or a lab network namespace).
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';

export const LAB_PREFIX = 'olab';
/** Short paths on purpose: unix socket paths are limited to ~107 characters. */
export const LAB_RUN_DIR = '/run/olab';
export const IP = 'ip';
export const DOCKER_CLI = '/usr/bin/docker';
export const DOCKERD = 'dockerd';
export const ARPING = 'arping';
export const BUSYBOX = '/usr/bin/busybox';
export const TAR = 'tar';
export const NSENTER = 'nsenter';
export const UNSHARE = 'unshare';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd` with an argument array (never a shell). Never throws; a spawn error is code 127. */
export function run(cmd: string, args: readonly string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20, env: opts.env ?? process.env, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) return resolve({ code: 0, stdout, stderr });
      const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean };
      const code = typeof e.code === 'number' ? e.code : e.killed ? 124 : 127;
      resolve({ code, stdout: stdout ?? '', stderr: (stderr ?? '') || e.message });
    });
  });
}

/** Like `run`, but throws (with stderr) unless the command exits 0. Returns stdout. */
export async function must(cmd: string, args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim()}`);
  }
  return r.stdout;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Guards every name the lab creates or deletes. */
export function assertLabName(name: string, maxLen = 15): void {
  if (!name.startsWith(LAB_PREFIX) || name.length > maxLen || !/^[a-z0-9-]+$/.test(name)) {
    throw new Error(`refusing lab name ${JSON.stringify(name)}: must start with ${LAB_PREFIX}, [a-z0-9-], <= ${maxLen} chars`);
  }
}

// ---------------------------------------------------------------- processes (/proc)

const readProc = (pid: number, file: string): string | undefined => {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
};

export const cmdlineOf = (pid: number): string => (readProc(pid, 'cmdline') ?? '').replace(/\0/g, ' ');
export const commOf = (pid: number): string => (readProc(pid, 'comm') ?? '').trim();

/** State letter and start time (clock ticks since boot) from /proc/<pid>/stat. */
function statOf(pid: number): { state: string; start: string } | undefined {
  const s = readProc(pid, 'stat');
  if (!s) return undefined;
  const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { state: rest[0] ?? '', start: rest[19] ?? '' };
}

export const startTimeOf = (pid: number): string | undefined => statOf(pid)?.start;

/** True when the process exists and is not a zombie. */
export function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  const st = statOf(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/** SIGTERM (or `first`), wait up to `graceMs`, then SIGKILL and wait a little more. */
export async function killPids(pids: readonly number[], graceMs: number, first: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  let left = pids.filter(alive);
  if (left.length === 0) return;
  left.forEach((p) => signal(p, first));
  const deadline = Date.now() + graceMs;
  while ((left = left.filter(alive)).length > 0 && Date.now() < deadline) await sleep(50);
  if (left.length === 0) return;
  left.forEach((p) => signal(p, 'SIGKILL'));
  const hard = Date.now() + 5_000;
  while ((left = left.filter(alive)).length > 0 && Date.now() < hard) await sleep(50);
}

const allPids = (): number[] =>
  readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);

/** The lab's engine processes: dockerd, its containerd and the shims, by command line. */
export function labEngineProcesses(): number[] {
  const engineComms = /^(dockerd|containerd.*|docker-proxy|runc)$/;
  return allPids().filter((p) => p !== process.pid && engineComms.test(commOf(p)) && cmdlineOf(p).includes(`${LAB_RUN_DIR}/`));
}

/** The lab's vcsim (this run's or a crashed one's): its command line names its pid file under <run>/vcsim/. */
export function labVcsimProcesses(): number[] {
  return allPids().filter((p) => p !== process.pid && alive(p) && cmdlineOf(p).includes(`-pidfile ${LAB_RUN_DIR}/vcsim/`));
}

// ---------------------------------------------------------------- cgroups

/** Cgroup directories named olab-* at the top of every hierarchy (v1 controllers and v2). */
export function labCgroupDirs(): string[] {
  const root = '/sys/fs/cgroup';
  if (!existsSync(root)) return [];
  const roots = [root];
  for (const n of readdirSync(root)) {
    const p = join(root, n);
    try {
      if (statSync(p).isDirectory() && existsSync(join(p, 'cgroup.procs'))) roots.push(p);
    } catch {
      /* ignore */
    }
  }
  const out: string[] = [];
  for (const r of roots) {
    try {
      for (const n of readdirSync(r)) if (n.startsWith(`${LAB_PREFIX}-`) && statSync(join(r, n)).isDirectory()) out.push(join(r, n));
    } catch {
      /* ignore */
    }
  }
  return out;
}

function walkDirs(dir: string): string[] {
  const out = [dir];
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) out.push(...walkDirs(join(dir, e.name)));
  } catch {
    /* vanished */
  }
  return out;
}

/** Every process in a lab cgroup (the containers of the lab engines). */
export function labCgroupProcesses(): number[] {
  const pids = new Set<number>();
  for (const top of labCgroupDirs()) {
    for (const d of walkDirs(top)) {
      try {
        for (const l of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (Number(l) > 1) pids.add(Number(l));
      } catch {
        /* vanished */
      }
    }
  }
  pids.delete(process.pid);
  return [...pids];
}

function removeCgroupDirs(): string[] {
  const removed: string[] = [];
  for (const top of labCgroupDirs()) {
    // cgroupfs directories go with rmdir (deepest first), never by deleting their files.
    for (const d of walkDirs(top).reverse()) {
      try {
        rmdirSync(d);
      } catch {
        /* busy: a process is still in it */
      }
    }
    if (!existsSync(top)) removed.push(top);
  }
  return removed;
}

// ---------------------------------------------------------------- network

/** Interfaces that hold a default route (v4 or v6): the lab never touches them. */
export async function defaultRouteInterfaces(): Promise<Set<string>> {
  const out = new Set<string>();
  for (const fam of ['-4', '-6']) {
    const r = await run(IP, ['-j', fam, 'route', 'show', 'default']);
    if (r.code !== 0 || !r.stdout.trim()) continue;
    try {
      for (const route of JSON.parse(r.stdout) as { dev?: string }[]) if (route.dev) out.add(route.dev);
    } catch {
      /* ignore */
    }
  }
  return out;
}

export async function labInterfaces(): Promise<string[]> {
  const links = JSON.parse((await must(IP, ['-j', 'link', 'show'])) || '[]') as { ifname: string }[];
  return links.map((l) => l.ifname).filter((n) => n.startsWith(LAB_PREFIX));
}

export async function labNetns(): Promise<string[]> {
  const r = await run(IP, ['netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(LAB_PREFIX));
}

// ---------------------------------------------------------------- mounts

const unescapeMount = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));

/** Mount points at or under any of `dirs`, deepest first. */
export function mountsUnder(dirs: readonly string[]): string[] {
  const info = readFileSync('/proc/self/mountinfo', 'utf8');
  const points = new Set<string>();
  for (const line of info.split('\n')) {
    const mp = line.split(' ')[4];
    if (!mp) continue;
    const p = unescapeMount(mp);
    if (dirs.some((d) => p === d || p.startsWith(`${d}/`))) points.add(p);
  }
  return [...points].sort((a, b) => b.length - a.length);
}

// ---------------------------------------------------------------- the sweep

export interface LabResidue {
  interfaces: string[];
  netns: string[];
  processes: number[];
  mounts: string[];
  cgroups: string[];
  dirs: string[];
}

/** What of a lab exists on the machine right now (empty lists = clean). */
export async function labResidue(labDirs: readonly string[] = []): Promise<LabResidue> {
  const dirs = [LAB_RUN_DIR, ...labDirs];
  return {
    interfaces: await labInterfaces(),
    netns: await labNetns(),
    processes: [...new Set([...labVcsimProcesses(), ...labEngineProcesses(), ...labCgroupProcesses()])],
    mounts: mountsUnder(dirs),
    cgroups: labCgroupDirs(),
    dirs: dirs.filter((d) => existsSync(d)),
  };
}

const readPids = (file: string): number[] => {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => Number.isInteger(n) && n > 1);
  } catch {
    return [];
  }
};

/** Engine PIDs recorded by the lab: <run>/pids (spawned) and <run>/s<i>/docker.pid (dockerd's own). */
export function recordedEnginePids(): number[] {
  const pids = new Set(readPids(join(LAB_RUN_DIR, 'pids')));
  if (existsSync(LAB_RUN_DIR)) {
    for (const n of readdirSync(LAB_RUN_DIR)) {
      if (/^s\d+$/.test(n)) readPids(join(LAB_RUN_DIR, n, 'docker.pid')).forEach((p) => pids.add(p));
    }
  }
  // Only a process whose command line still names the lab's run dir is ours (no recycled PID).
  return [...pids].filter((p) => p !== process.pid && alive(p) && cmdlineOf(p).includes(`${LAB_RUN_DIR}/`));
}

/** A lab directory is removed recursively: only ever `<somewhere>/.run/lab<suffix>`. */
export function assertLabDir(dir: string): void {
  if (!isAbsolute(dir) || !/\/\.run\/lab[a-z0-9-]*$/.test(dir)) {
    throw new Error(`refusing lab directory ${JSON.stringify(dir)}: must be an absolute <dir>/.run/lab[-suffix]`);
  }
}

export interface CleanupReport {
  processes: number[];
  interfaces: string[];
  netns: string[];
  mounts: string[];
  cgroups: string[];
  dirs: string[];
}

/**
 * Removes everything a lab left behind, in an order that never strands a container with
 * its IP on the wire: engines (SIGTERM, so dockerd stops its containers), then whatever is
 * still in a lab cgroup, then the lab's containerd and shims, then processes inside lab
 * network namespaces, the namespaces, the interfaces, mounts, cgroups and directories.
 */
export async function sweepLab(labDirs: readonly string[]): Promise<CleanupReport> {
  for (const d of labDirs) assertLabDir(d);
  const report: CleanupReport = { processes: [], interfaces: [], netns: [], mounts: [], cgroups: [], dirs: [] };
  const note = (pids: number[]) => report.processes.push(...pids.filter((p) => !report.processes.includes(p)));

  // 0. vcsim first, while the ESXi engine still runs: on SIGTERM it removes its VMs' containers.
  const sims = labVcsimProcesses();
  note(sims);
  await killPids(sims, 20_000);

  // 1. Engines: remove their containers quickly (rm -f = SIGKILL), then SIGTERM dockerd.
  const engines = recordedEnginePids();
  if (engines.length > 0) {
    if (existsSync(LAB_RUN_DIR)) {
      await Promise.all(
        readdirSync(LAB_RUN_DIR)
          .filter((n) => /^s\d+$/.test(n) && existsSync(join(LAB_RUN_DIR, n, 'docker.sock')))
          .map(async (n) => {
            const host = ['-H', `unix://${join(LAB_RUN_DIR, n, 'docker.sock')}`];
            // A swarm manager would restart its tasks: its services go first (an error on a non-manager).
            const services = (await run(DOCKER_CLI, [...host, 'service', 'ls', '-q'], { timeoutMs: 10_000 })).stdout.split('\n').filter(Boolean);
            if (services.length > 0) await run(DOCKER_CLI, [...host, 'service', 'rm', ...services], { timeoutMs: 30_000 });
            const ids = (await run(DOCKER_CLI, [...host, 'ps', '-aq'], { timeoutMs: 10_000 })).stdout.split('\n').filter(Boolean);
            if (ids.length > 0) await run(DOCKER_CLI, [...host, 'rm', '-f', ...ids], { timeoutMs: 30_000 });
          }),
      );
    }
    note(engines);
    await killPids(engines, 20_000);
  }
  // 2. Containers whose engine is gone (their shim kept them alive): by lab cgroup.
  for (let i = 0; i < 5; i++) {
    const inCgroups = labCgroupProcesses();
    if (inCgroups.length === 0) break;
    note(inCgroups);
    await killPids(inCgroups, 2_000, 'SIGKILL');
  }
  // 3. The lab's containerd and shims (and a dockerd whose pid file was lost).
  const rest = labEngineProcesses();
  note(rest);
  await killPids(rest, 10_000);

  // 4. Processes that run inside a lab network namespace, then the namespaces.
  const defaults = await defaultRouteInterfaces();
  for (const ns of await labNetns()) {
    const pids = (await run(IP, ['netns', 'pids', ns])).stdout
      .split('\n')
      .map(Number)
      .filter((p) => p > 1 && p !== process.pid);
    note(pids);
    await killPids(pids, 2_000);
    const r = await run(IP, ['netns', 'del', ns]);
    if (r.code === 0) report.netns.push(ns);
  }
  // 5. Interfaces (veth peers vanish with their partner; ignore "Cannot find device").
  const links = await labInterfaces();
  for (const ifname of links) {
    if (defaults.has(ifname)) throw new Error(`lab interface ${ifname} holds a default route: refusing to touch it`);
    await run(IP, ['link', 'del', 'dev', ifname]);
  }
  const stillThere = await labInterfaces();
  report.interfaces = links.filter((l) => !stillThere.includes(l));
  // 6. Mounts (overlay layers, netns bind mounts) under the lab's directories, then the dirs.
  const dirs = [LAB_RUN_DIR, ...labDirs];
  for (const mp of mountsUnder(dirs)) {
    const r = await run(BUSYBOX, ['umount', '-l', mp]);
    if (r.code === 0) report.mounts.push(mp);
  }
  report.cgroups = removeCgroupDirs();
  for (const d of dirs) {
    if (!existsSync(d)) continue;
    if (mountsUnder([d]).length > 0) throw new Error(`${d} still has mounts: ${mountsUnder([d]).join(', ')}`);
    rmSync(d, { recursive: true, force: true });
    report.dirs.push(d);
  }
  const left = await labResidue(labDirs);
  const problems = Object.entries(left).filter(([, v]) => (v as unknown[]).length > 0);
  if (problems.length > 0) throw new Error(`lab cleanup left residue: ${JSON.stringify(Object.fromEntries(problems))}`);
  return report;
}

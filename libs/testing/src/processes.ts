import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, appendFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';

/** Repository root (tests run from it; vitest's cwd). */
export const REPO_ROOT = resolve(process.env['ORANGERY_REPO_ROOT'] ?? process.cwd());
const HARNESS_ROOT = join(REPO_ROOT, '.run', 'harness');

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const procText = (pid: number, file: 'cmdline' | 'environ'): string => {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
};

/** The process was started for harness dir `dir`: its command line or environment names it. */
const belongsTo = (pid: number, dir: string): boolean =>
  procText(pid, 'cmdline').includes(dir) || procText(pid, 'environ').includes(`ORANGERY_HARNESS_DIR=${dir} `);

/**
 * Removes what crashed earlier runs left behind: harness directories whose owning test
 * process is gone, and the processes they recorded. A process is only signalled when its
 * command line or environment still names that directory (services get it as
 * ORANGERY_HARNESS_DIR), so a recycled PID is never touched.
 */
export function cleanStaleHarnessDirs(): void {
  if (!existsSync(HARNESS_ROOT)) return;
  for (const name of readdirSync(HARNESS_ROOT)) {
    const owner = Number(name.split('-')[0]);
    if (Number.isInteger(owner) && owner > 0 && alive(owner)) continue;
    const dir = join(HARNESS_ROOT, name);
    const pidFile = join(dir, 'pids');
    if (existsSync(pidFile)) {
      for (const line of readFileSync(pidFile, 'utf8').split('\n')) {
        const pid = Number(line.trim());
        if (pid > 0 && alive(pid) && belongsTo(pid, dir)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* already gone */
          }
        }
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A private directory for one test file's servers; recorded PIDs are killed on cleanup. */
export class HarnessDir {
  readonly path: string;
  private readonly children = new Set<ChildProcess>();

  constructor(label: string) {
    cleanStaleHarnessDirs();
    this.path = join(HARNESS_ROOT, `${process.pid}-${label.replace(/[^a-z0-9-]/gi, '_')}`);
    rmSync(this.path, { recursive: true, force: true });
    mkdirSync(this.path, { recursive: true });
  }

  sub(name: string): string {
    const p = join(this.path, name);
    mkdirSync(p, { recursive: true });
    return p;
  }

  track(child: ChildProcess): void {
    this.children.add(child);
    if (child.pid) appendFileSync(join(this.path, 'pids'), `${child.pid}\n`);
    child.once('exit', () => this.children.delete(child));
  }

  async cleanup(): Promise<void> {
    await Promise.all([...this.children].map((c) => stopChild(c, 'SIGKILL', 5_000)));
    rmSync(this.path, { recursive: true, force: true });
  }
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((r) => child.once('exit', (code) => r(code)));
}

/** Sends `signal`, waits up to `ms`, then SIGKILL. Resolves with the exit code (null if signalled). */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals, ms: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const done = exited(child);
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const code = await done;
  clearTimeout(timer);
  return code;
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 15_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export { spawn };

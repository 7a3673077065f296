import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, spawn, stopChild, waitFor, exited, type HarnessDir } from './processes';

/**
 * A built service (`node dist/services/<name>/main.js`) run as a real process, the way
 * the acceptance suite and production run it. Its JSON log lines are kept for assertions.
 */
export class ServiceProcess {
  readonly lines: string[] = [];
  private stderrText = '';

  private constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
    child.stderr?.on('data', (d: Buffer) => (this.stderrText += d.toString()));
  }

  static spawn(dir: HarnessDir | undefined, name: string, env: Record<string, string>): ServiceProcess {
    const main = join(REPO_ROOT, 'dist', 'services', name, 'main.js');
    if (!existsSync(main)) throw new Error(`${main} is missing: run \`npm run build\` first (npm test does)`);
    // ORANGERY_BENCH_NODE_ARGS: extra node flags for profiling runs (e.g. --cpu-prof).
    const extra = (process.env['ORANGERY_BENCH_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== '');
    // The flags production starts the service with (tools/build-service.mjs NODE_FLAGS).
    const flagsFile = join(REPO_ROOT, 'dist', 'services', name, 'node-flags');
    const flags = existsSync(flagsFile)
      ? readFileSync(flagsFile, 'utf8')
          .split(/\s+/)
          .filter((a) => a !== '')
      : [];
    // Source maps for readable stack traces in tests; a benchmark measuring memory turns
    // them off (ORANGERY_SOURCE_MAPS=off), as production runs without.
    const maps = process.env['ORANGERY_SOURCE_MAPS'] === 'off' ? [] : ['--enable-source-maps'];
    const child = spawn(process.execPath, [...maps, ...flags, ...extra, main], {
      cwd: REPO_ROOT,
      env: { PATH: process.env['PATH'] ?? '', LOG_LEVEL: 'info', ORANGERY_HARNESS_DIR: dir?.path ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    dir?.track(child);
    return new ServiceProcess(name, child);
  }

  /** Starts the service and waits for its `ready` log line. */
  static async start(dir: HarnessDir, name: string, env: Record<string, string>, timeoutMs = 30_000): Promise<ServiceProcess> {
    const s = ServiceProcess.spawn(dir, name, env);
    await s.waitForLog('ready', timeoutMs);
    return s;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get stderr(): string {
    return this.stderrText;
  }

  hasLog(msg: string): boolean {
    return this.lines.some((l) => l.includes(`"msg":"${msg}"`));
  }

  async waitForLog(msg: string, timeoutMs = 15_000): Promise<void> {
    await waitFor(
      `${this.name} to log '${msg}'`,
      () => {
        if (this.child.exitCode !== null) throw new Error(`${this.name} exited with ${this.child.exitCode}: ${this.stderrText.trim()}`);
        return this.hasLog(msg);
      },
      timeoutMs,
    );
  }

  exited(): Promise<number | null> {
    return exited(this.child);
  }

  kill9(): Promise<number | null> {
    return stopChild(this.child, 'SIGKILL', 1_000);
  }

  terminate(): Promise<number | null> {
    return stopChild(this.child, 'SIGTERM', 25_000);
  }
}

/** Small helpers shared by the benchmarks: percentiles, timed loops, tables, CPU time. */
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';

/** CPU time (user + system, ms) a process has used so far, from /proc. */
export function cpuMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // clock ticks of 10 ms (USER_HZ 100)
  } catch {
    return 0;
  }
}

export function percentile(sortedMs: readonly number[], p: number): number {
  if (sortedMs.length === 0) return NaN;
  const i = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[i]!;
}

export interface LoadResult {
  ops: number;
  errors: number;
  seconds: number;
  perSecond: number;
  p50: number;
  p99: number;
}

/**
 * Runs `op` from `concurrency` loops for `seconds` (bounded: it stops by itself) and
 * measures throughput and latency. `op(i)` gets a unique sequence number.
 */
export async function closedLoop(concurrency: number, seconds: number, op: (seq: number) => Promise<boolean>): Promise<LoadResult> {
  const latencies: number[] = [];
  let seq = 0;
  let errors = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const ok = await op(seq++).catch(() => false);
        if (ok) latencies.push(performance.now() - t0);
        else errors++;
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    ops: latencies.length,
    errors,
    seconds: elapsed,
    perSecond: latencies.length / elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
  };
}

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(cells[0]!), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...cells.slice(1).map(line)].join('\n');
}

export const fmt = (n: number, digits = 1): string => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');

/** The machine a benchmark ran on, for its output: cores, CPU model, Node version. */
export function machineLine(): string {
  let model = 'unknown CPU';
  try {
    model = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? model;
  } catch {
    // not Linux: leave it unknown
  }
  return `Machine: ${cpus().length} cores, ${model}, ${totalmem() > 0 ? `${Math.round(totalmem() / 2 ** 30)} GiB, ` : ''}Node ${process.version}.`;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Median and spread of repeated runs of one configuration: "median (min-max)". */
export interface Repeated {
  runs: number[];
  median: number;
  min: number;
  max: number;
}
export function repeated(runs: readonly number[]): Repeated {
  return { runs: [...runs], median: median(runs), min: Math.min(...runs), max: Math.max(...runs) };
}
/** `12.3 (11.9-13.0)`: the median and, in brackets, the smallest and largest of the runs. */
export const fmtRepeated = (r: Repeated, digits = 1): string => `${fmt(r.median, digits)} (${fmt(r.min, digits)}-${fmt(r.max, digits)})`;

/** Every configuration of a benchmark runs at least this many times (BENCH_REPEATS), median and spread reported. */
export const REPEATS = Math.max(3, Number(process.env['BENCH_REPEATS'] ?? 3) || 3);

import { collectDefaultMetrics, Counter, Gauge, Histogram, register, type Registry } from 'prom-client';

/**
 * Prometheus metrics (CONTRACT.md "Health and metrics"): one process-wide registry, the
 * one prom-client keeps, so libs (messaging's responder, persistence's outbox) and the
 * services add to what `/metrics` serves without being handed a registry.
 */
export const metricsRegistry: Registry = register;

let defaultsOn = false;
/**
 * The process's default metrics (CPU, memory, event loop, GC); once per process.
 * `eventLoopPrecisionMs`: the resolution of the event-loop delay histogram (prom-client's
 * default 10 ms wakes the process 100 times a second: ~0.4 % of a core on the 2-core CI
 * machine, measured; 100 ms costs ~0.05 % and still shows any lag that matters).
 */
export function collectProcessMetrics(service: string, eventLoopPrecisionMs = 10): void {
  if (defaultsOn) return;
  defaultsOn = true;
  register.setDefaultLabels({ service });
  collectDefaultMetrics({ register, eventLoopMonitoringPrecision: eventLoopPrecisionMs });
}

/** Gets a metric of this name, or creates it: modules built twice in one process (tests) share it. */
function once<M>(name: string, make: () => M): M {
  return (register.getSingleMetric(name) as M | undefined) ?? make();
}

/** Every answered request: `code` is `ok` or the contract's error code. */
export const requestsTotal = once(
  'orangery_requests_total',
  () =>
    new Counter({
      name: 'orangery_requests_total',
      help: 'Requests answered, by subject and result code (ok or the error code)',
      labelNames: ['subject', 'code'],
    }),
);

export const requestDuration = once(
  'orangery_request_duration_seconds',
  () =>
    new Histogram({
      name: 'orangery_request_duration_seconds',
      help: 'Time from receiving a request to sending its reply',
      labelNames: ['subject'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    }),
);

export interface Sample<L extends string> {
  labels: Partial<Record<L, string>>;
  value: number;
}

/**
 * A gauge whose values are read when Prometheus scrapes, from `source` (e.g. a GROUP BY
 * over the service's tables, or an agent's instance map). The latest `source` wins, so a
 * module rebuilt in the same process replaces the old one. A source that throws leaves
 * the gauge empty for that scrape (a missing series, not a wrong one).
 */
export function scrapedGauge<L extends string>(name: string, help: string, labelNames: readonly L[], source: () => Promise<Sample<L>[]> | Sample<L>[]): void {
  sources.set(name, source as () => Promise<Sample<string>[]> | Sample<string>[]);
  if (register.getSingleMetric(name)) return;
  new Gauge({
    name,
    help,
    labelNames: [...labelNames],
    registers: [register],
    async collect() {
      this.reset();
      const read = sources.get(name);
      if (!read) return;
      try {
        for (const s of await read()) this.set(s.labels, s.value);
      } catch {
        // nothing this scrape
      }
    },
  });
}
const sources = new Map<string, () => Promise<Sample<string>[]> | Sample<string>[]>();

/** [value, count] pairs of a list, for gauges by label. */
export function countBy(values: readonly string[]): [string, number][] {
  const m = new Map<string, number>();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  return [...m];
}

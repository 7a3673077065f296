/** One sample of a Prometheus text exposition. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text format strictly enough that a malformed line fails the test. */
export function parseProm(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)( \d+)?$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[4]) });
  }
  return out;
}

/** The value of the first sample named `name` whose labels include `labels`. */
export function promValue(samples: readonly PromSample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;
}

/** GET a service's observe endpoint path (`/metrics`, `/readyz`, ...). */
export async function observeGet(port: number, path: string): Promise<{ status: number; type: string; text: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5_000) });
  return { status: r.status, type: r.headers.get('content-type') ?? '', text: await r.text() };
}

/** A service's metrics, parsed. */
export async function scrape(port: number): Promise<PromSample[]> {
  const r = await observeGet(port, '/metrics');
  if (r.status !== 200) throw new Error(`/metrics on ${port}: HTTP ${r.status}`);
  return parseProm(r.text);
}

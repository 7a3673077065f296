/** Plain-text tables for people (the CLI's default output; `--json` is for scripts). */
export function table(headers: readonly string[], rows: readonly (readonly unknown[])[]): string {
  const cells = rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...cells.map(line)].join('\n') + '\n';
}

/** `used/total` with a percentage: `3/8 (38%)`. */
export function ratio(used: number, total: number): string {
  const pct = total > 0 ? Math.round((100 * used) / total) : 0;
  return `${round(used)}/${round(total)} (${pct}%)`;
}

const round = (n: number): string => (Number.isInteger(n) ? String(n) : n.toFixed(1));

export function labels(l: Record<string, string> | undefined): string {
  const entries = Object.entries(l ?? {});
  return entries.length === 0 ? '-' : entries.map(([k, v]) => `${k}=${v}`).join(',');
}

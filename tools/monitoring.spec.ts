import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

// deploy/monitoring: the alert rules and the Grafana dashboard may only use series that the
// services really serve, or an alert would never fire and a panel would stay empty.
const root = resolve(__dirname, '..');
const dir = join(root, 'deploy', 'monitoring');

function sources(d: string): string[] {
  return readdirSync(d).flatMap((f) => {
    const p = join(d, f);
    if (statSync(p).isDirectory()) return f === 'node_modules' ? [] : sources(p);
    return p.endsWith('.ts') && !p.endsWith('.spec.ts') ? [p] : [];
  });
}
const code = [...sources(join(root, 'libs')), ...sources(join(root, 'services'))].map((p) => readFileSync(p, 'utf8')).join('\n');

const defaultNames = async (): Promise<Set<string>> => {
  const r = new Registry();
  collectDefaultMetrics({ register: r });
  return new Set((await r.getMetricsAsJSON()).map((m) => m.name));
};

/** Series names in a PromQL expression (functions and keywords are not followed by `{` or a label matcher... so: known prefixes). */
const seriesIn = (expr: string): string[] => [...expr.matchAll(/\b((?:orangery|process|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1]!);
const base = (name: string) => name.replace(/_(bucket|count|sum)$/, '');

interface Rule {
  alert: string;
  expr: string;
  for: string;
  labels: { severity: string };
  annotations: { summary: string; description: string };
}

describe('deploy/monitoring', () => {
  const rules = (parse(readFileSync(join(dir, 'prometheus-alerts.yml'), 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
  const dashboard = JSON.parse(readFileSync(join(dir, 'grafana-dashboard.json'), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };

  it('alerts on what issue 15 names: pool nearly exhausted, hosts lost or unknown, failover paused, outbox lag, scale requests pending too long', () => {
    const names = rules.map((r) => r.alert);
    for (const a of [
      'OrangeryPoolNearlyExhausted',
      'OrangeryHostsLost',
      'OrangeryHostsUnknown',
      'OrangeryFailoverPaused',
      'OrangeryOutboxLag',
      'OrangeryScaleRequestPendingTooLong',
    ]) {
      expect(names).toContain(a);
    }
    for (const r of rules) {
      expect(['warning', 'critical']).toContain(r.labels.severity);
      expect(r.for).toMatch(/^\d+[smh]$/);
      expect(r.annotations.summary.length).toBeGreaterThan(10);
      expect(r.annotations.description.length).toBeGreaterThan(20);
    }
  });

  it('uses only series the services serve', async () => {
    const defaults = await defaultNames();
    const exprs = [...rules.map((r) => r.expr), ...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr))];
    const used = new Set(exprs.flatMap(seriesIn).map(base));
    expect(used.size).toBeGreaterThan(10);
    for (const name of used) {
      const served = name.startsWith('orangery_') ? code.includes(`'${name}'`) : defaults.has(name);
      expect(served, `${name} is not a metric any service registers`).toBe(true);
    }
  });

  it('gives every dashboard panel a title and a query', () => {
    expect(dashboard.panels.length).toBeGreaterThanOrEqual(10);
    for (const p of dashboard.panels) {
      expect(p.title).not.toBe('');
      expect(p.targets.length).toBeGreaterThan(0);
    }
  });
});

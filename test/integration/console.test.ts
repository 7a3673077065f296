import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { createConnection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENTS_STREAM } from '@orangery/contracts';
import { spawn } from 'node:child_process';
import { ContractClient, freePort, REPO_ROOT, ScaleWatcher, ServiceProcess, SimulatedFleet, waitFor } from '@orangery/testing';
import { startConsoleStack, type ConsoleStack } from './fixtures/console-stack';

// The console as a real process (node dist/services/console/main.js) over a real ipam,
// scheduler and migrator on a private nats-server and a fresh database, with simulated
// agents (libs/testing); the CLI as a real process (dist/cli/orangery.js) against it.
let stack: ConsoleStack;
let dbUrl: string;
let client: ContractClient;
let fleet: SimulatedFleet;
let consoleProc: ServiceProcess;
let base: string;
const OPERATOR = 'alice-operator-token-0123456789';
const VIEWER = 'victor-viewer-token-0123456789';
const HOSTS = 3;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

async function api(method: string, path: string, opts: { token?: string | null; body?: unknown; raw?: string; headers?: Record<string, string> } = {}) {
  const token = opts.token === undefined ? OPERATOR : opts.token;
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      ...(token !== null ? { Authorization: `Bearer ${token}` } : {}),
      ...(opts.body !== undefined || opts.raw !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...opts.headers,
    },
    ...(opts.raw !== undefined ? { body: opts.raw } : opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
  });
  const text = await res.text();
  let body: Json;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

function expectError(r: { status: number; body: Json }, status: number, code: string) {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.body.error, JSON.stringify(r.body)).toMatchObject({ code, message: expect.any(String), details: expect.any(Object) });
}

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(REPO_ROOT, 'dist', 'cli', 'orangery.js'), ...args],
      { env: { PATH: process.env['PATH'] ?? '', ORANGERY_CONSOLE_URL: base, ORANGERY_TOKEN: OPERATOR, ...env }, timeout: 120_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
    );
  });
}

/** SSE events from the console until `count` arrived or the stream ended. */
async function sse(query: string, count: number, headers: Record<string, string> = {}, timeoutMs = 30_000): Promise<{ id: number; event: Json }[]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  const out: { id: number; event: Json }[] = [];
  try {
    const res = await fetch(`${base}/api/v1/events${query}`, { headers: { Authorization: `Bearer ${VIEWER}`, ...headers }, signal: ac.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const id = /^id: (\d+)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (id && data) out.push({ id: Number(id), event: JSON.parse(data) });
      }
      if (out.length >= count) break;
    }
  } catch (e) {
    if (!ac.signal.aborted) throw e;
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return out;
}

const scaleBody = (replicas: number, extra: Record<string, unknown> = {}) => ({
  replicas,
  resources: { cpu: 1, memoryMb: 256, diskMb: 100 },
  image: 'svc:1',
  backend: 'docker',
  pool: 'sim',
  spread: 'host',
  ...extra,
});

async function requestOutcome(requestId: string): Promise<Json> {
  return waitFor(
    `scale request ${requestId} to end`,
    async () => {
      const r = await api('GET', `/api/v1/requests/${encodeURIComponent(requestId)}`, { token: VIEWER });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body.state === 'pending' ? undefined : r.body;
    },
    60_000,
  );
}

async function migrationEnded(id: string): Promise<Json> {
  return waitFor(
    `migration ${id} to end`,
    async () => {
      const r = await api('GET', `/api/v1/migrations/${id}`, { token: VIEWER });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body.state === 'running' ? undefined : r.body;
    },
    60_000,
  );
}

beforeAll(async () => {
  stack = await startConsoleStack('console', { hosts: HOSTS, tokens: `alice:${OPERATOR}:operator,victor:${VIEWER}:viewer` });
  ({ dbUrl, client, fleet, base } = stack);
  consoleProc = stack.console;
}, 180_000);

afterAll(async () => {
  await stack?.close();
});

/** One sample request per operation: every route of the contract. */
const ROUTES: { method: string; path: string; command: boolean; body?: unknown }[] = [
  { method: 'GET', path: '/api/v1/pools', command: false },
  { method: 'POST', path: '/api/v1/pools', command: true, body: { name: 'x', cidr: '198.18.200.0/24', gateway: '198.18.200.1' } },
  { method: 'GET', path: '/api/v1/pools/sim', command: false },
  { method: 'GET', path: '/api/v1/hosts', command: false },
  { method: 'GET', path: '/api/v1/instances?env=test', command: false },
  { method: 'POST', path: '/api/v1/apps/test/web/scale', command: true, body: scaleBody(1) },
  { method: 'GET', path: '/api/v1/requests/abc', command: false },
  { method: 'POST', path: '/api/v1/instances/test:web:0/migrate', command: true, body: {} },
  { method: 'GET', path: '/api/v1/migrations/m-00000000-0000-0000-0000-000000000000', command: false },
  { method: 'POST', path: '/api/v1/hosts/con-0001/drain', command: true, body: {} },
  { method: 'GET', path: '/api/v1/envs', command: false },
  { method: 'PUT', path: '/api/v1/envs/test', command: true, body: { backends: ['docker'] } },
  { method: 'DELETE', path: '/api/v1/envs/test', command: true },
  { method: 'GET', path: '/api/v1/events', command: false },
];

describe('console: tokens and roles', () => {
  it.each(ROUTES)('$method $path without a token, or with a wrong one, is 401', async ({ method, path, body }) => {
    expectError(await api(method, path, { token: null, body }), 401, 'UNAUTHORIZED');
    expectError(await api(method, path, { token: 'not-a-token', body }), 401, 'UNAUTHORIZED');
  });

  it.each(ROUTES.filter((r) => r.command))('$method $path with a viewer token is 403 and changes nothing', async ({ method, path, body }) => {
    const before = await api('GET', '/api/v1/pools');
    expectError(await api(method, path, { token: VIEWER, body }), 403, 'FORBIDDEN');
    expect((await api('GET', '/api/v1/pools')).body).toEqual(before.body);
  });

  it('serves /openapi.json and /docs without a token; unknown routes are 404, wrong methods 405', async () => {
    const doc = await api('GET', '/openapi.json', { token: null });
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toBe('3.1.0');
    expect(Object.keys(doc.body.paths)).toContain('/api/v1/apps/{env}/{app}/scale');
    const docs = await fetch(`${base}/docs`);
    expect(docs.status).toBe(200);
    expect(await docs.text()).toContain('/docs.js');
    expectError(await api('GET', '/api/v1/nothing'), 404, 'NOT_FOUND');
    expectError(await api('DELETE', '/api/v1/pools'), 405, 'METHOD_NOT_ALLOWED');
  });
});

describe('console: pools', () => {
  it('creates a pool (201) whose audit actor is the token name, lists and gets it', async () => {
    const created = await api('POST', '/api/v1/pools', { body: { name: 'sim', cidr: '198.19.0.0/16', gateway: '198.19.0.1', cooldownSeconds: 0 } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body).toMatchObject({ name: 'sim', cidr: '198.19.0.0/16', vlan: 0 });
    const list = await api('GET', '/api/v1/pools', { token: VIEWER });
    expect(list.status).toBe(200);
    expect(list.body.pools.map((p: { name: string }) => p.name)).toContain('sim');
    const one = await api('GET', '/api/v1/pools/sim', { token: VIEWER });
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ name: 'sim', used: 0, quarantined: 0 });
    expect(one.body.size).toBe(65_533);

    const u = new URL(dbUrl);
    const db = await createConnection({ host: u.hostname, port: Number(u.port), user: u.username, password: u.password, database: u.pathname.slice(1) });
    try {
      const [rows] = await db.query("SELECT actor FROM ipam_audit WHERE action = 'pool.create' AND pool_name = 'sim'");
      expect(rows).toEqual([{ actor: 'alice' }]);
    } finally {
      await db.end();
    }
  });

  it('refuses bad input with the contract codes and statuses', async () => {
    expectError(await api('POST', '/api/v1/pools', { body: { name: 'sim', cidr: '198.19.0.0/16', gateway: '198.19.0.1' } }), 409, 'POOL_EXISTS');
    expectError(await api('POST', '/api/v1/pools', { body: { name: 'other', cidr: '198.19.1.0/24', gateway: '198.19.1.1' } }), 409, 'POOL_OVERLAP');
    const missing = await api('POST', '/api/v1/pools', { body: { name: 'p2', gateway: '198.18.9.1' } });
    expectError(missing, 400, 'INVALID_REQUEST');
    expect(missing.body.error.details.field).toBe('cidr');
    const unknown = await api('POST', '/api/v1/pools', { body: { name: 'p2', cidr: '198.18.9.0/24', gateway: '198.18.9.1', colour: 'red' } });
    expectError(unknown, 400, 'INVALID_REQUEST');
    expect(unknown.body.error.details.field).toBe('colour');
    expectError(await api('POST', '/api/v1/pools', { raw: '{"name": ' }), 400, 'INVALID_REQUEST');
    expectError(await api('POST', '/api/v1/pools', { raw: '[1,2]' }), 400, 'INVALID_REQUEST');
    expectError(await api('POST', '/api/v1/pools', { raw: JSON.stringify({ name: 'big', reserved: ['x'.repeat(200_000)] }) }), 413, 'PAYLOAD_TOO_LARGE');
    expectError(await api('GET', '/api/v1/pools/nope', { token: VIEWER }), 404, 'POOL_NOT_FOUND');
    const badName = await api('GET', '/api/v1/pools/Not_A_Name', { token: VIEWER });
    expectError(badName, 400, 'INVALID_REQUEST');
    expect(badName.body.error.details.field).toBe('name');
    expectError(await api('GET', '/api/v1/pools?limit=0', { token: VIEWER }), 400, 'INVALID_REQUEST');
    expectError(await api('GET', '/api/v1/pools?colour=red', { token: VIEWER }), 400, 'INVALID_REQUEST');
    const after = await api('GET', '/api/v1/pools', { token: VIEWER });
    expect(after.body.pools.map((p: { name: string }) => p.name)).toEqual(['sim']);
  });
});

describe('console: fleet, scale, migrations', () => {
  it('lists hosts and instances; bad filters are 400', async () => {
    const hosts = await api('GET', '/api/v1/hosts', { token: VIEWER });
    expect(hosts.status).toBe(200);
    expect(hosts.body.hosts.map((h: { id: string }) => h.id)).toEqual(fleet.hostIds);
    const paged = await api('GET', '/api/v1/hosts?limit=2', { token: VIEWER });
    expect(paged.body.hosts).toHaveLength(2);
    const next = await api('GET', `/api/v1/hosts?limit=2&cursor=${paged.body.nextCursor}`, { token: VIEWER });
    expect(next.body.hosts.map((h: { id: string }) => h.id)).toEqual([fleet.hostIds[2]]);
    expectError(await api('GET', '/api/v1/hosts?cursor=!!', { token: VIEWER }), 400, 'INVALID_REQUEST');
    const inst = await api('GET', '/api/v1/instances?env=test&app=none', { token: VIEWER });
    expect(inst.status).toBe(200);
    expect(inst.body.instances).toEqual([]);
    expectError(await api('GET', '/api/v1/instances?env=BAD', { token: VIEWER }), 400, 'INVALID_REQUEST');
    const unfiltered = await api('GET', '/api/v1/instances?env=&app=', { token: VIEWER });
    expect(unfiltered.status).toBe(200);
  });

  it('scales through JetStream (202) and reports the request completed', async () => {
    const r = await api('POST', '/api/v1/apps/test/web/scale', { body: scaleBody(2) });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(await requestOutcome(r.body.requestId)).toEqual({ state: 'completed' });
    const inst = await api('GET', '/api/v1/instances?env=test&app=web', { token: VIEWER });
    expect(inst.body.instances.map((i: { id: string; state: string }) => [i.id, i.state])).toEqual([
      ['test:web:0', 'running'],
      ['test:web:1', 'running'],
    ]);
  });

  it('a scale into a missing pool is rejected with its reason; bad bodies are 400 and publish nothing', async () => {
    const r = await api('POST', '/api/v1/apps/test/lost/scale', { body: scaleBody(1, { pool: 'nopool' }) });
    expect(r.status).toBe(202);
    const out = await requestOutcome(r.body.requestId);
    expect(out).toMatchObject({ state: 'rejected', reason: { code: 'POOL_NOT_FOUND' } });
    const jsm = await jetstreamManager(client.nc);
    const stored = (await jsm.streams.info('ORANGERY_SCALE')).state.messages;
    const bad = await api('POST', '/api/v1/apps/test/web/scale', { body: { ...scaleBody(1), replicas: -1 } });
    expectError(bad, 400, 'INVALID_REQUEST');
    expect(bad.body.error.details.field).toBe('replicas');
    expectError(await api('POST', '/api/v1/apps/test/web/scale', { body: { ...scaleBody(1), env: 'prod' } }), 400, 'INVALID_REQUEST');
    expectError(await api('POST', '/api/v1/apps/Bad_Env/web/scale', { body: scaleBody(1) }), 400, 'INVALID_REQUEST');
    expect((await jsm.streams.info('ORANGERY_SCALE')).state.messages).toBe(stored);
    expectError(await api('GET', '/api/v1/requests/never-published', { token: VIEWER }), 404, 'NOT_FOUND');
  });

  it('knows the outcome of a scale request published by another system, straight to JetStream', async () => {
    const upstream = new ScaleWatcher(client.nc);
    try {
      const id = await upstream.publish({ env: 'test', app: 'upstream', ...scaleBody(1) } as Parameters<ScaleWatcher['publish']>[0]);
      expect(await requestOutcome(id)).toEqual({ state: 'completed' });
    } finally {
      upstream.close();
    }
  });

  it('the scale request names the operator as its source and actor', async () => {
    const r = await api('POST', '/api/v1/apps/test/web/scale', { body: scaleBody(2) });
    await requestOutcome(r.body.requestId);
    const jsm = await jetstreamManager(client.nc);
    const last = await jsm.streams.getMessage('ORANGERY_SCALE', { last_by_subj: 'orangery.scale.test.web' });
    expect(last!.header.get('Orangery-Actor')).toBe('alice');
    expect(last!.json<Json>()).toMatchObject({ id: r.body.requestId, source: 'orangery/console/alice', type: 'io.orangery.scale.requested' });
  });

  it('migrates an instance (202) and shows the migration; bad ids are 400, unknown ones 404', async () => {
    const before = (await api('GET', '/api/v1/instances?env=test&app=web', { token: VIEWER })).body.instances[0];
    const r = await api('POST', `/api/v1/instances/${encodeURIComponent(before.id)}/migrate`, { body: {} });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const m = await migrationEnded(r.body.migrationId);
    expect(m).toMatchObject({ id: r.body.migrationId, instanceId: before.id, state: 'completed' });
    const after = (await api('GET', '/api/v1/instances?env=test&app=web', { token: VIEWER })).body.instances[0];
    expect([after.ip, after.mac]).toEqual([before.ip, before.mac]);
    expect(after.host).not.toBe(before.host);
    expectError(await api('POST', '/api/v1/instances/not-an-id/migrate', { body: {} }), 400, 'INVALID_REQUEST');
    expectError(await api('POST', '/api/v1/instances/test:web:0/migrate', { body: { toBackend: 'mainframe' } }), 400, 'INVALID_REQUEST');
    expectError(await api('POST', '/api/v1/instances/test:nothing:0/migrate', { body: {} }), 404, 'NOT_FOUND');
    expectError(await api('GET', '/api/v1/migrations/m-00000000-0000-0000-0000-000000000000', { token: VIEWER }), 404, 'NOT_FOUND');
    expectError(await api('GET', '/api/v1/migrations/nope', { token: VIEWER }), 400, 'INVALID_REQUEST');
  });

  it('drains a host (202 with its migrations); a bad host id is 400', async () => {
    const host = (await api('GET', '/api/v1/instances?env=test&app=web', { token: VIEWER })).body.instances[0].host;
    const inst = (await api('GET', '/api/v1/instances', { token: VIEWER })).body.instances;
    const r = await api('POST', `/api/v1/hosts/${host}/drain`, { body: {} });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.migrationIds.length).toBe(inst.filter((i: { host: string }) => i.host === host).length);
    for (const id of r.body.migrationIds) expect((await migrationEnded(id)).state).toBe('completed');
    expectError(await api('POST', '/api/v1/hosts/Bad_Host/drain', { body: {} }), 400, 'INVALID_REQUEST');
    expectError(await api('POST', `/api/v1/hosts/${host}/drain`, { body: { force: true } }), 400, 'INVALID_REQUEST');
  });

  it("envs: put, get, list, delete through the scheduler's records; bad bodies are 400 and change nothing, a missing env 404", async () => {
    const put = await api('PUT', '/api/v1/envs/con-prod', {
      body: { backends: ['vmware', 'docker'], hostLabels: { tier: 'gold' }, defaults: { spread: 'none' } },
    });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body).toMatchObject({ name: 'con-prod', backends: ['docker', 'vmware'], hostLabels: { tier: 'gold' }, defaults: { spread: 'none' } });
    expect((await api('GET', '/api/v1/envs/con-prod', { token: VIEWER })).body).toEqual(put.body);
    const list = await api('GET', '/api/v1/envs?limit=1000', { token: VIEWER });
    expect(list.status).toBe(200);
    expect(list.body.envs.map((e: { name: string }) => e.name)).toContain('con-prod');
    expectError(await api('PUT', '/api/v1/envs/con-prod', { body: { backends: ['mainframe'] } }), 400, 'INVALID_REQUEST');
    expectError(await api('PUT', '/api/v1/envs/con-prod', { body: { name: 'prod', backends: ['docker'] } }), 400, 'INVALID_REQUEST');
    expectError(await api('PUT', '/api/v1/envs/con-prod', { body: { backends: ['docker'], hostLabels: { 'no spaces': 'x' } } }), 400, 'INVALID_REQUEST');
    // the scheduler's own check: a default backend the env forbids
    expectError(await api('PUT', '/api/v1/envs/con-prod', { body: { backends: ['docker'], defaults: { backend: 'vmware' } } }), 400, 'INVALID_REQUEST');
    expect((await api('GET', '/api/v1/envs/con-prod', { token: VIEWER })).body).toEqual(put.body);
    expect(await api('DELETE', '/api/v1/envs/con-prod')).toMatchObject({ status: 200, body: {} });
    expectError(await api('DELETE', '/api/v1/envs/con-prod'), 404, 'NOT_FOUND');
    expectError(await api('GET', '/api/v1/envs/con-prod', { token: VIEWER }), 404, 'NOT_FOUND');
  });
});

describe('console: server-sent events', () => {
  it('streams stored events with their stream sequence and resumes after Last-Event-ID without gap or duplicate', async () => {
    // Other work may still publish events meanwhile: every read is checked as consecutive
    // sequences from where it should start, and reads are compared where they overlap.
    const jsm = await jetstreamManager(client.nc);
    const last = (await jsm.streams.info(EVENTS_STREAM.name)).state.last_seq;
    expect(last).toBeGreaterThan(20);
    const consecutiveFrom = (ids: number[], first: number) => expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => first + i));
    const all = await sse('?lastEventId=0&follow=false', Number.MAX_SAFE_INTEGER);
    expect(all.length).toBeGreaterThanOrEqual(last);
    consecutiveFrom(
      all.map((e) => e.id),
      1,
    );
    expect(all[0]!.event).toMatchObject({ specversion: '1.0', type: expect.stringMatching(/^io\.orangery\./) });
    const mid = Math.floor(last / 2);
    const resumed = await sse('?follow=false', Number.MAX_SAFE_INTEGER, { 'Last-Event-ID': String(mid) });
    expect(resumed.length).toBeGreaterThanOrEqual(all.length - mid);
    consecutiveFrom(
      resumed.map((e) => e.id),
      mid + 1,
    );
    expect(resumed.slice(0, all.length - mid).map((e) => e.event.id)).toEqual(all.slice(mid).map((e) => e.event.id));
    const byQuery = await sse(`?lastEventId=${mid}&follow=false`, Number.MAX_SAFE_INTEGER);
    consecutiveFrom(
      byQuery.map((e) => e.id),
      mid + 1,
    );
    expect(byQuery.slice(0, resumed.length).map((e) => e.event.id)).toEqual(resumed.slice(0, byQuery.length).map((e) => e.event.id));
    const tail = await sse(`?history=3&follow=false`, Number.MAX_SAFE_INTEGER);
    expect(tail).toHaveLength(3);
    expectError(await api('GET', '/api/v1/events', { token: VIEWER, headers: { 'Last-Event-ID': 'abc' } }), 400, 'INVALID_REQUEST');
  });

  it('follows new events live, and closing the connection deletes its consumer', async () => {
    const jsm = await jetstreamManager(client.nc);
    const consumerNames = async () => new Set((await jsm.consumers.list(EVENTS_STREAM.name).next()).map((c) => c.name));
    const before = await consumerNames();
    const last = (await jsm.streams.info(EVENTS_STREAM.name)).state.last_seq;
    const live = sse('', 1, { 'Last-Event-ID': String(last) }, 60_000);
    const mine = await waitFor('the SSE consumer', async () => [...(await consumerNames())].find((n) => !before.has(n)), 10_000);
    const r = await api('POST', '/api/v1/apps/test/live/scale', { body: scaleBody(1) });
    expect(r.status).toBe(202);
    const got = await live;
    expect(got).toHaveLength(1);
    expect(got[0]!.id).toBe(last + 1);
    await waitFor('the SSE consumer to be deleted', async () => !(await consumerNames()).has(mine), 10_000);
    await requestOutcome(r.body.requestId);
  });
});

describe('orangery CLI', () => {
  it('prints tables, --json, and exits 0', async () => {
    const pools = await cli(['pools']);
    expect(pools.code, pools.stderr).toBe(0);
    expect(pools.stdout).toMatch(/^NAME\s+CIDR\s+GATEWAY\s+VLAN\s+SIZE\s+USED\s+FREE\s+QUARANTINED\n/);
    expect(pools.stdout).toMatch(/\nsim\s+198\.19\.0\.0\/16\s+198\.19\.0\.1\s+0\s+65533\s/);
    const pj = await cli(['pools', '--json']);
    expect(JSON.parse(pj.stdout).pools[0]).toMatchObject({ name: 'sim' });
    const hosts = await cli(['hosts'], { ORANGERY_TOKEN: VIEWER });
    expect(hosts.code, hosts.stderr).toBe(0);
    for (const h of fleet.hostIds) expect(hosts.stdout).toContain(h);
    expect(JSON.parse((await cli(['hosts', '--json'])).stdout).hosts).toHaveLength(HOSTS);
    const inst = await cli(['instances', '--env', 'test', '--app', 'web']);
    expect(inst.code, inst.stderr).toBe(0);
    expect(inst.stdout).toMatch(/^ID\s+STATE\s+BACKEND\s+HOST\s+IP\s+MAC\n/);
    expect(inst.stdout).toMatch(/test:web:0\s+running\s+docker\s+con-\d+\s+198\.19\./);
    expect(JSON.parse((await cli(['instances', '--json', '--env', 'test', '--app', 'web'])).stdout).instances).toHaveLength(2);
    const created = await cli([
      'pools',
      'create',
      'cli-pool',
      '--cidr',
      '198.18.50.0/24',
      '--gateway',
      '198.18.50.1',
      '--vlan',
      '50',
      '--reserved',
      '198.18.50.2-198.18.50.9',
    ]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toContain('pool cli-pool created');
    const events = await cli(['events', '--last', '5']);
    expect(events.code, events.stderr).toBe(0);
    expect(events.stdout.trim().split('\n')).toHaveLength(6);
    const ej = await cli(['events', '--last', '3', '--json']);
    expect(
      ej.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).event.specversion),
    ).toEqual(['1.0', '1.0', '1.0']);
  });

  it('envs put, get, list and delete', async () => {
    const put = await cli([
      'envs',
      'put',
      'cli-env',
      '--backends',
      'docker,vmware',
      '--pools',
      'sim',
      '--label',
      'tier=gold',
      '--label',
      'zone=a',
      '--default-spread',
      'none',
      '--pids-limit',
      '8192',
    ]);
    expect(put.code, put.stderr).toBe(0);
    expect(put.stdout).toContain('env cli-env saved: backends docker,vmware');
    const got = JSON.parse((await cli(['envs', 'get', 'cli-env', '--json'])).stdout);
    expect(got).toMatchObject({
      name: 'cli-env',
      backends: ['docker', 'vmware'],
      pools: ['sim'],
      hostLabels: { tier: 'gold', zone: 'a' },
      defaults: { spread: 'none' },
      containerSecurity: { pidsLimit: 8192 },
    });
    const table = await cli(['envs'], { ORANGERY_TOKEN: VIEWER });
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^NAME\s+BACKENDS\s+POOLS\s+HOST LABELS\s+DEFAULTS\s+UPDATED\n/);
    expect(table.stdout).toMatch(/\ncli-env\s+docker,vmware\s+sim\s+tier=gold,zone=a\s+spread=none\s/);
    const refused = await cli(['envs', 'put', 'cli-env', '--backends', 'docker', '--default-backend', 'vmware']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('INVALID_REQUEST');
    expect((await cli(['envs', 'put', 'cli-env', '--backends', 'mainframe'])).code).toBe(1);
    const del = await cli(['envs', 'delete', 'cli-env']);
    expect(del.code, del.stderr).toBe(0);
    expect((await cli(['envs', 'delete', 'cli-env'])).code).toBe(1);
  });

  it('exits 1 on a refusal with the code and message, 2 on bad usage', async () => {
    const exists = await cli(['pools', 'create', 'sim', '--cidr', '198.19.0.0/16', '--gateway', '198.19.0.1']);
    expect(exists.code).toBe(1);
    expect(exists.stderr).toMatch(/POOL_EXISTS: /);
    const forbidden = await cli(['drain', 'con-0001'], { ORANGERY_TOKEN: VIEWER });
    expect(forbidden.code).toBe(1);
    expect(forbidden.stderr).toContain('FORBIDDEN');
    const envs = await cli(['envs', 'get', 'nope', '--json']);
    expect(envs.code).toBe(1);
    expect(JSON.parse(envs.stdout).error.code).toBe('NOT_FOUND');
    for (const args of [
      ['scale', 'test/web'],
      ['scale', 'nonsense', '--replicas', '1'],
      ['scale', 'test/web', '--replicas', 'many'],
      ['bogus'],
      ['pools', 'create', 'x'],
      ['hosts', '--colour'],
    ]) {
      const r = await cli(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
    }
    expect((await cli(['hosts'], { ORANGERY_TOKEN: '' })).code).toBe(2);
    const help = await cli(['scale', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--replicas');
    const down = await cli(['hosts'], { ORANGERY_CONSOLE_URL: 'http://127.0.0.1:1' });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('UNAVAILABLE');
  });

  it('scale --wait shows progress and exits 0 when completed, 1 when rejected', async () => {
    const ok = await cli([
      'scale',
      'test/cli',
      '--replicas',
      '2',
      '--image',
      'svc:1',
      '--backend',
      'docker',
      '--pool',
      'sim',
      '--cpu',
      '1',
      '--memory',
      '256',
      '--wait',
    ]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/scale test\/cli: \d\/2 slots running/);
    expect(ok.stdout).toContain('scale test/cli completed: 2 slots running');
    expect(ok.stdout).toMatch(/test:cli:1\s+running/);
    const rejected = await cli([
      'scale',
      'test/cli2',
      '--replicas',
      '1',
      '--image',
      'svc:1',
      '--pool',
      'nopool',
      '--cpu',
      '1',
      '--memory',
      '256',
      '--wait',
      '--json',
    ]);
    expect(rejected.code, rejected.stderr).toBe(1);
    expect(JSON.parse(rejected.stdout)).toMatchObject({ state: 'rejected', reason: { code: 'POOL_NOT_FOUND' } });
    const invalid = await cli(['scale', 'test/cli3', '--replicas', '1', '--wait']);
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toContain('INVALID_REQUEST');
  });

  it('migrate --wait and drain --wait follow the migrations to their end', async () => {
    const inst = (await api('GET', '/api/v1/instances?env=test&app=cli', { token: VIEWER })).body.instances;
    const m = await cli(['migrate', inst[0].id, '--wait']);
    expect(m.code, m.stderr).toBe(0);
    expect(m.stderr).toMatch(/migrate test:cli:0: (running|completed)/);
    expect(m.stdout).toMatch(/^MIGRATION\s+INSTANCE\s+STATE/);
    expect(m.stdout).toMatch(/test:cli:0\s+completed/);
    const hosts = (await api('GET', '/api/v1/hosts', { token: VIEWER })).body.hosts as { id: string; state: string }[];
    const ready = hosts.find((h) => h.state === 'ready')!;
    const d = await cli(['drain', ready.id, '--wait', '--json']);
    expect(d.code, d.stderr).toBe(0);
    const out = JSON.parse(d.stdout);
    for (const x of out.migrations ?? [out]) expect(x.state).toBe('completed');
    const unknown = await cli(['migrate', 'test:nothing:0']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('NOT_FOUND');
  });
});

describe('orangery events --follow', () => {
  it('streams new events until interrupted, then exits 0', async () => {
    const jsm = await jetstreamManager(client.nc);
    const consumerNames = async () => new Set((await jsm.consumers.list(EVENTS_STREAM.name).next()).map((c) => c.name));
    const before = await consumerNames();
    const child = spawn(process.execPath, [join(REPO_ROOT, 'dist', 'cli', 'orangery.js'), 'events', '--follow', '--last', '0'], {
      env: { PATH: process.env['PATH'] ?? '', ORANGERY_CONSOLE_URL: base, ORANGERY_TOKEN: VIEWER },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await waitFor('the table header', () => stdout.startsWith('SEQ'), 15_000);
      // The stream starts with new events: publish only once its consumer exists.
      await waitFor("the CLI's consumer", async () => [...(await consumerNames())].some((n) => !before.has(n)), 15_000);
      const r = await api('POST', '/api/v1/apps/test/follow/scale', { body: scaleBody(1) });
      await waitFor('a scale.completed line', () => /\bscale\.completed\s+test:follow\n/.test(stdout), 60_000);
      expect(stdout).toMatch(/\binstance\.running\s+test:follow:0\n/);
      await requestOutcome(r.body.requestId);
    } finally {
      child.kill('SIGINT');
    }
    expect(await exited).toBe(0);
  });
});

describe('console: generated token', () => {
  it('without ORANGERY_CONSOLE_TOKENS prints one operator token on stderr, never in its JSON log, and it works', async () => {
    const port = await freePort();
    const proc = await ServiceProcess.start(stack.dir, 'console', { ORANGERY_NATS_URL: stack.nats.url, ORANGERY_CONSOLE_ADDR: `127.0.0.1:${port}` }, 90_000);
    try {
      const lines = proc.stderr.split('\n').filter((l) => l.includes('operator token'));
      expect(lines).toHaveLength(1);
      const token = /\(name admin\): (\S+)$/.exec(lines[0]!)?.[1];
      expect(token).toMatch(/^[A-Za-z0-9_-]{32}$/);
      expect(proc.lines.join('\n')).not.toContain(token!);
      const r = await fetch(`http://127.0.0.1:${port}/api/v1/pools`, { headers: { Authorization: `Bearer ${token}` } });
      expect(r.status).toBe(200);
      const viewer = await fetch(`http://127.0.0.1:${port}/api/v1/pools`, { headers: { Authorization: `Bearer ${OPERATOR}` } });
      expect(viewer.status).toBe(401);
    } finally {
      await proc.kill9();
    }
  });
});

describe('console: secrets', () => {
  it('never writes a token into its logs', () => {
    const logs = consoleProc.lines.join('\n') + consoleProc.stderr;
    expect(logs).toContain('api command');
    expect(logs).not.toContain(OPERATOR);
    expect(logs).not.toContain(VIEWER);
    expect(logs).toMatch(/"actor":"alice"/);
  });
});

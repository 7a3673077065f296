import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENTS_STREAM } from '@orangery/contracts';
import { ScaleWatcher, waitFor } from '@orangery/testing';
import { startConsoleStack, type ConsoleStack } from './fixtures/console-stack';

// The console under the NATS permissions of its role (docs/security.md, the `console` user
// of tools/creds: what its API offers and no more, replies on `_INBOX_console`, the event
// stream read only, the scale stream publish only). The table is written out here as the
// creds tool writes it, so a drift between them shows as a failing test here.
const OPERATOR = 'perm-operator-token-0123456789';
const E = EVENTS_STREAM.name;
const CONSOLE_PUBLISH = [
  'orangery.ipam.pool.create',
  'orangery.ipam.pool.get',
  'orangery.ipam.pool.list',
  'orangery.scheduler.hosts.list',
  'orangery.scheduler.instances.list',
  'orangery.scheduler.envs.>',
  'orangery.migrator.>',
  'orangery.scale.>',
  '$JS.API.INFO',
  `$JS.API.STREAM.INFO.${E}`,
  `$JS.API.STREAM.MSG.GET.${E}`,
  `$JS.API.CONSUMER.CREATE.${E}`,
  `$JS.API.CONSUMER.CREATE.${E}.>`,
  `$JS.API.CONSUMER.DURABLE.CREATE.${E}.>`,
  `$JS.API.CONSUMER.INFO.${E}.>`,
  `$JS.API.CONSUMER.DELETE.${E}.>`,
  `$JS.API.CONSUMER.NAMES.${E}`,
  `$JS.API.CONSUMER.LIST.${E}`,
  `$JS.API.CONSUMER.MSG.NEXT.${E}.>`,
  `$JS.ACK.${E}.>`,
  `$JS.FC.${E}.>`,
];
const CONSOLE_SUBSCRIBE = ['orangery.evt.>', 'orangery.hb.*', '_INBOX_console.>'];
const list = (xs: string[]) => xs.map((x) => JSON.stringify(x)).join(', ');
const AUTH = `authorization {
  users = [
    { user: "svc", password: "svc-password" }
    { user: "console", password: "console-password", permissions: { publish: { allow: [${list(CONSOLE_PUBLISH)}] }, subscribe: { allow: [${list(CONSOLE_SUBSCRIBE)}] } } }
  ]
}`;

let stack: ConsoleStack;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await fetch(`${stack.base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${OPERATOR}`, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: r.status, body: await r.json() };
}

beforeAll(async () => {
  stack = await startConsoleStack('console-perm', {
    hosts: 2,
    tokens: `ops:${OPERATOR}:operator`,
    natsConfig: AUTH,
    urls: (nats) => ({ services: nats.urlFor('svc', 'svc-password'), console: nats.urlFor('console', 'console-password') }),
  });
}, 300_000);

afterAll(async () => {
  await stack?.close();
});

const scaleBody = { replicas: 1, resources: { cpu: 1, memoryMb: 256 }, image: 'svc:1', backend: 'docker', pool: 'sim' };

describe('console with the NATS permissions of its role', () => {
  it('serves pools, hosts and envs through its own inbox', async () => {
    const created = await api('POST', '/api/v1/pools', { name: 'sim', cidr: '198.19.0.0/16', gateway: '198.19.0.1', cooldownSeconds: 0 });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const hosts = await api('GET', '/api/v1/hosts');
    expect(hosts.status).toBe(200);
    expect(hosts.body.hosts).toHaveLength(2);
    const envs = await api('GET', '/api/v1/envs');
    expect(envs.status, JSON.stringify(envs.body)).toBe(200);
    expect(envs.body.envs).toEqual([]);
    expect(stack.console.hasLog('cannot read the scale stream: requests published elsewhere are known by their outcome only; retrying every minute')).toBe(
      true,
    );
  });

  it('publishes a scale request and follows it to completed; knows an upstream request by its outcome', async () => {
    const r = await api('POST', '/api/v1/apps/test/web/scale', scaleBody);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const own = await api('GET', `/api/v1/requests/${r.body.requestId}`);
    expect(own.status).toBe(200);
    expect(['pending', 'completed']).toContain(own.body.state);
    await waitFor('completed', async () => (await api('GET', `/api/v1/requests/${r.body.requestId}`)).body.state === 'completed', 60_000);
    const upstream = new ScaleWatcher(stack.client.nc);
    try {
      const id = await upstream.publish({ env: 'test', app: 'up', ...scaleBody } as Parameters<ScaleWatcher['publish']>[0]);
      await upstream.outcome(id, 60_000);
      await waitFor('the outcome in the console', async () => (await api('GET', `/api/v1/requests/${id}`)).body.state === 'completed', 15_000);
    } finally {
      upstream.close();
    }
  });

  it('streams events (SSE) with consumers of its own, and migrates', async () => {
    const res = await fetch(`${stack.base}/api/v1/events?history=5&follow=false`, { headers: { Authorization: `Bearer ${OPERATOR}` } });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text.match(/^id: \d+$/gm)).toHaveLength(5);
    const inst = (await api('GET', '/api/v1/instances?env=test&app=web')).body.instances[0];
    const m = await api('POST', `/api/v1/instances/${encodeURIComponent(inst.id)}/migrate`, {});
    expect(m.status, JSON.stringify(m.body)).toBe(202);
    await waitFor('the migration', async () => (await api('GET', `/api/v1/migrations/${m.body.migrationId}`)).body.state === 'completed', 60_000);
  });
});

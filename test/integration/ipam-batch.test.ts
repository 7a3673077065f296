import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, type Connection } from 'mysql2/promise';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ServiceProcess, waitFor } from '@orangery/testing';

// orangery.ipam.allocate.batch and bind.batch (docs/ipam.md "Batch requests") on three ipam
// replicas (real processes), a private NATS and a fresh database, through the public subjects
// only, mixed with the single subjects as outside callers would.
const dir = new HarnessDir('ipam-batch');
let nats: NatsServer;
let dbUrl: string;
let db: Connection;
const clients: ContractClient[] = [];
const replicas: ServiceProcess[] = [];

const env = () => ({ ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
const owner = (app: string, slot: number) => ({ env: 'test', app, slot });
const ALLOCATE_BATCH = 'orangery.ipam.allocate.batch';
const BIND_BATCH = 'orangery.ipam.bind.batch';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyReply = any;

async function rows<T>(sql: string, params: unknown[] = []): Promise<T[]> {
  const [r] = await db.query(sql, params);
  return r as T[];
}

async function snapshot(): Promise<string> {
  return JSON.stringify(await rows('SELECT ip, state, owner_key, live_owner, available_at, host FROM ipam_address ORDER BY ip'));
}

/** Live addresses of a pool: owner key -> ip, after checking nobody holds two and no address is held twice. */
async function liveOf(pool: string): Promise<Map<string, number>> {
  const live = await rows<{ ip: number; live_owner: string }>(
    'SELECT a.ip, a.live_owner FROM ipam_address a JOIN ipam_pool p ON p.id = a.pool_id WHERE p.name = ? AND a.live_owner IS NOT NULL',
    [pool],
  );
  expect(new Set(live.map((r) => r.live_owner)).size).toBe(live.length);
  return new Map(live.map((r) => [r.live_owner, Number(r.ip)]));
}

const auditCount = async (pool: string, action: string) =>
  Number((await rows<{ n: number }>('SELECT COUNT(*) AS n FROM ipam_audit WHERE pool_name = ? AND action = ?', [pool, action]))[0]!.n);

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('ipam_batch');
  replicas.push(...(await Promise.all([0, 1, 2].map(() => ServiceProcess.start(dir, 'ipam', env())))));
  for (let i = 0; i < 4; i++) clients.push(await ContractClient.connect(nats.url));
  const u = new URL(dbUrl);
  db = await createConnection({
    host: u.hostname,
    port: Number(u.port),
    user: u.username,
    password: u.password,
    database: u.pathname.slice(1),
  });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await db?.end();
  await dir.cleanup();
});

describe('allocate.batch and bind.batch under concurrency, three replicas', () => {
  const OWNERS = 600;
  const owners = Array.from({ length: OWNERS }, (_, i) => owner(`mix-${i % 6}`, Math.floor(i / 6)));
  const keyOf = (o: { env: string; app: string; slot: number }) => `${o.env}:${o.app}:${o.slot}`;

  it('batches of 200 from 3 clients mixed with singles on overlapping owners: one address per owner, none twice', async () => {
    const created = await clients[0]!.request('orangery.ipam.pool.create', { name: 'p-mix', cidr: '198.18.8.0/21', gateway: '198.18.8.1' });
    expect(created.ok, JSON.stringify(created)).toBe(true);
    // Each client sends three batches of 200 that together cover every owner, each client
    // starting elsewhere; a fourth client sends a single for every owner at the same time.
    const batches = [0, 1, 2].flatMap((c) =>
      [0, 1, 2].map((b) => ({
        client: clients[c]!,
        owners: Array.from({ length: 200 }, (_, j) => owners[(c * 137 + b * 200 + j) % OWNERS]!),
      })),
    );
    const [batchReplies, singleReplies] = await Promise.all([
      Promise.all(batches.map(({ client, owners: os }) => client.request(ALLOCATE_BATCH, { items: os.map((o) => ({ pool: 'p-mix', owner: o })) }, 60_000))),
      Promise.all(owners.map((o) => clients[3]!.request('orangery.ipam.allocate', { pool: 'p-mix', owner: o }, 60_000))),
    ]);
    const ipOfOwner = new Map<string, string>();
    const see = (o: { env: string; app: string; slot: number }, reply: AnyReply) => {
      expect(reply.ok, JSON.stringify(reply)).toBe(true);
      expect(reply.data.owner).toEqual(o);
      const seen = ipOfOwner.get(keyOf(o));
      if (seen === undefined) ipOfOwner.set(keyOf(o), reply.data.ip);
      else expect(reply.data.ip, keyOf(o)).toBe(seen);
    };
    batchReplies.forEach((reply: AnyReply, b) => {
      expect(reply.ok, JSON.stringify(reply).slice(0, 500)).toBe(true);
      expect(reply.data.results).toHaveLength(200);
      reply.data.results.forEach((r: AnyReply, j: number) => see(batches[b]!.owners[j]!, r));
    });
    owners.forEach((o, i) => see(o, singleReplies[i]));
    expect(new Set(ipOfOwner.values()).size).toBe(OWNERS);
    const live = await liveOf('p-mix');
    expect(live.size).toBe(OWNERS);
    expect(await auditCount('p-mix', 'allocate')).toBe(OWNERS);
    // What singles return now is what the batches returned (idempotent, same replies).
    const again = await Promise.all(owners.map((o) => clients[0]!.request('orangery.ipam.allocate', { pool: 'p-mix', owner: o })));
    owners.forEach((o, i) => expect(again[i].data.ip).toBe(ipOfOwner.get(keyOf(o))));
    const [first] = batchReplies[0].data.results;
    expect(first).toEqual({ ok: true, data: again[owners.indexOf(batches[0]!.owners[0]!)].data });
  });

  it('binds the 600 addresses in batches, one ip.bound event each, and answers unallocated ones NOT_FOUND', async () => {
    const live = await liveOf('p-mix');
    const ips = owners.map((o) => (live.get(keyOf(o))! >>> 0).toString());
    const dotted = (n: string) => [24, 16, 8, 0].map((s) => (Number(n) >>> s) & 255).join('.');
    const items = owners.map((o, i) => ({ ip: dotted(ips[i]!), instanceId: keyOf(o), backend: i % 2 ? 'vmware' : 'docker', host: `h${i % 5}` }));
    const replies = await Promise.all([0, 1, 2].map((b) => clients[b]!.request(BIND_BATCH, { items: items.slice(b * 200, b * 200 + 200) }, 60_000)));
    for (const reply of replies) for (const r of reply.data.results) expect(r, JSON.stringify(r)).toMatchObject({ ok: true, data: { state: 'bound' } });
    const unallocated = await clients[0]!.request(BIND_BATCH, {
      items: [items[0], { ip: '198.18.15.250', instanceId: 'x', backend: 'docker', host: 'h1' }],
    });
    expect(unallocated.data.results.map((r: AnyReply) => r.ok)).toEqual([true, false]);
    expect(unallocated.data.results[1].error.code).toBe('NOT_FOUND');
    expect(await auditCount('p-mix', 'bind')).toBe(OWNERS);
    const events = await waitFor(
      'an ip.bound event per address',
      async () => {
        const evts = (await clients[0]!.events('orangery.evt.ip.bound')).filter((e) => e.data.pool === 'p-mix');
        return evts.length >= OWNERS ? evts : undefined;
      },
      20_000,
      500,
    );
    expect(new Set(events.map((e) => e.subject)).size).toBe(OWNERS);
    expect(events).toHaveLength(OWNERS);
  });
});

describe('bad input', () => {
  const cases: [string, unknown, string][] = [
    ['not JSON', '{nope', ''],
    ['a JSON array', '[{"pool":"p-bad"}]', ''],
    ['items missing', {}, 'items'],
    ['items empty', { items: [] }, 'items'],
    ['items not an array', { items: { pool: 'p-bad' } }, 'items'],
    ['501 items', { items: Array.from({ length: 501 }, (_, i) => ({ pool: 'p-bad', owner: owner('bad', i) })) }, 'items'],
    ['an unknown field', { items: [{ pool: 'p-bad', owner: owner('bad', 0) }], dryRun: true }, 'dryRun'],
  ];

  it.each(cases)('%s: INVALID_REQUEST for the whole batch, nothing changed', async (_label, body, field) => {
    await clients[0]!.request('orangery.ipam.pool.create', { name: 'p-bad', cidr: '198.18.20.0/28', gateway: '198.18.20.1' });
    const before = await snapshot();
    for (const subject of [ALLOCATE_BATCH, BIND_BATCH]) {
      const r = await clients[0]!.request(subject, body);
      expect(r.ok).toBe(false);
      expect(r.error.code).toBe('INVALID_REQUEST');
      expect(r.error.details.field).toBe(field);
    }
    expect(await snapshot()).toBe(before);
  });

  it('a malformed item gets INVALID_REQUEST naming it; the other items are served', async () => {
    await clients[0]!.request('orangery.ipam.pool.create', { name: 'p-bad', cidr: '198.18.20.0/28', gateway: '198.18.20.1' });
    const items: unknown[] = [0, 1, 2, 3, 4].map((s) => ({ pool: 'p-bad', owner: owner('items', s) }));
    items[3] = { pool: 'p-bad', owner: { env: 'test', app: 'items', slot: 'three' } };
    items.push(7, { pool: 'p-bad', owner: owner('items', 6), ip: '198.18.20.300' }, { pool: 'p-none', owner: owner('items', 7) });
    const r = await clients[1]!.request(ALLOCATE_BATCH, { items });
    expect(r.ok).toBe(true);
    const results = r.data.results as AnyReply[];
    expect(results.map((x) => (x.ok ? 'ok' : x.error.code))).toEqual([
      'ok',
      'ok',
      'ok',
      'INVALID_REQUEST',
      'ok',
      'INVALID_REQUEST',
      'INVALID_REQUEST',
      'POOL_NOT_FOUND',
    ]);
    expect(results[3].error.details).toMatchObject({ field: 'items[3].owner.slot' });
    expect(results[5].error.details).toMatchObject({ field: 'items[5]' });
    expect(results[6].error.details).toMatchObject({ field: 'items[6].ip' });
    expect((await liveOf('p-bad')).size).toBe(4);
    const bind = await clients[1]!.request(BIND_BATCH, { items: [{ ip: results[0].data.ip, instanceId: '', backend: 'docker', host: 'h1' }] });
    expect(bind.data.results[0].error.details.field).toBe('items[0].instanceId');
  });

  it('every replica is still alive after all that', () => {
    for (const r of replicas) expect(r.child.exitCode).toBeNull();
  });
});

describe('a replica killed mid-batch', () => {
  it('loses nothing and leaks nothing: retried batches succeed, no address twice, one audit row and event each', async () => {
    await clients[0]!.request('orangery.ipam.pool.create', { name: 'p-kill', cidr: '198.18.32.0/21', gateway: '198.18.32.1' });
    // 2,000 owners in 20 batches of 100, all sent at once: the victim is killed with some in flight.
    const batches = Array.from({ length: 20 }, (_, b) =>
      Array.from({ length: 100 }, (_, j) => ({ pool: 'p-kill', owner: owner(`kill-${b % 4}`, Math.floor(b / 4) * 100 + j) })),
    );
    const total = batches.length * 100;
    const burst = Promise.all(batches.map((items, b) => clients[b % clients.length]!.requestWithRetry(ALLOCATE_BATCH, { items }, 20, 5_000)));
    await new Promise((r) => setTimeout(r, 60));
    const victim = replicas.shift()!;
    await victim.kill9();
    const replies = await burst;
    const ips = new Set<string>();
    replies.forEach((reply, b) => {
      expect(reply.ok, JSON.stringify(reply).slice(0, 300)).toBe(true);
      reply.data.results.forEach((r: AnyReply, j: number) => {
        expect(r.ok, JSON.stringify(r)).toBe(true);
        expect(r.data.owner).toEqual(batches[b]![j]!.owner);
        ips.add(r.data.ip);
      });
    });
    expect(ips.size).toBe(total);
    // Whatever the killed replica committed is whole (one transaction per batch): every live
    // address has exactly one audit row, and nothing is live that no reply reported.
    const live = await liveOf('p-kill');
    expect(live.size).toBe(total);
    expect(await auditCount('p-kill', 'allocate')).toBe(total);
    // Retrying every batch once more changes nothing (each item is idempotent).
    const again = await Promise.all(batches.map((items) => clients[0]!.requestWithRetry(ALLOCATE_BATCH, { items }, 5, 20_000)));
    again.forEach((reply, b) => expect(reply.data.results).toEqual(replies[b].data.results));
    expect(await auditCount('p-kill', 'allocate')).toBe(total);
    // The outbox sweeper publishes what the killed replica committed but never published.
    const events = await waitFor(
      'one ip.allocated event per allocation',
      async () => {
        const evts = (await clients[0]!.events('orangery.evt.ip.allocated')).filter((e) => e.data.pool === 'p-kill');
        return new Set(evts.map((e) => e.subject)).size === total ? evts : undefined;
      },
      40_000,
      1_000,
    );
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
    expect(events).toHaveLength(total);
    replicas.push(await ServiceProcess.start(dir, 'ipam', env()));
  });
});

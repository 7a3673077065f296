import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, type Connection } from 'mysql2/promise';
import { SchedulerClient } from '@orangery/messaging';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ServiceProcess } from '@orangery/testing';

// Paging of the list subjects (CONTRACT.md "Operators", v1.1) on real processes, NATS and
// MariaDB: ipam.pool.list, scheduler hosts.list and instances.list. Hosts and instances
// are written straight into the scheduler's tables (what agents and the leader would
// have written), since any replica answers these lists from the database.
const dir = new HarnessDir('paging');
let nats: NatsServer;
let dbUrl: string;
let db: Connection;
let client: ContractClient;

const N = 2_500;
const hostIds = Array.from({ length: N }, (_, i) => `pg-${String(i).padStart(4, '0')}`);
// Five apps of 500 slots: slot order is numeric (9 before 10), not the order of the ids.
const instanceKeys = ['a0', 'a1', 'a2', 'a3', 'a4'].flatMap((app) => Array.from({ length: 500 }, (_, slot) => ({ env: 'pg', app, slot })));

async function insertHosts(): Promise<void> {
  const facts = JSON.stringify({ capacity: { cpu: 8, memoryMb: 16_384, diskMb: 100_000 }, labels: {} });
  const usage = JSON.stringify({ cpu: 0, memoryMb: 0, diskMb: 0 });
  // Inserted out of order: the list's order is the key's, never the insertion's.
  const shuffled = [...hostIds].reverse();
  await db.query('INSERT INTO sched_host (id, backend, fenced, facts, usage_json, last_seen, verdict) VALUES ?', [
    shuffled.map((id) => [id, 'docker', 0, facts, usage, new Date(), '']),
  ]);
}

async function insertInstances(): Promise<void> {
  const shuffled = [...instanceKeys].sort((a, b) => (a.slot % 7) - (b.slot % 7));
  await db.query('INSERT INTO sched_instance (id, env, app, slot, state, host_id, cpu, memory_mb, disk_mb, record) VALUES ?', [
    shuffled.map((k) => [`${k.env}:${k.app}:${k.slot}`, k.env, k.app, k.slot, 'stopped', null, 1, 512, 1_000, '{}']),
  ]);
}

async function checksum(): Promise<string> {
  const [rows] = await db.query('CHECKSUM TABLE sched_host, sched_instance, ipam_pool, ipam_address');
  return JSON.stringify(rows);
}

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('paging');
  client = await ContractClient.connect(nats.url);
  await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
  const scheduler = await ServiceProcess.start(dir, 'scheduler', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
  await scheduler.waitForLog('leading: consuming scale requests', 30_000);
  const u = new URL(dbUrl);
  db = await createConnection({ host: u.hostname, port: Number(u.port), user: u.username, password: u.password, database: u.pathname.slice(1) });
  await insertHosts();
  await insertInstances();
  for (let i = 0; i < 25; i++) {
    const third = 100 + Math.floor(i / 4);
    const r = await client.request('orangery.ipam.pool.create', {
      name: `pool-${String(24 - i).padStart(2, '0')}`,
      cidr: `198.18.${third}.${(i % 4) * 64}/26`,
      gateway: `198.18.${third}.${(i % 4) * 64 + 1}`,
    });
    expect(r.ok, JSON.stringify(r)).toBe(true);
  }
}, 120_000);

afterAll(async () => {
  await client?.close();
  await db?.end();
  await dir.cleanup();
});

/** Every page of `subject` with `body`, as replied. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function allPages(subject: string, body: Record<string, unknown>): Promise<any[]> {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const out: any[] = [];
  let cursor: string | undefined;
  for (let guard = 0; guard < 100; guard++) {
    const r = await client.request(subject, { ...body, ...(cursor ? { cursor } : {}) }, 20_000);
    expect(r.ok, JSON.stringify(r).slice(0, 500)).toBe(true);
    out.push(r.data);
    cursor = r.data.nextCursor;
    if (cursor === undefined) return out;
  }
  throw new Error('more than 100 pages');
}

describe('hosts.list', () => {
  it('pages 2,500 hosts by 1000: each host exactly once, in id order, nextCursor only while more remain', async () => {
    const pages = await allPages('orangery.scheduler.hosts.list', { limit: 1000 });
    expect(pages.map((p) => p.hosts.length)).toEqual([1000, 1000, 500]);
    expect(pages.map((p) => typeof p.nextCursor)).toEqual(['string', 'string', 'undefined']);
    expect(pages.flatMap((p) => p.hosts.map((h: { id: string }) => h.id))).toEqual(hostIds);
  });

  it('answers 1000 by default, and a page that ends the list exactly has no nextCursor', async () => {
    const first = await client.request('orangery.scheduler.hosts.list', {});
    expect(first.data.hosts).toHaveLength(1000);
    expect(first.data.nextCursor).toEqual(expect.any(String));
    const all = await client.request('orangery.scheduler.hosts.list', { limit: N });
    expect(all.data.hosts).toHaveLength(N);
    expect(all.data).not.toHaveProperty('nextCursor');
  });

  it('SchedulerClient.hostsAll reads every page', async () => {
    const hosts = await new SchedulerClient(client.nc).hostsAll();
    expect(hosts.map((h) => h.id)).toEqual(hostIds);
  });
});

describe('instances.list', () => {
  const expected = instanceKeys.map((k) => `${k.env}:${k.app}:${k.slot}`);

  it('pages 2,500 instances by 1000: each exactly once, in (env, app, slot) order', async () => {
    const pages = await allPages('orangery.scheduler.instances.list', { limit: 1000 });
    expect(pages.map((p) => p.instances.length)).toEqual([1000, 1000, 500]);
    expect(pages.flatMap((p) => p.instances.map((i: { id: string }) => i.id))).toEqual(expected);
    for (const p of pages) for (const i of p.instances) expect(i).not.toHaveProperty('environment');
  });

  it('pages within a filter, and a cursor moves on across apps', async () => {
    const one = await allPages('orangery.scheduler.instances.list', { env: 'pg', app: 'a3', limit: 200 });
    expect(one.map((p) => p.instances.length)).toEqual([200, 200, 100]);
    expect(one.flatMap((p) => p.instances.map((i: { slot: number }) => i.slot))).toEqual(Array.from({ length: 500 }, (_, s) => s));
    const odd = await allPages('orangery.scheduler.instances.list', { env: 'pg', limit: 333 });
    expect(odd.flatMap((p) => p.instances.map((i: { id: string }) => i.id))).toEqual(expected);
    const exact = await client.request('orangery.scheduler.instances.list', { env: 'pg', app: 'a0', limit: 500 });
    expect(exact.data.instances).toHaveLength(500);
    expect(exact.data).not.toHaveProperty('nextCursor');
  });

  it('SchedulerClient.instancesAll reads every page', async () => {
    const all = await new SchedulerClient(client.nc).instancesAll({ env: 'pg' });
    expect(all.map((i) => i.id)).toEqual(expected);
  });
});

describe('pool.list', () => {
  it('pages the pools in name order', async () => {
    const pages = await allPages('orangery.ipam.pool.list', { limit: 10 });
    expect(pages.map((p) => p.pools.length)).toEqual([10, 10, 5]);
    expect(pages.flatMap((p) => p.pools.map((x: { name: string }) => x.name))).toEqual(
      Array.from({ length: 25 }, (_, i) => `pool-${String(i).padStart(2, '0')}`),
    );
    expect(pages[0].pools[0]).toMatchObject({ size: 61, used: 0, free: 61 });
  });
});

describe('a bad limit or cursor', () => {
  const hostCursor = async () => (await client.request('orangery.scheduler.hosts.list', { limit: 1 })).data.nextCursor as string;
  const bad: [string, Record<string, unknown>, string][] = [
    ['limit 0', { limit: 0 }, 'limit'],
    ['limit 10001', { limit: 10_001 }, 'limit'],
    ['limit 2.5', { limit: 2.5 }, 'limit'],
    ['limit "5"', { limit: '5' }, 'limit'],
    ['a cursor we never issued', { cursor: 'bm90LWEtY3Vyc29y' }, 'cursor'],
    ['a cursor with padding', { cursor: 'abc=' }, 'cursor'],
    ['an overlong cursor', { cursor: 'a'.repeat(5_000) }, 'cursor'],
    ['an empty cursor', { cursor: '' }, 'cursor'],
  ];

  it.each(['orangery.scheduler.hosts.list', 'orangery.scheduler.instances.list', 'orangery.ipam.pool.list'])(
    '%s: INVALID_REQUEST naming the field, and nothing changes',
    async (subject) => {
      const before = await checksum();
      for (const [what, body, field] of bad) {
        const r = await client.request(subject, body);
        expect(r.ok, what).toBe(false);
        expect(r.error.code, what).toBe('INVALID_REQUEST');
        expect(r.error.details.field, what).toBe(field);
      }
      expect(await checksum()).toBe(before);
    },
  );

  it("refuses another list's cursor", async () => {
    const cursor = await hostCursor();
    for (const subject of ['orangery.scheduler.instances.list', 'orangery.ipam.pool.list']) {
      const r = await client.request(subject, { cursor });
      expect(r.error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'cursor' } });
    }
    expect((await client.request('orangery.scheduler.hosts.list', { cursor })).data.hosts[0].id).toBe(hostIds[1]);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, type Connection } from 'mysql2/promise';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ServiceProcess, waitFor } from '@orangery/testing';

// Three ipam replicas (real processes) on a private NATS and a fresh database: every test
// talks to them only through the public subjects of CONTRACT.md, like any outside caller.
const dir = new HarnessDir('ipam');
let nats: NatsServer;
let dbUrl: string;
let db: Connection;
let client: ContractClient;
const replicas: ServiceProcess[] = [];

const env = () => ({ ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
const owner = (app: string, slot: number, env = 'test') => ({ env, app, slot });

async function snapshot() {
  const [addr] = await db.query('SELECT ip, state, owner_key, live_owner, available_at FROM ipam_address ORDER BY ip');
  const [pools] = await db.query('SELECT name, cidr FROM ipam_pool ORDER BY name');
  return JSON.stringify({ addr, pools });
}

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('ipam');
  // Three replicas starting at once: migrations and stream creation must not trip each other.
  replicas.push(...(await Promise.all([0, 1, 2].map(() => ServiceProcess.start(dir, 'ipam', env())))));
  client = await ContractClient.connect(nats.url);
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
  await client?.close();
  await db?.end();
  await dir.cleanup();
});

describe('pools', () => {
  it('creates, reads, lists and deletes a pool with the documented counts', async () => {
    const created = await client.request('orangery.ipam.pool.create', {
      name: 'p-basic',
      cidr: '198.18.1.0/24',
      gateway: '198.18.1.1',
      vlan: 100,
      reserved: ['198.18.1.5', '198.18.1.10-198.18.1.20'],
      cooldownSeconds: 60,
    });
    expect(created.ok).toBe(true);
    expect(created.data).toMatchObject({ name: 'p-basic', cidr: '198.18.1.0/24', gateway: '198.18.1.1', vlan: 100, cooldownSeconds: 60 });
    const got = await client.request('orangery.ipam.pool.get', { name: 'p-basic' });
    expect(got.data).toMatchObject({ size: 254 - 1 - 12, used: 0, free: 254 - 1 - 12, quarantined: 0 });
    const list = await client.request('orangery.ipam.pool.list', {});
    expect(list.data.pools.map((p: { name: string }) => p.name)).toContain('p-basic');
    expect((await client.request('orangery.ipam.pool.delete', { name: 'p-basic' })).ok).toBe(true);
    expect((await client.request('orangery.ipam.pool.get', { name: 'p-basic' })).error.code).toBe('POOL_NOT_FOUND');
  });

  it('checks the shape first, then the name, then overlap', async () => {
    await client.request('orangery.ipam.pool.create', { name: 'p-order', cidr: '198.18.2.0/24', gateway: '198.18.2.1' });
    const bad = await client.request('orangery.ipam.pool.create', { name: 'p-order', cidr: '198.18.2.0/24', gateway: 7 });
    expect(bad.error.code).toBe('INVALID_REQUEST');
    expect(bad.error.details.field).toBe('gateway');
    const dup = await client.request('orangery.ipam.pool.create', { name: 'p-order', cidr: '198.18.2.0/25', gateway: '198.18.2.1' });
    expect(dup.error.code).toBe('POOL_EXISTS');
    const overlap = await client.request('orangery.ipam.pool.create', { name: 'p-order2', cidr: '198.18.2.128/25', gateway: '198.18.2.129' });
    expect(overlap.error.code).toBe('POOL_OVERLAP');
    expect(overlap.error.details.pool).toBe('p-order');
  });

  it('creates a /16 pool and refuses larger ones with the limit named', async () => {
    const big = await client.request('orangery.ipam.pool.create', { name: 'p-big', cidr: '198.19.0.0/16', gateway: '198.19.0.1' }, 30_000);
    expect(big.ok).toBe(true);
    expect((await client.request('orangery.ipam.pool.get', { name: 'p-big' })).data.size).toBe(65_533);
    const tooBig = await client.request('orangery.ipam.pool.create', { name: 'p-huge', cidr: '198.16.0.0/15', gateway: '198.16.0.1' });
    expect(tooBig.error.code).toBe('INVALID_REQUEST');
    expect(tooBig.error.details).toMatchObject({ field: 'cidr', limit: '/16' });
    expect((await client.request('orangery.ipam.pool.delete', { name: 'p-big' })).ok).toBe(true);
  });
});

describe('allocation under concurrency, three replicas', () => {
  it('1,200 owners each asking twice at once get unique addresses, the same one both times', async () => {
    await client.request('orangery.ipam.pool.create', { name: 'p-burst', cidr: '198.18.8.0/21', gateway: '198.18.8.1' });
    const owners = Array.from({ length: 1200 }, (_, i) => owner(`burst-${i % 40}`, Math.floor(i / 40)));
    const replies = await Promise.all(owners.flatMap((o) => [0, 1].map(() => client.request('orangery.ipam.allocate', { pool: 'p-burst', owner: o }, 60_000))));
    for (const r of replies) expect(r.ok, JSON.stringify(r)).toBe(true);
    for (let i = 0; i < owners.length; i++) expect(replies[2 * i].data.ip).toBe(replies[2 * i + 1].data.ip);
    const ips = new Set(replies.map((r) => r.data.ip));
    expect(ips.size).toBe(owners.length);
    const pool = await client.request('orangery.ipam.pool.get', { name: 'p-burst' });
    expect(pool.data.used).toBe(owners.length);
    const [[row]] = (await db.query("SELECT COUNT(*) AS n FROM ipam_audit WHERE action = 'allocate' AND pool_name = 'p-burst'")) as never as [[{ n: number }]];
    expect(Number(row.n)).toBe(owners.length);
  });

  it('a replica killed with SIGKILL mid-burst loses nothing: retries succeed, no duplicate, no leak', async () => {
    await client.request('orangery.ipam.pool.create', { name: 'p-kill', cidr: '198.18.16.0/22', gateway: '198.18.16.1' });
    const owners = Array.from({ length: 600 }, (_, i) => owner('kill', i));
    const burst = Promise.all(owners.map((o) => client.requestWithRetry('orangery.ipam.allocate', { pool: 'p-kill', owner: o }, 20, 3_000)));
    await new Promise((r) => setTimeout(r, 150));
    const victim = replicas.shift()!;
    await victim.kill9();
    const replies = await burst;
    for (const r of replies) expect(r.ok, JSON.stringify(r)).toBe(true);
    expect(new Set(replies.map((r) => r.data.ip)).size).toBe(owners.length);
    // Every live address belongs to exactly one of the owners, and each owner holds one.
    const [rows] = (await db.query(
      "SELECT live_owner FROM ipam_address a JOIN ipam_pool p ON p.id = a.pool_id WHERE p.name = 'p-kill' AND live_owner IS NOT NULL",
    )) as never as [{ live_owner: string }[]];
    expect(rows.length).toBe(owners.length);
    expect(new Set(rows.map((r) => r.live_owner)).size).toBe(owners.length);
    // A second round from the same owners changes nothing (idempotent).
    const again = await Promise.all(owners.map((o) => client.requestWithRetry('orangery.ipam.allocate', { pool: 'p-kill', owner: o })));
    expect(again.map((r) => r.data.ip)).toEqual(replies.map((r) => r.data.ip));
    // Every committed allocation has its event in the stream: the outbox sweeper publishes
    // what the killed replica committed but never published (within its 10 s lag).
    const killIps = await waitFor(
      'an ip.allocated event for every allocation',
      async () => {
        const events = await client.events('orangery.evt.ip.allocated');
        const ips = new Set(events.filter((e) => e.data.pool === 'p-kill').map((e) => e.data.ip));
        return ips.size === owners.length ? ips : undefined;
      },
      40_000,
      1_000,
    );
    expect(killIps.size).toBe(owners.length);
    // ... and each exactly once: JetStream's duplicate window drops the sweeper's copies
    const events = await client.events('orangery.evt.ip.allocated');
    const ids = events.filter((e) => e.data.pool === 'p-kill').map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.length).toBe(owners.length);
    replicas.push(await ServiceProcess.start(dir, 'ipam', env()));
  });
});

describe('allocation rules', () => {
  it('exhaustion answers POOL_EXHAUSTED and changes nothing', async () => {
    await client.request('orangery.ipam.pool.create', { name: 'p-tiny', cidr: '198.18.3.0/29', gateway: '198.18.3.1' });
    for (let i = 0; i < 5; i++) expect((await client.request('orangery.ipam.allocate', { pool: 'p-tiny', owner: owner('tiny', i) })).ok).toBe(true);
    const before = await snapshot();
    const r = await client.request('orangery.ipam.allocate', { pool: 'p-tiny', owner: owner('tiny', 5) });
    expect(r.error.code).toBe('POOL_EXHAUSTED');
    expect(r.error.details).toMatchObject({ pool: 'p-tiny', size: 5, used: 5 });
    expect(await snapshot()).toBe(before);
  });

  it('cooldown keeps a released address from others; its owner gets it back; others get it after cooldown', async () => {
    await client.request('orangery.ipam.pool.create', { name: 'p-cool', cidr: '198.18.4.0/30', gateway: '198.18.4.1', cooldownSeconds: 2 });
    // a /30 with a gateway hands out exactly one address
    const a = await client.request('orangery.ipam.allocate', { pool: 'p-cool', owner: owner('cool', 0) });
    expect(a.data.ip).toBe('198.18.4.2');
    const released = await client.request('orangery.ipam.release', { ip: '198.18.4.2' });
    expect(released.data.state).toBe('released');
    const other = await client.request('orangery.ipam.allocate', { pool: 'p-cool', owner: owner('cool', 1) });
    expect(other.error.code).toBe('POOL_EXHAUSTED');
    const explicit = await client.request('orangery.ipam.allocate', { pool: 'p-cool', owner: owner('cool', 1), ip: '198.18.4.2' });
    expect(explicit.error.code).toBe('IP_TAKEN');
    expect((await client.request('orangery.ipam.pool.get', { name: 'p-cool' })).data).toMatchObject({ used: 0, quarantined: 1, free: 0 });
    const back = await client.request('orangery.ipam.allocate', { pool: 'p-cool', owner: owner('cool', 0) });
    expect(back.data.ip).toBe('198.18.4.2');
    await client.request('orangery.ipam.release', { owner: owner('cool', 0) });
    await new Promise((r) => setTimeout(r, 2_100));
    const later = await client.request('orangery.ipam.allocate', { pool: 'p-cool', owner: owner('cool', 1) });
    expect(later.data.ip).toBe('198.18.4.2');
    // the former owner's affinity ends when someone else took it after the cooldown
    expect((await client.request('orangery.ipam.allocate', { pool: 'p-cool', owner: owner('cool', 0) })).error.code).toBe('POOL_EXHAUSTED');
  });

  it('an owner holds one live address platform-wide', async () => {
    await client.request('orangery.ipam.pool.create', { name: 'p-one', cidr: '198.18.5.0/28', gateway: '198.18.5.1' });
    await client.request('orangery.ipam.pool.create', { name: 'p-two', cidr: '198.18.5.16/28', gateway: '198.18.5.17' });
    const a = await client.request('orangery.ipam.allocate', { pool: 'p-one', owner: owner('single', 0) });
    const b = await client.request('orangery.ipam.allocate', { pool: 'p-two', owner: owner('single', 0) });
    expect(b.error.code).toBe('OWNER_HAS_IP');
    expect(b.error.details).toMatchObject({ pool: 'p-one', ip: a.data.ip });
    const c = await client.request('orangery.ipam.allocate', { pool: 'p-one', owner: owner('single', 0), ip: '198.18.5.9' });
    expect(c.error.code).toBe('OWNER_HAS_IP');
  });

  it('bind moves a live address between instances of its slot and hosts; get and release follow', async () => {
    await client.request('orangery.ipam.pool.create', { name: 'p-bind', cidr: '198.18.6.0/28', gateway: '198.18.6.1' });
    const a = await client.request('orangery.ipam.allocate', { pool: 'p-bind', owner: owner('bind', 3) });
    const b1 = await client.request('orangery.ipam.bind', { ip: a.data.ip, instanceId: 'test:bind:3', backend: 'docker', host: 'h1' });
    expect(b1.data).toMatchObject({ state: 'bound', host: 'h1', backend: 'docker', mac: a.data.mac });
    const b2 = await client.request('orangery.ipam.bind', { ip: a.data.ip, instanceId: 'test:bind:3', backend: 'vmware', host: 'esx-1' });
    expect(b2.data).toMatchObject({ state: 'bound', host: 'esx-1', backend: 'vmware', ip: a.data.ip, mac: a.data.mac });
    expect((await client.request('orangery.ipam.get', { owner: owner('bind', 3) })).data).toMatchObject({ host: 'esx-1' });
    const rel = await client.request('orangery.ipam.release', { owner: owner('bind', 3) });
    expect(rel.data.state).toBe('released');
    expect((await client.request('orangery.ipam.release', { ip: a.data.ip })).data.state).toBe('released');
    expect((await client.request('orangery.ipam.bind', { ip: a.data.ip, instanceId: 'test:bind:3', backend: 'docker', host: 'h1' })).error.code).toBe(
      'NOT_FOUND',
    );
    expect((await client.request('orangery.ipam.get', { ip: '198.18.6.14' })).error.code).toBe('NOT_FOUND');
    expect((await client.request('orangery.ipam.release', { owner: owner('nobody', 0) })).error.code).toBe('NOT_FOUND');
  });

  it('publishes ip events as CloudEvents with the trace context', async () => {
    await client.request('orangery.ipam.pool.create', { name: 'p-evt', cidr: '198.18.7.0/29', gateway: '198.18.7.1' });
    const a = await client.request('orangery.ipam.allocate', { pool: 'p-evt', owner: owner('evt', 0) });
    await client.request('orangery.ipam.bind', { ip: a.data.ip, instanceId: 'test:evt:0', backend: 'docker', host: 'h1' });
    await client.request('orangery.ipam.release', { ip: a.data.ip });
    const events = (await client.events('orangery.evt.ip.>')).filter((e) => e.subject === a.data.ip);
    expect(events.map((e) => e.type)).toEqual(['io.orangery.ip.allocated', 'io.orangery.ip.bound', 'io.orangery.ip.released']);
    for (const e of events) {
      expect(e).toMatchObject({ specversion: '1.0', source: 'orangery/ipam', subject: a.data.ip, datacontenttype: 'application/json' });
      expect(e.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
      expect(e.data.ip).toBe(a.data.ip);
    }
  });
});

describe('bad input', () => {
  const cases: [string, string, unknown, string][] = [
    ['not JSON', 'orangery.ipam.allocate', '{nope', ''],
    ['a JSON array', 'orangery.ipam.allocate', '[1,2]', ''],
    ['a missing owner', 'orangery.ipam.allocate', { pool: 'p-bad' }, 'owner'],
    ['a string slot', 'orangery.ipam.allocate', { pool: 'p-bad', owner: { env: 'test', app: 'x', slot: '1' } }, 'owner.slot'],
    ['a slot out of range', 'orangery.ipam.allocate', { pool: 'p-bad', owner: { env: 'test', app: 'x', slot: 10000 } }, 'owner.slot'],
    ['an upper-case app', 'orangery.ipam.allocate', { pool: 'p-bad', owner: { env: 'test', app: 'X', slot: 1 } }, 'owner.app'],
    ['an unknown field', 'orangery.ipam.allocate', { pool: 'p-bad', owner: { env: 'test', app: 'x', slot: 1 }, color: 'red' }, 'color'],
    ['a malformed ip', 'orangery.ipam.allocate', { pool: 'p-bad', owner: { env: 'test', app: 'x', slot: 1 }, ip: '198.18.9.300' }, 'ip'],
    ['a bad backend', 'orangery.ipam.bind', { ip: '198.18.9.2', instanceId: 'test:x:1', backend: 'kvm', host: 'h1' }, 'backend'],
    ['an empty instance id', 'orangery.ipam.bind', { ip: '198.18.9.2', instanceId: '', backend: 'docker', host: 'h1' }, 'instanceId'],
    ['both ip and owner', 'orangery.ipam.release', { ip: '198.18.9.2', owner: { env: 'test', app: 'x', slot: 1 } }, 'ip'],
    ['neither ip nor owner', 'orangery.ipam.get', {}, 'ip'],
    ['a cidr with host bits', 'orangery.ipam.pool.create', { name: 'p-bad2', cidr: '198.18.10.1/24', gateway: '198.18.10.1' }, 'cidr'],
    ['a vlan out of range', 'orangery.ipam.pool.create', { name: 'p-bad2', cidr: '198.18.10.0/24', gateway: '198.18.10.1', vlan: 4095 }, 'vlan'],
    [
      'a reserved range backwards',
      'orangery.ipam.pool.create',
      { name: 'p-bad2', cidr: '198.18.10.0/24', gateway: '198.18.10.1', reserved: ['198.18.10.9-198.18.10.3'] },
      'reserved',
    ],
    ['a gateway outside', 'orangery.ipam.pool.create', { name: 'p-bad2', cidr: '198.18.10.0/24', gateway: '198.18.11.1' }, 'gateway'],
    [
      'a negative cooldown',
      'orangery.ipam.pool.create',
      { name: 'p-bad2', cidr: '198.18.10.0/24', gateway: '198.18.10.1', cooldownSeconds: -1 },
      'cooldownSeconds',
    ],
  ];

  it.each(cases)('%s gets INVALID_REQUEST naming the field and changes nothing', async (_label, subject, body, field) => {
    await client.request('orangery.ipam.pool.create', { name: 'p-bad', cidr: '198.18.9.0/28', gateway: '198.18.9.1' });
    const before = await snapshot();
    const r = await client.request(subject, body);
    expect(r.ok).toBe(false);
    expect(r.error.code).toBe('INVALID_REQUEST');
    expect(r.error.details.field).toBe(field);
    expect(typeof r.error.message).toBe('string');
    expect(await snapshot()).toBe(before);
  });

  it('every replica is still alive after all that', () => {
    for (const r of replicas) expect(r.child.exitCode).toBeNull();
  });
});

describe('process lifecycle', () => {
  it('exits 2 with a one-line reason when its configuration is unusable', async () => {
    const bad = ServiceProcess.spawn(undefined, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: 'postgres://x@y/z' });
    expect(await bad.exited()).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/ORANGERY_DB_URL/);
  });

  it('shuts down cleanly on SIGTERM with exit code 0', async () => {
    const extra = await ServiceProcess.start(dir, 'ipam', env());
    expect(await extra.terminate()).toBe(0);
    expect(extra.hasLog('stopped')).toBe(true);
  });
});

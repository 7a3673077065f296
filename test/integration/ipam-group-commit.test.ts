import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, type Connection } from 'mysql2/promise';
import { ContractClient, HarnessDir, NatsServer, PrivateMariadb, ServiceProcess, waitFor } from '@orangery/testing';

// Group commit of single requests (docs/ipam.md "Group commit"), on three ipam replicas (real
// processes), a private NATS and a private MariaDB (killed in the last test), through the
// public single subjects only: CONTRACT.md's allocation rules hold under many concurrent
// singles, and a database failure under a group changes nothing half.
const dir = new HarnessDir('ipam-group');
let nats: NatsServer;
let mariadb: PrivateMariadb;
let db: Connection | undefined;
const clients: ContractClient[] = [];
const replicas: ServiceProcess[] = [];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyReply = any;
const owner = (app: string, slot: number) => ({ env: 'test', app, slot });
const keyOf = (o: { env: string; app: string; slot: number }) => `${o.env}:${o.app}:${o.slot}`;
const client = (i: number) => clients[i % clients.length]!;

async function connect(): Promise<Connection> {
  const u = new URL(mariadb.url);
  return createConnection({ host: u.hostname, port: Number(u.port), user: u.username, password: u.password, database: u.pathname.slice(1) });
}

async function rows<T>(sql: string, params: unknown[] = []): Promise<T[]> {
  db ??= await connect();
  const [r] = await db.query(sql, params);
  return r as T[];
}

beforeAll(async () => {
  [nats, mariadb] = await Promise.all([NatsServer.start(dir), PrivateMariadb.start(dir)]);
  // small groups and two in flight, so that many groups of several requests form
  const env = { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: mariadb.url, ORANGERY_IPAM_GROUP_MAX: '16', ORANGERY_IPAM_GROUP_IN_FLIGHT: '2' };
  replicas.push(...(await Promise.all([0, 1, 2].map(() => ServiceProcess.start(dir, 'ipam', env)))));
  for (let i = 0; i < 6; i++) clients.push(await ContractClient.connect(nats.url));
  for (const [name, cidr] of [
    ['g-main', '198.18.40.0/22'],
    ['g-other', '198.18.44.0/24'],
    ['g-cool', '198.18.45.0/29'],
    ['g-fail', '198.18.46.0/23'],
  ] as const) {
    const r = await clients[0]!.request('orangery.ipam.pool.create', { name, cidr, gateway: cidr.replace(/0\/\d+$/, '1'), cooldownSeconds: 600 });
    expect(r.ok).toBe(true);
  }
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await db?.end().catch(() => undefined);
  await dir.cleanup();
});

describe('many concurrent singles on three replicas, grouped', () => {
  const OWNERS = 400;
  const owners = Array.from({ length: OWNERS }, (_, i) => owner(`grp-${i % 5}`, Math.floor(i / 5)));

  it('gives each owner one address, none twice, the same one when asked twice at once; another pool is OWNER_HAS_IP', async () => {
    // every owner asked twice in g-main, at once, from different clients (so different
    // replicas and groups), and every tenth also in g-other
    const reqs = owners.flatMap((_, i) => [{ i, pool: 'g-main' }, { i, pool: 'g-main' }, ...(i % 10 === 0 ? [{ i, pool: 'g-other' }] : [])]);
    const replies: AnyReply[] = await Promise.all(
      reqs.map((r, k) => client(k).request('orangery.ipam.allocate', { pool: r.pool, owner: owners[r.i] }, 30_000)),
    );
    const main = new Map<number, string[]>();
    reqs.forEach((r, k) => {
      const reply = replies[k];
      if (r.pool === 'g-other') {
        // a second live address for an owner is refused, whichever pool's request came first
        if (reply.ok) expect(reply.data.pool).toBe('g-other');
        else expect(reply.error.code).toBe('OWNER_HAS_IP');
        return;
      }
      main.set(r.i, [...(main.get(r.i) ?? []), reply.ok ? reply.data.ip : reply.error.code]);
    });
    const live = await rows<{ ip: number; live_owner: string; pool: string }>(
      'SELECT a.ip, a.live_owner, p.name AS pool FROM ipam_address a JOIN ipam_pool p ON p.id = a.pool_id WHERE a.live_owner IS NOT NULL',
    );
    expect(new Set(live.map((r) => r.live_owner)).size).toBe(live.length); // one live address per owner
    expect(new Set(live.map((r) => r.ip)).size).toBe(live.length); // no address twice
    expect(live).toHaveLength(OWNERS);
    const liveOf = new Map(live.map((r) => [r.live_owner, r]));
    for (const [i, answers] of main) {
      const held = liveOf.get(keyOf(owners[i]!))!;
      if (held.pool === 'g-other') {
        // its g-other request won: both g-main requests were OWNER_HAS_IP
        expect(answers).toEqual(['OWNER_HAS_IP', 'OWNER_HAS_IP']);
      } else {
        // asked twice at once: the same address both times, the one it holds
        const ip = [(held.ip >>> 24) & 255, (held.ip >>> 16) & 255, (held.ip >>> 8) & 255, held.ip & 255].join('.');
        expect(answers).toEqual([ip, ip]);
      }
    }
    // one allocate audit row (and event) per live address: an idempotent repeat writes nothing
    const [audits] = await rows<{ n: number }>("SELECT COUNT(*) AS n FROM ipam_audit WHERE action = 'allocate'");
    expect(Number(audits!.n)).toBe(OWNERS);
  }, 120_000);

  it('keeps the cooldown: released addresses are not handed to fresh owners, their owners get them back', async () => {
    const first = await Promise.all([0, 1, 2, 3].map((s) => client(s).request('orangery.ipam.allocate', { pool: 'g-cool', owner: owner('cool', s) })));
    expect(first.every((r: AnyReply) => r.ok)).toBe(true);
    const released = await Promise.all([0, 1, 2, 3].map((s) => client(s).request('orangery.ipam.release', { owner: owner('cool', s) })));
    expect(released.map((r: AnyReply) => r.data.state)).toEqual(['released', 'released', 'released', 'released']);
    // the pool has 5 addresses: 4 cooling down, so of 5 fresh owners only 1 gets one; the 4
    // earlier owners, asking at the same time, each get their own address back
    const again = await Promise.all([
      ...[10, 11, 12, 13, 14].map((s) => client(s).request('orangery.ipam.allocate', { pool: 'g-cool', owner: owner('cool', s) })),
      ...[0, 1, 2, 3].map((s) => client(s).request('orangery.ipam.allocate', { pool: 'g-cool', owner: owner('cool', s) })),
    ]);
    const fresh = again.slice(0, 5) as AnyReply[];
    const back = again.slice(5) as AnyReply[];
    expect(back.map((r) => r.ok && r.data.ip)).toEqual(first.map((r: AnyReply) => r.data.ip));
    const cooling = new Set(first.map((r: AnyReply) => r.data.ip));
    expect(fresh.filter((r) => r.ok).every((r) => !cooling.has(r.data.ip))).toBe(true);
    expect(fresh.filter((r) => r.ok)).toHaveLength(1);
    for (const r of fresh.filter((x) => !x.ok)) expect(r.error.code).toBe('POOL_EXHAUSTED');
  }, 60_000);

  it('binds and releases concurrently, each answered as its single', async () => {
    const some = owners.slice(0, 60);
    const gets: AnyReply[] = await Promise.all(some.map((o, k) => client(k).request('orangery.ipam.get', { owner: o })));
    const inMain = gets.filter((g) => g.ok && g.data.pool === 'g-main').map((g) => g.data);
    const binds: AnyReply[] = await Promise.all(
      inMain.map((a, k) => client(k).request('orangery.ipam.bind', { ip: a.ip, instanceId: keyOf(a.owner), backend: 'docker', host: `h${k % 3}` })),
    );
    expect(binds.every((b) => b.ok && b.data.state === 'bound')).toBe(true);
    // each released twice at once, by ip and by owner: both answer the released allocation
    const rel: AnyReply[] = await Promise.all(
      inMain.flatMap((a, k) => [client(k).request('orangery.ipam.release', { ip: a.ip }), client(k + 1).request('orangery.ipam.release', { owner: a.owner })]),
    );
    expect(rel.every((r) => r.ok && r.data.state === 'released' && r.data.instanceId === undefined)).toBe(true);
    const [n] = await rows<{ n: number }>("SELECT COUNT(*) AS n FROM ipam_audit WHERE action = 'release'");
    // one release audit per address (the second release of each changed nothing), plus the cooldown test's 4
    expect(Number(n!.n)).toBe(inMain.length + 4);
  }, 60_000);
});

describe('the database failing under groups', () => {
  it('answers every request of a group cut by the database failing UNAVAILABLE, and applies nothing of it', async () => {
    // Groups are stopped mid-transaction, deterministically: the test holds the pool's row
    // exclusively, so every group waits in its first round trip (after START TRANSACTION);
    // meanwhile the other requests queue into groups. Then MariaDB is killed: nothing of any
    // group committed, every request must get UNAVAILABLE and no address may be taken.
    const N = 240;
    const lock = await connect();
    await lock.query('START TRANSACTION');
    await lock.query("SELECT id FROM ipam_pool WHERE name = 'g-fail' FOR UPDATE");
    const os = Array.from({ length: N }, (_, i) => owner('fail', i));
    const pending = os.map((o, k) => client(k).request('orangery.ipam.allocate', { pool: 'g-fail', owner: o }, 60_000));
    await new Promise((r) => setTimeout(r, 1_500));
    await db?.end().catch(() => undefined);
    db = undefined;
    await mariadb.kill();
    await lock.end().catch(() => undefined);
    const replies: AnyReply[] = await Promise.all(pending);
    await mariadb.start();
    expect(replies.map((r) => (r.ok ? 'ok' : r.error.code))).toEqual(os.map(() => 'UNAVAILABLE'));
    expect(replies[0].error.message).toMatch(/nothing was changed/);
    await waitFor(
      'ipam to answer again',
      async () => {
        const r: AnyReply = await clients[0]!.request('orangery.ipam.get', { owner: owner('probe', 0) }, 5_000);
        return r.ok || r.error.code === 'NOT_FOUND' ? true : undefined;
      },
      30_000,
      250,
    );
    const [held] = await rows<{ n: number }>(
      "SELECT COUNT(*) AS n FROM ipam_address a JOIN ipam_pool p ON p.id = a.pool_id WHERE p.name = 'g-fail' AND a.state <> 'free'",
    );
    expect(Number(held!.n)).toBe(0);
    const [audits] = await rows<{ n: number }>("SELECT COUNT(*) AS n FROM ipam_audit WHERE pool_name = 'g-fail' AND action = 'allocate'");
    expect(Number(audits!.n)).toBe(0);
    // and the same requests again now succeed, each owner its own address
    const again: AnyReply[] = await Promise.all(os.map((o, k) => client(k).request('orangery.ipam.allocate', { pool: 'g-fail', owner: o }, 30_000)));
    expect(again.every((r) => r.ok)).toBe(true);
    expect(new Set(again.map((r) => r.data.ip)).size).toBe(N);
    expect(replicas.every((p) => p.child.exitCode === null)).toBe(true);
  }, 180_000);
});

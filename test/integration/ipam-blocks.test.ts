import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, type Connection } from 'mysql2/promise';
import { PortError } from '@orangery/contracts';
import { IpamBlocksClient } from '@orangery/messaging';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ServiceProcess } from '@orangery/testing';

// Swarm nodes' address blocks (docs/ipam.md "Blocks", issue 16) on three ipam replicas (real
// processes), a private NATS and a fresh MariaDB, through the public subjects only. Requests
// are spread over the replicas by the queue group, so concurrent ones really race.
const dir = new HarnessDir('ipam-blocks');
let nats: NatsServer;
let dbUrl: string;
let db: Connection;
const clients: ContractClient[] = [];

const env = () => ({ ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
const owner = (app: string, slot: number, env = 'test') => ({ env, app, slot });
const instanceOf = (o: { env: string; app: string; slot: number }) => `${o.env}:${o.app}:${o.slot}`;
const ipInt = (ip: string) => ip.split('.').reduce((n, b) => n * 256 + Number(b), 0);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyReply = any;

const req = (subject: string, body: unknown, i = 0): Promise<AnyReply> => clients[i % clients.length]!.request(subject, body, 60_000);
const ok = (r: AnyReply) => {
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return r.data;
};
const refused = (r: AnyReply, code: string, details?: Record<string, unknown>) => {
  expect(r.ok, JSON.stringify(r)).toBe(false);
  expect(r.error.code, JSON.stringify(r)).toBe(code);
  if (details) expect(r.error.details).toMatchObject(details);
  return r.error;
};

async function rows<T>(sql: string, params: unknown[] = []): Promise<T[]> {
  const [r] = await db.query(sql, params);
  return r as T[];
}

async function snapshot(): Promise<string> {
  return JSON.stringify({
    addr: await rows('SELECT ip, state, owner_key, live_owner, available_at, instance_id, backend, host FROM ipam_address ORDER BY ip'),
    blocks: await rows('SELECT pool_id, host, first_ip, last_ip FROM ipam_block ORDER BY first_ip'),
    audit: await rows('SELECT COUNT(*) AS n FROM ipam_audit'),
  });
}

const createPool = async (name: string, cidr: string, extra: Record<string, unknown> = {}) => {
  const gateway = cidr.replace(/\.0\/\d+$/, '.1');
  return ok(await req('orangery.ipam.pool.create', { name, cidr, gateway, ...extra }));
};

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('ipam_blocks');
  await Promise.all([0, 1, 2].map(() => ServiceProcess.start(dir, 'ipam', env())));
  for (let i = 0; i < 3; i++) clients.push(await ContractClient.connect(nats.url));
  const u = new URL(dbUrl);
  db = await createConnection({ host: u.hostname, port: Number(u.port), user: u.username, password: u.password, database: u.pathname.slice(1) });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await db?.end();
  await dir.cleanup();
});

describe('block.reserve under concurrency, three replicas', () => {
  it('20 hosts (each asking twice) and 200 singles at once: no overlap, no single inside a block, one block per host', async () => {
    await createPool('p-race', '198.18.16.0/22', { reserved: ['198.18.17.0-198.18.17.3'] });
    const sizes = [4, 8, 16, 32];
    const hosts = Array.from({ length: 20 }, (_, i) => ({ host: `swarm-n${i}`, size: sizes[i % sizes.length]! }));
    const singles = Array.from({ length: 200 }, (_, i) => owner('single', i, 'prod'));
    const reserveReqs = [...hosts, ...hosts].map((h, i) => req('orangery.ipam.block.reserve', { pool: 'p-race', ...h }, i));
    const allocReqs = singles.map((o, i) => req('orangery.ipam.allocate', { pool: 'p-race', owner: o }, i));
    const [reserved, allocated] = await Promise.all([Promise.all(reserveReqs), Promise.all(allocReqs)]);
    const blocks = reserved.map(ok);
    // Both requests of a host got the same block (idempotent), sized as the first asked.
    hosts.forEach((h, i) => {
      expect(blocks[i + hosts.length]).toEqual(blocks[i]);
      expect(blocks[i]).toMatchObject({ pool: 'p-race', host: h.host, size: h.size, prefixLength: 22, gateway: '198.18.16.1' });
    });
    const ranges = blocks.slice(0, hosts.length).map((b: AnyReply) => ({ host: b.host, first: ipInt(b.first), last: ipInt(b.last), size: b.size }));
    for (const r of ranges) {
      expect(r.last - r.first + 1).toBe(r.size);
      expect(r.first % r.size, `${r.host} aligned`).toBe(0);
    }
    const sorted = [...ranges].sort((a, b) => a.first - b.first);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.first, `${sorted[i - 1]!.host} / ${sorted[i]!.host}`).toBeGreaterThan(sorted[i - 1]!.last);
    // Never the network, broadcast, gateway or a reserved address.
    for (const r of ranges) {
      for (const bad of ['198.18.16.0', '198.18.16.1', '198.18.19.255', '198.18.17.0', '198.18.17.3'].map(ipInt)) {
        expect(bad < r.first || bad > r.last, `${r.host} holds ${bad}`).toBe(true);
      }
    }
    const singleIps = allocated.map(ok).map((a: AnyReply) => ipInt(a.ip));
    expect(new Set(singleIps).size).toBe(200);
    for (const ip of singleIps) expect(ranges.some((r) => ip >= r.first && ip <= r.last)).toBe(false);
    const blocked = ranges.reduce((n, r) => n + r.size, 0);
    expect(ok(await req('orangery.ipam.pool.get', { name: 'p-race' }))).toMatchObject({
      size: 1024 - 3 - 4,
      used: 200,
      quarantined: 0,
      blocked,
      free: 1017 - 200 - blocked,
    });
    // The database agrees: one row per host, every block address blocked.
    expect((await rows<{ n: number }>('SELECT COUNT(*) AS n FROM ipam_block'))[0]!.n).toBe(20);
    const listed = ok(await req('orangery.ipam.block.list', { pool: 'p-race' })).blocks;
    expect(listed.map((b: AnyReply) => b.host).sort()).toEqual(hosts.map((h) => h.host).sort());
    // More singles than the rest of the pool: the last ones are POOL_EXHAUSTED, never a block address.
    const more = await Promise.all(
      Array.from({ length: 1017 - 200 - blocked + 5 }, (_, i) => req('orangery.ipam.allocate', { pool: 'p-race', owner: owner('more', i, 'prod') }, i)),
    );
    const moreIps = more.filter((r) => r.ok).map((r) => ipInt(r.data.ip));
    expect(moreIps).toHaveLength(1017 - 200 - blocked);
    expect(more.filter((r) => !r.ok).map((r) => r.error.code)).toEqual([
      'POOL_EXHAUSTED',
      'POOL_EXHAUSTED',
      'POOL_EXHAUSTED',
      'POOL_EXHAUSTED',
      'POOL_EXHAUSTED',
    ]);
    for (const ip of moreIps) expect(ranges.some((r) => ip >= r.first && ip <= r.last)).toBe(false);
    // A new block when nothing aligned is free: POOL_EXHAUSTED.
    refused(await req('orangery.ipam.block.reserve', { pool: 'p-race', host: 'swarm-late', size: 4 }), 'POOL_EXHAUSTED', { pool: 'p-race', blockSize: 4 });
  });
});

describe('block rules through the public subjects', () => {
  it('bind, move, unbind, plain release and get of block addresses; events ip.bound / ip.released', async () => {
    await createPool('p-rules', '198.18.24.0/26', { cooldownSeconds: 600 });
    const a = ok(await req('orangery.ipam.block.reserve', { pool: 'p-rules', host: 'sw-a', size: 8 }));
    const b = ok(await req('orangery.ipam.block.reserve', { pool: 'p-rules', host: 'sw-b', size: 8 }, 1));
    expect([a.cidr, b.cidr]).toEqual(['198.18.24.8/29', '198.18.24.16/29']);
    const web0 = owner('web', 0);
    const bound = ok(await req('orangery.ipam.block.bind', { pool: 'p-rules', ip: '198.18.24.9', owner: web0, instanceId: instanceOf(web0), host: 'sw-a' }));
    expect(bound).toMatchObject({ ip: '198.18.24.9', state: 'bound', backend: 'swarm', host: 'sw-a', owner: web0, mac: '02:4f:c6:12:18:09' });
    expect(ok(await req('orangery.ipam.get', { owner: web0 }, 2))).toEqual(bound);
    // Idempotent: the same bind changes nothing.
    const auditBefore = (await rows<{ n: number }>('SELECT COUNT(*) AS n FROM ipam_audit'))[0]!.n;
    expect(
      ok(await req('orangery.ipam.block.bind', { pool: 'p-rules', ip: '198.18.24.9', owner: web0, instanceId: instanceOf(web0), host: 'sw-a' }, 1)),
    ).toEqual(bound);
    expect((await rows<{ n: number }>('SELECT COUNT(*) AS n FROM ipam_audit'))[0]!.n).toBe(auditBefore);
    // Allocate never returns a swarm task's block address (single and batch); a late unbind
    // naming another instance frees nothing.
    const inBlock = { pool: 'p-rules', ip: '198.18.24.9', block: { host: 'sw-a', cidr: '198.18.24.8/29' } };
    refused(await req('orangery.ipam.allocate', { pool: 'p-rules', owner: web0 }), 'OWNER_HAS_IP', inBlock);
    const [item] = ok(await req('orangery.ipam.allocate.batch', { items: [{ pool: 'p-rules', owner: web0 }] }, 1)).results;
    expect(item).toMatchObject({ ok: false, error: { code: 'OWNER_HAS_IP', details: inBlock } });
    expect(ok(await req('orangery.ipam.block.unbind', { ip: '198.18.24.9', instanceId: 'test:web:9' }, 2))).toEqual(bound);
    expect((await rows<{ n: number }>('SELECT COUNT(*) AS n FROM ipam_audit'))[0]!.n).toBe(auditBefore);
    // The task moves to sw-b: its old address goes in the same transaction.
    const moved = ok(
      await req('orangery.ipam.block.bind', { pool: 'p-rules', ip: '198.18.24.20', owner: web0, instanceId: instanceOf(web0), host: 'sw-b' }, 2),
    );
    expect(moved).toMatchObject({ ip: '198.18.24.20', host: 'sw-b' });
    expect(ok(await req('orangery.ipam.get', { ip: '198.18.24.9' }))).toMatchObject({ state: 'released', owner: web0 });
    expect(ok(await req('orangery.ipam.pool.get', { name: 'p-rules' }))).toMatchObject({ used: 1, blocked: 15, quarantined: 0 });
    // Unbind: released, stays in the block; idempotent.
    const released = ok(await req('orangery.ipam.block.unbind', { ip: '198.18.24.20' }));
    expect(released).toMatchObject({ ip: '198.18.24.20', state: 'released' });
    expect(ok(await req('orangery.ipam.block.unbind', { ip: '198.18.24.20' }, 1))).toEqual(released);
    // Plain release of a bound block address does the same.
    const web1 = owner('web', 1);
    ok(await req('orangery.ipam.block.bind', { pool: 'p-rules', ip: '198.18.24.10', owner: web1, instanceId: instanceOf(web1), host: 'sw-a' }));
    expect(ok(await req('orangery.ipam.release', { owner: web1 }, 2))).toMatchObject({ ip: '198.18.24.10', state: 'released' });
    expect(ok(await req('orangery.ipam.pool.get', { name: 'p-rules' }))).toMatchObject({ used: 0, blocked: 16, quarantined: 0 });
    // A plain allocate for that owner never gets a block address back (no affinity inside blocks).
    const single = ok(await req('orangery.ipam.allocate', { pool: 'p-rules', owner: web1 }));
    expect(ipInt(single.ip) < ipInt('198.18.24.8') || ipInt(single.ip) > ipInt('198.18.24.23')).toBe(true);
    refused(await req('orangery.ipam.allocate', { pool: 'p-rules', owner: owner('x', 0), ip: '198.18.24.12' }), 'IP_TAKEN', {
      ip: '198.18.24.12',
      block: { host: 'sw-a', cidr: '198.18.24.8/29' },
    });
    const batched = ok(await req('orangery.ipam.allocate.batch', { items: [{ pool: 'p-rules', owner: owner('x', 0), ip: '198.18.24.12' }] }));
    expect(batched.results[0]).toMatchObject({ ok: false, error: { code: 'IP_TAKEN', details: { block: { host: 'sw-a', cidr: '198.18.24.8/29' } } } });
    // A plain bind may not move a task's block address off its node; swarm outside blocks binds as before.
    const web2 = owner('web', 2);
    ok(await req('orangery.ipam.block.bind', { pool: 'p-rules', ip: '198.18.24.11', owner: web2, instanceId: instanceOf(web2), host: 'sw-a' }));
    const beforePlainBind = await snapshot();
    refused(await req('orangery.ipam.bind', { ip: '198.18.24.11', instanceId: instanceOf(web2), backend: 'docker', host: 'h1' }), 'NOT_IN_BLOCK', {
      host: 'sw-a',
    });
    const batch = ok(await req('orangery.ipam.bind.batch', { items: [{ ip: '198.18.24.11', instanceId: instanceOf(web2), backend: 'swarm', host: 'sw-b' }] }));
    expect(batch.results[0]).toMatchObject({ ok: false, error: { code: 'NOT_IN_BLOCK' } });
    expect(await snapshot()).toBe(beforePlainBind);
    expect(ok(await req('orangery.ipam.bind', { ip: single.ip, instanceId: instanceOf(web1), backend: 'swarm', host: 'sw-z' }))).toMatchObject({
      backend: 'swarm',
      host: 'sw-z',
    });
    ok(await req('orangery.ipam.block.unbind', { ip: '198.18.24.11' }));
    // Owner holding an address outside blocks: OWNER_HAS_IP.
    refused(
      await req('orangery.ipam.block.bind', { pool: 'p-rules', ip: '198.18.24.11', owner: web1, instanceId: instanceOf(web1), host: 'sw-a' }),
      'OWNER_HAS_IP',
      {
        ip: single.ip,
      },
    );
    // Events, in order, for the addresses above.
    const events = (await clients[0]!.events('orangery.evt.ip.>')).filter((e) => e.data.pool === 'p-rules');
    const of = (ip: string) => events.filter((e) => e.subject === ip).map((e) => e.type);
    expect(of('198.18.24.9')).toEqual(['io.orangery.ip.bound', 'io.orangery.ip.released']);
    expect(of('198.18.24.20')).toEqual(['io.orangery.ip.bound', 'io.orangery.ip.released']);
    expect(of('198.18.24.10')).toEqual(['io.orangery.ip.bound', 'io.orangery.ip.released']);
    expect(events.find((e) => e.subject === '198.18.24.20' && e.type === 'io.orangery.ip.bound')!.data).toEqual(moved);
    expect(
      (await rows<{ action: string }>("SELECT action FROM ipam_audit WHERE pool_name = 'p-rules' AND action LIKE 'block.%' ORDER BY id")).map((r) => r.action),
    ).toEqual(['block.reserve', 'block.reserve', 'block.bind', 'block.unbind', 'block.bind', 'block.unbind', 'block.bind', 'block.bind', 'block.unbind']);
  });

  it('block.release: POOL_IN_USE while bound; then addresses return with their cooldown; pool.delete waits for blocks', async () => {
    await createPool('p-rel', '198.18.25.0/27', { cooldownSeconds: 600 });
    ok(await req('orangery.ipam.block.reserve', { pool: 'p-rel', host: 'sw-a', size: 4 }));
    const o = owner('rel', 0);
    ok(await req('orangery.ipam.block.bind', { pool: 'p-rel', ip: '198.18.25.5', owner: o, instanceId: instanceOf(o), host: 'sw-a' }));
    refused(await req('orangery.ipam.pool.delete', { name: 'p-rel' }), 'POOL_IN_USE', { blocks: 1 });
    const before = await snapshot();
    refused(await req('orangery.ipam.block.release', { pool: 'p-rel', host: 'sw-a' }), 'POOL_IN_USE', { bound: 1, ips: ['198.18.25.5'] });
    expect(await snapshot()).toBe(before);
    ok(await req('orangery.ipam.block.unbind', { ip: '198.18.25.5' }));
    const gone = ok(await req('orangery.ipam.block.release', { pool: 'p-rel', host: 'sw-a' }, 1));
    expect(gone).toMatchObject({ host: 'sw-a', cidr: '198.18.25.4/30', bound: 0 });
    refused(await req('orangery.ipam.block.release', { pool: 'p-rel', host: 'sw-a' }), 'NOT_FOUND');
    // .5 is in cooldown (600 s) for everyone but its former owner; .4, .6, .7 are free again.
    expect(ok(await req('orangery.ipam.pool.get', { name: 'p-rel' }))).toMatchObject({ size: 29, used: 0, quarantined: 1, blocked: 0, free: 28 });
    refused(await req('orangery.ipam.allocate', { pool: 'p-rel', owner: owner('x', 0), ip: '198.18.25.5' }), 'IP_TAKEN', { ip: '198.18.25.5' });
    expect(ok(await req('orangery.ipam.allocate', { pool: 'p-rel', owner: owner('x', 0), ip: '198.18.25.6' })).state).toBe('allocated');
    expect(ok(await req('orangery.ipam.allocate', { pool: 'p-rel', owner: o })).ip).toBe('198.18.25.5');
    ok(await req('orangery.ipam.release', { owner: o }));
    ok(await req('orangery.ipam.release', { owner: owner('x', 0) }));
    expect(ok(await req('orangery.ipam.pool.delete', { name: 'p-rel' }))).toEqual({});
  });

  it('bad input gets a clear error and changes nothing', async () => {
    await createPool('p-bad', '198.18.26.0/27');
    ok(await req('orangery.ipam.block.reserve', { pool: 'p-bad', host: 'sw-a', size: 4 }));
    ok(await req('orangery.ipam.allocate', { pool: 'p-bad', owner: owner('bad', 0) }));
    const before = await snapshot();
    const cases: [string, unknown, string, string?][] = [
      ['orangery.ipam.block.reserve', { pool: 'p-bad', host: 'sw-b', size: 12 }, 'INVALID_REQUEST', 'size'],
      ['orangery.ipam.block.reserve', { pool: 'p-bad', host: 'sw-b', size: 8192 }, 'INVALID_REQUEST', 'size'],
      ['orangery.ipam.block.reserve', { pool: 'p-bad', host: 'sw-b', size: 2 }, 'INVALID_REQUEST', 'size'],
      ['orangery.ipam.block.reserve', { pool: 'p-bad', host: 'Bad_Host', size: 4 }, 'INVALID_REQUEST', 'host'],
      ['orangery.ipam.block.reserve', { pool: 'p-bad', host: 'sw-b', size: 4, extra: 1 }, 'INVALID_REQUEST', 'extra'],
      ['orangery.ipam.block.reserve', { pool: 'nope', host: 'sw-b', size: 4 }, 'POOL_NOT_FOUND'],
      ['orangery.ipam.block.release', { pool: 'p-bad' }, 'INVALID_REQUEST', 'host'],
      ['orangery.ipam.block.release', { pool: 'p-bad', host: 'sw-z' }, 'NOT_FOUND'],
      ['orangery.ipam.block.list', { pool: 7 }, 'INVALID_REQUEST', 'pool'],
      [
        'orangery.ipam.block.bind',
        { pool: 'p-bad', ip: '198.18.26.5', owner: owner('b', 0), instanceId: 'x', host: 'sw-a', backend: 'docker' },
        'INVALID_REQUEST',
        'backend',
      ],
      [
        'orangery.ipam.block.bind',
        { pool: 'p-bad', ip: '198.18.26.9', owner: owner('b', 0), instanceId: instanceOf(owner('b', 0)), host: 'sw-a' },
        'NOT_IN_BLOCK',
      ],
      [
        'orangery.ipam.block.bind',
        { pool: 'p-bad', ip: '198.18.26.5', owner: owner('b', 0), instanceId: instanceOf(owner('b', 0)), host: 'sw-q' },
        'NOT_IN_BLOCK',
      ],
      [
        'orangery.ipam.block.bind',
        { pool: 'p-bad', ip: '198.18.26.5', owner: owner('bad', 0), instanceId: instanceOf(owner('bad', 0)), host: 'sw-a' },
        'OWNER_HAS_IP',
      ],
      ['orangery.ipam.block.bind', { pool: 'p-bad', ip: '198.18.26.5', owner: owner('b', 0), instanceId: 'x', host: 'sw-a' }, 'INVALID_REQUEST', 'instanceId'],
      ['orangery.ipam.block.bind', { pool: 'p-bad', ip: 'x', owner: owner('b', 0), instanceId: 'x', host: 'sw-a' }, 'INVALID_REQUEST', 'ip'],
      ['orangery.ipam.block.unbind', { ip: '198.18.26.2' }, 'NOT_IN_BLOCK'],
      ['orangery.ipam.block.unbind', { ip: '198.18.26.5' }, 'NOT_FOUND'],
      ['orangery.ipam.block.unbind', {}, 'INVALID_REQUEST', 'ip'],
    ];
    for (const [subject, body, code, field] of cases) {
      const err = refused(await req(subject, body), code);
      expect(err.message.length, subject).toBeGreaterThan(10);
      if (field) expect(err.details?.field, `${subject} ${JSON.stringify(body)}`).toBe(field);
    }
    expect(await snapshot()).toBe(before);
  });
});

describe('block.bind under concurrency', () => {
  it('one ip, ten owners at once: exactly one binds it, the others get IP_TAKEN; one owner moving at once ends with one live address', async () => {
    await createPool('p-bind', '198.18.27.0/26');
    ok(await req('orangery.ipam.block.reserve', { pool: 'p-bind', host: 'sw-a', size: 16 }));
    ok(await req('orangery.ipam.block.reserve', { pool: 'p-bind', host: 'sw-b', size: 16 }, 1));
    const owners = Array.from({ length: 10 }, (_, i) => owner('race', i));
    const replies = await Promise.all(
      owners.map((o, i) => req('orangery.ipam.block.bind', { pool: 'p-bind', ip: '198.18.27.17', owner: o, instanceId: instanceOf(o), host: 'sw-a' }, i)),
    );
    expect(replies.filter((r) => r.ok)).toHaveLength(1);
    for (const r of replies.filter((x) => !x.ok)) expect(r.error.code).toBe('IP_TAKEN');
    // One owner "moving" to 8 addresses on two nodes at once: whatever the order, one live address.
    const mover = owner('mover', 0);
    const targets = ['198.18.27.20', '198.18.27.21', '198.18.27.22', '198.18.27.23', '198.18.27.36', '198.18.27.37', '198.18.27.38', '198.18.27.39'];
    const moves = await Promise.all(
      targets.map((ip, i) =>
        req(
          'orangery.ipam.block.bind',
          { pool: 'p-bind', ip, owner: mover, instanceId: instanceOf(mover), host: ipInt(ip) < ipInt('198.18.27.32') ? 'sw-a' : 'sw-b' },
          i,
        ),
      ),
    );
    for (const m of moves) ok(m);
    const live = await rows<{ ip: number }>("SELECT ip FROM ipam_address WHERE live_owner = 'test:mover:0'");
    expect(live).toHaveLength(1);
    const released = await rows<{ n: number }>("SELECT COUNT(*) AS n FROM ipam_address WHERE owner_key = 'test:mover:0' AND state = 'released'");
    expect(released[0]!.n).toBe(7);
    expect(ok(await req('orangery.ipam.pool.get', { name: 'p-bind' }))).toMatchObject({ used: 2, blocked: 30 });
  });

  it('block.release racing block.bind: either the bind lands first (release refused) or the release does (bind NOT_IN_BLOCK)', async () => {
    await createPool('p-relrace', '198.18.28.0/26');
    for (let round = 0; round < 10; round++) {
      const host = `sw-r${round}`;
      const block = ok(await req('orangery.ipam.block.reserve', { pool: 'p-relrace', host, size: 4 }, round));
      const o = owner('relrace', round);
      const [rel, bind] = await Promise.all([
        req('orangery.ipam.block.release', { pool: 'p-relrace', host }, round),
        req('orangery.ipam.block.bind', { pool: 'p-relrace', ip: block.first, owner: o, instanceId: instanceOf(o), host }, round + 1),
      ]);
      if (rel.ok) {
        refused(bind, 'NOT_IN_BLOCK');
      } else {
        refused(rel, 'POOL_IN_USE');
        ok(bind);
        ok(await req('orangery.ipam.block.unbind', { ip: block.first }));
        ok(await req('orangery.ipam.block.release', { pool: 'p-relrace', host }));
      }
    }
    expect(ok(await req('orangery.ipam.pool.get', { name: 'p-relrace' }))).toMatchObject({ used: 0, blocked: 0 });
    expect(ok(await req('orangery.ipam.block.list', { pool: 'p-relrace' })).blocks).toEqual([]);
  });
});

describe('IpamBlocksClient (libs/messaging) against the replicas', () => {
  it("does a node's life: reserve, bind, move, unbind, release; refusals as PortErrors", async () => {
    await createPool('p-client', '198.18.29.0/27');
    const blocks = new IpamBlocksClient(clients[0]!.nc);
    const a = await blocks.reserve({ pool: 'p-client', host: 'cl-a', size: 4 });
    expect(a).toMatchObject({ cidr: '198.18.29.4/30', bound: 0 });
    expect(await blocks.reserve({ pool: 'p-client', host: 'cl-a', size: 8 })).toEqual(a);
    const o = owner('cl', 0);
    expect(await blocks.bind({ pool: 'p-client', ip: '198.18.29.5', owner: o, instanceId: instanceOf(o), host: 'cl-a' })).toMatchObject({ state: 'bound' });
    expect((await blocks.list({ host: 'cl-a' })).map((b) => b.bound)).toEqual([1]);
    const outside = await blocks.bind({ pool: 'p-client', ip: '198.18.29.9', owner: o, instanceId: instanceOf(o), host: 'cl-a' }).catch((e: unknown) => e);
    expect(outside).toBeInstanceOf(PortError);
    expect(outside).toMatchObject({ code: 'NOT_IN_BLOCK' });
    await expect(blocks.release({ pool: 'p-client', host: 'cl-a' })).rejects.toMatchObject({ code: 'POOL_IN_USE', details: { bound: 1 } });
    expect(await blocks.unbind('198.18.29.5')).toMatchObject({ state: 'released' });
    expect(await blocks.unbind('198.18.29.6')).toBeUndefined(); // never bound
    expect(await blocks.release({ pool: 'p-client', host: 'cl-a' })).toMatchObject({ cidr: '198.18.29.4/30' });
    expect(await blocks.release({ pool: 'p-client', host: 'cl-a' })).toBeUndefined();
    expect(await blocks.list({ pool: 'p-client' })).toEqual([]);
  });
});

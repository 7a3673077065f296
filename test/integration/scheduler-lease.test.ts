import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise';
import type { OutboxRelay } from '@orangery/persistence';
import { parseDbUrl, SqlPool } from '@orangery/persistence';
import type { Logger } from '@orangery/telemetry';
import { MysqlSchedulerStore } from '../../services/scheduler/src/adapters/mysql-scheduler-store';
import { NotLeaderError } from '../../services/scheduler/src/domain/ports';
import {
  BlackholeProxy,
  ContractClient,
  freshDatabase,
  HarnessDir,
  NatsServer,
  PrivateMariadb,
  ScaleWatcher,
  ServiceProcess,
  SimulatedFleet,
  waitFor,
} from '@orangery/testing';

// The scheduler's leader lease (docs/scheduler.md "Leadership") with real processes on a
// real MariaDB and NATS. Replica A talks to both through a userspace proxy that can
// blackhole it: bytes stop in both directions, no FIN, no RST, so MariaDB keeps A's
// connections as alive as ever (a named lock would stay A's for hours). B talks directly.
const dir = new HarnessDir('scheduler-lease');
let nats: NatsServer;
let dbUrl: string;
let db: Connection;
let client: ContractClient;
let scale: ScaleWatcher;
let fleet: SimulatedFleet;
let dbHole: BlackholeProxy;
let natsHole: BlackholeProxy;
let a: ServiceProcess;
let b: ServiceProcess;
let c: ServiceProcess;

const schedulerEnv = (natsUrl: string, databaseUrl: string) => ({
  ORANGERY_NATS_URL: natsUrl,
  ORANGERY_DB_URL: databaseUrl,
  ORANGERY_LEADER_LEASE_SECONDS: '3',
  ORANGERY_HEARTBEAT_SECONDS: '1',
  ORANGERY_LOST_AFTER_SECONDS: '3',
  ORANGERY_FENCE_AFTER_SECONDS: '3',
  ORANGERY_FENCE_MARGIN_SECONDS: '1',
  ORANGERY_RECONCILE_SECONDS: '1',
  ORANGERY_ANTI_ENTROPY_SECONDS: '2',
  ORANGERY_AGENT_TIMEOUT_SECONDS: '3',
});

const request = (app: string, replicas: number) => ({
  env: 'test',
  app,
  replicas,
  resources: { cpu: 0.1, memoryMb: 128, heapMb: 64, diskMb: 100 },
  image: 'svc:1',
  backend: 'docker' as const,
  pool: 'sim',
  spread: 'none' as const,
});

const replicaOf = (p: ServiceProcess) => `scheduler@${hostname()}:${p.pid}`;
/** The lease holder id of a replica: its replica id and a per-start suffix. */
const holderOf = (p: ServiceProcess) => expect.stringMatching(new RegExp(`^${replicaOf(p).replace(/[.]/g, '\\.')}/[0-9a-f]{8}$`));
const count = (p: ServiceProcess, msg: string) => p.lines.filter((l) => l.includes(`"msg":"${msg}"`)).length;

async function leaseRow(): Promise<{ holder: string | null; epoch: number; counter: number }> {
  const [rows] = await db.query<RowDataPacket[]>('SELECT holder, epoch, counter FROM sched_leader WHERE id = 1');
  return { holder: rows[0]!['holder'] as string | null, epoch: Number(rows[0]!['epoch']), counter: Number(rows[0]!['counter']) };
}

async function outboxAfter(id: number): Promise<{ id: number; source: string }[]> {
  const [rows] = await db.query<RowDataPacket[]>('SELECT id, event_json FROM sched_outbox WHERE id > ? ORDER BY id', [id]);
  return rows.map((r) => {
    const ev = (typeof r['event_json'] === 'string' ? JSON.parse(r['event_json']) : r['event_json']) as { source: string };
    return { id: Number(r['id']), source: ev.source };
  });
}

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('sched_lease');
  client = await ContractClient.connect(nats.url);
  scale = new ScaleWatcher(client.nc);
  await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
  const pool = await client.request('orangery.ipam.pool.create', { name: 'sim', cidr: '198.19.0.0/16', gateway: '198.19.0.1', cooldownSeconds: 0 });
  expect(pool.ok, JSON.stringify(pool)).toBe(true);
  fleet = await SimulatedFleet.start({
    natsUrl: nats.url,
    hosts: 2,
    idPrefix: 'lease-',
    capacity: { cpu: 64, memoryMb: 65_536, diskMb: 1_000_000 },
    heartbeatSeconds: 1,
    replyDelayMs: (_h, cmd) => (cmd === 'create' ? 20 : 0),
    fenceAfterSeconds: 3,
  });
  const dbu = new URL(dbUrl);
  const nu = new URL(nats.url);
  dbHole = await BlackholeProxy.start({ host: dbu.hostname, port: Number(dbu.port) });
  natsHole = await BlackholeProxy.start({ host: nu.hostname, port: Number(nu.port) });
  db = await createConnection({ host: dbu.hostname, port: Number(dbu.port), user: dbu.username, password: dbu.password, database: dbu.pathname.slice(1) });
  a = await ServiceProcess.start(dir, 'scheduler', schedulerEnv(natsHole.rewrite(nats.url), dbHole.rewrite(dbUrl)));
  await a.waitForLog('leading: consuming scale requests', 30_000);
  b = await ServiceProcess.start(dir, 'scheduler', schedulerEnv(nats.url, dbUrl));
}, 120_000);

afterAll(async () => {
  scale?.close();
  await fleet?.stop();
  await client?.close();
  await db?.end();
  await dir.cleanup();
  await dbHole?.close();
  await natsHole?.close();
});

describe('scheduler leader lease', () => {
  it('a leader blackholed mid-burst (no FIN) steps down on its own clock, the standby takes over, and none of its late writes lands', async () => {
    const before = await leaseRow();
    expect(before.holder).toEqual(holderOf(a));
    expect(count(b, 'elected scheduler leader')).toBe(0);
    // the standby sees the lease renewed: it does not take over while A lives
    const c0 = before.counter;
    await waitFor('the leader to renew its lease', async () => (await leaseRow()).counter > c0 + 2, 15_000);
    expect(count(b, 'elected scheduler leader')).toBe(0);

    const burst = await Promise.all(Array.from({ length: 8 }, (_, n) => scale.publish(request(`hole-${n}`, 3))));
    await waitFor(
      'the leader to be placing',
      async () => {
        const [r] = await db.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM sched_instance WHERE app LIKE 'hole-%'");
        return Number(r[0]!['n']) > 0;
      },
      30_000,
      5,
    );
    // The database first: A goes on hearing heartbeats for a moment, so it has writes in
    // flight into the hole (host verdicts every 2 s, the burst's journal); NATS as soon as it
    // stepped down, so the host is cut off altogether.
    dbHole.blackhole();

    // A steps down on its own monotonic clock: nothing came back from the database, no FIN either
    await waitFor('A to step down', () => a.lines.find((l) => l.includes('"msg":"no longer the scheduler leader"')), 30_000);
    natsHole.blackhole();
    expect(a.lines.find((l) => l.includes('"msg":"no longer the scheduler leader"'))).toContain('the lease was not renewed in time');
    await b.waitForLog('leading: consuming scale requests', 30_000);
    const taken = await leaseRow();
    expect(taken).toMatchObject({ holder: holderOf(b), epoch: before.epoch + 1 });
    expect(dbHole.blackholed).toBe(true); // all of the above happened with A still cut off
    const [[{ last }]] = (await db.query('SELECT COALESCE(MAX(id), 0) AS last FROM sched_outbox')) as unknown as [[{ last: number }]];

    // a request published after the takeover completes, once
    const after = await scale.publish(request('after-hole', 2));
    expect((await scale.outcome(after, 60_000)).type).toBe('io.orangery.scale.completed');
    // the burst A was working on (its un-acked requests come back to B) ends with one outcome each
    const outs = await Promise.all(burst.map((id) => scale.outcome(id, 90_000)));
    expect(
      outs.map((o) => o.type),
      JSON.stringify(outs.map((o) => o.data['reason'])),
    ).toEqual(Array(8).fill('io.orangery.scale.completed'));

    // the partition heals: whatever A sent into the hole (renewals, journal writes in flight) arrives now
    const held = dbHole.heldToTarget;
    expect(held).toBeGreaterThan(0);
    dbHole.heal();
    natsHole.heal();
    // give the late bytes time to be executed: B renews a few times meanwhile
    const c1 = (await leaseRow()).counter;
    await waitFor('B to renew a few times after the heal', async () => (await leaseRow()).counter > c1 + 3, 15_000);
    const end = await leaseRow();
    expect(end).toMatchObject({ holder: holderOf(b), epoch: before.epoch + 1 });
    // A's writes that were in the hole reached the database after the takeover: refused there
    const fenced = 'a write was refused by the database: another replica leads (fenced)';
    await waitFor("A's late writes to be refused by the database", () => count(a, fenced) > 0, 15_000);
    console.log(`blackhole: ${held} bytes held toward the database; A's writes refused by the database after the heal: ${count(a, fenced)}`);
    const late = (await outboxAfter(Number(last))).filter((r) => r.source.includes(`:${a.pid}`));
    expect(late).toEqual([]);
    for (const id of [...burst, after]) expect(scale.seen(id), id).toHaveLength(1);
    const [dups] = await db.query<RowDataPacket[]>('SELECT ip, COUNT(*) AS n FROM sched_instance WHERE ip IS NOT NULL GROUP BY ip HAVING n > 1');
    expect(dups).toEqual([]);
    expect(a.child.exitCode).toBeNull();
  }, 240_000);

  it('the leader killed with SIGKILL: the healed replica takes over and a scale request completes once', async () => {
    const before = await leaseRow();
    expect(before.holder).toEqual(holderOf(b));
    const elected = count(a, 'leading: consuming scale requests');
    await b.kill9();
    await waitFor('A to lead again', () => count(a, 'leading: consuming scale requests') > elected, 30_000);
    expect(await leaseRow()).toMatchObject({ holder: holderOf(a), epoch: before.epoch + 1 });
    const id = await scale.publish(request('after-kill', 2));
    expect((await scale.outcome(id, 60_000)).type).toBe('io.orangery.scale.completed');
    expect(scale.seen(id)).toHaveLength(1);
  }, 120_000);

  it('SIGTERM frees the lease: a replica started next leads at once, without waiting a lease', async () => {
    c = await ServiceProcess.start(dir, 'scheduler', schedulerEnv(nats.url, dbUrl));
    expect(await a.terminate()).toBe(0);
    await c.waitForLog('leading: consuming scale requests', 30_000);
    expect(c.lines.find((l) => l.includes('"msg":"elected scheduler leader"'))).toContain('"previous":null');
    const id = await scale.publish(request('after-term', 1));
    expect((await scale.outcome(id, 60_000)).type).toBe('io.orangery.scale.completed');
  }, 120_000);

  it("the journal's fence on the real database: a write in a stale epoch changes nothing, also when the takeover commits while the write waits", async () => {
    await c.kill9();
    await db.query("UPDATE sched_leader SET holder = 'test-x', epoch = 100, counter = 0 WHERE id = 1");
    const sql = new SqlPool(parseDbUrl(dbUrl), 2);
    const warned: string[] = [];
    const log = {
      warn: (_f: unknown, m: string) => void warned.push(m),
      info: () => undefined,
      debug: () => undefined,
      error: () => undefined,
    } as unknown as Logger;
    const outbox = { publishCommitted: async () => undefined } as unknown as OutboxRelay;
    const store = new MysqlSchedulerStore(sql, outbox, 'orangery/scheduler/fence-test', log);
    const req = (requestId: string) => ({ requests: [{ requestId, env: 'test', app: 'fence', seq: 1, outcome: 'accepted' as const }] });
    const seen = async (id: string) =>
      ((await db.query<RowDataPacket[]>('SELECT 1 FROM sched_request WHERE request_id = ?', [id]))[0] as RowDataPacket[]).length;
    try {
      // not leading at all: nothing is sent
      await expect(store.commit(req('fence-0'))).rejects.toBeInstanceOf(NotLeaderError);
      // the replica believes it leads in 99, the row says 100: refused by the database
      store.fenceWith(() => 99);
      await expect(store.commit(req('fence-1'))).rejects.toBeInstanceOf(NotLeaderError);
      expect(warned).toContain('a write was refused by the database: another replica leads (fenced)');
      // the right epoch: written, and the lease row was written too (the fencing write)
      store.fenceWith(() => 100);
      await store.commit(req('fence-2'));
      expect(await leaseRow()).toMatchObject({ epoch: 100, counter: 1 });
      // a takeover holds the row when the write arrives, and commits while the write waits
      const other = await createConnection(dbUrl);
      try {
        await other.query('START TRANSACTION');
        await other.query("UPDATE sched_leader SET holder = 'test-y', epoch = 101, counter = 0 WHERE id = 1");
        const waiting = store.commit(req('fence-3'));
        const outcome = waiting.then(
          () => 'written',
          (e: unknown) => (e instanceof NotLeaderError ? 'refused' : String(e)),
        );
        await new Promise((r) => setTimeout(r, 300));
        await other.query('COMMIT');
        expect(await outcome).toBe('refused');
      } finally {
        await other.end();
      }
      expect([await seen('fence-0'), await seen('fence-1'), await seen('fence-2'), await seen('fence-3')]).toEqual([0, 0, 1, 0]);
      expect(await leaseRow()).toMatchObject({ holder: 'test-y', epoch: 101, counter: 0 });
    } finally {
      await sql.end();
    }
  });

  it('the database crashes under the only replica: it stops leading, and leads again in a new epoch once the database is back', async () => {
    const mdb = await PrivateMariadb.start(dir);
    const d = await ServiceProcess.start(dir, 'scheduler', schedulerEnv(nats.url, mdb.url));
    await d.waitForLog('leading: consuming scale requests', 30_000);
    const first = await ServiceProcess.start(dir, 'scheduler', schedulerEnv(nats.url, mdb.url)).then(async (p) => {
      await p.kill9(); // a standby that came and went: its lease reads change nothing
      return count(d, 'elected scheduler leader');
    });
    expect(first).toBe(1);
    await mdb.kill();
    await waitFor('the leader to stop leading', () => count(d, 'no longer the scheduler leader') > 0, 30_000);
    await mdb.start();
    await waitFor('the leader to lead again', () => count(d, 'leading: consuming scale requests') > 1, 60_000);
    const mu = new URL(mdb.url);
    const conn = await createConnection({ host: mu.hostname, port: Number(mu.port), user: mu.username, password: mu.password, database: mu.pathname.slice(1) });
    try {
      const [rows] = await conn.query<RowDataPacket[]>('SELECT holder, epoch FROM sched_leader WHERE id = 1');
      expect(rows[0]).toMatchObject({ holder: holderOf(d), epoch: 2 });
    } finally {
      await conn.end();
    }
    const id = await scale.publish(request('db-back', 1));
    expect((await scale.outcome(id, 60_000)).type).toBe('io.orangery.scale.completed');
    expect(scale.seen(id)).toHaveLength(1);
  }, 180_000);

  it('a leader frozen (SIGSTOP) past its lease is replaced; resumed, it steps down before writing anything', async () => {
    const e = await ServiceProcess.start(dir, 'scheduler', schedulerEnv(nats.url, dbUrl));
    await e.waitForLog('leading: consuming scale requests', 30_000);
    const f = await ServiceProcess.start(dir, 'scheduler', schedulerEnv(nats.url, dbUrl));
    const before = await leaseRow();
    expect(before.holder).toEqual(holderOf(e));
    // work in flight when it freezes: a burst it has started on
    const burst = await Promise.all(Array.from({ length: 4 }, (_, n) => scale.publish(request(`frozen-${n}`, 3))));
    await waitFor(
      'the leader to be placing',
      async () => {
        const [r] = await db.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM sched_instance WHERE app LIKE 'frozen-%'");
        return Number(r[0]!['n']) > 0;
      },
      30_000,
      5,
    );
    e.child.kill('SIGSTOP');
    try {
      await f.waitForLog('leading: consuming scale requests', 30_000);
      expect(await leaseRow()).toMatchObject({ holder: holderOf(f), epoch: before.epoch + 1 });
    } finally {
      e.child.kill('SIGCONT');
    }
    const [[{ last }]] = (await db.query('SELECT COALESCE(MAX(id), 0) AS last FROM sched_outbox')) as unknown as [[{ last: number }]];
    await waitFor('the resumed replica to step down', () => count(e, 'no longer the scheduler leader') > 0, 30_000);
    const outs = await Promise.all(burst.map((id) => scale.outcome(id, 90_000)));
    expect(outs.map((o) => o.type)).toEqual(Array(4).fill('io.orangery.scale.completed'));
    for (const id of burst) expect(scale.seen(id), id).toHaveLength(1);
    const c1 = (await leaseRow()).counter;
    await waitFor('the new leader to renew a few times', async () => (await leaseRow()).counter > c1 + 3, 15_000);
    expect(await leaseRow()).toMatchObject({ holder: holderOf(f), epoch: before.epoch + 1 });
    expect((await outboxAfter(Number(last))).filter((r) => r.source.includes(`:${e.pid}`))).toEqual([]);
  }, 180_000);
});

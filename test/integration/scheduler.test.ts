import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, type Connection } from 'mysql2/promise';
import { jetstreamManager } from '@nats-io/jetstream';
import { buildEvent } from '@orangery/contracts';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, SimulatedFleet, waitFor } from '@orangery/testing';

// The scheduler as real processes on real NATS (JetStream) and MariaDB, with a real ipam,
// and a fleet of simulated agents (libs/testing) that answer the agent contract. The lab
// test (scheduler-lab.test.ts) does the same with real docker-agents and containers.
const dir = new HarnessDir('scheduler');
let nats: NatsServer;
let dbUrl: string;
let db: Connection;
let client: ContractClient;
let scale: ScaleWatcher;
let fleet: SimulatedFleet;
const schedulers: ServiceProcess[] = [];
/** hosts that neither heartbeat nor answer (a dead server, or one cut from the network) */
const silenced = new Set<string>();
const HOSTS = 4;
const CAPACITY = { cpu: 8, memoryMb: 16_384, diskMb: 100_000 };

const schedulerEnv = () => ({
  ORANGERY_NATS_URL: nats.url,
  ORANGERY_DB_URL: dbUrl,
  ORANGERY_HEARTBEAT_SECONDS: '1',
  ORANGERY_LOST_AFTER_SECONDS: '3',
  ORANGERY_FENCE_AFTER_SECONDS: '3',
  ORANGERY_FENCE_MARGIN_SECONDS: '1',
  ORANGERY_FAILED_GRACE_SECONDS: '1',
  ORANGERY_RECONCILE_SECONDS: '1',
  ORANGERY_ANTI_ENTROPY_SECONDS: '2',
  ORANGERY_AGENT_TIMEOUT_SECONDS: '3',
});

const small = { cpu: 1, memoryMb: 512, heapMb: 256, diskMb: 1_000 };
const request = (app: string, replicas: number, extra: Record<string, unknown> = {}) => ({
  env: 'test',
  app,
  replicas,
  resources: small,
  image: 'svc:1',
  backend: 'docker' as const,
  pool: 'sim',
  spread: 'host' as const,
  ...extra,
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function instances(app?: string): Promise<any[]> {
  const r = await client.requestWithRetry('orangery.scheduler.instances.list', app ? { env: 'test', app } : {});
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return r.data.instances;
}

async function scaleAndWait(data: ReturnType<typeof request>, timeoutMs = 60_000) {
  const id = await scale.publish(data);
  return scale.outcome(id, timeoutMs);
}

/** Every instance the fleet runs, by id: each must be on exactly one host. */
function fleetCopies(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const h of fleet.hostIds) {
    for (const i of fleet.instances(h)) {
      if (i.state !== 'running') continue; // kept leftovers (stopped) are not live copies
      out.set(i.instanceId, [...(out.get(i.instanceId) ?? []), h]);
    }
  }
  return out;
}

async function ipamOwner(app: string, slot: number) {
  return client.request('orangery.ipam.get', { owner: { env: 'test', app, slot } });
}

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('scheduler');
  client = await ContractClient.connect(nats.url);
  scale = new ScaleWatcher(client.nc);
  const ipam = await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
  expect(ipam.pid).toBeGreaterThan(0);
  const pool = await client.request('orangery.ipam.pool.create', { name: 'sim', cidr: '198.19.0.0/16', gateway: '198.19.0.1', cooldownSeconds: 0 });
  expect(pool.ok, JSON.stringify(pool)).toBe(true);
  fleet = await SimulatedFleet.start({
    natsUrl: nats.url,
    hosts: HOSTS,
    idPrefix: 'sim-',
    capacity: CAPACITY,
    heartbeatSeconds: 1,
    labels: (i) => ({ rack: `r${i % 2}` }),
    replyDelayMs: (_h, cmd) => (cmd === 'create' ? 30 : 0),
    silent: (h) => silenced.has(h),
    fenceAfterSeconds: 3,
    fail: (_h, cmd, id) =>
      cmd === 'create' && id.startsWith('test:broken:') ? { code: 'IMAGE_NOT_FOUND', message: 'image missing:1 is not on the engine' } : undefined,
  });
  schedulers.push(await ServiceProcess.start(dir, 'scheduler', schedulerEnv()));
  await schedulers[0]!.waitForLog('leading: consuming scale requests', 30_000);
  const u = new URL(dbUrl);
  db = await createConnection({ host: u.hostname, port: Number(u.port), user: u.username, password: u.password, database: u.pathname.slice(1) });
}, 120_000);

afterAll(async () => {
  scale?.close();
  await fleet?.stop();
  await client?.close();
  await db?.end();
  await dir.cleanup();
});

describe('scheduler with simulated agents', () => {
  it('lists the hosts from their heartbeats', async () => {
    const r = await waitFor(
      '4 ready hosts',
      async () => {
        const res = await client.request('orangery.scheduler.hosts.list', {});
        return res.ok && res.data.hosts.filter((h: { state: string }) => h.state === 'ready').length === HOSTS ? res : undefined;
      },
      15_000,
    );
    expect(r.data.hosts[0]).toMatchObject({ id: 'sim-0001', backend: 'docker', state: 'ready', capacity: CAPACITY, labels: { rack: 'r0' } });
  });

  it("issue 13: a forged host.registered registers no phantom host and changes no real host (only its own agent's host.get reply counts)", async () => {
    const list = async () => (await client.request('orangery.scheduler.hosts.list', {})).data.hosts as { id: string; capacity: Record<string, number> }[];
    const real = fleet.hostIds[0]!;
    const before = (await list()).find((h) => h.id === real)!;
    const huge = { cpu: 512, memoryMb: 4_194_304, diskMb: 1_073_741_824 };
    const forge = (hostId: string) => {
      const { natsSubject, event } = buildEvent({
        area: 'host',
        what: 'registered',
        source: `orangery/docker-agent/${hostId}`,
        subject: hostId,
        data: { hostId, backend: 'docker', capacity: huge, total: huge, reserved: { cpu: 0, memoryMb: 0, diskMb: 0 }, labels: {}, vlans: 'any' },
      });
      client.nc.publish(natsSubject, JSON.stringify(event));
    };
    forge('phantom-1');
    forge(real);
    // the scheduler asks each host's bound subject (3 tries, 1 s apart) and saves hosts every 2 s
    await new Promise((r) => setTimeout(r, 5_000));
    const after = await list();
    expect(after.map((h) => h.id)).not.toContain('phantom-1');
    expect(after.find((h) => h.id === real)!.capacity).toEqual(before.capacity);
    expect(before.capacity).toEqual(CAPACITY);
    // the agents' own answer, as the scheduler reads it
    const facts = await client.request(`orangery.agent.${real}.host.get`, {});
    expect(facts).toMatchObject({ ok: true, data: { hostId: real, capacity: CAPACITY } });
    expect(await client.request(`orangery.agent.${real}.host.get`, { hostId: 'x' })).toMatchObject({ ok: false, error: { code: 'INVALID_REQUEST' } });
  });

  it('places 4 replicas with spread on 4 hosts, each running with its own IP, then completes', async () => {
    const done = await scaleAndWait(request('web', 4));
    expect(done.type).toBe('io.orangery.scale.completed');
    expect(done.subject).toBe('test:web');
    const list = await instances('web');
    expect(list.map((i) => i.state)).toEqual(['running', 'running', 'running', 'running']);
    expect(new Set(list.map((i) => i.host)).size).toBe(4);
    expect(new Set(list.map((i) => i.ip)).size).toBe(4);
    for (const i of list) {
      const a = await ipamOwner('web', i.slot);
      expect(a.data).toMatchObject({ ip: i.ip, mac: i.mac, state: 'bound', instanceId: i.id, host: i.host, backend: 'docker' });
    }
    const hosts = (await client.request('orangery.scheduler.hosts.list', {})).data.hosts;
    // memory at the container's real limit: heap 256 + 256 headroom = 512
    expect(hosts.map((h: { allocated: { memoryMb: number } }) => h.allocated.memoryMb)).toEqual([512, 512, 512, 512]);
    const placed = (await client.events('orangery.evt.instance.placed')).filter((e) => e.subject.startsWith('test:web:'));
    expect(placed.length).toBe(4);
  });

  it('scales to 6 and back to 2: slots 0-1 keep their IPs, removed slots release theirs', async () => {
    const before = await instances('web');
    expect((await scaleAndWait(request('web', 6))).type).toBe('io.orangery.scale.completed');
    const six = await instances('web');
    expect(six.length).toBe(6);
    expect(new Set(six.map((i) => i.ip)).size).toBe(6);
    expect((await scaleAndWait(request('web', 2))).type).toBe('io.orangery.scale.completed');
    const two = await instances('web');
    expect(two.map((i) => [i.slot, i.ip])).toEqual(before.slice(0, 2).map((i) => [i.slot, i.ip]));
    for (const slot of [2, 3, 4, 5]) expect((await ipamOwner('web', slot)).data.state).toBe('released');
    expect([...fleetCopies().keys()].filter((k) => k.startsWith('test:web:')).sort()).toEqual(['test:web:0', 'test:web:1']);
  });

  it('rejects a request too large for the fleet, naming the shortfall, and changes nothing', async () => {
    const out = await scaleAndWait(request('web', 40, { resources: { cpu: 6, memoryMb: 1024 } }));
    expect(out.type).toBe('io.orangery.scale.rejected');
    expect(out.data['reason']).toMatchObject({ code: 'INSUFFICIENT_CAPACITY', details: { shortfall: expect.any(Object) } });
    expect((await instances('web')).length).toBe(2);
  });

  it('avoids a host that is too small for the instance', async () => {
    // 7 cores each: one per host fits; the hosts with web's 1-core instances have 7 free.
    const out = await scaleAndWait(request('big', 2, { resources: { cpu: 7.5, memoryMb: 1024 }, spread: 'none' }));
    expect(out.type).toBe('io.orangery.scale.completed');
    const hostsWithWeb = new Set((await instances('web')).map((i) => i.host));
    for (const i of await instances('big')) expect(hostsWithWeb.has(i.host)).toBe(false);
    expect((await scaleAndWait(request('big', 0))).type).toBe('io.orangery.scale.completed');
  });

  it('rejects malformed requests with INVALID_REQUEST and serves the next good one', async () => {
    await scale.publishRaw('orangery.scale.test.junk', 'this is not json');
    const missing = await scale.publish({ env: 'test', app: 'junk', replicas: 1 } as never, 'bad-1');
    const wrongSubject = await scale.publish({ ...request('other', 1) }, 'bad-2');
    // published on test.junk but naming another app
    await scale.publishRaw('orangery.scale.test.junk', {
      specversion: '1.0',
      id: 'bad-3',
      source: '/t',
      type: 'io.orangery.scale.requested',
      data: request('nope', 1),
    });
    const good = await scale.publish(request('junk', 1));
    expect((await scale.outcome(missing)).data['reason']).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'data.resources' } });
    expect((await scale.outcome(wrongSubject)).type).toBe('io.orangery.scale.completed'); // a valid one for app 'other'
    expect((await scale.outcome('bad-3')).data['reason']).toMatchObject({ code: 'INVALID_REQUEST' });
    expect((await scale.outcome(good)).type).toBe('io.orangery.scale.completed');
    const notJson = await waitFor('the non-JSON request rejected', () =>
      scale.all().find((e) => String(e.data['requestId']).startsWith('js-') && e.type === 'io.orangery.scale.rejected'),
    );
    expect(notJson.data['reason']).toMatchObject({ code: 'INVALID_REQUEST' });
    const pool = await scaleAndWait(request('nopool', 1, { pool: 'no-such-pool' }));
    expect(pool.data['reason']).toMatchObject({ code: 'POOL_NOT_FOUND' });
    const noImage = await scaleAndWait(request('noimg', 1, { image: undefined }));
    expect(noImage.data['reason']).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'data.image' } });
  });

  it('rejects an id with CR/LF (never a message-id header) under sha256:<hex>, keeps ids apart by surrounding spaces, and goes on', async () => {
    const event = (id: string, app: string) => ({ specversion: '1.0', id, source: '/t', type: 'io.orangery.scale.requested', data: request(app, 1) });
    const bad = 'crlf-1\r\nNats-Msg-Id: x';
    await scale.publishRaw('orangery.scale.test.crlf', event(bad, 'crlf'));
    await scale.publishRaw('orangery.scale.test.crlf', event('x'.repeat(129), 'crlf'));
    const sha = (s: string) => `sha256:${createHash('sha256').update(s, 'utf8').digest('hex')}`;
    for (const id of [bad, 'x'.repeat(129)]) {
      const out = await scale.outcome(sha(id));
      expect(out.type).toBe('io.orangery.scale.rejected');
      expect(out.data['reason']).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'id' } });
    }
    // 'sp' then 'sp ': two requests, two outcomes (the second supersedes or completes; neither is lost as a duplicate)
    await scale.publishRaw('orangery.scale.test.spaces', event('sp', 'spaces'));
    expect((await scale.outcome('sp')).type).toBe('io.orangery.scale.completed');
    await scale.publishRaw('orangery.scale.test.spaces', event('sp ', 'spaces'));
    expect((await scale.outcome('sp ')).type).toBe('io.orangery.scale.completed');
    expect((await scaleAndWait(request('crlf', 1))).type).toBe('io.orangery.scale.completed');
  });

  it('a request the journal cannot take (1000 replicas x 64 KB of environment > max_allowed_packet) is rejected with the limit, not redelivered forever', async () => {
    const [[row]] = (await db.query('SELECT @@max_allowed_packet AS max')) as unknown as [[{ max: number }]];
    const environment: Record<string, string> = {};
    for (let i = 0; i < 16; i++) environment[`V${i}`] = 'x'.repeat(4000);
    const big = request('huge', 1000, { resources: { cpu: 0.01, memoryMb: 16, diskMb: 0 }, spread: 'none', environment });
    expect(1000 * 64_000).toBeGreaterThan(Number(row.max));
    const out = await scaleAndWait(big, 30_000);
    expect(out.type).toBe('io.orangery.scale.rejected');
    expect(out.data['reason']).toMatchObject({ code: 'INVALID_REQUEST', details: { limit: Number(row.max), field: 'data' } });
    expect(JSON.stringify(out)).not.toContain('x'.repeat(100)); // the environment is never echoed back
    expect(await instances('huge')).toEqual([]);
    expect((await scaleAndWait(request('huge', 1))).type).toBe('io.orangery.scale.completed');
  });

  it('a repeated request id changes nothing and gets no second outcome', async () => {
    const id = await scale.publish(request('junk', 1), 'same-id-1');
    expect((await scale.outcome(id)).type).toBe('io.orangery.scale.completed');
    await scale.publish(request('junk', 3), 'same-id-1');
    const next = await scale.publish(request('junk', 1));
    await scale.outcome(next);
    expect(scale.seen('same-id-1').length).toBe(1);
    expect((await instances('junk')).length).toBe(1);
  });

  it('a newer request supersedes one in flight', async () => {
    const first = await scale.publish(request('sup', 3));
    const second = await scale.publish(request('sup', 1));
    const a = await scale.outcome(first);
    const b = await scale.outcome(second);
    expect(a.type).toBe('io.orangery.scale.rejected');
    expect(a.data['reason']).toMatchObject({ code: 'SUPERSEDED' });
    expect(b.type).toBe('io.orangery.scale.completed');
    expect((await instances('sup')).length).toBe(1);
  });

  it('a slot that cannot start anywhere ends the request in START_FAILED and leaves nothing behind', async () => {
    const out = await scaleAndWait(request('broken', 2, { image: 'missing:1' }));
    expect(out.type).toBe('io.orangery.scale.rejected');
    expect(out.data['reason']).toMatchObject({ code: 'START_FAILED', details: { slots: expect.any(Object) } });
    expect(JSON.stringify(out.data['reason'])).toContain('IMAGE_NOT_FOUND');
    await waitFor('broken instances gone', async () => (await instances('broken')).length === 0, 15_000);
    for (const slot of [0, 1]) {
      const a = await ipamOwner('broken', slot);
      expect(a.ok ? a.data.state : a.error.code).toMatch(/released|NOT_FOUND/);
    }
    expect([...fleetCopies().keys()].some((k) => k.startsWith('test:broken:'))).toBe(false);
  });

  it('replaces a failed instance with the same IP', async () => {
    const [zero] = await instances('web');
    fleet.failInstance(zero.id, 'java.lang.OutOfMemoryError');
    const back = await waitFor(
      'web:0 running again',
      async () => {
        const now = (await instances('web')).find((i) => i.slot === 0);
        return now?.state === 'running' && fleetCopies().get(zero.id)?.length === 1 && fleet.commandCounts()['create']! > 0 ? now : undefined;
      },
      20_000,
    );
    expect(back.ip).toBe(zero.ip);
    expect(back.mac).toBe(zero.mac);
    expect(fleetCopies().get(zero.id)).toEqual([back.host]);
  });

  it('replaces the instances of a dead host (silent, its instances off the wire) with their IPs; back, its copies are stopped and kept', async () => {
    const before = await instances('web');
    const victim = before[0].host as string;
    silenced.add(victim);
    const moved = await waitFor(
      'web off the silent host',
      async () => {
        const now = await instances('web');
        return now.length === before.length && now.every((i) => i.state === 'running' && i.host !== victim) ? now : undefined;
      },
      30_000,
    );
    expect(moved.map((i) => [i.slot, i.ip, i.mac])).toEqual(before.map((i) => [i.slot, i.ip, i.mac]));
    // hosts.list is read from the database, where the leader writes its verdicts every 2 s
    await waitFor(
      'hosts.list says lost',
      async () => {
        const hosts = (await client.request('orangery.scheduler.hosts.list', {})).data.hosts;
        return hosts.find((h: { id: string }) => h.id === victim).state === 'lost';
      },
      10_000,
    );
    const lost = await client.events('orangery.evt.host.lost');
    expect(lost.filter((e) => e.subject === victim).map((e) => e.data)).toEqual([
      expect.objectContaining({ hostId: victim, offWire: expect.arrayContaining(before.filter((i) => i.host === victim).map((i) => i.ip)) }),
    ]);
    silenced.delete(victim);
    // v1.1: leftovers are stopped and kept (instance.orphaned), never started, never removed before the retention
    await waitFor(
      'every copy on the returned host stopped and reported orphaned',
      async () => {
        const webs = fleet.instances(victim).filter((i) => i.instanceId.startsWith('test:web:'));
        if (webs.some((i) => i.state === 'running')) return undefined;
        const orphaned = (await client.events('orangery.evt.instance.orphaned')).filter((e) => e.data.host === victim);
        return webs.every((i) => orphaned.some((e) => e.subject === i.instanceId)) ? true : undefined;
      },
      30_000,
    );
    for (const [id, where] of fleetCopies()) expect(where, id).toHaveLength(1);
    await waitFor(
      'the host ready again',
      async () => {
        const r = await client.request('orangery.scheduler.hosts.list', {});
        return r.data.hosts.find((h: { id: string }) => h.id === victim).state === 'ready';
      },
      15_000,
    );
  });

  it('slot API: a held slot is left alone while a migration copies it, then follows commit; errors are clear', async () => {
    const api = (what: string, body: unknown) => client.requestWithRetry(`orangery.scheduler.${what}`, body);
    const [one] = (await instances('web')).filter((i) => i.slot === 1);
    expect((await api('slot.get', { instanceId: 'test:web:99' })).error.code).toBe('NOT_FOUND');
    const held = await api('slot.hold', { instanceId: one.id, by: 'mig-1' });
    expect(held.data).toMatchObject({ id: one.id, hostId: one.host, ip: one.ip, hold: { by: 'mig-1' }, spec: { image: 'svc:1', pool: 'sim' } });
    expect((await api('slot.hold', { instanceId: one.id, by: 'mig-2' })).error.code).toBe('INSTANCE_CONFLICT');
    const tooSmall = fleet.hostIds.find((h) => h !== one.host)!;
    const target = await api('slot.reserve', { instanceId: one.id, by: 'mig-1', exclude: [tooSmall] });
    expect(target.ok, JSON.stringify(target)).toBe(true);
    expect(target.data.hostId).not.toBe(one.host);
    expect(target.data.hostId).not.toBe(tooSmall);
    // what a migrator does: a copy on the target (the old one is stopped first in real life)
    const alloc = (await ipamOwner('web', 1)).data;
    const created = await client.request(`orangery.agent.${target.data.hostId}.instance.create`, {
      instanceId: one.id,
      env: 'test',
      app: 'web',
      slot: 1,
      image: 'svc:1',
      resources: small,
      network: { ip: alloc.ip, mac: alloc.mac, prefixLength: alloc.prefixLength, gateway: alloc.gateway, vlan: alloc.vlan },
    });
    // the old copy is still running: the simulated wire refuses a second holder of the IP
    expect(created.ok ? 'ok' : created.error.code).toBe('IP_IN_USE_ON_WIRE');
    await client.request(`orangery.agent.${one.host}.instance.stop`, { instanceId: one.id });
    const again = await client.request(`orangery.agent.${target.data.hostId}.instance.create`, {
      instanceId: one.id,
      env: 'test',
      app: 'web',
      slot: 1,
      image: 'svc:1',
      resources: small,
      network: { ip: alloc.ip, mac: alloc.mac, prefixLength: alloc.prefixLength, gateway: alloc.gateway, vlan: alloc.vlan },
    });
    expect(again.ok, JSON.stringify(again)).toBe(true);
    // anti-entropy runs every 2 s: neither copy of a held slot is touched, the stopped one is not restarted
    await new Promise((r) => setTimeout(r, 4_500));
    expect(fleetCopies().get(one.id)).toEqual([target.data.hostId]);
    expect(fleet.instances(one.host).find((i) => i.instanceId === one.id)?.state).toBe('stopped');
    await client.request(`orangery.agent.${one.host}.instance.remove`, { instanceId: one.id });
    const committed = await api('slot.commit', { instanceId: one.id, by: 'mig-1' });
    expect(committed.data).toMatchObject({ hostId: target.data.hostId, hold: null, ip: one.ip });
    const now = (await instances('web')).find((i) => i.slot === 1);
    expect(now).toMatchObject({ host: target.data.hostId, ip: one.ip, state: 'running' });
    // a repeated commit (a migrator resuming after a crash) gets the same answer
    expect((await api('slot.commit', { instanceId: one.id, by: 'mig-1' })).data).toMatchObject({ hostId: target.data.hostId, hold: null });
    expect((await api('slot.commit', { instanceId: one.id, by: 'mig-9' })).error.code).toBe('INSTANCE_CONFLICT');
    // a target that cannot take it: no host but one allowed, and that one too small
    expect((await api('slot.hold', { instanceId: one.id, by: 'mig-3' })).ok).toBe(true);
    const none = await api('slot.reserve', { instanceId: one.id, by: 'mig-3', toHost: one.host, toBackend: 'vmware' });
    expect(none.error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'toBackend' } });
    const released = await api('slot.release', { instanceId: one.id, by: 'mig-3' });
    expect(released.data.hold).toBeNull();
    const drained = await api('host.drain', { hostId: one.host, drain: true });
    expect(drained.data).toMatchObject({ hostId: one.host, state: 'draining' });
    const listed = (await client.request('orangery.scheduler.hosts.list', {})).data.hosts.find((h: { id: string }) => h.id === one.host);
    expect(listed.state).toBe('draining');
    expect((await api('host.drain', { hostId: one.host, drain: false })).data.state).toBe('ready');
  });

  it('two replicas under a burst of 20 apps: every slot placed once, no host overcommitted', async () => {
    schedulers.push(await ServiceProcess.start(dir, 'scheduler', schedulerEnv()));
    const ids = await Promise.all(Array.from({ length: 20 }, (_, n) => scale.publish(request(`burst-${n}`, 3, { resources: { cpu: 0.25, memoryMb: 256 } }))));
    const outs = await Promise.all(ids.map((id) => scale.outcome(id, 90_000)));
    expect(
      outs.map((o) => o.type),
      JSON.stringify(outs.map((o) => o.data['reason'])),
    ).toEqual(Array(20).fill('io.orangery.scale.completed'));
    for (const [id, hosts] of fleetCopies()) expect(hosts, id).toHaveLength(1);
    const [rows] = await db.query<import('mysql2').RowDataPacket[]>(
      'SELECT host_id, SUM(cpu) AS cpu, SUM(memory_mb) AS mem FROM sched_instance GROUP BY host_id',
    );
    for (const r of rows) {
      expect(Number(r['cpu'])).toBeLessThanOrEqual(CAPACITY.cpu);
      expect(Number(r['mem'])).toBeLessThanOrEqual(CAPACITY.memoryMb);
    }
    const [dups] = await db.query<import('mysql2').RowDataPacket[]>(
      'SELECT ip, COUNT(*) AS n FROM sched_instance WHERE ip IS NOT NULL GROUP BY ip HAVING n > 1',
    );
    expect(dups).toEqual([]);
    expect(schedulers.filter((s) => s.hasLog('leading: consuming scale requests')).length).toBe(1);
    const down = await Promise.all(Array.from({ length: 20 }, (_, n) => scale.publish(request(`burst-${n}`, 0))));
    for (const id of down) expect((await scale.outcome(id, 60_000)).type).toBe('io.orangery.scale.completed');
  });

  it('the leader killed mid-scale: the other replica takes over and everything converges', async () => {
    const leader = schedulers.find((s) => s.hasLog('leading: consuming scale requests') && s.child.exitCode === null)!;
    const ids = await Promise.all(Array.from({ length: 10 }, (_, n) => scale.publish(request(`crash-${n}`, 4, { resources: { cpu: 0.1, memoryMb: 128 } }))));
    await waitFor(
      'some placements',
      async () => {
        const [r] = await db.query<import('mysql2').RowDataPacket[]>("SELECT COUNT(*) AS n FROM sched_instance WHERE app LIKE 'crash-%'");
        return Number(r[0]!['n']) > 0;
      },
      20_000,
      5,
    );
    await leader.kill9();
    const outs = await Promise.all(ids.map((id) => scale.outcome(id, 90_000)));
    expect(
      outs.map((o) => o.type),
      JSON.stringify(outs.map((o) => o.data['reason'])),
    ).toEqual(Array(10).fill('io.orangery.scale.completed'));
    for (const id of ids) expect(scale.seen(id)).toHaveLength(1);
    const crash = [...fleetCopies().entries()].filter(([k]) => k.startsWith('test:crash-'));
    expect(crash.length).toBe(40);
    for (const [k, hosts] of crash) expect(hosts, k).toHaveLength(1);
    // restart the killed one: it follows, and changes nothing
    schedulers.push(await ServiceProcess.start(dir, 'scheduler', schedulerEnv()));
    const list = (await instances()).filter((i) => i.app.startsWith('crash-'));
    expect(list.length).toBe(40);
    expect(new Set(list.map((i) => i.ip)).size).toBe(40);
    // scale them all to 1: the extra IPs come back to ipam
    const down = await Promise.all(Array.from({ length: 10 }, (_, n) => scale.publish(request(`crash-${n}`, 1, { resources: { cpu: 0.1, memoryMb: 128 } }))));
    for (const id of down) expect((await scale.outcome(id, 60_000)).type).toBe('io.orangery.scale.completed');
    for (let n = 0; n < 10; n++) for (const slot of [1, 2, 3]) expect((await ipamOwner(`crash-${n}`, slot)).data.state).toBe('released');
  });

  it('answers bad operator queries with INVALID_REQUEST and stays up', async () => {
    const bad = await client.request('orangery.scheduler.instances.list', { env: 'Not Valid' });
    expect(bad.error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'env' } });
    const extra = await client.request('orangery.scheduler.hosts.list', { nope: 1 });
    expect(extra.error.code).toBe('INVALID_REQUEST');
    expect((await client.request('orangery.scheduler.hosts.list', {})).ok).toBe(true);
  });

  it('ORANGERY_SCALE deleted and created again (sequences from 1): a new request for a known app is accepted, not SUPERSEDED', async () => {
    // a few requests first, so the app's sequence is above what the new stream starts at
    for (let i = 0; i < 3; i++) expect((await scaleAndWait(request('reset', 1))).type).toBe('io.orangery.scale.completed');
    const [[before]] = (await db.query("SELECT seq FROM sched_app WHERE env = 'test' AND app = 'reset'")) as unknown as [[{ seq: number }]];
    expect(Number(before.seq)).toBeGreaterThan(1);
    for (const s of schedulers.filter((p) => p.child.exitCode === null)) await s.kill9();
    const jsm = await jetstreamManager(client.nc);
    await jsm.streams.delete('ORANGERY_SCALE');
    const fresh = await ServiceProcess.start(dir, 'scheduler', schedulerEnv());
    schedulers.push(fresh);
    await fresh.waitForLog('leading: consuming scale requests', 30_000);
    const out = await scaleAndWait(request('reset', 2));
    expect(out.type, JSON.stringify(out.data)).toBe('io.orangery.scale.completed');
    const [[after]] = (await db.query("SELECT seq, record FROM sched_app WHERE env = 'test' AND app = 'reset'")) as unknown as [
      [{ seq: number; record: unknown }],
    ];
    expect(Number(after.seq)).toBeLessThan(Number(before.seq));
    expect((await instances('reset')).length).toBe(2);
  }, 120_000);
});

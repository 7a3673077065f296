import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, SimulatedFleet, waitFor } from '@orangery/testing';

// The migrator as a real process on real NATS (JetStream) and MariaDB, with a real ipam and
// scheduler, and simulated agents (libs/testing) that speak the agent contract, probe for
// duplicate addresses (any running copy elsewhere answers) and fence themselves when silent.
const dir = new HarnessDir('migrator');
let nats: NatsServer;
let dbUrl: string;
let client: ContractClient;
let scale: ScaleWatcher;
let fleet: SimulatedFleet;
let migrator: ServiceProcess;
let scheduler: ServiceProcess;
const silenced = new Set<string>();
/** per-command reply delays, changed by tests (a slow fleet) */
const delays: Partial<Record<string, number>> = {};
/** instance ids whose next creates the fleet refuses (as an image missing on the target would) */
const refuseCreate = new Set<string>();
const HOSTS = 4;
const CAPACITY = { cpu: 8, memoryMb: 16_384, diskMb: 100_000 };

const common = () => ({
  ORANGERY_NATS_URL: nats.url,
  ORANGERY_DB_URL: dbUrl,
  ORANGERY_HEARTBEAT_SECONDS: '1',
  ORANGERY_LOST_AFTER_SECONDS: '3',
  ORANGERY_FENCE_AFTER_SECONDS: '3',
  ORANGERY_FENCE_MARGIN_SECONDS: '1',
  ORANGERY_AGENT_TIMEOUT_SECONDS: '10',
});
const schedulerEnv = () => ({
  ...common(),
  ORANGERY_FAILED_GRACE_SECONDS: '1',
  ORANGERY_RECONCILE_SECONDS: '1',
  ORANGERY_ANTI_ENTROPY_SECONDS: '2',
});
const migratorEnv = () => ({ ...common(), ORANGERY_MIGRATION_LEASE_SECONDS: '3' });

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

interface Instance {
  id: string;
  slot: number;
  state: string;
  host: string;
  ip: string;
  mac: string;
  backend: string;
}

async function instances(app?: string): Promise<Instance[]> {
  const r = await client.requestWithRetry('orangery.scheduler.instances.list', app ? { env: 'test', app } : {});
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return r.data.instances;
}

async function scaleAndWait(data: ReturnType<typeof request>) {
  const out = await scale.outcome(await scale.publish(data), 60_000);
  expect(out.type, JSON.stringify(out.data)).toBe('io.orangery.scale.completed');
}

/** Hosts holding a live (not removed) copy of the instance in the fleet. */
const copiesOf = (instanceId: string): string[] =>
  fleet.hostIds.filter((h) => fleet.instances(h).some((i) => i.instanceId === instanceId && i.state !== 'removed'));

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function migration(id: string): Promise<any> {
  const r = await client.requestWithRetry('orangery.migrator.migrations.get', { migrationId: id });
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return r.data;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const ended = (id: string, timeoutMs = 60_000): Promise<any> =>
  waitFor(
    `migration ${id} to end`,
    async () => {
      const m = await migration(id);
      return m.state === 'running' ? undefined : m;
    },
    timeoutMs,
  );

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('migrator');
  client = await ContractClient.connect(nats.url);
  scale = new ScaleWatcher(client.nc);
  await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
  const pool = await client.request('orangery.ipam.pool.create', { name: 'sim', cidr: '198.19.0.0/16', gateway: '198.19.0.1', cooldownSeconds: 0 });
  expect(pool.ok, JSON.stringify(pool)).toBe(true);
  fleet = await SimulatedFleet.start({
    natsUrl: nats.url,
    hosts: HOSTS,
    idPrefix: 'mig-',
    capacity: CAPACITY,
    heartbeatSeconds: 1,
    replyDelayMs: (_h, cmd) => delays[cmd] ?? 0,
    silent: (h) => silenced.has(h),
    fenceAfterSeconds: 3,
    fail: (_h, cmd, id) => (cmd === 'create' && refuseCreate.has(id) ? { code: 'IMAGE_NOT_FOUND', message: 'image svc:1 is not on the engine' } : undefined),
  });
  scheduler = await ServiceProcess.start(dir, 'scheduler', schedulerEnv());
  await scheduler.waitForLog('leading: consuming scale requests', 60_000);
  migrator = await ServiceProcess.start(dir, 'migrator', migratorEnv());
  await waitFor(
    '4 ready hosts',
    async () => {
      const res = await client.request('orangery.scheduler.hosts.list', {});
      return res.ok && res.data.hosts.filter((h: { state: string }) => h.state === 'ready').length === HOSTS;
    },
    15_000,
  );
  await scaleAndWait(request('web', 2));
}, 120_000);

afterAll(async () => {
  scale?.close();
  await fleet?.stop();
  await client?.close();
  await dir.cleanup();
});

describe('migrator with simulated agents', () => {
  it('migrates an instance to another host with the same IP and MAC; the old copy is gone', async () => {
    const [before] = await instances('web');
    const r = await client.request('orangery.migrator.migrate', { instanceId: before!.id });
    expect(r.ok, JSON.stringify(r)).toBe(true);
    const id: string = r.data.migrationId;
    const m = await ended(id);
    expect(m, JSON.stringify(m)).toMatchObject({ id, instanceId: before!.id, state: 'completed', from: { hostId: before!.host, backend: 'docker' } });
    expect(m.to.hostId).not.toBe(before!.host);
    expect(m.steps.map((s: { name: string }) => s.name)).toEqual([
      'hold',
      'reserve',
      'stop-old',
      'create-new',
      'await-running',
      'bind',
      'remove-old',
      'commit',
    ]);
    for (const s of m.steps)
      expect(s).toMatchObject({ state: 'done', attempts: expect.any(Number), startedAt: expect.any(String), finishedAt: expect.any(String) });

    const after = (await instances('web')).find((i) => i.id === before!.id)!;
    expect(after).toMatchObject({ host: m.to.hostId, ip: before!.ip, mac: before!.mac, state: 'running' });
    expect(copiesOf(before!.id)).toEqual([m.to.hostId]);
    const moved = fleet.instances(m.to.hostId).find((i) => i.instanceId === before!.id)!;
    expect(moved).toMatchObject({ state: 'running', ip: before!.ip, mac: before!.mac });
    const a = await client.request('orangery.ipam.get', { owner: { env: 'test', app: 'web', slot: before!.slot } });
    expect(a.data).toMatchObject({ ip: before!.ip, state: 'bound', host: m.to.hostId, backend: 'docker' });

    const events = (await client.events('orangery.evt.migration.>')).filter((e) => e.subject === id);
    expect(events.map((e) => e.type)).toEqual(['io.orangery.migration.started', 'io.orangery.migration.completed']);
    expect(events[1].data).toMatchObject({ migrationId: id, instanceId: before!.id, from: m.from, to: m.to });
    const slot = await client.request('orangery.scheduler.slot.get', { instanceId: before!.id });
    expect(slot.data.hold).toBeNull();
  });

  it("issue 13: the target is created with the app's environment by the scheduler; slot.get, migrations, events and logs never carry it", async () => {
    const SECRET = 'pa55-w0rd-of-the-bank';
    const environment = { DB_PASSWORD: SECRET, MODE: 'prod' };
    await scaleAndWait(request('vault', 1, { environment }));
    const [inst] = await instances('vault');
    expect(fleet.environmentOf(inst!.host, inst!.id)).toEqual(environment);
    const slot = await client.request('orangery.scheduler.slot.get', { instanceId: inst!.id });
    expect(slot.ok, JSON.stringify(slot)).toBe(true);
    expect(slot.data.spec).not.toHaveProperty('environment');
    expect(JSON.stringify(slot)).not.toContain(SECRET);

    // nobody but the migration holding the slot can have the leader create a copy
    const forged = await client.request('orangery.scheduler.slot.create', {
      instanceId: inst!.id,
      by: 'm-forged',
      network: { ip: inst!.ip, mac: inst!.mac, prefixLength: 16, gateway: '198.19.0.1', vlan: 0 },
    });
    expect(forged).toMatchObject({ ok: false, error: { code: 'INSTANCE_CONFLICT' } });
    const bad = await client.request('orangery.scheduler.slot.create', { instanceId: inst!.id, by: 'm-forged' });
    expect(bad).toMatchObject({ ok: false, error: { code: 'INVALID_REQUEST', details: { field: 'network' } } });
    expect(copiesOf(inst!.id)).toEqual([inst!.host]);

    const r = await client.request('orangery.migrator.migrate', { instanceId: inst!.id });
    expect(r.ok, JSON.stringify(r)).toBe(true);
    const m = await ended(r.data.migrationId);
    expect(m.state, JSON.stringify(m)).toBe('completed');
    expect(m.to.hostId).not.toBe(inst!.host);
    expect(copiesOf(inst!.id)).toEqual([m.to.hostId]);
    // the variables arrived in the target's create command
    expect(fleet.environmentOf(m.to.hostId, inst!.id)).toEqual(environment);
    expect(JSON.stringify(m)).not.toContain(SECRET);
    expect(JSON.stringify(await client.events('orangery.evt.>'))).not.toContain(SECRET);
    expect(JSON.stringify(await instances())).not.toContain(SECRET);
    for (const p of [migrator, scheduler]) expect(p.lines.join('\n') + p.stderr).not.toContain(SECRET);
    await scaleAndWait(request('vault', 0, { environment }));
  });

  it('refuses an unknown instance with NOT_FOUND and a malformed request with INVALID_REQUEST', async () => {
    const r = await client.request('orangery.migrator.migrate', { instanceId: 'test:nope:0' });
    expect(r).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } });
    const bad = await client.request('orangery.migrator.migrate', { instanceId: 'not an id' });
    expect(bad).toMatchObject({ ok: false, error: { code: 'INVALID_REQUEST', details: { field: 'instanceId' } } });
    const extra = await client.request('orangery.migrator.migrate', { instanceId: 'test:web:0', to: 'x' });
    expect(extra).toMatchObject({ ok: false, error: { code: 'INVALID_REQUEST', details: { field: 'to' } } });
    const get = await client.request('orangery.migrator.migrations.get', { migrationId: 'm-00000000-0000-0000-0000-000000000000' });
    expect(get).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } });
  });

  it('refuses a host without capacity with INSUFFICIENT_CAPACITY, and nothing moves', async () => {
    await scaleAndWait(request('big', 1, { resources: { cpu: 7.5, memoryMb: 1024 }, spread: 'none' }));
    const [big] = await instances('big');
    const web = (await instances('web')).find((i) => i.host !== big!.host)!;
    const r = await client.request('orangery.migrator.migrate', { instanceId: web.id, toHost: big!.host }, 15_000);
    expect(r).toMatchObject({ ok: false, error: { code: 'INSUFFICIENT_CAPACITY' } });
    expect((await instances('web')).find((i) => i.id === web.id)).toMatchObject({ host: web.host, ip: web.ip, state: 'running' });
    expect(copiesOf(web.id)).toEqual([web.host]);
    const slot = await client.request('orangery.scheduler.slot.get', { instanceId: web.id });
    expect(slot.data.hold).toBeNull();
    const unknownHost = await client.request('orangery.migrator.migrate', { instanceId: web.id, toHost: 'no-such-host' }, 15_000);
    expect(unknownHost).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } });
    await scaleAndWait(request('big', 0, { resources: { cpu: 7.5, memoryMb: 1024 }, spread: 'none' }));
  });

  it('rolls back when the target refuses the create: the old copy runs again where it was, migration.failed with the reason', async () => {
    const [first] = await instances('web');
    refuseCreate.add(first!.id);
    try {
      const r = await client.request('orangery.migrator.migrate', { instanceId: first!.id });
      expect(r.ok, JSON.stringify(r)).toBe(true);
      const id: string = r.data.migrationId;
      const m = await ended(id);
      expect(m, JSON.stringify(m)).toMatchObject({ state: 'failed', error: { code: 'IMAGE_NOT_FOUND' } });
      expect(m.steps.map((s: { name: string; state: string }) => `${s.name}:${s.state}`)).toEqual([
        'hold:done',
        'reserve:done',
        'stop-old:done',
        'create-new:failed',
        'remove-new:done',
        'start-old:done',
        'release:done',
      ]);
      expect(copiesOf(first!.id)).toEqual([first!.host]);
      expect(fleet.instances(first!.host).find((i) => i.instanceId === first!.id)?.state).toBe('running');
      expect((await instances('web')).find((i) => i.id === first!.id)).toMatchObject({ host: first!.host, ip: first!.ip, state: 'running' });
      expect((await client.request('orangery.scheduler.slot.get', { instanceId: first!.id })).data.hold).toBeNull();
      const failed = await waitFor(
        'migration.failed',
        async () => (await client.events('orangery.evt.migration.failed')).find((e) => e.subject === id),
        20_000,
      );
      expect(failed.data).toMatchObject({ instanceId: first!.id, reason: { code: 'IMAGE_NOT_FOUND' } });
    } finally {
      refuseCreate.delete(first!.id);
    }
  });

  it('a migrator killed mid-saga completes the migration after its restart, with one migration.completed', async () => {
    const [, before] = await instances('web');
    delays['create'] = 2_500;
    try {
      const r = await client.request('orangery.migrator.migrate', { instanceId: before!.id });
      expect(r.ok, JSON.stringify(r)).toBe(true);
      const id: string = r.data.migrationId;
      await waitFor('the saga at create-new', async () => (await migration(id)).step === 'create-new', 20_000);
      await migrator.kill9();
      migrator = await ServiceProcess.start(dir, 'migrator', migratorEnv());
      const m = await ended(id, 60_000);
      expect(m.state, JSON.stringify(m)).toBe('completed');
      const create = m.steps.find((s: { name: string }) => s.name === 'create-new');
      expect(create.attempts).toBeGreaterThanOrEqual(2);
      const after = (await instances('web')).find((i) => i.id === before!.id)!;
      expect(after).toMatchObject({ host: m.to.hostId, ip: before!.ip, mac: before!.mac, state: 'running' });
      expect(copiesOf(before!.id)).toEqual([m.to.hostId]);
      await waitFor('events published', async () => (await client.events('orangery.evt.migration.completed')).some((e) => e.subject === id), 20_000);
      const completed = (await client.events('orangery.evt.migration.completed')).filter((e) => e.subject === id);
      expect(completed.length).toBe(1);
    } finally {
      delete delays['create'];
    }
  });

  it('drains a host: every instance moves off, host.drained, the host shows draining', async () => {
    await scaleAndWait(request('api', 2, { spread: 'none' }));
    const all = await instances();
    const counts = new Map<string, number>();
    for (const i of all) counts.set(i.host, (counts.get(i.host) ?? 0) + 1);
    const host = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
    const onHost = all.filter((i) => i.host === host);
    expect(onHost.length).toBeGreaterThan(0);
    const r = await client.request('orangery.migrator.drain', { hostId: host }, 15_000);
    expect(r.ok, JSON.stringify(r)).toBe(true);
    expect(r.data.migrationIds.length).toBe(onHost.length);
    for (const id of r.data.migrationIds) expect((await ended(id, 90_000)).state).toBe('completed');
    const drained = await waitFor('host.drained', async () => (await client.events('orangery.evt.host.drained')).find((e) => e.subject === host), 20_000);
    expect(drained.data.migrationIds.sort()).toEqual([...r.data.migrationIds].sort());
    const now = await instances();
    expect(now.filter((i) => i.host === host)).toEqual([]);
    for (const i of onHost) expect(now.find((x) => x.id === i.id)).toMatchObject({ ip: i.ip, state: 'running' });
    expect(fleet.instances(host).filter((i) => i.state !== 'removed')).toEqual([]);
    const hosts = (await client.request('orangery.scheduler.hosts.list', {})).data.hosts;
    expect(hosts.find((h: { id: string }) => h.id === host).state).toBe('draining');
    const unknown = await client.request('orangery.migrator.drain', { hostId: 'no-such-host' }, 15_000);
    expect(unknown).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } });
  });

  it('host.lost (the scheduler verdict: silent, nothing on the wire) and host.recovered reach the event stream once each', async () => {
    const all = await instances();
    const empty = fleet.hostIds.find((h) => !all.some((i) => i.host === h)) ?? fleet.hostIds[HOSTS - 1]!;
    silenced.add(empty);
    try {
      const lost = await waitFor('host.lost', async () => (await client.events('orangery.evt.host.lost')).find((e) => e.subject === empty), 20_000);
      expect(lost.data).toMatchObject({ hostId: empty, backend: 'docker', lostAfterSeconds: 3 });
    } finally {
      silenced.delete(empty);
    }
    const recovered = await waitFor(
      'host.recovered',
      async () => (await client.events('orangery.evt.host.recovered')).find((e) => e.subject === empty),
      20_000,
    );
    expect(recovered.data).toMatchObject({ hostId: empty });
    expect((await client.events('orangery.evt.host.lost')).filter((e) => e.subject === empty).length).toBe(1);
  });

  it('exits 0 on SIGTERM', async () => {
    expect(await migrator.terminate()).toBe(0);
  });
});

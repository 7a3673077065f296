import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, type Connection } from 'mysql2/promise';
import type { Msg, Subscription } from '@nats-io/nats-core';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, SimulatedFleet, waitFor } from '@orangery/testing';

// Environments (CONTRACT.md v1.1, docs/scheduler.md "Environments"): env records over the bus
// on real NATS and MariaDB, two scheduler replicas, a real ipam, and simulated docker and
// vmware fleets with labels.
const dir = new HarnessDir('envs');
let nats: NatsServer;
let dbUrl: string;
let db: Connection;
let client: ContractClient;
let scale: ScaleWatcher;
let docker: SimulatedFleet;
let vmware: SimulatedFleet;
let swarm: SimulatedFleet;
let creates: Subscription;
const createCommands: { hostId: string; body: Record<string, unknown> }[] = [];
const schedulers: ServiceProcess[] = [];
const CAPACITY = { cpu: 8, memoryMb: 16_384, diskMb: 100_000 };

const schedulerEnv = () => ({
  ORANGERY_NATS_URL: nats.url,
  ORANGERY_DB_URL: dbUrl,
  ORANGERY_HEARTBEAT_SECONDS: '1',
  ORANGERY_LOST_AFTER_SECONDS: '3',
  ORANGERY_RECONCILE_SECONDS: '1',
  ORANGERY_ANTI_ENTROPY_SECONDS: '2',
  ORANGERY_AGENT_TIMEOUT_SECONDS: '3',
  // a seed: `legacy` and `seeded` get records at start (insert-if-absent)
  ORANGERY_ENV_BACKENDS: 'legacy=docker;seeded=vmware,swarm',
});

const small = { cpu: 1, memoryMb: 512, diskMb: 1_000 };
const request = (env: string, app: string, replicas: number, extra: Record<string, unknown> = {}) => ({
  env,
  app,
  replicas,
  resources: small,
  pool: 'sim',
  ...extra,
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function envs(op: 'put' | 'get' | 'list' | 'delete', body: unknown, actor?: string): Promise<any> {
  if (!actor) return client.requestWithRetry(`orangery.scheduler.envs.${op}`, body);
  const h = natsHeaders();
  h.set('Orangery-Actor', actor);
  const msg = await client.nc.request(`orangery.scheduler.envs.${op}`, JSON.stringify(body), { timeout: 10_000, headers: h });
  return JSON.parse(new TextDecoder().decode(msg.data));
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function instances(env: string, app: string): Promise<any[]> {
  const r = await client.requestWithRetry('orangery.scheduler.instances.list', { env, app });
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return r.data.instances;
}

async function scaleAndWait(data: Record<string, unknown> & { env: string; app: string }, timeoutMs = 60_000) {
  const id = await scale.publish(data);
  return scale.outcome(id, timeoutMs);
}

async function startScheduler(): Promise<ServiceProcess> {
  const s = await ServiceProcess.start(dir, 'scheduler', schedulerEnv());
  schedulers.push(s);
  return s;
}

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('envs');
  client = await ContractClient.connect(nats.url);
  scale = new ScaleWatcher(client.nc);
  await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
  for (const [name, cidr] of [
    ['sim', '198.19.0.0/17'],
    ['other', '198.19.128.0/17'],
  ] as const) {
    const pool = await client.request('orangery.ipam.pool.create', { name, cidr, gateway: cidr.replace(/0\/17$/, '1'), cooldownSeconds: 0 });
    expect(pool.ok, JSON.stringify(pool)).toBe(true);
  }
  // every create command an agent gets, to see what the scheduler sends (a plain subscription beside the fleets')
  creates = client.nc.subscribe('orangery.agent.*.instance.create', {
    callback: (_e, m: Msg) => {
      createCommands.push({ hostId: m.subject.split('.')[2]!, body: JSON.parse(new TextDecoder().decode(m.data)) });
    },
  });
  docker = await SimulatedFleet.start({
    natsUrl: nats.url,
    hosts: 3,
    idPrefix: 'dk-',
    capacity: CAPACITY,
    heartbeatSeconds: 1,
    labels: (i) => (i === 0 ? { tier: 'gold', zone: 'a' } : { tier: 'std', zone: 'a' }),
  });
  vmware = await SimulatedFleet.start({ natsUrl: nats.url, hosts: 2, idPrefix: 'vm-', backend: 'vmware', capacity: CAPACITY, heartbeatSeconds: 1 });
  swarm = await SimulatedFleet.start({
    natsUrl: nats.url,
    hosts: 2,
    idPrefix: 'sw-',
    backend: 'swarm',
    cluster: 'perf',
    capacity: CAPACITY,
    heartbeatSeconds: 1,
    labels: () => ({ tier: 'test' }),
  });
  await Promise.all([startScheduler(), startScheduler()]);
  await waitFor('a leader', () => schedulers.some((s) => s.hasLog('leading: consuming scale requests')), 60_000);
  await waitFor(
    '7 ready hosts',
    async () => {
      const res = await client.request('orangery.scheduler.hosts.list', {});
      return res.ok && res.data.hosts.filter((h: { state: string }) => h.state === 'ready').length === 7;
    },
    20_000,
  );
  const u = new URL(dbUrl);
  db = await createConnection({ host: u.hostname, port: Number(u.port), user: u.username, password: u.password, database: u.pathname.slice(1) });
}, 180_000);

afterAll(async () => {
  creates?.unsubscribe();
  scale?.close();
  await docker?.stop();
  await vmware?.stop();
  await swarm?.stop();
  await client?.close();
  await db?.end();
  await dir.cleanup();
});

describe('env records over the bus', () => {
  it('ORANGERY_ENV_BACKENDS seeds a record for each listed env, once, said in the log', async () => {
    const seeded = await envs('get', { name: 'seeded' });
    expect(seeded).toMatchObject({ ok: true, data: { name: 'seeded', backends: ['vmware', 'swarm'] } });
    expect((await envs('get', { name: 'legacy' })).data.backends).toEqual(['docker']);
    // two replicas started at once: one created each record, neither overwrote the other
    const seedLines = schedulers.flatMap((s) => s.lines.filter((l) => l.includes('ORANGERY_ENV_BACKENDS is a seed')).map((l) => JSON.parse(l)));
    expect(seedLines).toHaveLength(2);
    expect(seedLines.flatMap((l) => l.created).sort()).toEqual(['legacy', 'seeded']);
  });

  it('put, get, put again (idempotent), list with paging, delete, NOT_FOUND', async () => {
    const body = { name: 'prod', backends: ['vmware', 'docker'], defaults: { spread: 'host' } };
    const put = await envs('put', body, 'alice@ops');
    expect(put.ok, JSON.stringify(put)).toBe(true);
    expect(put.data).toMatchObject({ name: 'prod', backends: ['docker', 'vmware'], defaults: { spread: 'host' } });
    expect(Date.parse(put.data.createdAt)).toBeGreaterThan(0);
    const again = await envs('put', body);
    expect(again.data).toEqual({ ...put.data, updatedAt: again.data.updatedAt });
    expect((await envs('get', { name: 'prod' })).data).toEqual(again.data);
    // audited with its actor
    await waitFor('the audit line', () => schedulers.some((s) => s.lines.some((l) => l.includes('"audit":"env.put"') && l.includes('alice@ops'))), 5_000);

    for (const name of ['pg-a', 'pg-b', 'pg-c']) expect((await envs('put', { name, backends: ['docker'] })).ok).toBe(true);
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await envs('list', { limit: 2, ...(cursor ? { cursor } : {}) });
      expect(page.ok, JSON.stringify(page)).toBe(true);
      expect(page.data.envs.length).toBeLessThanOrEqual(2);
      seen.push(...page.data.envs.map((e: { name: string }) => e.name));
      cursor = page.data.nextCursor;
      pages++;
    } while (cursor);
    expect(seen).toEqual(['legacy', 'pg-a', 'pg-b', 'pg-c', 'prod', 'seeded']);
    expect(pages).toBe(3);
    expect((await envs('list', { cursor: 'bm9wZQ' })).error.code).toBe('INVALID_REQUEST');

    for (const name of ['pg-a', 'pg-b', 'pg-c']) expect(await envs('delete', { name })).toEqual({ ok: true, data: {} });
    expect((await envs('delete', { name: 'pg-a' })).error.code).toBe('NOT_FOUND');
    expect((await envs('get', { name: 'pg-a' })).error.code).toBe('NOT_FOUND');
  });

  it.each([
    ['an unknown backend', { name: 'bad', backends: ['k8s'] }, 'backends'],
    ['no backend', { name: 'bad', backends: [] }, 'backends'],
    ['a bad name', { name: 'Bad_Name', backends: ['docker'] }, 'name'],
    ['an unknown field', { name: 'bad', backends: ['docker'], owner: 'x' }, 'owner'],
    ['a default backend the env forbids', { name: 'bad', backends: ['docker'], defaults: { backend: 'vmware' } }, 'defaults.backend'],
    ['a bad label key', { name: 'bad', backends: ['docker'], hostLabels: { 'no spaces': 'x' } }, 'hostLabels'],
    ['a capability Docker does not grant', { name: 'bad', backends: ['docker'], containerSecurity: { addCapabilities: ['SYS_ADMIN'] } }, 'containerSecurity'],
  ])('refuses %s: INVALID_REQUEST naming the field, nothing written', async (_what, body, field) => {
    const r = await envs('put', body);
    expect(r.ok).toBe(false);
    expect(r.error.code).toBe('INVALID_REQUEST');
    expect(String(r.error.details?.field ?? '')).toContain(field);
    expect((await envs('get', { name: 'bad' })).error?.code ?? 'NOT_FOUND').toBe('NOT_FOUND');
  });

  it('both replicas serve the records from the database (puts audited by each, every get sees the last put)', async () => {
    for (let i = 0; i < 24; i++) {
      const put = await envs('put', { name: 'shared', backends: ['docker'], hostLabels: { round: String(i) } });
      expect(put.ok, JSON.stringify(put)).toBe(true);
      const got = await envs('get', { name: 'shared' });
      expect(got.data.hostLabels).toEqual({ round: String(i) });
    }
    for (const s of schedulers) expect(s.lines.some((l) => l.includes('"audit":"env.put"') && l.includes('"env":"shared"'))).toBe(true);
    expect((await envs('delete', { name: 'shared' })).ok).toBe(true);
  });
});

describe('env records when scale requests are judged', () => {
  it('prod (docker, vmware): an image lands on docker hosts, a template on vmware hosts', async () => {
    const a = await scaleAndWait(request('prod', 'web', 2, { image: 'web:1' }));
    expect(a.type, JSON.stringify(a.data)).toBe('io.orangery.scale.completed');
    expect((await instances('prod', 'web')).map((i) => i.backend)).toEqual(['docker', 'docker']);
    const b = await scaleAndWait(request('prod', 'vm', 2, { template: 'centos-9' }));
    expect(b.type, JSON.stringify(b.data)).toBe('io.orangery.scale.completed');
    expect((await instances('prod', 'vm')).map((i) => [i.backend, i.host.slice(0, 3)])).toEqual([
      ['vmware', 'vm-'],
      ['vmware', 'vm-'],
    ]);
  });

  it('test (swarm only): a request without backend lands on swarm nodes, with the env container security in its creates', async () => {
    const security = { pidsLimit: 2048 };
    expect((await envs('put', { name: 'test', backends: ['swarm'], containerSecurity: security })).ok).toBe(true);
    const r = await scaleAndWait(request('test', 'web', 2, { image: 'web:1' }));
    expect(r.type, JSON.stringify(r.data)).toBe('io.orangery.scale.completed');
    expect((await instances('test', 'web')).map((i) => [i.backend, i.host.slice(0, 3)])).toEqual([
      ['swarm', 'sw-'],
      ['swarm', 'sw-'],
    ]);
    const sent = createCommands.filter((c) => String(c.body['instanceId']).startsWith('test:web:'));
    expect(sent.length).toBeGreaterThanOrEqual(2);
    for (const c of sent) expect(c.body).toMatchObject({ pool: 'sim', security });
    // a VM template asked of a swarm-only env: nothing it allows can run it
    const vm = await scaleAndWait(request('test', 'vm', 1, { template: 'centos-9' }));
    expect(vm.data['reason']).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'data.backend' } });
  });

  it('prod with backend swarm: scale.rejected POLICY_VIOLATION with details, nothing placed', async () => {
    const r = await scaleAndWait(request('prod', 'sw', 1, { image: 'web:1', backend: 'swarm' }));
    expect(r.type).toBe('io.orangery.scale.rejected');
    expect(r.data['reason']).toMatchObject({ code: 'POLICY_VIOLATION', details: { field: 'backend', allowed: ['docker', 'vmware'] } });
    expect(await instances('prod', 'sw')).toEqual([]);
  });

  it('a pool the env does not allow: POLICY_VIOLATION field pool; the allowed pool works', async () => {
    expect((await envs('put', { name: 'pooled', backends: ['docker'], pools: ['other'] })).ok).toBe(true);
    const r = await scaleAndWait(request('pooled', 'web', 1, { image: 'web:1' }));
    expect(r.type).toBe('io.orangery.scale.rejected');
    expect(r.data['reason']).toMatchObject({ code: 'POLICY_VIOLATION', details: { field: 'pool', allowed: ['other'] } });
    const ok = await scaleAndWait(request('pooled', 'web', 1, { image: 'web:1', pool: 'other' }));
    expect(ok.type, JSON.stringify(ok.data)).toBe('io.orangery.scale.completed');
    expect((await instances('pooled', 'web'))[0].ip).toMatch(/^198\.19\.(1[2-9]\d|2\d\d)\./);
  });

  it('hostLabels restrict placement to the labelled hosts; none labelled: INSUFFICIENT_CAPACITY naming the labels; containerSecurity reaches the agent', async () => {
    const security = { allowPrivilegeEscalation: true, pidsLimit: 8192 };
    const put = await envs('put', { name: 'gold', backends: ['docker', 'vmware'], hostLabels: { tier: 'gold' }, containerSecurity: security });
    expect(put.ok, JSON.stringify(put)).toBe(true);
    const r = await scaleAndWait(request('gold', 'web', 3, { image: 'web:1' }));
    expect(r.type, JSON.stringify(r.data)).toBe('io.orangery.scale.completed');
    expect((await instances('gold', 'web')).map((i) => i.host)).toEqual(['dk-0001', 'dk-0001', 'dk-0001']);
    const sent = createCommands.filter((c) => String(c.body['instanceId']).startsWith('gold:web:'));
    expect(sent.length).toBeGreaterThanOrEqual(3);
    for (const c of sent) expect(c.body['security']).toEqual(security);
    // never in an event
    expect(JSON.stringify(r)).not.toContain('pidsLimit');

    expect((await envs('put', { name: 'gold', backends: ['docker'], hostLabels: { tier: 'platinum' } })).ok).toBe(true);
    const none = await scaleAndWait(request('gold', 'api', 1, { image: 'web:1' }));
    expect(none.type).toBe('io.orangery.scale.rejected');
    const reason = none.data['reason'] as { code: string; message: string };
    expect(reason.code).toBe('INSUFFICIENT_CAPACITY');
    expect(reason.message).toContain('tier=platinum');
  });

  it('a changed record moves nothing running; the next request for the app follows it', async () => {
    expect((await envs('put', { name: 'move', backends: ['docker'], hostLabels: { tier: 'gold' } })).ok).toBe(true);
    expect((await scaleAndWait(request('move', 'web', 2, { image: 'web:1', spread: 'none' }))).type).toBe('io.orangery.scale.completed');
    const before = await instances('move', 'web');
    expect(before.map((i) => i.host)).toEqual(['dk-0001', 'dk-0001']);
    expect((await envs('put', { name: 'move', backends: ['docker'], hostLabels: { tier: 'std' } })).ok).toBe(true);
    // reconciles (every second) and anti-entropy (every 2 s) run: nothing moves or is rejected
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await instances('move', 'web')).toEqual(before);
    const next = await scaleAndWait(request('move', 'web', 3, { image: 'web:1', spread: 'none' }));
    expect(next.type, JSON.stringify(next.data)).toBe('io.orangery.scale.completed');
    const after = await instances('move', 'web');
    expect(after.slice(0, 2)).toEqual(before);
    expect(['dk-0002', 'dk-0003']).toContain(after[2].host);
  });

  it('an env without a record behaves as before: ORANGERY_ENV_BACKENDS when listed, auto otherwise', async () => {
    // `legacy` was seeded; without its record the variable rules it again
    expect((await envs('delete', { name: 'legacy' })).ok).toBe(true);
    const r = await scaleAndWait(request('legacy', 'vm', 1, { template: 'centos-9', backend: 'vmware' }));
    expect(r.type).toBe('io.orangery.scale.rejected');
    expect(r.data['reason']).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'data.backend' } });
    const free = await scaleAndWait(request('free', 'vm', 1, { template: 'centos-9' }));
    expect(free.type, JSON.stringify(free.data)).toBe('io.orangery.scale.completed');
    expect((await instances('free', 'vm'))[0].backend).toBe('vmware');
  });

  it('bounds the number of records: a new name beyond 10,000 is INVALID_REQUEST, a replace still works', async () => {
    const [[row]] = (await db.query('SELECT COUNT(*) AS n FROM sched_envs')) as unknown as [[{ n: number }]];
    const fill = 10_000 - Number(row.n);
    const now = new Date();
    const values = Array.from({ length: fill }, (_, i) => [`zz-fill-${i}`, JSON.stringify({ name: `zz-fill-${i}`, backends: ['docker'] }), now, now]);
    await db.query('INSERT INTO sched_envs (name, body, created_at, updated_at) VALUES ?', [values]);
    const r = await envs('put', { name: 'one-too-many', backends: ['docker'] });
    expect(r.error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'name', limit: 10_000 } });
    expect((await envs('get', { name: 'one-too-many' })).error.code).toBe('NOT_FOUND');
    expect((await envs('put', { name: 'prod', backends: ['docker', 'vmware'] })).ok).toBe(true);
    await db.query("DELETE FROM sched_envs WHERE name LIKE 'zz-fill-%'");
  });

  it('a record survives the restart of every scheduler replica, and the seed does not overwrite it', async () => {
    const before = (await envs('put', { name: 'seeded', backends: ['vmware'], hostLabels: { zone: 'b' } })).data;
    await Promise.all(schedulers.splice(0).map((s) => s.terminate()));
    const s = await startScheduler();
    await s.waitForLog('leading: consuming scale requests', 60_000);
    expect((await envs('get', { name: 'seeded' })).data).toEqual(before);
    const seed = s.lines.map((l) => JSON.parse(l)).find((l) => String(l.msg).includes('ORANGERY_ENV_BACKENDS is a seed'));
    expect(seed).toMatchObject({ created: ['legacy'], kept: ['seeded'] });
    // and the leader applies it
    const r = await scaleAndWait(request('seeded', 'web', 1, { template: 'centos-9' }));
    expect(r.type).toBe('io.orangery.scale.rejected');
    expect((r.data['reason'] as { message: string }).message).toContain('zone=b');
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ContractClient,
  freePort,
  freshDatabase,
  HarnessDir,
  NatsServer,
  observeGet,
  parseProm,
  promValue,
  ScaleWatcher,
  ServiceProcess,
  SimulatedFleet,
  waitFor,
} from '@orangery/testing';

// CONTRACT.md "Health and metrics": /healthz, /readyz and /metrics of real ipam, scheduler
// and migrator processes, on a real nats-server and MariaDB, with simulated agents.
const dir = new HarnessDir('observe');
let nats: NatsServer;
let dbUrl: string;
let client: ContractClient;
let scale: ScaleWatcher;
let fleet: SimulatedFleet;
const ports: Record<'ipam' | 'scheduler' | 'migrator', number> = { ipam: 0, scheduler: 0, migrator: 0 };

const get = observeGet;
const metrics = async (port: number) => {
  const r = await get(port, '/metrics');
  expect(r.status).toBe(200);
  expect(r.type).toContain('text/plain');
  return parseProm(r.text);
};
const value = promValue;

beforeAll(async () => {
  for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('observe');
  client = await ContractClient.connect(nats.url);
  scale = new ScaleWatcher(client.nc);
}, 60_000);

afterAll(async () => {
  scale?.close();
  await fleet?.stop();
  await client?.close();
  await dir.cleanup();
});

describe('health and metrics endpoints', () => {
  it('answers /healthz while NATS is down, /readyz 503 naming NATS, then 200 once connected', async () => {
    await nats.stop();
    const ipam = ServiceProcess.spawn(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl, ORANGERY_OBSERVE_ADDR: `127.0.0.1:${ports.ipam}` });
    await waitFor('ipam /healthz', async () => (await get(ports.ipam, '/healthz').catch(() => undefined))?.status === 200, 20_000);
    const notReady = await get(ports.ipam, '/readyz');
    expect(notReady.status).toBe(503);
    const body = JSON.parse(notReady.text) as { ready: boolean; checks: Record<string, string> };
    expect(body.ready).toBe(false);
    expect(body.checks['nats']).not.toBe('ok');
    await nats.start();
    await ipam.waitForLog('ready', 30_000);
    const ready = await waitFor('ipam ready', async () => ((await get(ports.ipam, '/readyz')).status === 200 ? get(ports.ipam, '/readyz') : undefined), 20_000);
    expect(JSON.parse(ready.text)).toEqual({ ready: true, checks: { nats: 'ok', database: 'ok' } });
    expect((await get(ports.ipam, '/nope')).status).toBe(404);
  }, 90_000);

  it('holds the contract series with values that match the fleet after a scale', async () => {
    const pool = await client.request('orangery.ipam.pool.create', { name: 'obs', cidr: '198.19.8.0/24', gateway: '198.19.8.1', cooldownSeconds: 0 });
    expect(pool.ok, JSON.stringify(pool)).toBe(true);
    // a refused request counts under its code
    const bad = await client.request('orangery.ipam.pool.get', { name: 'no-such-pool' });
    expect(bad.ok).toBe(false);
    fleet = await SimulatedFleet.start({
      natsUrl: nats.url,
      hosts: 2,
      idPrefix: 'obs-',
      capacity: { cpu: 8, memoryMb: 16_384, diskMb: 100_000 },
      heartbeatSeconds: 1,
    });
    const env = { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl, ORANGERY_HEARTBEAT_SECONDS: '1' };
    const scheduler = await ServiceProcess.start(dir, 'scheduler', { ...env, ORANGERY_OBSERVE_ADDR: `127.0.0.1:${ports.scheduler}` });
    await scheduler.waitForLog('leading: consuming scale requests', 30_000);
    await ServiceProcess.start(dir, 'migrator', { ...env, ORANGERY_OBSERVE_ADDR: `127.0.0.1:${ports.migrator}` });
    const id = await scale.publish({
      env: 'test',
      app: 'obs',
      replicas: 3,
      resources: { cpu: 1, memoryMb: 512, heapMb: 256, diskMb: 1_000 },
      image: 'svc:1',
      backend: 'docker',
      pool: 'obs',
    });
    expect((await scale.outcome(id, 60_000)).type).toBe('io.orangery.scale.completed');
    const list = (await client.request('orangery.scheduler.instances.list', {})).data.instances as { state: string }[];
    const running = list.filter((i) => i.state === 'running').length;
    expect(running).toBe(3);

    const s = await waitFor('scheduler metrics to show 2 ready hosts', async () => {
      const m = await metrics(ports.scheduler);
      return value(m, 'orangery_hosts', { backend: 'docker', state: 'ready' }) === 2 ? m : undefined;
    });
    expect(value(s, 'orangery_instances', { backend: 'docker', state: 'running' })).toBe(running);
    expect(value(s, 'orangery_scheduler_leader', {})).toBe(1);
    expect(value(s, 'orangery_failover_paused', { backend: 'docker' })).toBe(0);
    expect(value(s, 'orangery_scale_requests_pending', {})).toBe(0);
    expect(value(s, 'orangery_scale_request_oldest_pending_seconds', {})).toBe(0);
    expect(value(s, 'process_resident_memory_bytes', {})).toBeGreaterThan(0);
    expect(value(s, 'orangery_requests_total', { subject: 'orangery.scheduler.instances.list', code: 'ok' })).toBeGreaterThanOrEqual(1);

    const i = await metrics(ports.ipam);
    expect(value(i, 'orangery_ipam_addresses', { pool: 'obs', state: 'used' })).toBe(3);
    // 256 addresses, network, gateway and broadcast are not handed out
    const free = value(i, 'orangery_ipam_addresses', { pool: 'obs', state: 'free' }) ?? -1;
    expect(free + 3).toBe((await client.request('orangery.ipam.pool.get', { name: 'obs' })).data.size);
    expect(value(i, 'orangery_requests_total', { subject: 'orangery.ipam.pool.get', code: 'POOL_NOT_FOUND' })).toBe(1);
    expect(value(i, 'orangery_request_duration_seconds_count', { subject: 'orangery.ipam.pool.create' })).toBe(1);

    const m = await get(ports.migrator, '/readyz');
    expect(m.status).toBe(200);
    expect(parseProm((await get(ports.migrator, '/metrics')).text).some((x) => x.name === 'nodejs_heap_size_used_bytes')).toBe(true);
  }, 120_000);

  it('skips a port in use with a log line and keeps serving NATS', async () => {
    const other = await ServiceProcess.start(dir, 'ipam', {
      ORANGERY_NATS_URL: nats.url,
      ORANGERY_DB_URL: dbUrl,
      ORANGERY_OBSERVE_ADDR: `127.0.0.1:${ports.ipam}`,
    });
    expect(other.lines.some((l) => l.includes('health and metrics endpoint not served'))).toBe(true);
    expect(other.child.exitCode).toBeNull();
  }, 60_000);

  it('refuses a malformed ORANGERY_OBSERVE_ADDR with exit 2 and one line', async () => {
    const p = ServiceProcess.spawn(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl, ORANGERY_OBSERVE_ADDR: 'not-an-address' });
    expect(await p.exited()).toBe(2);
    expect(p.stderr).toMatch(/ORANGERY_OBSERVE_ADDR must be host:port/);
  }, 30_000);
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, type Connection } from 'mysql2/promise';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ServiceProcess, waitFor } from '@orangery/testing';

// ipam's bounds through the public subjects, on a real process, NATS and MariaDB: the
// total-addresses quota of pool.create (ORANGERY_IPAM_MAX_ADDRESSES), and the outbox marking
// every published event (sent = 1) on the hot path, so its sweeper has nothing to republish.
const dir = new HarnessDir('ipam-bounds');
const QUOTA = 300;
let nats: NatsServer;
let dbUrl: string;
let db: Connection;
let client: ContractClient;
let ipam: ServiceProcess;

async function rows<T>(sql: string, params: unknown[] = []): Promise<T[]> {
  const [r] = await db.query(sql, params);
  return r as T[];
}

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('ipam_bounds');
  ipam = await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl, ORANGERY_IPAM_MAX_ADDRESSES: String(QUOTA) });
  client = await ContractClient.connect(nats.url);
  const u = new URL(dbUrl);
  db = await createConnection({ host: u.hostname, port: Number(u.port), user: u.username, password: u.password, database: u.pathname.slice(1) });
}, 60_000);

afterAll(async () => {
  await client?.close();
  await db?.end();
  await ipam?.terminate();
  await nats?.stop();
  await dir.cleanup();
});

describe('ipam bounds', () => {
  it('refuses a pool that would exceed the address quota with INVALID_REQUEST naming cidr, and changes nothing', async () => {
    const first = await client.request('orangery.ipam.pool.create', { name: 'first', cidr: '198.18.10.0/24', gateway: '198.18.10.1' });
    expect(first.ok).toBe(true);
    const before = JSON.stringify(await rows('SELECT COUNT(*) AS n FROM ipam_address'));
    const over = await client.request('orangery.ipam.pool.create', { name: 'second', cidr: '198.18.11.0/24', gateway: '198.18.11.1' });
    expect(over).toMatchObject({ ok: false, error: { code: 'INVALID_REQUEST', details: { field: 'cidr', size: 253, quota: QUOTA, inPools: 253 } } });
    expect(JSON.stringify(await rows('SELECT COUNT(*) AS n FROM ipam_address'))).toBe(before);
    expect((await client.request('orangery.ipam.pool.get', { name: 'second' })).error.code).toBe('POOL_NOT_FOUND');
    // what is left of the quota still takes a small pool
    expect((await client.request('orangery.ipam.pool.create', { name: 'small', cidr: '198.18.12.0/28', gateway: '198.18.12.1' })).ok).toBe(true);
  });

  it('marks every event JetStream acked as published right after the change (the sweeper has nothing left to republish)', async () => {
    for (let slot = 0; slot < 10; slot++) {
      const r = await client.request('orangery.ipam.allocate', { pool: 'first', owner: { env: 'test', app: 'marks', slot } });
      expect(r.ok).toBe(true);
    }
    await waitFor('every audit row marked', async () => {
      const [pending] = await rows<{ n: number }>('SELECT COUNT(*) AS n FROM ipam_audit WHERE sent <> 1');
      return Number(pending!.n) === 0;
    });
    const [row] = await rows<{ n: number }>("SELECT COUNT(*) AS n FROM ipam_audit WHERE action = 'allocate' AND event_id IS NOT NULL");
    expect(Number(row!.n)).toBe(10);
  });
});

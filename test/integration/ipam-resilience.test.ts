import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContractClient, HarnessDir, NatsServer, PrivateMariadb, ServiceProcess, waitFor } from '@orangery/testing';

// The database and NATS going away, at start and under load: not configuration errors.
// This file runs its own MariaDB so it can kill it.
const dir = new HarnessDir('ipam-resilience');
let nats: NatsServer;
let db: PrivateMariadb;
let client: ContractClient;

beforeAll(async () => {
  [nats, db] = await Promise.all([NatsServer.start(dir), PrivateMariadb.start(dir)]);
  client = await ContractClient.connect(nats.url);
});

afterAll(async () => {
  await client?.close();
  await dir.cleanup();
});

const owner = (slot: number) => ({ env: 'test', app: 'resilient', slot });

describe('ipam survives its dependencies', () => {
  it('waits for a database that is down at start, then serves', async () => {
    await db.kill();
    const ipam = ServiceProcess.spawn(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: db.url });
    await ipam.waitForLog('database not reachable yet; retrying');
    expect(ipam.child.exitCode).toBeNull();
    await db.start();
    await ipam.waitForLog('ready', 30_000);
    const pool = await client.request('orangery.ipam.pool.create', { name: 'p-res', cidr: '198.18.20.0/24', gateway: '198.18.20.1' });
    expect(pool.ok).toBe(true);
    await ipam.terminate();
  });

  it('reconnects by itself after MariaDB is killed and restarted mid-run', async () => {
    const ipam = await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: db.url });
    const first = await client.request('orangery.ipam.allocate', { pool: 'p-res', owner: owner(0) });
    expect(first.ok).toBe(true);

    await db.kill();
    const during = await client.request('orangery.ipam.allocate', { pool: 'p-res', owner: owner(1) }, 15_000);
    expect(during.ok).toBe(false);
    expect(during.error.code).toBe('UNAVAILABLE');
    expect(ipam.child.exitCode).toBeNull();

    await db.start();
    const after = await waitFor(
      'ipam to answer again',
      async () => {
        const r = await client.request('orangery.ipam.allocate', { pool: 'p-res', owner: owner(1) }, 5_000);
        return r.ok ? r : undefined;
      },
      30_000,
      250,
    );
    expect(after.data.ip).not.toBe(first.data.ip);
    // The failed attempt during the outage changed nothing: owner 0 still holds its address.
    expect((await client.request('orangery.ipam.get', { owner: owner(0) })).data.ip).toBe(first.data.ip);
    expect(ipam.child.exitCode).toBeNull();
    await ipam.terminate();
  });

  it('waits for NATS that is down at start, then serves', async () => {
    await nats.stop();
    const ipam = ServiceProcess.spawn(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: db.url });
    await new Promise((r) => setTimeout(r, 2_000));
    expect(ipam.child.exitCode).toBeNull();
    expect(ipam.hasLog('ready')).toBe(false);
    await nats.start();
    await ipam.waitForLog('ready', 30_000);
    await client.close();
    client = await ContractClient.connect(nats.url);
    expect((await client.request('orangery.ipam.get', { owner: owner(0) })).ok).toBe(true);
    expect(await ipam.terminate()).toBe(0);
  });
});

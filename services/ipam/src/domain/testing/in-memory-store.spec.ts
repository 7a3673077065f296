import { describe, it, expect } from 'vitest';
import type { Owner } from '@orangery/contracts';
import { ipv4ToInt } from '@orangery/netaddr';
import { planPool } from '../pool-plan';
import { OwnerConflict, type AddressRecord, type IpamTx } from '../ports';
import { FakeClock, InMemoryIpamStore } from './in-memory-store';

// The test double must keep the port contracts, or the service tests prove nothing.

const ip = ipv4ToInt;
const web0: Owner = { env: 'prod', app: 'web', slot: 0 };
const T0 = 1_000_000;

/** A store with pool #1 = 198.18.0.0/29 (rows .2 to .6). */
async function storeWithPool() {
  const store = new InMemoryIpamStore();
  const pool = await store.transaction((tx) => tx.insertPool(planPool({ name: 'net', cidr: '198.18.0.0/29', gateway: '198.18.0.1' }), new Date(T0)));
  return { store, pool };
}

const patchOf = (row: AddressRecord, over: Partial<AddressRecord>) => {
  const { ip: _ip, poolId: _poolId, ...rest } = { ...row, ...over };
  return rest;
};

async function setRow(tx: IpamTx, addr: string, over: Partial<AddressRecord>) {
  const row = (await tx.lockAddress(ip(addr)))!;
  await tx.updateAddress(row.ip, patchOf(row, over));
}

describe('InMemoryIpamStore', () => {
  it('creates one free, never-used row per allocatable address', async () => {
    const { store } = await storeWithPool();
    const rows = [...store.snapshot().addresses.values()];
    expect(rows.map((r) => [r.ip, r.state, r.availableAt])).toEqual(
      ['198.18.0.2', '198.18.0.3', '198.18.0.4', '198.18.0.5', '198.18.0.6'].map((a) => [ip(a), 'free', 0]),
    );
  });

  it('lockNextAvailable picks the lowest never-used address first', async () => {
    const { store, pool } = await storeWithPool();
    await store.transaction((tx) => setRow(tx, '198.18.0.2', { state: 'released', owner: web0, availableAt: T0 - 10 }));
    expect((await store.read((tx) => tx.lockNextAvailable(pool.id, T0)))!.ip).toBe(ip('198.18.0.3'));
  });

  it('lockNextAvailable then picks the address released longest ago, skipping those in cooldown and live ones', async () => {
    const { store, pool } = await storeWithPool();
    await store.transaction(async (tx) => {
      await setRow(tx, '198.18.0.2', { state: 'released', owner: web0, availableAt: T0 - 5 });
      await setRow(tx, '198.18.0.3', { state: 'allocated', owner: { ...web0, slot: 1 }, availableAt: null });
      await setRow(tx, '198.18.0.4', { state: 'released', owner: { ...web0, slot: 2 }, availableAt: T0 + 1 });
      await setRow(tx, '198.18.0.5', { state: 'released', owner: { ...web0, slot: 3 }, availableAt: T0 - 50 });
      await setRow(tx, '198.18.0.6', { state: 'released', owner: { ...web0, slot: 4 }, availableAt: T0 });
    });
    expect((await store.read((tx) => tx.lockNextAvailable(pool.id, T0)))!.ip).toBe(ip('198.18.0.5'));
  });

  it('updateAddress refuses a second live address for one owner', async () => {
    const { store } = await storeWithPool();
    await store.transaction((tx) => setRow(tx, '198.18.0.2', { state: 'allocated', owner: web0, availableAt: null }));
    await expect(store.transaction((tx) => setRow(tx, '198.18.0.3', { state: 'bound', owner: web0, availableAt: null }))).rejects.toBeInstanceOf(OwnerConflict);
  });

  it('a transaction that throws changes nothing and records no audit entry', async () => {
    const { store } = await storeWithPool();
    const before = store.snapshot();
    const audits = store.audits.length;
    await expect(
      store.transaction(async (tx) => {
        await setRow(tx, '198.18.0.2', { state: 'allocated', owner: web0, availableAt: null });
        await tx.audit({ action: 'allocate', ip: ip('198.18.0.2'), poolName: 'net', before: null, after: null });
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(store.snapshot()).toEqual(before);
    expect(store.audits).toHaveLength(audits);
  });

  it('usage counts live rows as used and rows still in cooldown as quarantined', async () => {
    const { store, pool } = await storeWithPool();
    await store.transaction(async (tx) => {
      await setRow(tx, '198.18.0.2', { state: 'allocated', owner: web0, availableAt: null });
      await setRow(tx, '198.18.0.3', { state: 'released', owner: { ...web0, slot: 1 }, availableAt: T0 + 9 });
      await setRow(tx, '198.18.0.4', { state: 'released', owner: { ...web0, slot: 2 }, availableAt: T0 });
    });
    expect(await store.read((tx) => tx.usage(pool.id, T0))).toEqual({ used: 1, quarantined: 1, nextAvailableAt: T0 + 9 });
  });

  it("openAllocation returns the pool by name and the owner's rows, live or released", async () => {
    const { store, pool } = await storeWithPool();
    await store.transaction(async (tx) => {
      await setRow(tx, '198.18.0.2', { state: 'released', owner: web0, availableAt: T0 });
      await setRow(tx, '198.18.0.3', { state: 'allocated', owner: web0, availableAt: null });
      await setRow(tx, '198.18.0.4', { state: 'allocated', owner: { ...web0, slot: 1 }, availableAt: null });
    });
    const opened = await store.read((tx) => tx.openAllocation('net', web0));
    expect(opened.pool).toEqual(pool);
    expect(opened.mine.map((r) => r.ip).sort()).toEqual([ip('198.18.0.2'), ip('198.18.0.3')]);
    expect((await store.read((tx) => tx.openAllocation('nope', web0))).pool).toBeUndefined();
  });

  it('FakeClock moves only when told', () => {
    const clock = new FakeClock(T0);
    expect(clock.now()).toBe(T0);
    clock.advance(1.5);
    expect(clock.now()).toBe(T0 + 1500);
  });
});

import { describe, it, expect } from 'vitest';
import type { Owner } from '@orangery/contracts';
import { ipv4ToInt } from '@orangery/netaddr';
import { planPool } from '../pool-plan';
import { BLOCKED_AT, OwnerConflict, type AddressRecord, type IpamTx } from '../ports';
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

  it('usage counts live rows as used, rows still in cooldown as quarantined and blocked rows apart', async () => {
    const { store, pool } = await storeWithPool();
    await store.transaction(async (tx) => {
      await setRow(tx, '198.18.0.2', { state: 'allocated', owner: web0, availableAt: null });
      await setRow(tx, '198.18.0.3', { state: 'released', owner: { ...web0, slot: 1 }, availableAt: T0 + 9 });
      await setRow(tx, '198.18.0.4', { state: 'released', owner: { ...web0, slot: 2 }, availableAt: T0 });
      await tx.setAvailableAt([ip('198.18.0.5'), ip('198.18.0.6')], BLOCKED_AT);
    });
    expect(await store.read((tx) => tx.usage(pool.id, T0))).toEqual({ used: 1, quarantined: 1, blocked: 2, nextAvailableAt: T0 + 9 });
  });

  it('freeBlockCandidates lists aligned ranges whose every address is available, never-used ranges first', async () => {
    const store = new InMemoryIpamStore();
    // 198.18.0.0/28: rows .1 to .14 (.0 network, .15 broadcast), gateway .1 excluded too.
    const pool = await store.transaction((tx) => tx.insertPool(planPool({ name: 'n16', cidr: '198.18.0.0/28', gateway: '198.18.0.1' }), new Date(T0)));
    await store.transaction(async (tx) => {
      await setRow(tx, '198.18.0.5', { state: 'released', owner: web0, availableAt: T0 - 1 }); // usable, not never-used
      await setRow(tx, '198.18.0.9', { state: 'allocated', owner: { ...web0, slot: 1 }, availableAt: null });
    });
    // Ranges of 4: .0-.3 lacks .0/.1, .4-.7 has a used one, .8-.11 a live one, .12-.15 lacks .15.
    expect(await store.read((tx) => tx.freeBlockCandidates(pool.id, 4, T0, 10))).toEqual([ip('198.18.0.4')]);
    expect(await store.read((tx) => tx.freeBlockCandidates(pool.id, 2, T0, 10))).toEqual(
      ['198.18.0.2', '198.18.0.6', '198.18.0.10', '198.18.0.12', '198.18.0.4'].map(ip),
    );
    expect(await store.read((tx) => tx.freeBlockCandidates(pool.id, 2, T0, 2))).toEqual(['198.18.0.2', '198.18.0.6'].map(ip));
  });

  it('insertBlock refuses a second block for one host and pool, as the unique key does', async () => {
    const { store, pool } = await storeWithPool();
    const block = { poolId: pool.id, host: 'sw-a', first: ip('198.18.0.4'), last: ip('198.18.0.5'), size: 2, createdAt: new Date(T0) };
    await store.transaction((tx) => tx.insertBlock(block));
    await expect(store.transaction((tx) => tx.insertBlock({ ...block, first: ip('198.18.0.2'), last: ip('198.18.0.3') }))).rejects.toBeInstanceOf(
      OwnerConflict,
    );
    expect((await store.read((tx) => tx.findBlockAt(ip('198.18.0.5'))))?.host).toBe('sw-a');
    expect(await store.read((tx) => tx.findBlockAt(ip('198.18.0.6')))).toBeUndefined();
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

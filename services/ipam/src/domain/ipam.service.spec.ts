import { describe, it, expect } from 'vitest';
import { CURSORS, decodeCursor, OrangeryError, pageQueryOf, type Allocation, type Owner, type PoolCreateRequest } from '@orangery/contracts';
import { ipv4ToInt } from '@orangery/netaddr';
import { IpamService, EVENT_SOURCE } from './ipam.service';
import { FakeClock, InMemoryIpamStore } from './testing/in-memory-store';

// ---- factories -------------------------------------------------------------------------

const owner = (app: string, slot: number, env = 'prod'): Owner => ({ env, app, slot });
const instanceOf = (o: Owner): string => `${o.env}:${o.app}:${o.slot}`;

/** 'net': 198.18.0.0/29, gateway .1, so it hands out .2 to .6 (5 addresses); cooldown 300 s. */
const poolReq = (over: Partial<PoolCreateRequest> = {}): PoolCreateRequest => ({
  name: 'net',
  cidr: '198.18.0.0/29',
  gateway: '198.18.0.1',
  ...over,
});
const OTHER: PoolCreateRequest = { name: 'other', cidr: '198.18.1.0/29', gateway: '198.18.1.1' };
const COOLDOWN = 300;

function setup() {
  const store = new InMemoryIpamStore();
  const clock = new FakeClock();
  const ipam = new IpamService(store, clock);
  const allocate = (o: Owner, pool = 'net', ip?: string) => ipam.allocate({ pool, owner: o, ...(ip ? { ip } : {}) });
  const bind = (ip: string, o: Owner, host = 'esx-1', backend: 'docker' | 'vmware' = 'docker') => ipam.bind({ ip, instanceId: instanceOf(o), backend, host });
  /** Allocates for each owner in turn; returns the IPs. */
  const fill = async (...owners: Owner[]) => {
    const ips: string[] = [];
    for (const o of owners) ips.push((await allocate(o)).ip);
    return ips;
  };
  return { store, clock, ipam, allocate, bind, fill };
}

async function withPools(...pools: PoolCreateRequest[]) {
  const s = setup();
  for (const p of pools.length > 0 ? pools : [poolReq()]) await s.ipam.createPool(p);
  return s;
}

/** The OrangeryError `p` rejects with. */
async function rejection(p: Promise<unknown>): Promise<OrangeryError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(OrangeryError);
  return e as OrangeryError;
}

const expectError = async (p: Promise<unknown>, code: string, details?: Record<string, unknown>) => {
  const e = await rejection(p);
  expect(e.code).toBe(code);
  if (details) expect(e.details).toMatchObject(details);
  return e;
};

const web0 = owner('web', 0);
const web1 = owner('web', 1);
const api0 = owner('api', 0);

// ---- pools ------------------------------------------------------------------------------

describe('pool.create', () => {
  it('returns the pool with vlan 0 and a 300 s cooldown by default', async () => {
    const { ipam, clock } = setup();
    expect(await ipam.createPool(poolReq())).toEqual({
      name: 'net',
      cidr: '198.18.0.0/29',
      gateway: '198.18.0.1',
      vlan: 0,
      reserved: [],
      cooldownSeconds: 300,
      prefixLength: 29,
      createdAt: new Date(clock.now()).toISOString(),
    });
  });

  it('keeps the vlan, reserved addresses and cooldown given', async () => {
    const { ipam } = setup();
    const pool = await ipam.createPool(poolReq({ vlan: 100, reserved: ['198.18.0.3'], cooldownSeconds: 0 }));
    expect(pool).toMatchObject({ vlan: 100, reserved: ['198.18.0.3'], cooldownSeconds: 0 });
  });

  it('refuses a second pool with the same name: POOL_EXISTS', async () => {
    const { ipam } = await withPools();
    await expectError(ipam.createPool(poolReq({ cidr: '198.18.9.0/24', gateway: '198.18.9.1' })), 'POOL_EXISTS', { name: 'net' });
  });

  it('checks the name (POOL_EXISTS) before the overlap (POOL_OVERLAP)', async () => {
    const { ipam } = await withPools();
    await expectError(ipam.createPool(poolReq()), 'POOL_EXISTS');
  });

  it('checks the request (INVALID_REQUEST) before the name (POOL_EXISTS)', async () => {
    const { ipam } = await withPools();
    await expectError(ipam.createPool(poolReq({ gateway: '198.18.0.0' })), 'INVALID_REQUEST', { field: 'gateway' });
  });

  it.each([
    ['the same cidr', '198.18.0.0/29', '198.18.0.1'],
    ['a cidr inside it', '198.18.0.4/30', '198.18.0.5'],
    ['a cidr around it', '198.18.0.0/24', '198.18.0.254'],
    ['a single address of it', '198.18.0.7/32', '198.18.0.7'],
  ])('refuses a pool on %s under another name: POOL_OVERLAP naming the other pool', async (_what, cidr, gateway) => {
    const { ipam } = await withPools();
    await expectError(ipam.createPool({ name: 'rival', cidr, gateway }), 'POOL_OVERLAP', { pool: 'net', cidr: '198.18.0.0/29' });
  });

  it('accepts a pool right next to another one', async () => {
    const { ipam } = await withPools();
    await expect(ipam.createPool({ name: 'next', cidr: '198.18.0.8/29', gateway: '198.18.0.9' })).resolves.toMatchObject({ name: 'next' });
  });

  it('refuses a pool larger than /16, stating the limit', async () => {
    const { ipam } = setup();
    await expectError(ipam.createPool(poolReq({ cidr: '198.18.0.0/15' })), 'INVALID_REQUEST', { field: 'cidr', limit: '/16' });
  });
});

describe('pool.get and pool.list', () => {
  it('a new pool has every address free', async () => {
    const { ipam } = await withPools();
    expect(await ipam.getPool('net')).toMatchObject({ name: 'net', size: 5, used: 0, free: 5, quarantined: 0 });
  });

  it('size leaves out network, broadcast, gateway and reserved addresses', async () => {
    const { ipam } = await withPools(poolReq({ cidr: '198.18.0.0/24', reserved: ['198.18.0.5', '198.18.0.10-198.18.0.20'] }));
    expect(await ipam.getPool('net')).toMatchObject({ size: 241, free: 241 });
  });

  it('counts allocated and bound addresses as used and released ones in cooldown as quarantined', async () => {
    const { ipam, allocate, bind, clock } = await withPools();
    await allocate(web0);
    const bound = await allocate(web1);
    await bind(bound.ip, web1);
    await allocate(api0);
    await ipam.release({ owner: api0 });
    clock.advance(COOLDOWN - 1);
    expect(await ipam.getPool('net')).toMatchObject({ size: 5, used: 2, quarantined: 1, free: 2 });
  });

  it('counts a released address as free once its cooldown has passed', async () => {
    const { ipam, allocate, clock } = await withPools();
    await allocate(web0);
    await ipam.release({ owner: web0 });
    clock.advance(COOLDOWN);
    expect(await ipam.getPool('net')).toMatchObject({ size: 5, used: 0, quarantined: 0, free: 5 });
  });

  it('refuses an unknown pool: POOL_NOT_FOUND', async () => {
    const { ipam } = await withPools();
    await expectError(ipam.getPool('nope'), 'POOL_NOT_FOUND');
  });

  it('lists every pool by name with its usage', async () => {
    const { ipam, allocate } = await withPools(OTHER, poolReq());
    await allocate(web0, 'other');
    const { pools } = await ipam.listPools();
    expect(pools.map((p) => [p.name, p.size, p.used, p.free])).toEqual([
      ['net', 5, 0, 5],
      ['other', 5, 1, 4],
    ]);
  });

  it('lists nothing when there are no pools', async () => {
    expect(await setup().ipam.listPools()).toEqual({ pools: [] });
  });

  it('pages the list by name: nextCursor only while more remain, each pool once', async () => {
    const { ipam } = await withPools(OTHER, poolReq());
    const first = await ipam.listPools({ limit: 1, after: undefined });
    expect(first.pools.map((p) => p.name)).toEqual(['net']);
    expect(decodeCursor(CURSORS.pools, first.nextCursor!)).toEqual(['net']);
    const second = await ipam.listPools(pageQueryOf(CURSORS.pools, { limit: 1, cursor: first.nextCursor! }));
    expect(second.pools.map((p) => p.name)).toEqual(['other']);
    expect(second.nextCursor).toBeUndefined();
    expect(await ipam.listPools({ limit: 2, after: undefined })).not.toHaveProperty('nextCursor');
    expect(await ipam.listPools({ limit: 5, after: ['other'] })).toEqual({ pools: [] });
  });
});

describe('pool.delete', () => {
  it('refuses while an address is allocated: POOL_IN_USE', async () => {
    const { ipam, allocate } = await withPools();
    await allocate(web0);
    await expectError(ipam.deletePool('net'), 'POOL_IN_USE');
  });

  it('refuses while an address is bound: POOL_IN_USE', async () => {
    const { ipam, allocate, bind } = await withPools();
    await bind((await allocate(web0)).ip, web0);
    await expectError(ipam.deletePool('net'), 'POOL_IN_USE');
  });

  it('deletes a pool whose addresses are only released, taking them along', async () => {
    const { ipam, allocate } = await withPools();
    const a = await allocate(web0);
    await ipam.release({ ip: a.ip });
    expect(await ipam.deletePool('net')).toEqual({});
    await expectError(ipam.getPool('net'), 'POOL_NOT_FOUND');
    await expectError(ipam.get({ ip: a.ip }), 'NOT_FOUND');
  });

  it('frees the cidr for a new pool', async () => {
    const { ipam } = await withPools();
    await ipam.deletePool('net');
    await expect(ipam.createPool({ name: 'again', cidr: '198.18.0.0/28', gateway: '198.18.0.1' })).resolves.toMatchObject({ name: 'again' });
  });

  it('refuses an unknown pool: POOL_NOT_FOUND', async () => {
    await expectError(setup().ipam.deletePool('nope'), 'POOL_NOT_FOUND');
  });
});

// ---- allocate ---------------------------------------------------------------------------

describe('allocate', () => {
  it('gives a fresh owner the lowest never-used address, as an allocation', async () => {
    const { allocate } = await withPools(poolReq({ vlan: 42 }));
    expect(await allocate(web0)).toStrictEqual({
      ip: '198.18.0.2',
      pool: 'net',
      prefixLength: 29,
      gateway: '198.18.0.1',
      vlan: 42,
      mac: '02:4f:c6:12:00:02',
      owner: web0,
      state: 'allocated',
    });
  });

  it('gives successive fresh owners ascending never-used addresses', async () => {
    const { fill } = await withPools();
    expect(await fill(web0, web1, api0)).toEqual(['198.18.0.2', '198.18.0.3', '198.18.0.4']);
  });

  it('skips never-used addresses someone asked for explicitly', async () => {
    const { allocate, fill } = await withPools();
    await allocate(api0, 'net', '198.18.0.3');
    expect(await fill(web0, web1)).toEqual(['198.18.0.2', '198.18.0.4']);
  });

  it('is idempotent per owner: the same address again, and no new event', async () => {
    const { allocate, store } = await withPools();
    const first = await allocate(web0);
    expect(await allocate(web0)).toEqual(first);
    expect(store.events).toHaveLength(1);
  });

  it('is idempotent when the owner asks for the ip it holds', async () => {
    const { allocate, store } = await withPools();
    const first = await allocate(web0);
    expect(await allocate(web0, 'net', first.ip)).toEqual(first);
    expect(store.events).toHaveLength(1);
  });

  it('returns a bound address as bound to its owner asking again', async () => {
    const { allocate, bind } = await withPools();
    const bound = await bind((await allocate(web0)).ip, web0);
    expect(await allocate(web0)).toEqual(bound);
  });

  it('gives concurrent requests of one owner one address', async () => {
    const { allocate, store } = await withPools();
    const results = await Promise.all([allocate(web0), allocate(web0), allocate(web0), allocate(web0)]);
    expect(new Set(results.map((a) => a.ip)).size).toBe(1);
    expect(store.events).toHaveLength(1);
  });

  it('gives concurrent requests of different owners different addresses', async () => {
    const { allocate } = await withPools();
    const results = await Promise.all([0, 1, 2, 3, 4].map((slot) => allocate(owner('web', slot))));
    expect(new Set(results.map((a) => a.ip)).size).toBe(5);
  });

  it('returns the address a concurrent request of the same owner committed first', async () => {
    const { allocate, store } = await withPools();
    store.hooks.beforeUpdateAddress = async () => {
      store.hooks.beforeUpdateAddress = undefined;
      // Another replica commits an allocation for web0 while this transaction runs.
      await store.commitOutside(async (tx) => {
        const row = (await tx.lockAddress(ipv4ToInt('198.18.0.6')))!;
        await tx.updateAddress(row.ip, { ...row, state: 'allocated', owner: web0, availableAt: null });
      });
    };
    expect((await allocate(web0)).ip).toBe('198.18.0.6');
    const live = [...store.snapshot().addresses.values()].filter((r) => r.state === 'allocated');
    expect(live.map((r) => r.ip)).toEqual([ipv4ToInt('198.18.0.6')]);
  });

  it.each([
    ['env', owner('web', 0, 'stage')],
    ['app', owner('api', 0)],
    ['slot', owner('web', 1)],
  ])('treats owners differing only in %s as different owners', async (_what, other) => {
    const { allocate } = await withPools();
    const a = await allocate(web0);
    expect((await allocate(other)).ip).not.toBe(a.ip);
  });

  it('refuses an owner holding an address in another pool: OWNER_HAS_IP with that pool and ip', async () => {
    const { allocate } = await withPools(poolReq(), OTHER);
    await allocate(web0);
    await expectError(allocate(web0, 'other'), 'OWNER_HAS_IP', { pool: 'net', ip: '198.18.0.2' });
  });

  it('refuses an owner asking for another ip than the one it holds: OWNER_HAS_IP with that pool and ip', async () => {
    const { allocate } = await withPools();
    await allocate(web0);
    await expectError(allocate(web0, 'net', '198.18.0.5'), 'OWNER_HAS_IP', { pool: 'net', ip: '198.18.0.2' });
  });

  it('refuses an owner holding a bound address elsewhere: OWNER_HAS_IP', async () => {
    const { allocate, bind } = await withPools(poolReq(), OTHER);
    await bind((await allocate(web0, 'other')).ip, web0);
    await expectError(allocate(web0), 'OWNER_HAS_IP', { pool: 'other', ip: '198.18.1.2' });
  });

  it('refuses an unknown pool: POOL_NOT_FOUND', async () => {
    const { allocate } = await withPools();
    await expectError(allocate(web0, 'nope'), 'POOL_NOT_FOUND');
  });

  it('refuses a full pool: POOL_EXHAUSTED with its size and usage', async () => {
    const { allocate, fill } = await withPools();
    await fill(...[0, 1, 2, 3, 4].map((slot) => owner('web', slot)));
    const e = await expectError(allocate(api0), 'POOL_EXHAUSTED', { pool: 'net', size: 5, used: 5, quarantined: 0 });
    expect(e.details).not.toHaveProperty('nextAvailableAt');
  });

  it('says when a quarantined address of an exhausted pool becomes available', async () => {
    const { ipam, allocate, fill, clock } = await withPools();
    await fill(...[0, 1, 2, 3, 4].map((slot) => owner('web', slot)));
    await ipam.release({ owner: web1 });
    const releasedAt = clock.now();
    clock.advance(10);
    await expectError(allocate(api0), 'POOL_EXHAUSTED', {
      used: 4,
      quarantined: 1,
      nextAvailableAt: new Date(releasedAt + COOLDOWN * 1000).toISOString(),
    });
  });

  it('derives the mac from the ip', async () => {
    const { allocate } = await withPools();
    await allocate(web0);
    expect(await allocate(web1)).toMatchObject({ ip: '198.18.0.3', mac: '02:4f:c6:12:00:03' });
  });
});

describe('allocate with an ip', () => {
  const WIDE: PoolCreateRequest = {
    name: 'wide',
    cidr: '198.18.4.0/24',
    gateway: '198.18.4.1',
    reserved: ['198.18.4.5', '198.18.4.10-198.18.4.20'],
  };

  it('gives exactly the address asked for', async () => {
    const { allocate } = await withPools(WIDE);
    expect(await allocate(web0, 'wide', '198.18.4.200')).toMatchObject({ ip: '198.18.4.200', state: 'allocated', owner: web0 });
  });

  it.each(['198.18.3.255', '198.18.5.0', '10.0.0.1', '198.18.0.2'])('refuses %s outside the cidr: IP_OUT_OF_POOL', async (ip) => {
    const { allocate } = await withPools(WIDE, poolReq());
    await expectError(allocate(web0, 'wide', ip), 'IP_OUT_OF_POOL', { ip, pool: 'wide' });
  });

  it.each([
    ['the network address', '198.18.4.0'],
    ['the broadcast address', '198.18.4.255'],
    ['the gateway', '198.18.4.1'],
    ['a reserved address', '198.18.4.5'],
    ['the start of a reserved range', '198.18.4.10'],
    ['inside a reserved range', '198.18.4.15'],
    ['the end of a reserved range', '198.18.4.20'],
  ])('refuses %s: IP_RESERVED', async (_what, ip) => {
    const { allocate } = await withPools(WIDE);
    await expectError(allocate(web0, 'wide', ip), 'IP_RESERVED', { ip, pool: 'wide' });
  });

  it('refuses an address another owner holds: IP_TAKEN', async () => {
    const { allocate } = await withPools();
    await allocate(web0);
    await expectError(allocate(web1, 'net', '198.18.0.2'), 'IP_TAKEN', { ip: '198.18.0.2' });
  });

  it('refuses an address another owner has bound: IP_TAKEN', async () => {
    const { allocate, bind } = await withPools();
    await bind((await allocate(web0)).ip, web0);
    await expectError(allocate(web1, 'net', '198.18.0.2'), 'IP_TAKEN', { ip: '198.18.0.2' });
  });

  it("refuses an address in another owner's cooldown: IP_TAKEN", async () => {
    const { ipam, allocate, clock } = await withPools();
    await allocate(web0);
    await ipam.release({ owner: web0 });
    clock.advance(COOLDOWN - 1);
    await expectError(allocate(web1, 'net', '198.18.0.2'), 'IP_TAKEN', { ip: '198.18.0.2' });
  });

  it("gives an address once another owner's cooldown has passed", async () => {
    const { ipam, allocate, clock } = await withPools();
    await allocate(web0);
    await ipam.release({ owner: web0 });
    clock.advance(COOLDOWN);
    expect(await allocate(web1, 'net', '198.18.0.2')).toMatchObject({ ip: '198.18.0.2', owner: web1 });
  });

  it('gives an owner its own released address within the cooldown', async () => {
    const { ipam, allocate, clock } = await withPools();
    await allocate(web0, 'net', '198.18.0.4');
    await ipam.release({ owner: web0 });
    clock.advance(1);
    expect(await allocate(web0, 'net', '198.18.0.4')).toMatchObject({ ip: '198.18.0.4', state: 'allocated', owner: web0 });
  });
});

// ---- cooldown and affinity ----------------------------------------------------------------

describe('cooldown', () => {
  /** A full 'net' pool (web0..web4 hold .2-.6) from which web2 (.4) has just been released. */
  async function fullPoolWithOneReleased() {
    const s = await withPools();
    await s.fill(...[0, 1, 2, 3, 4].map((slot) => owner('web', slot)));
    await s.ipam.release({ owner: owner('web', 2) });
    return s;
  }

  it('a released IP is not given to another owner during cooldown', async () => {
    const { allocate, clock } = await fullPoolWithOneReleased();
    clock.advance(COOLDOWN - 1);
    await expectError(allocate(api0), 'POOL_EXHAUSTED');
  });

  it('a released IP is given to another owner once cooldownSeconds have passed', async () => {
    const { allocate, clock } = await fullPoolWithOneReleased();
    clock.advance(COOLDOWN);
    expect(await allocate(api0)).toMatchObject({ ip: '198.18.0.4', owner: api0 });
  });

  it('uses the cooldown of the pool', async () => {
    const { ipam, allocate, clock } = await withPools(poolReq({ cidr: '198.18.0.0/31', gateway: '198.18.0.0', cooldownSeconds: 5 }));
    await allocate(web0);
    await ipam.release({ owner: web0 });
    clock.advance(4);
    await expectError(allocate(api0), 'POOL_EXHAUSTED');
    clock.advance(1);
    expect((await allocate(api0)).ip).toBe('198.18.0.1');
  });

  it('with cooldown 0 a released IP is available at once', async () => {
    const { ipam, allocate } = await withPools(poolReq({ cidr: '198.18.0.0/31', gateway: '198.18.0.0', cooldownSeconds: 0 }));
    await allocate(web0);
    await ipam.release({ owner: web0 });
    expect((await allocate(api0)).ip).toBe('198.18.0.1');
  });

  it('fresh owners get never-used addresses before released ones, even after the cooldown', async () => {
    const { ipam, allocate, clock } = await withPools();
    await allocate(web0);
    await ipam.release({ owner: web0 });
    clock.advance(COOLDOWN * 10);
    expect((await allocate(api0)).ip).toBe('198.18.0.3');
  });

  it('fresh owners get the address released longest ago first', async () => {
    const { ipam, fill, allocate, clock } = await withPools();
    await fill(...[0, 1, 2, 3, 4].map((slot) => owner('web', slot)));
    for (const slot of [2, 0, 4]) {
      await ipam.release({ owner: owner('web', slot) });
      clock.advance(10);
    }
    clock.advance(COOLDOWN);
    const ips = [];
    for (const slot of [0, 1, 2]) ips.push((await allocate(owner('api', slot))).ip);
    expect(ips).toEqual(['198.18.0.4', '198.18.0.2', '198.18.0.6']);
  });
});

describe('affinity', () => {
  it('a released owner gets the same IP back within the cooldown', async () => {
    const { ipam, allocate, clock } = await withPools();
    const first = await allocate(web0, 'net', '198.18.0.5');
    await ipam.release({ owner: web0 });
    clock.advance(1);
    expect(await allocate(web0)).toEqual(first);
  });

  it('a released owner gets the same IP back after the cooldown when nobody took it', async () => {
    const { ipam, allocate, clock } = await withPools();
    await allocate(web0, 'net', '198.18.0.5');
    await ipam.release({ owner: web0 });
    clock.advance(COOLDOWN * 100);
    expect((await allocate(web0)).ip).toBe('198.18.0.5');
  });

  it('a released owner gets its most recently released address in the pool', async () => {
    const { ipam, allocate, clock } = await withPools();
    await allocate(web0, 'net', '198.18.0.5');
    await ipam.release({ owner: web0 });
    clock.advance(1);
    await allocate(web0, 'net', '198.18.0.3');
    await ipam.release({ owner: web0 });
    clock.advance(1);
    expect((await allocate(web0)).ip).toBe('198.18.0.3');
  });

  it('is lost once another owner took the address after the cooldown', async () => {
    const { ipam, allocate, clock } = await withPools();
    await allocate(web0, 'net', '198.18.0.5');
    await ipam.release({ owner: web0 });
    clock.advance(COOLDOWN);
    await allocate(api0, 'net', '198.18.0.5');
    expect((await allocate(web0)).ip).toBe('198.18.0.2');
  });

  it('belongs to the pool: in another pool the owner gets a fresh address', async () => {
    const { ipam, allocate } = await withPools(poolReq(), OTHER);
    await allocate(web0, 'net', '198.18.0.5');
    await ipam.release({ owner: web0 });
    expect((await allocate(web0, 'other')).ip).toBe('198.18.1.2');
  });

  it('survives a stay in another pool', async () => {
    const { ipam, allocate } = await withPools(poolReq(), OTHER);
    await allocate(web0, 'net', '198.18.0.5');
    await ipam.release({ owner: web0 });
    await allocate(web0, 'other');
    await ipam.release({ owner: web0 });
    expect((await allocate(web0)).ip).toBe('198.18.0.5');
  });
});

// ---- small pools (RFC 3021) ---------------------------------------------------------------

describe('/31 and /32 pools', () => {
  it('a /31 with the gateway first hands out only its second address', async () => {
    const { allocate } = await withPools(poolReq({ cidr: '198.18.0.0/31', gateway: '198.18.0.0' }));
    expect((await allocate(web0)).ip).toBe('198.18.0.1');
    await expectError(allocate(web1), 'POOL_EXHAUSTED', { size: 1, used: 1 });
  });

  it('a /31 with the gateway second hands out only its first address', async () => {
    const { allocate } = await withPools(poolReq({ cidr: '198.18.0.0/31', gateway: '198.18.0.1' }));
    expect((await allocate(web0)).ip).toBe('198.18.0.0');
    await expectError(allocate(web1), 'POOL_EXHAUSTED');
  });

  it('a /31 hands out its non-gateway address on request, but not the gateway', async () => {
    const { allocate } = await withPools(poolReq({ cidr: '198.18.0.0/31', gateway: '198.18.0.1' }));
    await expectError(allocate(web1, 'net', '198.18.0.1'), 'IP_RESERVED');
    expect((await allocate(web0, 'net', '198.18.0.0')).ip).toBe('198.18.0.0');
  });

  it('a /32 hands out nothing', async () => {
    const { ipam, allocate } = await withPools(poolReq({ cidr: '198.18.0.7/32', gateway: '198.18.0.7' }));
    expect(await ipam.getPool('net')).toMatchObject({ size: 0, free: 0 });
    await expectError(allocate(web0), 'POOL_EXHAUSTED', { size: 0 });
  });

  it('a /30 hands out neither its network nor its broadcast address', async () => {
    const { allocate } = await withPools(poolReq({ cidr: '198.18.0.4/30', gateway: '198.18.0.6' }));
    await expectError(allocate(web1, 'net', '198.18.0.4'), 'IP_RESERVED');
    await expectError(allocate(web1, 'net', '198.18.0.7'), 'IP_RESERVED');
    expect((await allocate(web0)).ip).toBe('198.18.0.5');
  });
});

// ---- bind -------------------------------------------------------------------------------

describe('bind', () => {
  it('binds an allocated address to its instance', async () => {
    const { allocate, bind } = await withPools();
    const a = await allocate(web0);
    expect(await bind(a.ip, web0, 'esx-7', 'vmware')).toEqual({
      ...a,
      state: 'bound',
      instanceId: 'prod:web:0',
      backend: 'vmware',
      host: 'esx-7',
    });
  });

  it.each([
    ['a never-allocated address', '198.18.0.4'],
    ['an address outside every pool', '10.9.9.9'],
    ['the gateway', '198.18.0.1'],
  ])('refuses %s: NOT_FOUND', async (_what, ip) => {
    const { bind } = await withPools();
    await expectError(bind(ip, web0), 'NOT_FOUND', { ip });
  });

  it('refuses a released address: NOT_FOUND', async () => {
    const { ipam, allocate, bind } = await withPools();
    const a = await allocate(web0);
    await ipam.release({ ip: a.ip });
    await expectError(bind(a.ip, web0), 'NOT_FOUND', { ip: a.ip });
  });

  it('rebinding with a new host moves the address there', async () => {
    const { allocate, bind, store } = await withPools();
    const a = await allocate(web0);
    await bind(a.ip, web0, 'esx-1');
    expect(await bind(a.ip, web0, 'esx-2')).toMatchObject({ state: 'bound', host: 'esx-2' });
    expect(store.events.map((e) => e.event.data)).toMatchObject([{ state: 'allocated' }, { host: 'esx-1' }, { host: 'esx-2' }]);
  });

  it('rebinding with a new backend moves the address there (migration)', async () => {
    const { allocate, bind, ipam } = await withPools();
    const a = await allocate(web0);
    await bind(a.ip, web0, 'docker-1', 'docker');
    await bind(a.ip, web0, 'esx-1', 'vmware');
    expect(await ipam.get({ ip: a.ip })).toMatchObject({ state: 'bound', backend: 'vmware', host: 'esx-1' });
  });

  it('an identical rebind returns the allocation and records no event', async () => {
    const { allocate, bind, store } = await withPools();
    const a = await allocate(web0);
    const bound = await bind(a.ip, web0);
    const audits = store.audits.length;
    expect(await bind(a.ip, web0)).toEqual(bound);
    expect(store.audits).toHaveLength(audits);
  });

  it('rebinding with a new instanceId moves the address to that instance; the owner stays', async () => {
    const { allocate, ipam } = await withPools();
    const a = await allocate(web0);
    await ipam.bind({ ip: a.ip, instanceId: 'prod:web:0', backend: 'docker', host: 'docker-1' });
    const moved = await ipam.bind({ ip: a.ip, instanceId: 'vm-4711', backend: 'vmware', host: 'esx-1' });
    expect(moved).toMatchObject({ state: 'bound', instanceId: 'vm-4711', owner: web0, host: 'esx-1' });
  });
});

// ---- release and get -----------------------------------------------------------------------

describe('release', () => {
  it('releases by ip, dropping the binding', async () => {
    const { ipam, allocate, bind, clock } = await withPools();
    const a = await allocate(web0);
    await bind(a.ip, web0);
    expect(await ipam.release({ ip: a.ip })).toStrictEqual({
      ...a,
      state: 'released',
      releasedAt: new Date(clock.now()).toISOString(),
    });
  });

  it('releases by owner', async () => {
    const { ipam, allocate } = await withPools();
    const a = await allocate(web0);
    expect(await ipam.release({ owner: web0 })).toMatchObject({ ip: a.ip, state: 'released', owner: web0 });
  });

  it.each([
    ['by ip', { ip: '198.18.0.2' }],
    ['by owner', { owner: web0 }],
  ])('releasing a released address %s returns it unchanged and records no new event', async (_what, req) => {
    const { ipam, allocate, store, clock } = await withPools();
    await allocate(web0);
    const released = await ipam.release({ owner: web0 });
    const audits = store.audits.length;
    const before = store.snapshot();
    clock.advance(60);
    expect(await ipam.release(req)).toEqual(released);
    expect(store.audits).toHaveLength(audits);
    expect(store.snapshot()).toEqual(before);
  });

  it.each([
    ['a never-allocated ip', '198.18.0.4'],
    ['an ip outside every pool', '10.0.0.1'],
    ['the gateway', '198.18.0.1'],
  ])('refuses %s: NOT_FOUND', async (_what, ip) => {
    const { ipam } = await withPools();
    await expectError(ipam.release({ ip }), 'NOT_FOUND', { ip });
  });

  it('refuses an unknown owner: NOT_FOUND', async () => {
    const { ipam, allocate } = await withPools();
    await allocate(web0);
    await expectError(ipam.release({ owner: web1 }), 'NOT_FOUND', { owner: web1 });
  });

  it.each([
    ['both ip and owner', { ip: '198.18.0.2', owner: web0 }],
    ['neither ip nor owner', {}],
  ])('refuses %s: INVALID_REQUEST', async (_what, req) => {
    const { ipam } = await withPools();
    await expectError(ipam.release(req), 'INVALID_REQUEST');
  });
});

describe('get', () => {
  it('finds a live address by ip', async () => {
    const { ipam, allocate } = await withPools();
    const a = await allocate(web0);
    expect(await ipam.get({ ip: a.ip })).toEqual(a);
  });

  it('finds a bound address by owner with its binding', async () => {
    const { ipam, allocate, bind } = await withPools();
    const bound = await bind((await allocate(web0)).ip, web0);
    expect(await ipam.get({ owner: web0 })).toEqual(bound);
  });

  it('by owner returns the last released address when the owner holds none', async () => {
    const { ipam, allocate, clock } = await withPools(poolReq(), OTHER);
    await allocate(web0);
    await ipam.release({ owner: web0 });
    clock.advance(1);
    await allocate(web0, 'other');
    const last = await ipam.release({ owner: web0 });
    clock.advance(1);
    expect(await ipam.get({ owner: web0 })).toEqual(last);
  });

  it('by owner returns the live address rather than a released one', async () => {
    const { ipam, allocate, clock } = await withPools(poolReq(), OTHER);
    await allocate(web0);
    await ipam.release({ owner: web0 });
    clock.advance(1);
    const live = await allocate(web0, 'other');
    expect(await ipam.get({ owner: web0 })).toEqual(live);
  });

  it('finds a released address by ip', async () => {
    const { ipam, allocate } = await withPools();
    const a = await allocate(web0);
    const released = await ipam.release({ ip: a.ip });
    expect(await ipam.get({ ip: a.ip })).toEqual(released);
  });

  it.each([
    ['a never-allocated ip', { ip: '198.18.0.6' }, { ip: '198.18.0.6' }],
    ['an ip outside every pool', { ip: '203.0.113.1' }, { ip: '203.0.113.1' }],
    ['an unknown owner', { owner: api0 }, { owner: api0 }],
  ])('refuses %s: NOT_FOUND', async (_what, req, details) => {
    const { ipam, allocate } = await withPools();
    await allocate(web0);
    await expectError(ipam.get(req), 'NOT_FOUND', details);
  });

  it('changes nothing and records nothing', async () => {
    const { ipam, allocate, store } = await withPools();
    await allocate(web0);
    const before = store.snapshot();
    const audits = store.audits.length;
    await ipam.get({ owner: web0 });
    await ipam.getPool('net');
    await ipam.listPools();
    expect(store.snapshot()).toEqual(before);
    expect(store.audits).toHaveLength(audits);
  });
});

// ---- events and atomicity --------------------------------------------------------------------

describe('events', () => {
  const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

  it.each([
    ['allocated', async (s: ReturnType<typeof setup>) => s.allocate(web0)],
    ['bound', async (s: ReturnType<typeof setup>) => s.bind('198.18.0.2', web0)],
    ['released', async (s: ReturnType<typeof setup>) => s.ipam.release({ ip: '198.18.0.2' })],
  ] as const)('records io.orangery.ip.%s with the ip as subject and the allocation as data', async (what, act) => {
    const s = await withPools();
    if (what !== 'allocated') await s.allocate(web0);
    s.clock.advance(7);
    const allocation: Allocation = await act(s);
    const last = s.store.events.at(-1)!;
    expect(last.natsSubject).toBe(`orangery.evt.ip.${what}`);
    expect(last.event).toMatchObject({
      specversion: '1.0',
      type: `io.orangery.ip.${what}`,
      source: EVENT_SOURCE,
      subject: '198.18.0.2',
      time: new Date(s.clock.now()).toISOString(),
      datacontenttype: 'application/json',
    });
    expect(last.event.data).toEqual(allocation);
    expect(last.event.id).toMatch(/\S/);
  });

  it('gives every event its own id', async () => {
    const { allocate, bind, ipam, store } = await withPools();
    await bind((await allocate(web0)).ip, web0);
    await ipam.release({ owner: web0 });
    expect(new Set(store.events.map((e) => e.event.id)).size).toBe(3);
  });

  it('carries the caller traceparent', async () => {
    const { ipam, store } = await withPools();
    await ipam.allocate({ pool: 'net', owner: web0 }, { traceparent: TRACEPARENT });
    expect(store.events[0]!.event.traceparent).toBe(TRACEPARENT);
  });

  it('audits each change with the state before and after', async () => {
    const { allocate, bind, store } = await withPools();
    const a = await allocate(web0);
    const b = await bind(a.ip, web0);
    expect(store.audits.slice(-2)).toMatchObject([
      { action: 'allocate', ip: ipv4ToInt(a.ip), poolName: 'net', before: null, after: a },
      { action: 'bind', ip: ipv4ToInt(a.ip), poolName: 'net', before: a, after: b },
    ]);
  });
});

describe('a failed request records no event and changes nothing', () => {
  const TINY: PoolCreateRequest = { name: 'tiny', cidr: '198.18.2.0/31', gateway: '198.18.2.0' };

  /** web0 bound on .2, web1 released from .3 (in cooldown), tiny full (web9 holds .1). */
  async function busy() {
    const s = await withPools(poolReq(), OTHER, TINY);
    await s.bind((await s.allocate(web0)).ip, web0);
    await s.allocate(web1);
    await s.ipam.release({ owner: web1 });
    await s.allocate(owner('web', 9), 'tiny');
    return s;
  }

  type Setup = Awaited<ReturnType<typeof busy>>;
  it.each<[string, (s: Setup) => Promise<unknown>, string]>([
    ['allocate in an unknown pool', (s) => s.allocate(api0, 'nope'), 'POOL_NOT_FOUND'],
    ['allocate in a full pool', (s) => s.allocate(api0, 'tiny'), 'POOL_EXHAUSTED'],
    ['allocate for an owner holding an ip elsewhere', (s) => s.allocate(web0, 'other'), 'OWNER_HAS_IP'],
    ['allocate of another ip for an owner holding one', (s) => s.allocate(web0, 'net', '198.18.0.4'), 'OWNER_HAS_IP'],
    ['allocate of a live ip', (s) => s.allocate(api0, 'net', '198.18.0.2'), 'IP_TAKEN'],
    ['allocate of an ip in cooldown', (s) => s.allocate(api0, 'net', '198.18.0.3'), 'IP_TAKEN'],
    ['allocate of the gateway', (s) => s.allocate(api0, 'net', '198.18.0.1'), 'IP_RESERVED'],
    ['allocate outside the pool', (s) => s.allocate(api0, 'net', '198.18.1.2'), 'IP_OUT_OF_POOL'],
    ['bind of a never-allocated ip', (s) => s.bind('198.18.0.4', api0), 'NOT_FOUND'],
    ['bind of a released ip', (s) => s.bind('198.18.0.3', web1), 'NOT_FOUND'],
    ['release of an unknown ip', (s) => s.ipam.release({ ip: '198.18.0.5' }), 'NOT_FOUND'],
    ['release of an unknown owner', (s) => s.ipam.release({ owner: api0 }), 'NOT_FOUND'],
    ['pool.delete of a pool in use', (s) => s.ipam.deletePool('net'), 'POOL_IN_USE'],
    ['pool.create of an existing name', (s) => s.ipam.createPool({ ...OTHER, cidr: '198.18.9.0/24', gateway: '198.18.9.1' }), 'POOL_EXISTS'],
    ['pool.create of an overlapping pool', (s) => s.ipam.createPool({ name: 'x', cidr: '198.18.0.0/16', gateway: '198.18.9.1' }), 'POOL_OVERLAP'],
    ['pool.create of an invalid pool', (s) => s.ipam.createPool({ name: 'x', cidr: '198.18.8.0/24', gateway: '198.18.9.1' }), 'INVALID_REQUEST'],
  ])('%s', async (_what, act, code) => {
    const s = await busy();
    const before = s.store.snapshot();
    const audits = s.store.audits.length;
    await expectError(act(s), code);
    expect(s.store.snapshot()).toEqual(before);
    expect(s.store.audits).toHaveLength(audits);
  });

  it('a change that fails after updating the address is rolled back', async () => {
    const { allocate, store, ipam } = await withPools();
    const before = store.snapshot();
    store.hooks.beforeAudit = () => {
      throw new Error('audit table unavailable');
    };
    await expect(allocate(web0)).rejects.toThrow('audit table unavailable');
    expect(store.snapshot()).toEqual(before);
    expect(store.events).toHaveLength(0);
    store.hooks.beforeAudit = undefined;
    expect(await ipam.getPool('net')).toMatchObject({ used: 0, free: 5 });
  });
});

describe('the address quota (ORANGERY_IPAM_MAX_ADDRESSES)', () => {
  it('refuses a pool that would take the pools past the quota, changes nothing, and takes one that fits', async () => {
    const store = new InMemoryIpamStore();
    // 'net' holds 5 addresses, OTHER 5: a quota of 8 takes the first only
    const ipam = new IpamService(store, new FakeClock(), 8);
    await ipam.createPool(poolReq());
    await expectError(ipam.createPool(OTHER), 'INVALID_REQUEST', { field: 'cidr', size: 5, quota: 8, inPools: 5 });
    expect((await ipam.listPools()).pools.map((p) => p.name)).toEqual(['net']);
    // a /30 (2 addresses, less its gateway: 1) fits in what is left
    await ipam.createPool({ name: 'small', cidr: '198.18.2.0/30', gateway: '198.18.2.1' });
    expect((await ipam.listPools()).pools.map((p) => p.name)).toEqual(['net', 'small']);
  });

  it('counts deleted pools out of the quota', async () => {
    const ipam = new IpamService(new InMemoryIpamStore(), new FakeClock(), 5);
    await ipam.createPool(poolReq());
    await expectError(ipam.createPool(OTHER), 'INVALID_REQUEST', { field: 'cidr' });
    await ipam.deletePool('net');
    await ipam.createPool(OTHER);
  });
});

import { describe, it, expect } from 'vitest';
import { OrangeryError, type Owner } from '@orangery/contracts';
import { IpBlocks } from './blocks';
import { OwnerConflict } from './ports';
import { IpamService } from './ipam.service';
import { FakeClock, InMemoryIpamStore } from './testing/in-memory-store';

// Swarm nodes' blocks (docs/ipam.md "Blocks") over the in-memory store, with the single
// requests around them: what the swarm-agent, the scheduler and operators would see.

const owner = (app: string, slot: number, env = 'test'): Owner => ({ env, app, slot });
const instanceOf = (o: Owner): string => `${o.env}:${o.app}:${o.slot}`;
const COOLDOWN = 300;

/** 'net': 198.18.0.0/26, gateway .1, reserved .8 (so .8-.11 is never one block). */
async function setup() {
  const store = new InMemoryIpamStore();
  const clock = new FakeClock();
  const ipam = new IpamService(store, clock);
  const blocks = new IpBlocks(store, clock);
  await ipam.createPool({ name: 'net', cidr: '198.18.0.0/26', gateway: '198.18.0.1', reserved: ['198.18.0.8'], cooldownSeconds: COOLDOWN });
  const reserve = (host: string, size = 4, pool = 'net') => blocks.reserve({ pool, host, size });
  const bind = (ip: string, o: Owner, host: string, pool = 'net') => blocks.bind({ pool, ip, owner: o, instanceId: instanceOf(o), host });
  return { store, clock, ipam, blocks, reserve, bind };
}

async function expectError(p: Promise<unknown>, code: string, details?: Record<string, unknown>): Promise<OrangeryError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(OrangeryError);
  expect((e as OrangeryError).code).toBe(code);
  if (details) expect((e as OrangeryError).details).toMatchObject(details);
  return e as OrangeryError;
}

describe('block.reserve', () => {
  it('gives the lowest aligned range of free addresses, with the pool network a macvlan needs', async () => {
    const { reserve } = await setup();
    // .0-.3 holds the network and the gateway: the first whole range is .4-.7.
    expect(await reserve('sw-a')).toMatchObject({
      pool: 'net',
      host: 'sw-a',
      cidr: '198.18.0.4/30',
      first: '198.18.0.4',
      last: '198.18.0.7',
      size: 4,
      prefixLength: 26,
      gateway: '198.18.0.1',
      vlan: 0,
      bound: 0,
    });
    // .8-.11 holds a reserved address: the next one is .12-.15; a block of 8 is aligned on 8.
    expect((await reserve('sw-b')).cidr).toBe('198.18.0.12/30');
    expect((await reserve('sw-c', 8)).cidr).toBe('198.18.0.16/29');
  });

  it('is idempotent per (pool, host), whatever size the host asks', async () => {
    const { reserve, store } = await setup();
    const first = await reserve('sw-a', 4);
    const audits = store.audits.length;
    expect(await reserve('sw-a', 16)).toEqual(first);
    expect(store.audits.length).toBe(audits);
  });

  it('never takes an address held, in cooldown, or in another block', async () => {
    const { ipam, reserve, clock } = await setup();
    // .2 and .3 live, .4 released (cooldown), .5 live.
    for (let slot = 0; slot < 4; slot++) await ipam.allocate({ pool: 'net', owner: owner('app', slot, 'prod') });
    await ipam.release({ owner: owner('app', 2, 'prod') });
    const a = await reserve('sw-a');
    expect(a.cidr).toBe('198.18.0.12/30');
    // After the cooldown .4-.7 has .5 still live; once that goes, and its cooldown passes, .4-.7 is free.
    clock.advance(COOLDOWN + 1);
    expect((await reserve('sw-b')).cidr).toBe('198.18.0.16/30');
    await ipam.release({ owner: owner('app', 3, 'prod') });
    expect((await reserve('sw-c')).cidr).toBe('198.18.0.20/30');
    clock.advance(COOLDOWN + 1);
    // Never-used ranges come first (released addresses stay for their owners' affinity).
    expect((await reserve('sw-d')).cidr).toBe('198.18.0.24/30');
  });

  it('answers POOL_EXHAUSTED when no aligned range is free, and changes nothing', async () => {
    const { reserve, store } = await setup();
    // Ranges of 16: .0-.15 holds the network, gateway and a reserved address, .48-.63 the broadcast.
    expect((await reserve('sw-a', 16)).cidr).toBe('198.18.0.16/28');
    expect((await reserve('sw-b', 16)).cidr).toBe('198.18.0.32/28');
    const before = store.snapshot();
    await expectError(reserve('sw-c', 16), 'POOL_EXHAUSTED', { pool: 'net', blockSize: 16, blocked: 32 });
    await expectError(reserve('sw-c', 32), 'POOL_EXHAUSTED');
    expect(store.snapshot()).toEqual(before);
  });

  it('refuses a size that is not a power of two, and an unknown pool', async () => {
    const { reserve, store } = await setup();
    const before = store.snapshot();
    await expectError(reserve('sw-a', 12), 'INVALID_REQUEST', { field: 'size' });
    await expectError(reserve('sw-a', 4, 'nope'), 'POOL_NOT_FOUND');
    expect(store.snapshot()).toEqual(before);
  });
});

describe('addresses of a block are never handed out by allocate', () => {
  it('fresh owners skip them, and pool.get counts them as blocked, not free', async () => {
    const { ipam, reserve } = await setup();
    await reserve('sw-a', 16); // .16-.31
    await reserve('sw-b', 16); // .32-.47
    const ips: string[] = [];
    for (let slot = 0; ; slot++) {
      try {
        ips.push((await ipam.allocate({ pool: 'net', owner: owner('app', slot, 'prod') })).ip);
      } catch (e) {
        expect((e as OrangeryError).code).toBe('POOL_EXHAUSTED');
        expect((e as OrangeryError).details).toMatchObject({ blocked: 32 });
        break;
      }
    }
    // .2-.15 less .8 and .48-.62: 28 addresses, none in a block.
    expect(ips).toHaveLength(28);
    expect(ips.filter((ip) => Number(ip.split('.')[3]) >= 16 && Number(ip.split('.')[3]) < 48)).toEqual([]);
    expect(await ipam.getPool('net')).toMatchObject({ size: 60, used: 28, quarantined: 0, blocked: 32, free: 0 });
  });

  it("allocate with an ip inside a block is IP_TAKEN naming the block's host", async () => {
    const { ipam, reserve, store } = await setup();
    await reserve('sw-a');
    const before = store.snapshot();
    const e = await expectError(ipam.allocate({ pool: 'net', owner: owner('x', 0), ip: '198.18.0.5' }), 'IP_TAKEN', {
      ip: '198.18.0.5',
      block: { host: 'sw-a', cidr: '198.18.0.4/30' },
    });
    expect(e.message).toContain("'sw-a'");
    const [item] = await ipam.allocateBatch([{ pool: 'net', owner: owner('x', 0), ip: '198.18.0.5' }]);
    expect(item).toMatchObject({ ok: false, error: { code: 'IP_TAKEN', details: { ip: '198.18.0.5', block: { host: 'sw-a', cidr: '198.18.0.4/30' } } } });
    expect(store.snapshot()).toEqual(before);
  });

  it("a swarm owner's address released inside a block is not its affinity for a plain allocate", async () => {
    const { ipam, reserve, bind, blocks } = await setup();
    await reserve('sw-a');
    const web0 = owner('web', 0);
    await bind('198.18.0.5', web0, 'sw-a');
    await blocks.unbind({ ip: '198.18.0.5' });
    const single = await ipam.allocate({ pool: 'net', owner: web0 });
    expect(single.ip).toBe('198.18.0.2');
    await ipam.release({ owner: web0 });
    const web1 = owner('web', 1);
    await bind('198.18.0.6', web1, 'sw-a');
    await blocks.unbind({ ip: '198.18.0.6' });
    const [batched] = await ipam.allocateBatch([{ pool: 'net', owner: web1 }]);
    expect(batched).toMatchObject({ ok: true, data: { ip: '198.18.0.3' } });
  });
});

describe('block.bind', () => {
  it('records a task address as bound (backend swarm, host the node) with an ip.bound event; idempotent', async () => {
    const { reserve, bind, store, ipam } = await setup();
    await reserve('sw-a');
    const web0 = owner('web', 0);
    const a = await bind('198.18.0.6', web0, 'sw-a');
    expect(a).toMatchObject({ ip: '198.18.0.6', pool: 'net', owner: web0, state: 'bound', backend: 'swarm', host: 'sw-a', instanceId: 'test:web:0' });
    expect(store.events.at(-1)!.event).toMatchObject({ type: 'io.orangery.ip.bound', subject: '198.18.0.6', data: a });
    const events = store.events.length;
    expect(await bind('198.18.0.6', web0, 'sw-a')).toEqual(a);
    expect(store.events.length).toBe(events);
    expect(await ipam.getPool('net')).toMatchObject({ used: 1, blocked: 3 });
    expect(await ipam.get({ ip: '198.18.0.6' })).toEqual(a);
  });

  it("refuses an address outside the host's block (NOT_IN_BLOCK), another owner's (IP_TAKEN), and changes nothing", async () => {
    const { reserve, bind, store } = await setup();
    await reserve('sw-a');
    await reserve('sw-b');
    await bind('198.18.0.6', owner('web', 0), 'sw-a');
    const before = store.snapshot();
    await expectError(bind('198.18.0.13', owner('web', 1), 'sw-a'), 'NOT_IN_BLOCK', { ip: '198.18.0.13', host: 'sw-a', block: '198.18.0.4/30' });
    await expectError(bind('198.18.0.2', owner('web', 1), 'sw-a'), 'NOT_IN_BLOCK');
    await expectError(bind('198.18.0.6', owner('web', 1), 'sw-c'), 'NOT_IN_BLOCK', { host: 'sw-c' });
    await expectError(bind('198.18.0.6', owner('web', 1), 'sw-a'), 'IP_TAKEN', { ip: '198.18.0.6', instanceId: 'test:web:0', host: 'sw-a' });
    await expectError(bind('198.18.0.6', owner('web', 1), 'sw-a', 'nope'), 'POOL_NOT_FOUND');
    expect(store.snapshot()).toEqual(before);
  });

  it("moves an owner's task: its old block address is released in the same transaction", async () => {
    const { reserve, bind, store, ipam } = await setup();
    await reserve('sw-a');
    await reserve('sw-b');
    const web0 = owner('web', 0);
    await bind('198.18.0.5', web0, 'sw-a');
    const events = store.events.length;
    const moved = await bind('198.18.0.13', web0, 'sw-b');
    expect(moved).toMatchObject({ ip: '198.18.0.13', host: 'sw-b', state: 'bound' });
    expect(store.events.slice(events).map((e) => [e.event.type, e.event.subject])).toEqual([
      ['io.orangery.ip.released', '198.18.0.5'],
      ['io.orangery.ip.bound', '198.18.0.13'],
    ]);
    expect(await ipam.get({ ip: '198.18.0.5' })).toMatchObject({ state: 'released' });
    expect(await ipam.getPool('net')).toMatchObject({ used: 1, blocked: 7 });
  });

  it("refuses an instanceId that is not the owner's (INVALID_REQUEST, field instanceId) and changes nothing", async () => {
    const { reserve, blocks, store } = await setup();
    await reserve('sw-a');
    const before = store.snapshot();
    await expectError(blocks.bind({ pool: 'net', ip: '198.18.0.5', owner: owner('web', 0), instanceId: 'test:web:1', host: 'sw-a' }), 'INVALID_REQUEST', {
      field: 'instanceId',
    });
    expect(store.snapshot()).toEqual(before);
  });

  it('refuses an owner that holds an address outside blocks (OWNER_HAS_IP)', async () => {
    const { reserve, bind, ipam, store } = await setup();
    await reserve('sw-a');
    const web0 = owner('web', 0);
    const held = await ipam.allocate({ pool: 'net', owner: web0 });
    const before = store.snapshot();
    await expectError(bind('198.18.0.5', web0, 'sw-a'), 'OWNER_HAS_IP', { ip: held.ip, pool: 'net' });
    expect(store.snapshot()).toEqual(before);
  });
});

describe("allocate of an owner whose live address is a swarm task's inside a block", () => {
  // Docker on the node may hand that address to another task once the task goes: a VM or a
  // docker-agent container must never be started with it (docs/ipam.md "Blocks").
  const held = { pool: 'net', ip: '198.18.0.5', block: { host: 'sw-a', cidr: '198.18.0.4/30' } };

  it('single allocate: OWNER_HAS_IP naming the node and block, whatever it asks; nothing changes', async () => {
    const { reserve, bind, blocks, ipam, store } = await setup();
    await reserve('sw-a');
    const web0 = owner('web', 0);
    await bind('198.18.0.5', web0, 'sw-a');
    const before = store.snapshot();
    const e = await expectError(ipam.allocate({ pool: 'net', owner: web0 }), 'OWNER_HAS_IP', held);
    expect(e.message).toContain("swarm task on node 'sw-a' inside its block 198.18.0.4/30");
    await expectError(ipam.allocate({ pool: 'net', owner: web0, ip: '198.18.0.5' }), 'OWNER_HAS_IP', held);
    await expectError(ipam.allocate({ pool: 'net', owner: web0, ip: '198.18.0.40' }), 'OWNER_HAS_IP', held);
    expect(store.snapshot()).toEqual(before);
    // Once the swarm-agent unbinds it, the owner gets a fresh address outside the block.
    await blocks.unbind({ ip: '198.18.0.5' });
    expect((await ipam.allocate({ pool: 'net', owner: web0 })).ip).toBe('198.18.0.2');
  });

  it('batch allocate: the same refusal per item; other items are served', async () => {
    const { reserve, bind, ipam, store } = await setup();
    await reserve('sw-a');
    const web0 = owner('web', 0);
    await bind('198.18.0.5', web0, 'sw-a');
    const results = await ipam.allocateBatch([
      { pool: 'net', owner: web0 },
      { pool: 'net', owner: owner('y', 0) },
      { pool: 'net', owner: web0, ip: '198.18.0.5' },
    ]);
    expect(results[0]).toMatchObject({ ok: false, error: { code: 'OWNER_HAS_IP', details: held } });
    expect(results[1]).toMatchObject({ ok: true, data: { state: 'allocated' } });
    expect(results[2]).toMatchObject({ ok: false, error: { code: 'OWNER_HAS_IP', details: held } });
    expect(await ipam.get({ ip: '198.18.0.5' })).toMatchObject({ state: 'bound', backend: 'swarm', host: 'sw-a', instanceId: 'test:web:0' });
    expect(store.events.at(-1)!.event).toMatchObject({ type: 'io.orangery.ip.allocated' });
  });

  it('grouped allocate (group commit): the same refusal, in a shared transaction too', async () => {
    const { store, clock, reserve, bind } = await setup();
    const grouped = new IpamService(store, clock, undefined, { maxSize: 16, maxInFlight: 1 });
    await reserve('sw-a');
    const web0 = owner('web', 0);
    await bind('198.18.0.5', web0, 'sw-a');
    // The first runs alone; the next ones queue behind it and share one transaction.
    const done = await Promise.allSettled([
      grouped.allocate({ pool: 'net', owner: owner('y', 0) }),
      grouped.allocate({ pool: 'net', owner: web0 }),
      grouped.allocate({ pool: 'net', owner: owner('y', 1) }),
      grouped.allocate({ pool: 'net', owner: web0, ip: '198.18.0.5' }),
    ]);
    expect(done.map((d) => d.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected']);
    for (const d of [done[1]!, done[3]!]) {
      const e = (d as PromiseRejectedResult).reason as OrangeryError;
      expect(e).toBeInstanceOf(OrangeryError);
      expect(e.code).toBe('OWNER_HAS_IP');
      expect(e.details).toMatchObject(held);
    }
    expect(await grouped.get({ ip: '198.18.0.5' })).toMatchObject({ state: 'bound', instanceId: 'test:web:0' });
  });
});

describe('block.unbind and plain release inside a block', () => {
  it('releases the address, which stays in the block (no cooldown: Docker picks there); idempotent', async () => {
    const { reserve, bind, blocks, ipam, store } = await setup();
    await reserve('sw-a');
    await bind('198.18.0.5', owner('web', 0), 'sw-a');
    const released = await blocks.unbind({ ip: '198.18.0.5' });
    expect(released).toMatchObject({ ip: '198.18.0.5', state: 'released', owner: owner('web', 0) });
    expect(released.backend).toBeUndefined();
    expect(store.events.at(-1)!.event).toMatchObject({ type: 'io.orangery.ip.released', subject: '198.18.0.5' });
    const events = store.events.length;
    expect(await blocks.unbind({ ip: '198.18.0.5' })).toEqual(released);
    expect(store.events.length).toBe(events);
    expect(await ipam.getPool('net')).toMatchObject({ used: 0, quarantined: 0, blocked: 4 });
    // Another task of the node may take it at once.
    expect(await bind('198.18.0.5', owner('web', 1), 'sw-a')).toMatchObject({ state: 'bound' });
  });

  it("with instanceId, releases only that instance's binding; a late unbind of another's is a no-op", async () => {
    const { reserve, bind, blocks, store } = await setup();
    await reserve('sw-a');
    const bound = await bind('198.18.0.5', owner('web', 1), 'sw-a');
    const before = store.snapshot();
    // The task of web:0 had .5 before; its late unbind must not free web:1's address.
    expect(await blocks.unbind({ ip: '198.18.0.5', instanceId: 'test:web:0' })).toEqual(bound);
    expect(store.snapshot()).toEqual(before);
    expect(await blocks.unbind({ ip: '198.18.0.5', instanceId: 'test:web:1' })).toMatchObject({ state: 'released', owner: owner('web', 1) });
    // Already released: unchanged, whichever instance asks.
    const events = store.events.length;
    expect(await blocks.unbind({ ip: '198.18.0.5', instanceId: 'test:web:0' })).toMatchObject({ state: 'released' });
    expect(store.events.length).toBe(events);
  });

  it('answers NOT_IN_BLOCK outside blocks and NOT_FOUND for a block address never bound', async () => {
    const { reserve, blocks, ipam } = await setup();
    await reserve('sw-a');
    await ipam.allocate({ pool: 'net', owner: owner('x', 0) });
    await expectError(blocks.unbind({ ip: '198.18.0.2' }), 'NOT_IN_BLOCK', { ip: '198.18.0.2' });
    await expectError(blocks.unbind({ ip: '198.18.0.4' }), 'NOT_FOUND');
  });

  it('plain release of a bound block address is an unbind: the address stays blocked', async () => {
    const { reserve, bind, ipam } = await setup();
    await reserve('sw-a');
    await bind('198.18.0.5', owner('web', 0), 'sw-a');
    expect(await ipam.release({ ip: '198.18.0.5' })).toMatchObject({ state: 'released' });
    expect(await ipam.getPool('net')).toMatchObject({ used: 0, quarantined: 0, blocked: 4 });
    await expectError(ipam.allocate({ pool: 'net', owner: owner('x', 0), ip: '198.18.0.5' }), 'IP_TAKEN');
  });

  it('released in a group (group commit), bound block addresses stay blocked too; a plain address gets its cooldown', async () => {
    const { store, clock, reserve, bind } = await setup();
    const grouped = new IpamService(store, clock, undefined, { maxSize: 16, maxInFlight: 1 });
    await reserve('sw-a');
    await bind('198.18.0.5', owner('web', 0), 'sw-a');
    await bind('198.18.0.6', owner('web', 1), 'sw-a');
    const plain = await grouped.allocate({ pool: 'net', owner: owner('y', 0) });
    // The first release runs alone; the next three queue behind it and share one transaction.
    const done = await Promise.all([
      grouped.release({ ip: plain.ip }),
      grouped.release({ ip: '198.18.0.5' }),
      grouped.release({ owner: owner('web', 1) }),
      grouped.release({ ip: plain.ip }),
    ]);
    expect(done.map((a) => a.state)).toEqual(['released', 'released', 'released', 'released']);
    expect(await grouped.getPool('net')).toMatchObject({ used: 0, quarantined: 1, blocked: 4 });
    clock.advance(COOLDOWN + 1);
    // After any cooldown the block's addresses still cannot be had outside swarm.
    await expectError(grouped.allocate({ pool: 'net', owner: owner('x', 0), ip: '198.18.0.5' }), 'IP_TAKEN');
    await expectError(grouped.allocate({ pool: 'net', owner: owner('x', 1), ip: '198.18.0.6' }), 'IP_TAKEN');
  });

  it('plain bind may not move a block address off its node (NOT_IN_BLOCK); swarm outside blocks binds as before', async () => {
    const { reserve, bind, ipam, store } = await setup();
    await reserve('sw-a');
    await bind('198.18.0.5', owner('web', 0), 'sw-a');
    const before = store.snapshot();
    await expectError(ipam.bind({ ip: '198.18.0.5', instanceId: 'test:web:0', backend: 'docker', host: 'h1' }), 'NOT_IN_BLOCK', { host: 'sw-a' });
    await expectError(ipam.bind({ ip: '198.18.0.5', instanceId: 'test:web:0', backend: 'swarm', host: 'sw-b' }), 'NOT_IN_BLOCK');
    const [item] = await ipam.bindBatch([{ ip: '198.18.0.5', instanceId: 'test:web:0', backend: 'docker', host: 'h1' }]);
    expect(item).toMatchObject({ ok: false, error: { code: 'NOT_IN_BLOCK' } });
    expect(store.snapshot()).toEqual(before);
    expect(await ipam.bind({ ip: '198.18.0.5', instanceId: 'test:web:0b', backend: 'swarm', host: 'sw-a' })).toMatchObject({ instanceId: 'test:web:0b' });
    const single = await ipam.allocate({ pool: 'net', owner: owner('y', 0) });
    expect(await ipam.bind({ ip: single.ip, instanceId: 'test:y:0', backend: 'swarm', host: 'sw-z' })).toMatchObject({ backend: 'swarm', host: 'sw-z' });
    expect(await ipam.release({ ip: single.ip })).toMatchObject({ state: 'released' });
    expect(await ipam.getPool('net')).toMatchObject({ quarantined: 1 });
  });
});

describe('block.release, block.list and pool.delete', () => {
  it('refuses while an address is bound (POOL_IN_USE, details.bound), then returns the addresses with their cooldowns', async () => {
    const { reserve, bind, blocks, ipam, clock, store } = await setup();
    await reserve('sw-a');
    await bind('198.18.0.5', owner('web', 0), 'sw-a');
    const before = store.snapshot();
    await expectError(blocks.release({ pool: 'net', host: 'sw-a' }), 'POOL_IN_USE', { bound: 1, ips: ['198.18.0.5'] });
    expect(store.snapshot()).toEqual(before);
    await blocks.unbind({ ip: '198.18.0.5' });
    clock.advance(10);
    expect(await blocks.release({ pool: 'net', host: 'sw-a' })).toMatchObject({ cidr: '198.18.0.4/30', bound: 0 });
    // .5 was released 10 s ago: in cooldown for 290 s more; the others are free again.
    expect(await ipam.getPool('net')).toMatchObject({ blocked: 0, quarantined: 1, used: 0, free: 59 });
    await expectError(ipam.allocate({ pool: 'net', owner: owner('x', 0), ip: '198.18.0.5' }), 'IP_TAKEN', { ip: '198.18.0.5' });
    expect(await ipam.allocate({ pool: 'net', owner: owner('x', 0), ip: '198.18.0.6' })).toMatchObject({ state: 'allocated' });
    // The former owner's affinity is back.
    expect((await ipam.allocate({ pool: 'net', owner: owner('web', 0) })).ip).toBe('198.18.0.5');
    await expectError(blocks.release({ pool: 'net', host: 'sw-a' }), 'NOT_FOUND');
    await expectError(blocks.release({ pool: 'nope', host: 'sw-a' }), 'POOL_NOT_FOUND');
  });

  it('lists blocks by pool and host, with their bound counts', async () => {
    const { reserve, bind, blocks, ipam } = await setup();
    await ipam.createPool({ name: 'other', cidr: '198.18.1.0/28', gateway: '198.18.1.1' });
    await reserve('sw-a');
    await reserve('sw-b');
    await reserve('sw-a', 4, 'other');
    await bind('198.18.0.13', owner('web', 0), 'sw-b');
    const all = await blocks.list({});
    expect(all.blocks.map((b) => [b.pool, b.host, b.cidr, b.bound])).toEqual([
      ['net', 'sw-a', '198.18.0.4/30', 0],
      ['net', 'sw-b', '198.18.0.12/30', 1],
      ['other', 'sw-a', '198.18.1.4/30', 0],
    ]);
    expect((await blocks.list({ host: 'sw-a' })).blocks.map((b) => b.pool)).toEqual(['net', 'other']);
    expect((await blocks.list({ pool: 'net', host: 'sw-b' })).blocks).toHaveLength(1);
    expect((await blocks.list({ pool: 'nope' })).blocks).toEqual([]);
  });

  it('pool.delete is POOL_IN_USE while a block exists', async () => {
    const { reserve, blocks, ipam } = await setup();
    await reserve('sw-a');
    await expectError(ipam.deletePool('net'), 'POOL_IN_USE', { blocks: 1 });
    await blocks.release({ pool: 'net', host: 'sw-a' });
    expect(await ipam.deletePool('net')).toEqual({});
  });
});

describe('block.bind losing races for its owner', () => {
  /** The store, but its next `losses` transactions lose to a concurrent bind of the owner. */
  function losing(store: InMemoryIpamStore, losses: number): InMemoryIpamStore {
    let left = losses;
    const transaction = store.transaction.bind(store);
    return Object.assign(Object.create(store) as InMemoryIpamStore, {
      transaction: ((work, actor, onCommitted) => {
        if (left-- > 0) return Promise.reject(new OwnerConflict());
        return transaction(work, actor, onCommitted);
      }) as InMemoryIpamStore['transaction'],
    });
  }

  it('reruns until it wins (many binds of one owner at once), and past the bound answers a retryable UNAVAILABLE with nothing changed', async () => {
    const { store, clock, reserve } = await setup();
    await reserve('sw-a');
    const o = owner('web', 0);
    const bindWith = (s: InMemoryIpamStore) =>
      new IpBlocks(s, clock).bind({ pool: 'net', ip: '198.18.0.5', owner: o, instanceId: instanceOf(o), host: 'sw-a' });
    expect(await bindWith(losing(store, 10))).toMatchObject({ ip: '198.18.0.5', state: 'bound' });
    await new IpBlocks(store, clock).unbind({ ip: '198.18.0.5' });
    const before = store.snapshot();
    const e = await expectError(bindWith(losing(store, 1_000)), 'UNAVAILABLE');
    expect(e.retryable).toBe(true);
    expect(store.snapshot()).toEqual(before);
  });
});

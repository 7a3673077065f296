import { describe, expect, it } from 'vitest';
import { type AllocateRequest, type Allocation, type BindRequest, type Owner, type PoolCreateRequest, type Reply } from '@orangery/contracts';
import { IpamService } from './ipam.service';
import { FakeClock, InMemoryIpamStore } from './testing/in-memory-store';

// ---- factories -------------------------------------------------------------------------

const owner = (app: string, slot: number, env = 'prod'): Owner => ({ env, app, slot });
const NET: PoolCreateRequest = { name: 'net', cidr: '198.18.0.0/29', gateway: '198.18.0.1' }; // .2 - .6
const WIDE: PoolCreateRequest = { name: 'wide', cidr: '198.18.4.0/22', gateway: '198.18.4.1' };
const OTHER: PoolCreateRequest = { name: 'other', cidr: '198.18.1.0/29', gateway: '198.18.1.1' };
const COOLDOWN = 300;

async function world(...pools: PoolCreateRequest[]) {
  const store = new InMemoryIpamStore();
  const clock = new FakeClock();
  const ipam = new IpamService(store, clock);
  for (const p of pools.length > 0 ? pools : [NET]) await ipam.createPool(p);
  return { store, clock, ipam };
}

const alloc = (o: Owner, pool = 'net', ip?: string): AllocateRequest => ({ pool, owner: o, ...(ip ? { ip } : {}) });
const bindReq = (ip: string, host = 'h1', instanceId = 'prod:web:0'): BindRequest => ({ ip, instanceId, backend: 'docker', host });

/** What singles reply to `reqs` sent one after another, as Reply objects. */
async function singles(ipam: IpamService, reqs: readonly AllocateRequest[]): Promise<Reply<Allocation>[]> {
  const out: Reply<Allocation>[] = [];
  for (const r of reqs) {
    out.push(
      await ipam.allocate(r).then(
        (data): Reply<Allocation> => ({ ok: true, data }),
        (e: { toBody(): never }): Reply<Allocation> => ({ ok: false, error: e.toBody() }),
      ),
    );
  }
  return out;
}

const ipsOf = (rs: readonly Reply<Allocation>[]) => rs.map((r) => (r.ok ? r.data.ip : r.error.code));
const codeOf = (r: Reply<Allocation> | undefined) => (r?.ok ? 'ok' : r?.error.code);

/** A seeded generator (mulberry32): deterministic random tests. */
function rng(seed: number) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- allocate.batch ---------------------------------------------------------------------

describe('allocate.batch', () => {
  it('gives fresh owners the addresses singles would, lowest first, in one transaction of two reads', async () => {
    const { ipam, store } = await world(WIDE);
    const reqs = Array.from({ length: 100 }, (_, i) => alloc(owner('web', i), 'wide'));
    const before = store.transactions;
    const results = await ipam.allocateBatch(reqs);
    expect(store.transactions - before).toBe(1);
    expect(store.roundTrips).toBe(2); // pools + owners, then one pick of 100
    const { ipam: reference } = await world(WIDE);
    expect(results).toEqual(await singles(reference, reqs));
    expect(ipsOf(results).slice(0, 3)).toEqual(['198.18.4.2', '198.18.4.3', '198.18.4.4']);
  });

  it('locks the fresh rows with the owners once it knows the pool: later batches take one read, as singles would answer', async () => {
    const { ipam, store } = await world(WIDE, OTHER);
    const { ipam: reference } = await world(WIDE, OTHER);
    const first = Array.from({ length: 10 }, (_, i) => alloc(owner('web', i), 'wide'));
    expect(await ipam.allocateBatch(first)).toEqual(await singles(reference, first));
    // fresh owners, a repeated one, an explicit ip, another pool
    const second = [
      ...Array.from({ length: 5 }, (_, i) => alloc(owner('api', i), 'wide')),
      alloc(owner('web', 3), 'wide'),
      alloc(owner('api', 9), 'wide', '198.18.4.100'),
      alloc(owner('api', 10), 'other'),
    ];
    const reads = store.roundTrips;
    const got = await ipam.allocateBatch(second);
    expect(got).toEqual(await singles(reference, second));
    // pools + owners + the picks ahead in 'wide' in one; the explicit ip's row; a pick in
    // 'other', which no batch had seen yet (without the picks ahead: 4)
    expect(store.roundTrips - reads).toBe(3);
    // a pool deleted and created again has another id: the old id's picks are not used
    const third = [alloc(owner('x', 0), 'other'), alloc(owner('x', 1), 'other')];
    for (const w of [ipam, reference]) {
      await w.release({ owner: owner('api', 10) });
    }
    expect(ipsOf(await ipam.allocateBatch(third))).toEqual(ipsOf(await singles(reference, third)));
  });

  it('writes one audit row and one ip.allocated event per address, exactly as singles', async () => {
    const { ipam, store } = await world(WIDE);
    const reqs = Array.from({ length: 20 }, (_, i) => alloc(owner('web', i), 'wide'));
    const results = await ipam.allocateBatch(reqs, { actor: 'scheduler' });
    expect(store.audits.filter((a) => a.action === 'allocate')).toHaveLength(20);
    const events = store.events.filter((e) => e.natsSubject === 'orangery.evt.ip.allocated');
    expect(events.map((e) => e.event.subject)).toEqual(ipsOf(results));
    expect(events.map((e) => e.event.data)).toEqual(results.map((r) => (r.ok ? r.data : undefined)));
    expect(new Set(events.map((e) => e.event.id)).size).toBe(20);
  });

  it("gives each item's event its own traceparent when the item carries one, else the request's", async () => {
    const { ipam, store } = await world(WIDE);
    const tp = (n: number) => `00-${String(n).repeat(32)}-${'b'.repeat(16)}-01`;
    const batchTrace = `00-${'c'.repeat(32)}-${'d'.repeat(16)}-01`;
    const reqs = [
      { ...alloc(owner('a', 0), 'wide'), traceparent: tp(1) },
      alloc(owner('b', 0), 'wide'),
      { ...alloc(owner('c', 0), 'wide'), traceparent: tp(2) },
    ];
    const results = await ipam.allocateBatch(reqs, { traceparent: batchTrace });
    const ips = ipsOf(results);
    const allocated = store.events.filter((e) => e.natsSubject === 'orangery.evt.ip.allocated');
    expect(ips.map((ip) => allocated.find((e) => e.event.subject === ip)?.event.traceparent)).toEqual([tp(1), batchTrace, tp(2)]);
    await ipam.bindBatch([{ ...bindReq(ips[0]!, 'h1', 'prod:a:0'), traceparent: tp(3) }, bindReq(ips[1]!, 'h1', 'prod:b:0')], { traceparent: batchTrace });
    const bound = store.events.filter((e) => e.natsSubject === 'orangery.evt.ip.bound');
    expect(bound.map((e) => [e.event.subject, e.event.traceparent])).toEqual([
      [ips[0], tp(3)],
      [ips[1], batchTrace],
    ]);
  });

  it('is idempotent per owner: the same batch again returns the same addresses and changes nothing', async () => {
    const { ipam, store } = await world(WIDE);
    const reqs = Array.from({ length: 30 }, (_, i) => alloc(owner('web', i), 'wide'));
    const first = await ipam.allocateBatch(reqs);
    const snapshot = store.snapshot();
    const events = store.events.length;
    expect(await ipam.allocateBatch(reqs)).toEqual(first);
    expect(store.snapshot()).toEqual(snapshot);
    expect(store.events).toHaveLength(events);
  });

  it('answers an owner that already holds an address like a single does', async () => {
    const { ipam } = await world(NET, OTHER);
    const held = await ipam.allocate(alloc(owner('web', 0)));
    const results = await ipam.allocateBatch([
      alloc(owner('web', 0)),
      alloc(owner('web', 0), 'other'),
      alloc(owner('web', 0), 'net', '198.18.0.6'),
      alloc(owner('web', 0), 'net', held.ip),
    ]);
    expect(results[0]).toEqual({ ok: true, data: held });
    expect(results[1]).toMatchObject({ ok: false, error: { code: 'OWNER_HAS_IP', details: { pool: 'net', ip: held.ip } } });
    expect(results[2]).toMatchObject({ ok: false, error: { code: 'OWNER_HAS_IP' } });
    expect(results[3]).toEqual({ ok: true, data: held });
  });

  it('gives duplicate owners inside one batch one address, as singles in item order would', async () => {
    const { ipam, store } = await world(NET, OTHER);
    const web0 = owner('web', 0);
    const reqs = [alloc(web0), alloc(owner('web', 1)), alloc(web0), alloc(web0, 'other'), alloc(web0, 'net', '198.18.0.2')];
    const results = await ipam.allocateBatch(reqs);
    expect(results.map(codeOf)).toEqual(['ok', 'ok', 'ok', 'OWNER_HAS_IP', 'ok']);
    expect(results[2]).toEqual(results[0]);
    expect(results[4]).toEqual(results[0]);
    expect(store.events).toHaveLength(2);
    const { ipam: reference } = await world(NET, OTHER);
    expect(results).toEqual(await singles(reference, reqs));
  });

  it('gives an owner whose first item failed a new attempt with its next item', async () => {
    const { ipam } = await world(NET, OTHER);
    await ipam.allocateBatch([1, 2, 3, 4, 5].map((s) => alloc(owner('fill', s))));
    const late = owner('late', 0);
    const results = await ipam.allocateBatch([alloc(late), alloc(late, 'other'), alloc(late)]);
    expect(results.map(codeOf)).toEqual(['POOL_EXHAUSTED', 'ok', 'OWNER_HAS_IP']);
    expect(results[1]).toMatchObject({ ok: true, data: { pool: 'other', ip: '198.18.1.2' } });
  });

  it('answers each bad item with its own error and serves the others', async () => {
    const { ipam, store } = await world(NET, OTHER);
    await ipam.allocate(alloc(owner('held', 0), 'net', '198.18.0.5'));
    const results = await ipam.allocateBatch([
      alloc(owner('a', 0)),
      alloc(owner('a', 1), 'nope'),
      alloc(owner('a', 2), 'net', '198.18.0.1'),
      alloc(owner('a', 3), 'net', '198.18.1.2'),
      alloc(owner('a', 4), 'net', '198.18.0.5'),
      alloc(owner('a', 5)),
    ]);
    expect(results.map(codeOf)).toEqual(['ok', 'POOL_NOT_FOUND', 'IP_RESERVED', 'IP_OUT_OF_POOL', 'IP_TAKEN', 'ok']);
    expect(ipsOf(results)).toContain('198.18.0.2');
    expect(ipsOf(results)).toContain('198.18.0.3');
    expect(results[1]).toMatchObject({ error: { details: { pool: 'nope' } } });
    expect(store.events.filter((e) => e.natsSubject === 'orangery.evt.ip.allocated')).toHaveLength(3);
  });

  it('answers POOL_EXHAUSTED for the items beyond the free addresses, counting the batch in the details', async () => {
    const { ipam } = await world(NET);
    const results = await ipam.allocateBatch(Array.from({ length: 7 }, (_, i) => alloc(owner('many', i))));
    expect(results.map(codeOf)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', 'POOL_EXHAUSTED', 'POOL_EXHAUSTED']);
    expect(results[5]).toMatchObject({ ok: false, error: { details: { pool: 'net', size: 5, used: 5, quarantined: 0 } } });
  });

  it('keeps affinity and cooldown: the former owner gets its address back, nobody else before the cooldown', async () => {
    const { ipam, clock } = await world(NET);
    const [a] = await ipam.allocateBatch([alloc(owner('web', 0))]);
    const ip = a!.ok ? a!.data.ip : '';
    await ipam.release({ ip });
    const fill = [1, 2, 3, 4].map((s) => alloc(owner('web', s)));
    const results = await ipam.allocateBatch([...fill, alloc(owner('x', 0)), alloc(owner('x', 1), 'net', ip), alloc(owner('web', 0))]);
    expect(ipsOf(results).slice(0, 4)).not.toContain(ip);
    expect(results.slice(4).map(codeOf)).toEqual(['POOL_EXHAUSTED', 'IP_TAKEN', 'ok']);
    expect(results[6]).toMatchObject({ data: { ip } });
    // after the cooldown: in one batch the former owner's claim comes before fresh draws ...
    await ipam.release({ ip });
    clock.advance(COOLDOWN);
    const both = await ipam.allocateBatch([alloc(owner('y', 0)), alloc(owner('web', 0))]);
    expect(both.map(codeOf)).toEqual(['POOL_EXHAUSTED', 'ok']);
    expect(both[1]).toMatchObject({ data: { ip } });
    // ... and a fresh owner alone may take a released address once its cooldown has passed
    await ipam.release({ ip });
    clock.advance(COOLDOWN);
    expect((await ipam.allocateBatch([alloc(owner('y', 0))]))[0]).toMatchObject({ ok: true, data: { ip } });
    expect((await ipam.allocateBatch([alloc(owner('web', 0))]))[0]).toMatchObject({ ok: false, error: { code: 'POOL_EXHAUSTED' } });
  });

  it('serves explicit ips of a batch before its fresh draws, which never repeat an address', async () => {
    const { ipam } = await world(NET);
    const results = await ipam.allocateBatch([alloc(owner('a', 0)), alloc(owner('a', 1), 'net', '198.18.0.2'), alloc(owner('a', 2))]);
    expect(ipsOf(results)).toEqual(['198.18.0.3', '198.18.0.2', '198.18.0.4']);
  });

  it('matches singles in item order on random batches of fresh and repeated owners over two pools', async () => {
    const random = rng(7);
    // No pool runs out here: an owner whose first item failed is served in a later round
    // (see AllocationBatch), which may reorder fresh draws against singles.
    const other: PoolCreateRequest = { name: 'other', cidr: '198.18.1.0/26', gateway: '198.18.1.1' };
    for (let round = 0; round < 20; round++) {
      const { ipam } = await world(WIDE, other);
      const { ipam: reference } = await world(WIDE, other);
      for (let batch = 0; batch < 3; batch++) {
        const reqs = Array.from({ length: 1 + Math.floor(random() * 40) }, () =>
          alloc(owner(`app${Math.floor(random() * 3)}`, Math.floor(random() * 15)), random() < 0.8 ? 'wide' : 'other'),
        );
        expect(await ipam.allocateBatch(reqs), `round ${round} batch ${batch}`).toEqual(await singles(reference, reqs));
      }
    }
    // 40 in-memory /16 pools: seconds of CPU, more on a loaded 2-core CI machine
  }, 60_000);

  it('never gives one address to two owners nor two live addresses to one owner, whatever the mix', async () => {
    const random = rng(42);
    const { ipam, store, clock } = await world(NET, OTHER);
    for (let step = 0; step < 60; step++) {
      const reqs = Array.from({ length: 1 + Math.floor(random() * 12) }, () => {
        const o = owner('mix', Math.floor(random() * 14));
        const pool = random() < 0.6 ? 'net' : 'other';
        const explicit = random() < 0.2 ? `${pool === 'net' ? '198.18.0' : '198.18.1'}.${2 + Math.floor(random() * 5)}` : undefined;
        return alloc(o, pool, explicit);
      });
      const results = await ipam.allocateBatch(reqs);
      const live = [...store.snapshot().addresses.values()].filter((r) => r.state === 'allocated' || r.state === 'bound');
      const keys = live.map((r) => `${r.owner!.app}:${r.owner!.slot}`);
      expect(new Set(keys).size).toBe(keys.length);
      results.forEach((r, i) => {
        if (!r.ok) return;
        const row = live.find((l) => l.owner!.slot === reqs[i]!.owner.slot);
        expect(r.data.owner).toEqual(reqs[i]!.owner);
        expect(row && `${r.data.ip}`).toBe(r.data.ip);
      });
      // retried as is, every item that succeeded succeeds again with the same address
      const again = await ipam.allocateBatch(reqs);
      results.forEach((r, i) => r.ok && expect(again[i]).toEqual(r));
      for (const r of results) if (r.ok && random() < 0.3) await ipam.release({ ip: r.data.ip });
      clock.advance(random() * COOLDOWN);
    }
  });

  it('changes nothing when its transaction fails, and publishes nothing', async () => {
    const { ipam, store } = await world(WIDE);
    await ipam.allocate(alloc(owner('web', 0), 'wide'));
    const snapshot = store.snapshot();
    const events = store.events.length;
    store.hooks.beforeAudit = () => {
      throw new Error('disk full');
    };
    await expect(ipam.allocateBatch(Array.from({ length: 10 }, (_, i) => alloc(owner('web', i + 1), 'wide')))).rejects.toThrow('disk full');
    expect(store.snapshot()).toEqual(snapshot);
    expect(store.events).toHaveLength(events);
  });

  it('runs again when another replica gave one of its fresh owners an address first, and returns that address', async () => {
    const { ipam, store } = await world(WIDE);
    const rival = new IpamService(store, new FakeClock());
    let raced = false;
    store.hooks.beforeUpdateAddress = async () => {
      if (raced) return;
      raced = true;
      // another replica's single for web:3 commits while this batch is in flight
      await store.commitOutside(async (tx) => {
        const row = await tx.lockAddress(ipOf('198.18.7.200'));
        await tx.updateAddress(row!.ip, { ...row!, state: 'allocated', owner: owner('web', 3), availableAt: null });
      });
    };
    const results = await ipam.allocateBatch(Array.from({ length: 6 }, (_, i) => alloc(owner('web', i), 'wide')));
    expect(results.map(codeOf)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', 'ok']);
    expect(results[3]).toMatchObject({ data: { ip: '198.18.7.200' } });
    expect(await rival.get({ owner: owner('web', 3) })).toMatchObject({ ip: '198.18.7.200' });
    expect(new Set(ipsOf(results)).size).toBe(6);
  });

  it('returns an empty list for an empty batch without a transaction', async () => {
    const { ipam, store } = await world();
    const before = store.transactions;
    expect(await ipam.allocateBatch([])).toEqual([]);
    expect(store.transactions).toBe(before);
  });
});

const ipOf = (text: string) => text.split('.').reduce((n, b) => n * 256 + Number(b), 0);

// ---- bind.batch -------------------------------------------------------------------------

describe('bind.batch', () => {
  it('binds many addresses in one transaction with one ip.bound event each', async () => {
    const { ipam, store } = await world(WIDE);
    const allocated = await ipam.allocateBatch(Array.from({ length: 50 }, (_, i) => alloc(owner('web', i), 'wide')));
    const ips = ipsOf(allocated);
    const before = store.transactions;
    const results = await ipam.bindBatch(ips.map((ip, i) => bindReq(ip, `h${i % 3}`, `prod:web:${i}`)));
    expect(store.transactions - before).toBe(1);
    expect(results.every((r) => r.ok && r.data.state === 'bound')).toBe(true);
    expect(results[4]).toMatchObject({ data: { ip: ips[4], host: 'h1', backend: 'docker', instanceId: 'prod:web:4' } });
    expect(store.events.filter((e) => e.natsSubject === 'orangery.evt.ip.bound').map((e) => e.event.subject)).toEqual(ips);
  });

  it('answers each item as a single bind would: NOT_FOUND, no-op rebinds, moves, in item order', async () => {
    const { ipam, store } = await world(NET);
    const a = await ipam.allocate(alloc(owner('web', 0)));
    const b = await ipam.allocate(alloc(owner('web', 1)));
    await ipam.bind(bindReq(b.ip, 'h1'));
    await ipam.release({ ip: b.ip });
    const c = await ipam.allocate(alloc(owner('web', 2)));
    await ipam.bind(bindReq(c.ip, 'h1', 'prod:web:2'));
    const events = store.events.length;
    const reqs = [
      bindReq(a.ip, 'h1'),
      bindReq(b.ip, 'h1'), // released
      bindReq('198.18.0.6', 'h1'), // never allocated
      bindReq(c.ip, 'h1', 'prod:web:2'), // identical: no change
      bindReq(a.ip, 'h2'), // moves what item 0 bound
    ];
    const results = await ipam.bindBatch(reqs);
    expect(results.map(codeOf)).toEqual(['ok', 'NOT_FOUND', 'NOT_FOUND', 'ok', 'ok']);
    expect(results[4]).toMatchObject({ data: { ip: a.ip, host: 'h2' } });
    expect(store.events.slice(events).map((e) => [e.event.subject, (e.event.data as Allocation).host])).toEqual([
      [a.ip, 'h1'],
      [a.ip, 'h2'],
    ]);
    expect(await ipam.get({ ip: a.ip })).toMatchObject({ state: 'bound', host: 'h2', owner: owner('web', 0) });
  });
});

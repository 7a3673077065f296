import { describe, expect, it } from 'vitest';
import { OrangeryError, type AllocateRequest, type Allocation, type Owner, type PoolCreateRequest, type Reply } from '@orangery/contracts';
import { GroupCommitter } from './group-commit';
import { IpamService } from './ipam.service';
import { FakeClock, InMemoryIpamStore } from './testing/in-memory-store';

// Group commit (docs/ipam.md "Group commit"): concurrent singles share one transaction and
// each is answered as its single would be.

const owner = (app: string, slot: number): Owner => ({ env: 'prod', app, slot });
const NET: PoolCreateRequest = { name: 'net', cidr: '198.18.0.0/29', gateway: '198.18.0.1', cooldownSeconds: 300 }; // .2 - .6
const WIDE: PoolCreateRequest = { name: 'wide', cidr: '198.18.4.0/22', gateway: '198.18.4.1' };

async function world(grouped: boolean, ...pools: PoolCreateRequest[]) {
  const store = new InMemoryIpamStore();
  const clock = new FakeClock();
  const ipam = new IpamService(store, clock, undefined, grouped ? { maxSize: 16, maxInFlight: 1 } : { maxSize: 1, maxInFlight: 1 });
  for (const p of pools.length > 0 ? pools : [NET]) await ipam.createPool(p);
  return { store, clock, ipam };
}

const settle = <T>(p: Promise<T>): Promise<Reply<T>> =>
  p.then(
    (data): Reply<T> => ({ ok: true, data }),
    (e: unknown): Reply<T> => {
      if (e instanceof OrangeryError) return { ok: false, error: e.toBody() };
      throw e;
    },
  );

/** Sends every request at once (concurrent singles) and collects each one's reply. */
const concurrently = (ipam: IpamService, reqs: readonly AllocateRequest[], ctx = {}) => Promise.all(reqs.map((r) => settle(ipam.allocate(r, ctx))));

async function oneByOne(ipam: IpamService, reqs: readonly AllocateRequest[]): Promise<Reply<Allocation>[]> {
  const out: Reply<Allocation>[] = [];
  for (const r of reqs) out.push(await settle(ipam.allocate(r)));
  return out;
}

describe('group commit of single allocations', () => {
  it('answers every request exactly as singles one after another would, in far fewer transactions', async () => {
    // fresh owners, repeated owners (idempotent), an owner asked in another pool, a missing
    // pool, and more fresh owners than the small pool holds (POOL_EXHAUSTED with counts)
    const reqs: AllocateRequest[] = [
      { pool: 'net', owner: owner('a', 0) },
      { pool: 'net', owner: owner('a', 1) },
      { pool: 'net', owner: owner('a', 0) },
      { pool: 'wide', owner: owner('a', 1) },
      { pool: 'nope', owner: owner('a', 2) },
      { pool: 'net', owner: owner('a', 3) },
      { pool: 'net', owner: owner('a', 4) },
      { pool: 'net', owner: owner('a', 5) },
      { pool: 'net', owner: owner('a', 6) },
      { pool: 'net', owner: owner('a', 1) },
      { pool: 'wide', owner: owner('b', 0) },
      { pool: 'net', owner: owner('a', 7) },
    ];
    const grouped = await world(true, NET, WIDE);
    const alone = await world(false, NET, WIDE);
    const before = grouped.store.transactions;
    const got = await concurrently(grouped.ipam, reqs);
    expect(got).toEqual(await oneByOne(alone.ipam, reqs));
    // the first request runs alone at once, the others queue and share one transaction
    expect(grouped.store.transactions - before).toBe(2);
    expect(grouped.ipam.groupStats()).toEqual({ groups: 2, served: reqs.length });
    expect(got.map((r) => (r.ok ? r.data.ip : r.error.code))).toEqual([
      '198.18.0.2',
      '198.18.0.3',
      '198.18.0.2',
      'OWNER_HAS_IP',
      'POOL_NOT_FOUND',
      '198.18.0.4',
      '198.18.0.5',
      '198.18.0.6',
      'POOL_EXHAUSTED',
      '198.18.0.3',
      '198.18.4.2',
      'POOL_EXHAUSTED',
    ]);
    // one audit row (and event) per address that changed, none for the idempotent repeats
    expect(grouped.store.audits.filter((a) => a.action === 'allocate')).toHaveLength(6);
    expect(alone.store.audits.filter((a) => a.action === 'allocate')).toHaveLength(6);
  });

  it('keeps affinity and cooldown: a released owner gets its own address back, a fresh owner never a cooling one', async () => {
    const { ipam, clock } = await world(true);
    const [a] = await concurrently(ipam, [{ pool: 'net', owner: owner('x', 0) }]);
    await ipam.release({ owner: owner('x', 0) });
    clock.advance(10);
    const got = await concurrently(ipam, [
      { pool: 'net', owner: owner('y', 0) },
      { pool: 'net', owner: owner('x', 0) },
      { pool: 'net', owner: owner('y', 1) },
    ]);
    expect(a!.ok && a!.data.ip).toBe('198.18.0.2');
    expect(got.map((r) => r.ok && r.data.ip)).toEqual(['198.18.0.3', '198.18.0.2', '198.18.0.4']);
  });

  it('carries each caller trace and actor into its own audit row and event', async () => {
    const { ipam, store } = await world(true, WIDE);
    const tp = (n: number) => `00-${String(n).padStart(32, '0')}-${'1'.repeat(16)}-01`;
    await Promise.all([0, 1, 2, 3].map((i) => ipam.allocate({ pool: 'wide', owner: owner('t', i) }, { traceparent: tp(i + 1), actor: `caller-${i}` })));
    const audits = store.audits.filter((a) => a.action === 'allocate');
    expect(audits.map((a) => [a.event?.event.traceparent, a.actor ?? 'tx actor'])).toEqual(
      // the first ran alone (its transaction's actor); the three grouped carry their own
      [
        [tp(1), 'tx actor'],
        [tp(2), 'caller-1'],
        [tp(3), 'caller-2'],
        [tp(4), 'caller-3'],
      ],
    );
  });

  it('groups concurrent releases and binds, each answered as its single', async () => {
    const grouped = await world(true, WIDE);
    const alone = await world(false, WIDE);
    const owners = Array.from({ length: 6 }, (_, i) => owner('r', i));
    for (const w of [grouped, alone]) for (const o of owners) await w.ipam.allocate({ pool: 'wide', owner: o });
    const binds = owners.map((o, i) => ({ ip: `198.18.4.${i + 2}`, instanceId: `prod:r:${o.slot}`, backend: 'docker' as const, host: `h${i % 2}` }));
    binds.push({ ip: '198.18.4.200', instanceId: 'prod:r:9', backend: 'docker', host: 'h0' }, binds[0]!);
    const releases = [
      { owner: owners[0]! },
      { ip: '198.18.4.3' },
      { owner: owners[0]! },
      { ip: '198.18.4.250' },
      { owner: owner('r', 99) },
      { ip: '198.18.4.4' },
    ];
    const g = {
      binds: await Promise.all(binds.map((b) => settle(grouped.ipam.bind(b)))),
      releases: await Promise.all(releases.map((r) => settle(grouped.ipam.release(r)))),
    };
    const a = { binds: [] as Reply<Allocation>[], releases: [] as Reply<Allocation>[] };
    for (const b of binds) a.binds.push(await settle(alone.ipam.bind(b)));
    for (const r of releases) a.releases.push(await settle(alone.ipam.release(r)));
    expect(g).toEqual(a);
    expect(g.releases.map((r) => (r.ok ? r.data.state : r.error.code))).toEqual(['released', 'released', 'released', 'NOT_FOUND', 'NOT_FOUND', 'released']);
    expect(grouped.store.audits.map((x) => x.action)).toEqual(alone.store.audits.map((x) => x.action));
  });

  it('refuses bad input at once, before any group', async () => {
    const { ipam } = await world(true);
    await expect(ipam.release({})).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    await expect(ipam.release({ ip: '198.18.0.2', owner: owner('a', 0) })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    expect(ipam.groupStats().served).toBe(0);
  });
});

describe('GroupCommitter', () => {
  const ok = <T>(data: T): Reply<T> => ({ ok: true, data });

  it('bounds a group at maxSize, keeps arrival order, and runs at most maxInFlight groups at once', async () => {
    const sizes: number[][] = [];
    let running = 0;
    let most = 0;
    const g = new GroupCommitter<number, number>(
      async (items) => {
        running++;
        most = Math.max(most, running);
        sizes.push(items);
        await new Promise((r) => setTimeout(r, 5));
        running--;
        return items.map((i) => ok(i * 10));
      },
      async (i) => {
        sizes.push([i]);
        await new Promise((r) => setTimeout(r, 5));
        return i * 10;
      },
      { maxSize: 4, maxInFlight: 2 },
    );
    const out = await Promise.all(Array.from({ length: 21 }, (_, i) => g.submit(i)));
    expect(out).toEqual(Array.from({ length: 21 }, (_, i) => i * 10));
    expect(sizes[0]).toEqual([0]); // no added latency: the first request starts at once, alone
    expect(Math.max(...sizes.map((s) => s.length))).toBe(4);
    expect(sizes.flat()).toEqual(Array.from({ length: 21 }, (_, i) => i));
    expect(most).toBeLessThanOrEqual(2);
  });

  it('answers each item with its own reply: one item failing fails no other', async () => {
    const g = new GroupCommitter<number, number>(
      async (items) => items.map((i) => (i % 2 ? { ok: false, error: { code: 'IP_TAKEN', message: `odd ${i}`, details: { i } } } : ok(i))),
      async (i) => i,
      { maxSize: 8, maxInFlight: 1 },
    );
    const got = await Promise.all([0, 1, 2, 3, 4].map((i) => settle(g.submit(i))));
    expect(got).toEqual([
      ok(0),
      { ok: false, error: { code: 'IP_TAKEN', message: 'odd 1', details: { i: 1 } } },
      ok(2),
      { ok: false, error: { code: 'IP_TAKEN', message: 'odd 3', details: { i: 3 } } },
      ok(4),
    ]);
  });

  it('a database failure of the group answers every request of it UNAVAILABLE', async () => {
    const down = new OrangeryError('UNAVAILABLE', 'the IPAM database is unreachable; nothing was changed, retry later', { retryable: true });
    let alone = 0;
    const g = new GroupCommitter<number, number>(
      async () => {
        throw down;
      },
      async (i) => {
        alone++;
        if (i === 0) await new Promise((r) => setTimeout(r, 5));
        return i;
      },
      { maxSize: 8, maxInFlight: 1 },
    );
    const got = await Promise.all([0, 1, 2, 3].map((i) => settle(g.submit(i))));
    expect(got).toEqual([ok(0), ...[1, 2, 3].map(() => ({ ok: false, error: down.toBody() }))]);
    expect(alone).toBe(1); // the first ran alone; the group of three was never rerun
  });

  it('any other failure of the group reruns each request alone, so only the bad one fails', async () => {
    const g = new GroupCommitter<number, number>(
      async () => {
        throw new Error('a bug in one item');
      },
      async (i) => {
        if (i === 0) await new Promise((r) => setTimeout(r, 5));
        if (i === 2) throw new OrangeryError('INTERNAL', 'item 2 is bad');
        return i;
      },
      { maxSize: 8, maxInFlight: 1 },
    );
    const got = await Promise.all([0, 1, 2, 3].map((i) => settle(g.submit(i))));
    expect(got).toEqual([ok(0), ok(1), { ok: false, error: { code: 'INTERNAL', message: 'item 2 is bad' } }, ok(3)]);
  });

  it('frees its slot at commit: the next group starts while the previous still waits for its acks', async () => {
    const started: number[][] = [];
    let releaseAcks: () => void = () => undefined;
    const acks = new Promise<void>((r) => (releaseAcks = r));
    const g = new GroupCommitter<number, number>(
      async (items, committed) => {
        started.push(items);
        committed();
        if (items[0] === 1) await acks;
        return items.map(ok);
      },
      async (i, committed) => {
        started.push([i]);
        await new Promise((r) => setTimeout(r, 5));
        committed?.();
        return i;
      },
      { maxSize: 2, maxInFlight: 1 },
    );
    const all = Promise.all([0, 1, 2, 3, 4].map((i) => g.submit(i)));
    await new Promise((r) => setTimeout(r, 30));
    // [1, 2] committed and waits for acks; [3, 4] ran meanwhile
    expect(started).toEqual([[0], [1, 2], [3, 4]]);
    releaseAcks();
    expect(await all).toEqual([0, 1, 2, 3, 4]);
  });
});

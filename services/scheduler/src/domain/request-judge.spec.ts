import { describe, expect, it, vi } from 'vitest';
import type { Amounts, InstancePlacedData, ScaleRejectedData } from '@orangery/contracts';
import { HostBook } from './host-book';
import { place, placeMany, type PlacementRequest } from './placement';
import { mulberry32, randomRequest } from './placement/testing/fleet';
import { RequestJudge, RetryLater } from './request-judge';
import { SchedulerEvents } from './scheduler-events';
import { SlotBook } from './slot-book';
import { demandOf } from './slot-records';
import { JournalTooLarge } from './ports';
import { heartbeat, scaleMessage } from './testing/factories';
import { FakeIpam, InMemorySchedulerStore, MemoryLog, transientError } from './testing/fakes';

/**
 * The request judge on its own: a real SlotBook and HostBook over an in-memory journal, no
 * slot workers (kicks are only counted). And the check that placeMany, which the judge uses
 * for a request's new slots, decides exactly as the slot-by-slot loop it replaced.
 */

function judgeWorld(hostIds: string[] = ['a', 'b'], capacity: Amounts = { cpu: 8, memoryMb: 16_384, diskMb: 102_400 }) {
  const store = new InMemorySchedulerStore();
  const ipam = new FakeIpam().addPool('prod-pool', 100);
  const hosts = new HostBook(
    3_600_000,
    () => 0,
    () => 0,
  );
  for (const h of hostIds) hosts.heartbeat(heartbeat(h, { capacity }));
  const book = new SlotBook(store, hosts, () => undefined);
  const kick = vi.fn<(id: string) => void>();
  const judge = new RequestJudge(
    book,
    hosts,
    new SchedulerEvents('test'),
    { store, ipam, log: new MemoryLog(), kick },
    { policy: 'binpack', envBackends: () => undefined },
  );
  const rejections = () => store.eventsOf<ScaleRejectedData>('scale', 'rejected').map((e) => e.data);
  const placements = () => store.eventsOf<InstancePlacedData>('instance', 'placed').map((e) => e.data);
  return { store, ipam, hosts, book, judge, kick, rejections, placements };
}

describe('RequestJudge', () => {
  it('accepts a request that fits: its slots placed, spread over the hosts, journaled in one write, and woken', async () => {
    const w = judgeWorld();
    await w.book.load();
    await w.judge.handleScale(scaleMessage(1, { replicas: 2 }));
    expect(w.store.commits).toHaveLength(1);
    expect(w.book.app('prod:web')).toMatchObject({ requestId: 'req-1', outcome: 'pending', spec: { replicas: 2, vlan: 100 } });
    expect(w.placements().map((p) => [p.slot, p.hostId, p.attempt])).toEqual([
      [0, 'a', 1],
      [1, 'b', 1],
    ]);
    expect(w.kick.mock.calls.map(([id]) => id).sort()).toEqual(['prod:web:0', 'prod:web:1']);
    expect(w.hosts.inventory().free('a').cpu).toBe(7);
    w.judge.stop();
  });

  it('rejects a request that does not fit with the shortfall, all or nothing', async () => {
    const w = judgeWorld(['a', 'b'], { cpu: 4, memoryMb: 8_192, diskMb: 0 });
    await w.book.load();
    await w.judge.handleScale(scaleMessage(1, { replicas: 3, resources: { cpu: 3, memoryMb: 1024 } }));
    expect(w.rejections()).toEqual([
      {
        requestId: 'req-1',
        env: 'prod',
        app: 'web',
        reason: {
          code: 'INSUFFICIENT_CAPACITY',
          message:
            'no host can take 3 CPU, 1024 MiB memory, 0 MiB disk: 2 host(s) filtered out (cpu-exhausted: 2); ' +
            'the closest, a, lacks 2 CPU, 0 MiB memory, 0 MiB disk (2 of 3 new instances fit)',
          details: { filtered: { 'cpu-exhausted': 2 }, shortfall: { cpu: 2, memoryMb: 0, diskMb: 0 }, requested: 3, fit: 2 },
        },
      },
    ]);
    expect(w.book.slotList()).toEqual([]);
    expect(w.hosts.inventory().free('a').cpu).toBe(4);
    expect(w.kick).not.toHaveBeenCalled();
  });

  it('supersedes a pending request in the same write that accepts the newer one', async () => {
    const w = judgeWorld();
    await w.book.load();
    await w.judge.handleScale(scaleMessage(1, { replicas: 1 }));
    await w.judge.handleScale(scaleMessage(2, { replicas: 2 }));
    const last = w.store.commits.at(-1)!;
    expect(last.requests?.map((r) => [r.requestId, r.outcome])).toEqual([
      ['req-2', 'accepted'],
      ['req-1', 'rejected'],
    ]);
    expect(w.rejections()).toEqual([
      expect.objectContaining({ requestId: 'req-1', reason: expect.objectContaining({ code: 'SUPERSEDED', details: { by: 'req-2' } }) }),
    ]);
    // only the slot that had no record yet is placed by the newer request
    expect(w.placements().map((p) => p.slot)).toEqual([0, 1]);
    w.judge.stop();
  });

  it('rejects an older request that arrives after a newer one was accepted, and ignores the same request again', async () => {
    const w = judgeWorld();
    await w.book.load();
    await w.judge.handleScale(scaleMessage(5, { replicas: 1 }));
    const commits = w.store.commits.length;
    await w.judge.handleScale(scaleMessage(5, { replicas: 1 }, { id: 'req-5' }));
    expect(w.store.commits.length).toBe(commits);
    await w.judge.handleScale(scaleMessage(3, { replicas: 2 }));
    expect(w.rejections().map((r) => [r.requestId, r.reason.code])).toEqual([['req-3', 'SUPERSEDED']]);
    expect(w.book.app('prod:web')?.requestId).toBe('req-5');
    w.judge.stop();
  });

  it('rejects a request the journal cannot take in one write (INVALID_REQUEST with the limit), never a redelivery', async () => {
    const w = judgeWorld();
    await w.book.load();
    w.store.failCommits(1, () => new JournalTooLarge(16_777_216, "Got a packet bigger than 'max_allowed_packet' bytes"));
    await w.judge.handleScale(scaleMessage(1, { replicas: 2 }));
    expect(w.rejections()).toEqual([
      expect.objectContaining({
        requestId: 'req-1',
        reason: expect.objectContaining({ code: 'INVALID_REQUEST', details: expect.objectContaining({ limit: 16_777_216, field: 'data' }) }),
      }),
    ]);
    expect(w.rejections()[0]!.reason.message).toContain('16777216');
    expect(w.book.app('prod:web')).toBeUndefined();
    expect(w.hosts.inventory().free('a').cpu).toBe(8); // nothing left reserved
    expect(await w.store.requestSeen('req-1')).toBe(true);
    w.judge.stop();
  });

  it('accepts a request from a recreated scale stream (sequences restarted at 1) for an app it already knows', async () => {
    const w = judgeWorld();
    await w.book.load();
    const G1 = Date.parse('2026-01-01T00:00:00Z');
    const G2 = Date.parse('2026-06-01T00:00:00Z');
    await w.judge.handleScale(scaleMessage(500, { replicas: 1 }, { id: 'old-500', generation: G1 }));
    expect(w.book.app('prod:web')).toMatchObject({ requestId: 'old-500', seq: 500, generation: G1 });
    // ORANGERY_SCALE deleted and created again: its first message is seq 1
    await w.judge.handleScale(scaleMessage(1, { replicas: 2 }, { id: 'new-1', generation: G2 }));
    expect(w.rejections().filter((r) => r.reason.code !== 'SUPERSEDED' || r.requestId !== 'old-500')).toEqual([]);
    expect(w.book.app('prod:web')).toMatchObject({ requestId: 'new-1', seq: 1, generation: G2, spec: { replicas: 2 } });
    await w.judge.handleScale(scaleMessage(2, { replicas: 3 }, { id: 'new-2', generation: G2 }));
    expect(w.book.app('prod:web')?.requestId).toBe('new-2');
    // within a generation the sequence still decides; an old generation's request is older whatever its sequence
    await w.judge.handleScale(scaleMessage(1, { replicas: 1 }, { id: 'new-1b', generation: G2 }));
    await w.judge.handleScale(scaleMessage(900, { replicas: 1 }, { id: 'old-900', generation: G1 }));
    expect(
      w
        .rejections()
        .filter((r) => r.reason.code === 'SUPERSEDED')
        .map((r) => r.requestId)
        .sort(),
    ).toEqual(['new-1', 'new-1b', 'old-500', 'old-900']);
    expect(w.book.app('prod:web')?.requestId).toBe('new-2');
    // the judge keeps the generation across a leader change (it is in the journaled record)
    const again = judgeWorld();
    for (const [k, v] of w.store.apps) again.store.apps.set(k, v);
    await again.book.load();
    expect(again.book.app('prod:web')).toMatchObject({ generation: G2, seq: 2 });
    w.judge.stop();
    again.judge.stop();
  });

  it('gives a request without an id of a recreated stream its own outcome (js-<generation>-<seq>)', async () => {
    const w = judgeWorld();
    await w.book.load();
    await w.judge.handleScale({ seq: 5, generation: 1, subject: 'orangery.scale.prod.web', body: 'not json' });
    await w.judge.handleScale({ seq: 5, generation: 2, subject: 'orangery.scale.prod.web', body: 'not json' });
    expect(w.rejections().map((r) => r.requestId)).toEqual(['js-1-5', 'js-2-5']);
    w.judge.stop();
  });

  it('asks for a redelivery (RetryLater) when ipam cannot say what the pool is', async () => {
    const w = judgeWorld();
    await w.book.load();
    w.ipam.fail({ op: 'pool' }, () => transientError(), 1);
    await expect(w.judge.handleScale(scaleMessage(1))).rejects.toBeInstanceOf(RetryLater);
    expect(w.store.commits).toEqual([]);
  });

  it('reconcileApp gives every desired slot a record, placed where it fits and unplaced where it does not', async () => {
    const w = judgeWorld(['a'], { cpu: 2, memoryMb: 8_192, diskMb: 0 });
    w.store.apps.set('prod:web', {
      env: 'prod',
      app: 'web',
      requestId: 'req-1',
      seq: 1,
      spec: { replicas: 3, resources: { cpu: 1, memoryMb: 512 }, image: 'web:1', backends: ['docker'], pool: 'prod-pool', vlan: 100, spread: 'none' },
      stable: null,
      outcome: 'completed',
      backend: 'auto',
    });
    await w.book.load();
    await w.judge.reconcileApp('prod:web');
    expect(
      w.book
        .slotList()
        .map((s) => [s.slot, s.hostId, s.attempts])
        .sort(),
    ).toEqual([
      [0, 'a', 1],
      [1, 'a', 1],
      [2, null, 0],
    ]);
    expect(w.placements().map((p) => p.slot)).toEqual([0, 1]);
    w.judge.stop();
  });
});

/**
 * What the judge did before placeMany: place one slot, reserve it in the host book, place
 * the next; on the first that does not fit, give back what was reserved.
 */
function slotBySlot(hosts: HostBook, request: PlacementRequest, count: number) {
  const taken: string[] = [];
  const demand = demandOf(request.resources);
  try {
    for (let n = 0; n < count; n++) {
      const d = place(request, hosts.inventory());
      if (!d.ok) return { ok: false, hostIds: [...taken], reason: d.reason };
      hosts.reserve(d.hostId, `new-${n}`, request, demand);
      taken.push(d.hostId);
    }
    return { ok: true, hostIds: [...taken] };
  } finally {
    taken.forEach((h, n) => hosts.unreserve(h, `new-${n}`));
  }
}

/** A host book with a mixed fleet, some drained, some silent, foreign load, and the scheduler's own reservations. */
function randomHostBook(rnd: () => number, size: number): HostBook {
  let now = 0;
  const hosts = new HostBook(
    1_000,
    () => now,
    () => 0,
  );
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rnd() * items.length)]!;
  for (let i = 0; i < size; i++) {
    const id = `h${String(i).padStart(3, '0')}`;
    const vmware = rnd() < 0.3;
    const cap = { cpu: pick([2, 4, 8, 16]), memoryMb: pick([4096, 8192, 16_384]), diskMb: pick([0, 10_240, 51_200]) };
    const fill = pick([0, 0.2, 0.5]);
    hosts.heartbeat(
      heartbeat(id, {
        backend: vmware ? 'vmware' : 'docker',
        capacity: cap,
        vlans: vmware ? pick([[100], [200], [100, 200]]) : 'any',
        labels: rnd() < 0.9 ? { rack: pick(['r1', 'r2', 'r3']) } : {},
        usage: { cpu: cap.cpu * fill, memoryMb: Math.round(cap.memoryMb * fill), diskMb: 0 },
      }),
    );
    if (rnd() < 0.1) hosts.setDrain(id, true);
    for (let k = Math.floor(rnd() * 4); k > 0; k--) {
      hosts.reserve(
        id,
        `${id}-own-${k}`,
        { env: pick(['prod', 'qa']), app: pick(['web', 'api']) },
        { cpu: pick([0.5, 1, 2]), memoryMb: pick([512, 1024]), diskMb: 0 },
      );
    }
  }
  // a few hosts fall silent (unknown): the rest beat again
  now = 2_000;
  for (const h of hosts.all())
    if (rnd() < 0.85)
      hosts.heartbeat(heartbeat(h.id, { backend: h.backend, capacity: h.facts.capacity, vlans: h.facts.vlans, labels: h.facts.labels, usage: h.usage }));
  hosts.sweep(new Map());
  return hosts;
}

describe('placeMany for a request’s new slots', () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])('decides as the slot-by-slot loop did: same hosts, same refusal, nothing left taken (fleet %i)', (seed) => {
    const rnd = mulberry32(7_000 + seed);
    const hosts = randomHostBook(rnd, 40);
    const ids = [...hosts.all()].map((h) => h.id);
    const freeBefore = ids.map((id) => hosts.inventory().free(id));
    for (let r = 0; r < 30; r++) {
      const request = randomRequest(rnd, ids);
      const count = 1 + Math.floor(rnd() * 25);
      const many = placeMany(request, count, hosts.inventory());
      const loop = slotBySlot(hosts, request, count);
      expect(many.ok).toBe(loop.ok);
      expect(many.placements.map((p) => p.hostId)).toEqual(loop.hostIds);
      if (!many.ok) expect(many.reason).toEqual(loop.reason);
    }
    expect(ids.map((id) => hosts.inventory().free(id))).toEqual(freeBefore);
  });
});

import { describe, it, expect, beforeEach } from 'vitest';
import type { Amounts } from '@orangery/contracts';
import { HostBook } from './host-book';
import { Inventory, type HostView } from './placement';
import { heartbeat } from './testing/factories';
import { ManualClock } from './testing/fakes';

const LOST_AFTER_MS = 6_000;
const web = { env: 'prod', app: 'web' };
const api = { env: 'prod', app: 'api' };
const amounts = (cpu: number, memoryMb: number, diskMb = 0): Amounts => ({ cpu, memoryMb, diskMb });

let clock: ManualClock;
let book: HostBook;

beforeEach(() => {
  clock = new ManualClock();
  book = new HostBook(LOST_AFTER_MS, () => clock.now());
});

/** What the placement engine sees of each host, by id. */
function seen(inv: Inventory): Record<string, { state: number; free: Amounts; web: number; api: number }> {
  const out: Record<string, { state: number; free: Amounts; web: number; api: number }> = {};
  for (const id of inv.ids) {
    const i = inv.indexOf(id)!;
    out[id] = {
      state: inv.state[i]!,
      free: inv.free(id),
      web: inv.instancesOf('prod:web')?.get(i) ?? 0,
      api: inv.instancesOf('prod:api')?.get(i) ?? 0,
    };
  }
  return out;
}

/** The inventory built from scratch out of the book's hosts: what the cached one must equal. */
function fresh(b: HostBook): Inventory {
  const views: HostView[] = [...b.all()].map((h) => {
    const own = b.allocated(h);
    return {
      id: h.id,
      backend: h.backend,
      state: b.stateOf(h),
      capacity: h.facts.capacity,
      allocated: { cpu: own.cpu + b.foreign(h).cpu, memoryMb: own.memoryMb + b.foreign(h).memoryMb, diskMb: own.diskMb + b.foreign(h).diskMb },
      labels: h.facts.labels,
      vlans: h.facts.vlans,
      instances: [...h.placed.values()].map((p) => p.ref),
    };
  });
  return Inventory.of(views);
}

const stateOf = (id: string) => {
  const h = book.get(id);
  return h ? book.stateOf(h) : undefined;
};

describe('host states', () => {
  it('a first heartbeat makes a host ready and reports it as new', () => {
    expect(book.heartbeat(heartbeat('a'))).toBe(true);
    expect(stateOf('a')).toBe('ready');
    expect(book.isDown('a')).toBe(false);
    expect(book.size).toBe(1);
  });

  it('a further heartbeat of a ready host is not news', () => {
    book.heartbeat(heartbeat('a'));
    clock.advance(2_000);
    expect(book.heartbeat(heartbeat('a'))).toBe(false);
  });

  it('registration facts alone (no usage) make a host known and ready', () => {
    const { hostId, backend, capacity, total, reserved, labels, vlans } = heartbeat('a');
    expect(book.heartbeat({ hostId, backend, capacity, total, reserved, labels, vlans })).toBe(true);
    expect(stateOf('a')).toBe('ready');
    expect(book.get('a')!.usage).toEqual(amounts(0, 0));
  });

  it('a host silent past lostAfterMs is unknown (down, not lost) until the failover judge says lost', () => {
    book.heartbeat(heartbeat('a'));
    clock.advance(LOST_AFTER_MS);
    expect(stateOf('a')).toBe('ready');
    clock.advance(1);
    expect(stateOf('a')).toBe('unknown');
    expect(book.isDown('a')).toBe(true);
    expect(book.silentFor('a')).toBe(LOST_AFTER_MS + 1);
    book.judge('a', 'lost');
    expect(stateOf('a')).toBe('lost');
  });

  it('a heartbeat clears the verdict: a lost host that beats again is ready', () => {
    book.heartbeat(heartbeat('a'));
    clock.advance(LOST_AFTER_MS + 1);
    book.judge('a', 'lost');
    book.heartbeat(heartbeat('a'));
    expect(book.get('a')!.judged).toBeUndefined();
    expect(stateOf('a')).toBe('ready');
  });

  it('a vmware host that vCenter reports not responding counts as silent although its agent beats', () => {
    book.heartbeat(heartbeat('esx', { backend: 'vmware', connectionState: 'notResponding' }));
    clock.advance(LOST_AFTER_MS + 1);
    book.heartbeat(heartbeat('esx', { backend: 'vmware', connectionState: 'notResponding' }));
    expect(book.isSilent(book.get('esx')!)).toBe(true);
    expect(stateOf('esx')).toBe('unknown');
    book.heartbeat(heartbeat('esx', { backend: 'vmware', connectionState: 'connected' }));
    expect(stateOf('esx')).toBe('ready');
  });

  it('a lost host that beats again is back, and says so once', () => {
    book.heartbeat(heartbeat('a'));
    clock.advance(LOST_AFTER_MS + 1);
    expect(book.heartbeat(heartbeat('a'))).toBe(true);
    expect(stateOf('a')).toBe('ready');
    expect(book.silentFor('a')).toBe(0);
    expect(book.heartbeat(heartbeat('a'))).toBe(false);
  });

  it('a fenced host is lost even while it beats, and ready once it unfences', () => {
    book.heartbeat(heartbeat('a'));
    book.heartbeat(heartbeat('a', { fenced: true }));
    expect(stateOf('a')).toBe('lost');
    expect(seen(book.inventory())['a']!.state).toBe(2);
    expect(book.heartbeat(heartbeat('a', { fenced: false }))).toBe(true);
    expect(stateOf('a')).toBe('ready');
  });

  it('draining is set and cleared by operators and shows in the inventory', () => {
    book.heartbeat(heartbeat('a'));
    expect(book.inventory().state[0]).toBe(0);
    book.setDrain('a', true);
    expect(stateOf('a')).toBe('draining');
    expect(book.inventory().state[0]).toBe(1);
    book.setDrain('a', false);
    expect(stateOf('a')).toBe('ready');
    expect(book.inventory().state[0]).toBe(0);
  });

  it('a silent host is unknown (not draining) while draining', () => {
    book.heartbeat(heartbeat('a'));
    book.setDrain('a', true);
    clock.advance(LOST_AFTER_MS + 1);
    expect(stateOf('a')).toBe('unknown');
  });

  it('an unknown host is lost and has been silent for ever', () => {
    expect(book.isDown('nope')).toBe(true);
    expect(book.silentFor('nope')).toBe(Number.POSITIVE_INFINITY);
  });

  it('sweep notes a host that falls silent, and the inventory then shows it unknown', () => {
    book.heartbeat(heartbeat('a'));
    book.heartbeat(heartbeat('b'));
    const states = new Map<string, 'ready' | 'draining' | 'unknown' | 'lost'>();
    book.sweep(states);
    expect(states.get('a')).toBe('ready');
    expect(book.inventory().state[book.inventory().indexOf('a')!]).toBe(0);
    clock.advance(LOST_AFTER_MS - 1);
    book.heartbeat(heartbeat('b'));
    clock.advance(2);
    book.sweep(states);
    expect(states.get('a')).toBe('unknown');
    book.judge('a', 'lost');
    book.sweep(states);
    expect(states.get('a')).toBe('lost');
    const inv = book.inventory();
    expect(inv.state[inv.indexOf('a')!]).toBe(2);
    expect(inv.state[inv.indexOf('b')!]).toBe(0);
  });

  it('new facts (capacity) reach the inventory at once', () => {
    book.heartbeat(heartbeat('a'));
    expect(book.inventory().free('a').cpu).toBe(8);
    book.heartbeat(heartbeat('a', { capacity: { cpu: 4, memoryMb: 8192, diskMb: 0 } }));
    expect(book.inventory().free('a')).toEqual(amounts(4, 8192));
  });
});

describe('reservations', () => {
  beforeEach(() => {
    book.heartbeat(heartbeat('a'));
    book.heartbeat(heartbeat('b', { labels: { rack: 'r2' } }));
    book.inventory(); // built: from now on reservations are applied to it in place
  });

  it('reserve takes the demand from the cached inventory and counts the app there', () => {
    const before = book.inventory();
    book.reserve('a', 'prod:web:0', web, amounts(1.5, 2048, 100));
    const inv = book.inventory();
    expect(inv).toBe(before); // applied in place, not rebuilt
    expect(inv.free('a')).toEqual(amounts(6.5, 16_384 - 2048, 102_300));
    expect(seen(inv)['a']!.web).toBe(1);
    expect(book.allocated(book.get('a')!)).toEqual(amounts(1.5, 2048, 100));
  });

  it('reserving the same slot twice counts it once', () => {
    book.reserve('a', 'prod:web:0', web, amounts(1, 1024));
    book.reserve('a', 'prod:web:0', web, amounts(1, 1024));
    expect(book.inventory().free('a').cpu).toBe(7);
    expect(seen(book.inventory())['a']!.web).toBe(1);
  });

  it('unreserve gives back exactly what reserve took; an unknown slot changes nothing', () => {
    const start = seen(book.inventory());
    book.reserve('a', 'prod:web:0', web, amounts(0.1, 300, 7));
    book.unreserve('a', 'prod:web:1');
    book.unreserve('zz', 'prod:web:0');
    book.unreserve('a', 'prod:web:0');
    book.unreserve('a', 'prod:web:0');
    expect(seen(book.inventory())).toEqual(start);
  });

  it('a long sequence of reserve/unreserve leaves the cached inventory equal to a fresh build', () => {
    const slots: [string, string, typeof web, Amounts][] = [];
    for (let i = 0; i < 30; i++) {
      const host = i % 3 === 0 ? 'b' : 'a';
      const ref = i % 2 === 0 ? web : api;
      slots.push([host, `${ref.env}:${ref.app}:${i}`, ref, amounts(0.1 * ((i % 4) + 1), 128 * ((i % 5) + 1), i)]);
    }
    for (const [h, id, ref, d] of slots) book.reserve(h, id, ref, d);
    for (const [h, id] of slots.filter((_, i) => i % 3 !== 1)) book.unreserve(h, id);
    book.reserve('b', 'prod:api:99', api, amounts(2, 4096));
    const cached = book.inventory();
    expect(seen(cached)).toEqual(seen(fresh(book)));
    // and it really was kept in place, not rebuilt behind our back
    expect(cached.free('b').cpu).toBeLessThan(8 - 2 + 1e-9);
  });

  it('stays exact with foreign load on the host', () => {
    book.heartbeat(heartbeat('a', { usage: amounts(3, 8192, 10), allocated: amounts(1, 1024, 0) }));
    clock.advance(2_000); // let the usage rebuild happen once
    book.inventory();
    book.reserve('a', 'prod:web:0', web, amounts(1, 1024));
    book.reserve('a', 'prod:web:1', web, amounts(2, 2048));
    book.unreserve('a', 'prod:web:0');
    const cached = book.inventory();
    expect(seen(cached)).toEqual(seen(fresh(book)));
    // 8 cores - own 2 - foreign (3 used - 1 given to its instances) = 4
    expect(cached.free('a').cpu).toBeCloseTo(4, 9);
  });

  it('a reservation on a host never heard of makes an unknown placeholder and reaches the inventory', () => {
    book.reserve('ghost', 'prod:web:3', web, amounts(1, 1024));
    expect(stateOf('ghost')).toBe('unknown');
    const inv = book.inventory();
    expect(inv.ids).toContain('ghost');
    expect(seen(inv)['ghost']).toMatchObject({ state: 3, web: 1 });
    expect(seen(inv)).toEqual(seen(fresh(book)));
  });

  it('a rebuild after a structural change keeps the reservations', () => {
    book.reserve('a', 'prod:web:0', web, amounts(2, 2048));
    book.heartbeat(heartbeat('c'));
    const inv = book.inventory();
    expect(inv.free('a')).toEqual(amounts(6, 16_384 - 2048, 102_400));
    expect(seen(inv)).toEqual(seen(fresh(book)));
  });

  it('reservations made while a rebuild is due are not counted twice', () => {
    book.heartbeat(heartbeat('c')); // structural change: the next inventory() rebuilds
    book.reserve('a', 'prod:web:0', web, amounts(1, 1024));
    book.unreserve('a', 'prod:web:0');
    book.reserve('a', 'prod:web:1', web, amounts(1, 1024));
    const inv = book.inventory();
    expect(inv.free('a').cpu).toBe(7);
    expect(seen(inv)).toEqual(seen(fresh(book)));
  });
});

describe('live usage', () => {
  it('load beyond what the agent gave its instances counts on top of what the scheduler placed', () => {
    book.heartbeat(heartbeat('a', { usage: amounts(6, 4096, 50), allocated: amounts(1, 8192, 0) }));
    book.reserve('a', 'prod:web:0', web, amounts(1, 8192));
    clock.advance(1_000);
    book.heartbeat(heartbeat('a', { usage: amounts(6, 4096, 50), allocated: amounts(1, 8192, 0) }));
    // cpu: own 1 + (6 - 1) foreign; memory: usage below the agent's allocation, no foreign load; disk: 50 foreign
    expect(book.inventory().free('a')).toEqual(amounts(2, 16_384 - 8192, 102_350));
  });

  it('usage that lags a removal (reported with the allocation it belongs to) frees nothing less', () => {
    book.heartbeat(heartbeat('a', { usage: amounts(4, 4096, 0), allocated: amounts(4, 4096, 0) }));
    clock.advance(1_000);
    expect(book.inventory().free('a')).toEqual(amounts(8, 16_384, 102_400));
  });

  it('usage alone rebuilds the inventory at most once a second', () => {
    book.heartbeat(heartbeat('a'));
    const first = book.inventory();
    book.heartbeat(heartbeat('a', { usage: amounts(4, 0) }));
    expect(book.inventory()).toBe(first);
    expect(book.inventory().free('a').cpu).toBe(8);
    clock.advance(1_000);
    book.heartbeat(heartbeat('a', { usage: amounts(4, 0) }));
    expect(book.inventory()).not.toBe(first);
    expect(book.inventory().free('a').cpu).toBe(4);
  });

  it("keeps the agent's own figures", () => {
    book.heartbeat(heartbeat('a', { usage: amounts(1, 2, 3), allocated: amounts(4, 5, 6) }));
    expect(book.get('a')).toMatchObject({ usage: amounts(1, 2, 3), agentAllocated: amounts(4, 5, 6) });
  });
});

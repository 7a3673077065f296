import { describe, it, expect } from 'vitest';
import { demandOf, FEASIBILITY, firstRejection } from './filters';
import { Inventory } from './inventory';
import { place, placeMany } from './place';
import { fitScore, outranks, SPREAD_PENALTY, spreadPenalty, utilisationAfter } from './scoring';
import { capacity, esxHost, host, mulberry32, rack, randomFleet, randomRequest, request, tally, used } from './testing/fleet';
import type { HostView, ManyDecision, PlacementDecision, PlacementRequest } from './types';

// ---- helpers ---------------------------------------------------------------------------

const hostOf = (d: PlacementDecision): string => (d.ok ? d.hostId : `refused: ${d.reason.message}`);
const hostsOf = (d: ManyDecision): string[] => d.placements.map((p) => p.hostId);

/** Places `count` slots and expects them all placed; returns the host of each. */
function placeAll(req: PlacementRequest, count: number, hosts: readonly HostView[] | Inventory): string[] {
  const d = placeMany(req, count, hosts);
  expect(d.ok, d.ok ? '' : d.reason.message).toBe(true);
  return hostsOf(d);
}

/** 'a' 75% used, 'b' 25% used, 'c' empty: all 8 CPU / 16 GiB. */
const LOADED = [host('a', used(6, 12_288)), host('b', used(2, 4096)), host('c')];

// ---- scoring ---------------------------------------------------------------------------

describe('policies', () => {
  it.each<[string, PlacementRequest['policy'], HostView[], string]>([
    ['binpack fills the fullest host', 'binpack', LOADED, 'a'],
    ['least-loaded takes the emptiest host', 'least-loaded', LOADED, 'c'],
    ['binpack skips a fuller host that has no room', 'binpack', [host('a', used(7.5, 0)), host('b', used(4, 0))], 'b'],
    [
      'binpack weighs cpu and memory together: 7/8 CPU and no memory is emptier than 4/8 and 8/16 GiB',
      'binpack',
      [host('cpu-heavy', used(7, 0)), host('even', used(4, 8192))],
      'even',
    ],
    [
      'least-loaded compares utilisation, not free amounts: 16 free of 64 CPU is fuller than 7 of 8',
      'least-loaded',
      [host('big', { ...capacity(64, 131_072), ...used(48, 98_304) }), host('small', used(1, 2048))],
      'small',
    ],
    [
      'binpack compares utilisation, not free amounts: a big host half full is emptier than a small one 3/4 full',
      'binpack',
      [host('big', { ...capacity(64, 131_072), ...used(32, 65_536) }), host('small', used(6, 12_288))],
      'small',
    ],
  ])('%s', (_what, policy, hosts, expected) => {
    expect(hostOf(place(request({ policy, spread: 'none' }), hosts))).toBe(expected);
  });

  it.each<[PlacementRequest['policy'], string[]]>([
    ['binpack', ['a', 'a']],
    ['least-loaded', ['c', 'c', 'c', 'b']],
  ])('%s over several slots without spread: %j', (policy, expected) => {
    // least-loaded fills c until it is fuller than b; binpack fills a (2 CPU left).
    expect(placeAll(request({ policy, spread: 'none', resources: { cpu: 1, memoryMb: 1024 } }), expected.length, LOADED)).toEqual(expected);
  });

  it('returns the score of the chosen host: its utilisation after placement for binpack', () => {
    // a: (6+1)/8 CPU and (12+1)/16 GiB -> (0.875 + 0.8125) / 2
    expect(place(request({ spread: 'none' }), LOADED)).toEqual({ ok: true, hostId: 'a', score: expect.closeTo((0.875 + 0.8125) / 2, 12) });
  });
});

describe('spread: host', () => {
  it.each<[PlacementRequest['policy']]>([['binpack'], ['least-loaded']])('4 replicas on 2 hosts go 2+2 (%s)', (policy) => {
    expect(tally(placeAll(request({ policy }), 4, [host('a', used(6, 0)), host('b')]))).toEqual({ a: 2, b: 2 });
  });

  it.each<[PlacementRequest['policy']]>([['binpack'], ['least-loaded']])('4 replicas on 4 hosts never share one (%s)', (policy) => {
    const hosts = [host('a', used(7, 14_000)), host('b', used(4, 0)), host('c'), host('d', used(1, 1024))];
    expect(new Set(placeAll(request({ policy }), 4, hosts)).size).toBe(4);
  });

  it.each<[string, HostView[], number, Record<string, number>]>([
    ['3 replicas on 2 hosts: 2+1, never 3+0', [host('a'), host('b')], 3, { a: 2, b: 1 }],
    ['5 replicas on 2 hosts: 3+2', [host('a'), host('b')], 5, { a: 3, b: 2 }],
    ['6 replicas on 3 hosts of different fill: 2+2+2', [host('a', used(5, 0)), host('b', used(1, 0)), host('c')], 6, { a: 2, b: 2, c: 2 }],
    ['a host that fits one replica only takes one; the rest stack where they must', [host('a', used(7, 0)), host('b')], 3, { a: 1, b: 2 }],
    ['one feasible host takes every replica', [host('a'), host('b', { state: 'draining' })], 3, { a: 3 }],
  ])('%s', (_what, hosts, count, expected) => {
    expect(tally(placeAll(request(), count, hosts))).toEqual(expected);
  });

  it.each<[string, HostView['instances'], string]>([
    ['avoids a host already running the app, even the fullest', [{ env: 'prod', app: 'web' }], 'b'],
    ['ignores the same app in another env', [{ env: 'qa', app: 'web' }], 'a'],
    ['ignores another app in the same env', [{ env: 'prod', app: 'api' }], 'a'],
  ])('%s', (_what, instances, expected) => {
    const hosts = [host('a', { ...used(6, 12_288), instances }), host('b')];
    expect(hostOf(place(request(), hosts))).toBe(expected);
  });

  it('the penalty is per instance already there, larger than any difference of fit', () => {
    const d = place(request(), [host('a', { instances: [{ env: 'prod', app: 'web' }] })]);
    expect(d.ok && d.score).toBeCloseTo((1 / 8 + 1 / 16) / 2 - SPREAD_PENALTY, 12);
    expect(SPREAD_PENALTY).toBeGreaterThan(1);
  });

  it('spread: none lets binpack stack every replica on the fullest host', () => {
    expect(tally(placeAll(request({ spread: 'none' }), 4, [host('a', used(2, 0)), host('b')]))).toEqual({ a: 4 });
  });
});

describe('tie-breaks', () => {
  const racked = [host('h1', rack('r1')), host('h2', rack('r1')), host('h3', rack('r2')), host('h4', rack('r2'))];

  it.each<[string, PlacementRequest, HostView[], number, string[]]>([
    ['equal hosts: the second replica goes to the other rack (binpack)', request(), racked, 2, ['h1', 'h3']],
    ['equal hosts: the second replica goes to the other rack (least-loaded)', request({ policy: 'least-loaded' }), racked, 2, ['h1', 'h3']],
    ['4 replicas on 4 equal hosts in 2 racks alternate racks', request({ policy: 'least-loaded' }), racked, 4, ['h1', 'h3', 'h2', 'h4']],
    [
      'rack is only a tie-breaker: a better score in the same rack wins',
      request({ policy: 'least-loaded' }),
      [host('h1', rack('r1')), host('h2', rack('r1')), host('h3', { ...rack('r2'), ...used(1, 0) })],
      2,
      ['h1', 'h2'],
    ],
    ['without spread, racks play no part: lowest id among equals', request({ spread: 'none', policy: 'least-loaded' }), racked, 2, ['h1', 'h2']],
    ['hosts without a rack label share one rack', request({ policy: 'least-loaded' }), [host('h1'), host('h2'), host('h3', rack('r9'))], 2, ['h1', 'h3']],
  ])('%s', (_what, req, hosts, count, expected) => {
    expect(placeAll(req, count, hosts)).toEqual(expected);
  });

  it.each<[string, HostView[]]>([
    ['in order', [host('a'), host('b'), host('c')]],
    ['reversed', [host('c'), host('b'), host('a')]],
    ['shuffled', [host('b'), host('c'), host('a')]],
  ])('equal hosts given %s: the lowest host id wins', (_what, hosts) => {
    expect(hostOf(place(request(), hosts))).toBe('a');
    expect(hostOf(place(request({ policy: 'least-loaded' }), hosts))).toBe('a');
  });

  it('scores a hair apart are a tie, so float noise cannot beat the rack rule', () => {
    // b is 1e-12 emptier than a (same rack as the first replica's), c is in another rack
    const hosts = [host('a', rack('r1')), host('b', { ...rack('r1'), ...capacity(8, 16_384 + 1e-6) }), host('c', rack('r2'))];
    expect(placeAll(request({ policy: 'least-loaded' }), 2, hosts)).toEqual(['a', 'c']);
  });
});

describe('backend: auto', () => {
  it.each<[string, PlacementRequest, HostView[], string]>([
    ['docker full: vmware', request(), [host('dkr', used(8, 0)), esxHost('esx')], 'esx'],
    ['vmware full: docker', request(), [host('dkr'), esxHost('esx', used(0, 16_384))], 'dkr'],
    ['both with room, binpack: the fuller, here vmware', request(), [host('dkr', used(2, 0)), esxHost('esx', used(4, 0))], 'esx'],
    ['both with room, binpack: the fuller, here docker', request(), [host('dkr', used(4, 0)), esxHost('esx', used(2, 0))], 'dkr'],
    [
      'both with room, least-loaded: the emptier, here vmware',
      request({ policy: 'least-loaded' }),
      [host('dkr', used(4, 0)), esxHost('esx', used(2, 0))],
      'esx',
    ],
    ['vmware hosts without the VLAN leave docker', request({ vlan: 300 }), [host('dkr', used(7, 0)), esxHost('esx')], 'dkr'],
    ["the env's policy narrows auto to docker", request({ allowedBackends: ['docker'] }), [host('dkr', used(1, 0)), esxHost('esx', used(4, 0))], 'dkr'],
    ['backend: vmware never takes a docker host', request({ backend: 'vmware' }), [host('dkr', used(6, 0)), esxHost('esx')], 'esx'],
  ])('%s', (_what, req, hosts, expected) => {
    expect(hostOf(place(req, hosts))).toBe(expected);
  });
});

// ---- hosts that must never be chosen ---------------------------------------------------

describe('draining, lost and excluded hosts', () => {
  type Case = [string, PlacementRequest['policy'], (h: HostView) => HostView, (r: PlacementRequest) => PlacementRequest];
  const ways: [string, (h: HostView) => HostView, (r: PlacementRequest) => PlacementRequest][] = [
    ['draining', (h) => ({ ...h, state: 'draining' }), (r) => r],
    ['lost', (h) => ({ ...h, state: 'lost' }), (r) => r],
    ['excluded', (h) => h, (r) => ({ ...r, excludeHosts: ['best'] })],
  ];
  const cases = ways.flatMap(([what, hostAs, requestAs]) => (['binpack', 'least-loaded'] as const).map((policy): Case => [what, policy, hostAs, requestAs]));
  it.each<Case>(cases)('a %s host is never chosen, though it scores best (%s)', (_what, policy, hostAs, requestAs) => {
    // 'best' is the fullest with room (binpack) or the emptiest (least-loaded)
    const best = hostAs(host('best', policy === 'binpack' ? used(4, 8192) : {}));
    const other = host('other', policy === 'binpack' ? used(1, 1024) : used(2, 2048));
    const req = requestAs(request({ policy, spread: 'none' }));
    expect(tally(placeAll(req, 3, [best, other]))).toEqual({ other: 3 });
  });
});

// ---- refusals --------------------------------------------------------------------------

describe('INSUFFICIENT_CAPACITY', () => {
  it('a request too large for the fleet names how many hosts each filter rejected and the shortfall', () => {
    const hosts = [
      host('small', used(2, 4096)), // 6 CPU, 12 GiB free
      host('medium', { ...capacity(10, 20_480), ...used(1, 0) }), // 9 CPU, 20 GiB free: the closest
      host('big-draining', { ...capacity(64, 262_144), state: 'draining' }),
      host('big-lost', { ...capacity(64, 262_144), state: 'lost' }),
      esxHost('esx', capacity(64, 262_144)),
      host('big-excluded', capacity(64, 262_144)),
    ];
    const d = place(request({ backend: 'docker', excludeHosts: ['big-excluded'], resources: { cpu: 12, memoryMb: 24_576 } }), hosts);
    expect(d).toEqual({
      ok: false,
      reason: {
        code: 'INSUFFICIENT_CAPACITY',
        message: expect.stringContaining('medium') as string,
        details: {
          filtered: { 'cpu-exhausted': 2, 'host-not-ready': 2, 'backend-not-allowed': 1, 'host-excluded': 1 },
          shortfall: { cpu: 3, memoryMb: 4096, diskMb: 0 },
        },
      },
    });
  });

  it.each<[string, HostView[], PlacementRequest, { cpu: number; memoryMb: number; diskMb: number }]>([
    [
      'the closest host is the one least short relative to the need',
      [host('cpu-short', used(7.5, 0)), host('memory-short', used(0, 16_000))],
      request({ resources: { cpu: 1, memoryMb: 8192 } }),
      { cpu: 0.5, memoryMb: 0, diskMb: 0 },
    ],
    ['cpu in cores, fractions kept', [host('a', used(7.75, 0))], request({ resources: { cpu: 1.5, memoryMb: 64 } }), { cpu: 1.25, memoryMb: 0, diskMb: 0 }],
    [
      'the heap rule counts: 2 GiB heap needs 2.5 GiB',
      [host('a', used(0, 14_336))],
      request({ resources: { cpu: 1, memoryMb: 1024, heapMb: 2048 } }),
      { cpu: 0, memoryMb: 512, diskMb: 0 },
    ],
    ['disk', [host('a', capacity(8, 16_384, 1024))], request({ resources: { cpu: 1, memoryMb: 64, diskMb: 3072 } }), { cpu: 0, memoryMb: 0, diskMb: 2048 }],
    [
      'no host eligible at all: the whole need',
      [host('a', { state: 'lost' }), esxHost('b')],
      request({ backend: 'docker', resources: { cpu: 2, memoryMb: 2048, heapMb: 2048, diskMb: 10 } }),
      { cpu: 2, memoryMb: 2560, diskMb: 10 },
    ],
    ['no hosts at all: the whole need', [], request(), { cpu: 1, memoryMb: 1024, diskMb: 0 }],
  ])('shortfall: %s', (_what, hosts, req, shortfall) => {
    const d = place(req, hosts);
    expect(d.ok || d.reason.details.shortfall).toEqual(shortfall);
  });

  it('the message says what was asked and why each host was left out', () => {
    const d = place(request({ resources: { cpu: 16, memoryMb: 1024 } }), [host('a'), host('b', { state: 'draining' })]);
    expect(d.ok).toBe(false);
    expect(d.ok || d.reason.message).toBe(
      'no host can take 16 CPU, 1024 MiB memory, 0 MiB disk: 2 host(s) filtered out (cpu-exhausted: 1, host-not-ready: 1); ' +
        'the closest, a, lacks 8 CPU, 0 MiB memory, 0 MiB disk',
    );
  });
});

describe('the heap rule', () => {
  it.each<[string, PlacementRequest['resources'], number]>([
    ['no heap: the memory asked', { cpu: 0.1, memoryMb: 1024 }, 4],
    ['a 1 GiB heap in 1 GiB: reserved as 1.25 GiB', { cpu: 0.1, memoryMb: 1024, heapMb: 1024 }, 3],
    ['a 3 GiB heap in 1 GiB: reserved as 3.75 GiB', { cpu: 0.1, memoryMb: 1024, heapMb: 3072 }, 1],
    ['memory above heap + head room: the memory asked', { cpu: 0.1, memoryMb: 1024, heapMb: 512 }, 4],
  ])('%s: %i fit in 4 GiB', (_what, resources, fits) => {
    const d = placeMany(request({ resources, spread: 'none' }), 5, [host('a', capacity(8, 4096))]);
    expect(d.placements).toHaveLength(fits);
    expect(d.ok || d.reason.details.filtered).toEqual({ 'memory-exhausted': 1 });
  });
});

// ---- placeMany -------------------------------------------------------------------------

describe('placeMany', () => {
  it('stops at the first slot that does not fit, returning those placed before it', () => {
    const d = placeMany(request({ resources: { cpu: 3, memoryMb: 1024 } }), 4, [host('a'), host('b', used(5, 0))]);
    expect(d).toMatchObject({ ok: false, reason: { code: 'INSUFFICIENT_CAPACITY', details: { filtered: { 'cpu-exhausted': 2 } } } });
    expect(hostsOf(d)).toEqual(['b', 'a', 'a']);
  });

  it('places nothing for 0 slots', () => {
    expect(placeMany(request(), 0, [])).toEqual({ ok: true, placements: [] });
  });

  it.each([-1, 1.5, Number.NaN])('refuses %s slots', (count) => {
    expect(() => placeMany(request(), count, [host('a')])).toThrow(RangeError);
  });

  it('leaves an inventory it was given as it was', () => {
    const inventory = Inventory.of([host('a', used(4, 0)), host('b')]);
    const before = place(request(), inventory);
    expect(placeAll(request(), 6, inventory)).toHaveLength(6);
    expect(placeMany(request({ resources: { cpu: 5, memoryMb: 64 } }), 3, inventory).ok).toBe(false);
    expect(inventory.free('a')).toEqual({ cpu: 4, memoryMb: 16_384, diskMb: 102_400 });
    expect(inventory.free('b')).toEqual({ cpu: 8, memoryMb: 16_384, diskMb: 102_400 });
    expect(inventory.instancesOf('prod:web')).toBeUndefined();
    expect(place(request(), inventory)).toEqual(before);
  });

  it('sees what the caller assigned to its inventory', () => {
    const inventory = Inventory.of([host('a', used(4, 0)), host('b')]);
    inventory.assign('a', request());
    expect(placeAll(request(), 2, inventory)).toEqual(['b', 'a']);
  });

  it('is deterministic: the same inputs give the same slots, whatever the host order', () => {
    const rnd = mulberry32(7);
    const fleet = randomFleet(rnd, 40);
    const req = request({ resources: { cpu: 0.5, memoryMb: 512 } });
    const first = placeMany(req, 12, fleet);
    expect(placeMany(req, 12, fleet)).toEqual(first);
    expect(placeMany(req, 12, [...fleet].reverse())).toEqual(first);
  });
});

// ---- the engine against its definitions -------------------------------------------------

/**
 * The best host by definition: every host through the FEASIBILITY chain and the scoring
 * helpers, one at a time and without shortcuts. The engine's hot loop must agree.
 */
function referenceBest(inventory: Inventory, req: PlacementRequest): string | undefined {
  const demand = demandOf(req);
  const where = req.spread === 'host' ? inventory.instancesOf(demand.key) : undefined;
  const onRack = new Map<number, number>();
  for (const [i, n] of where ?? []) onRack.set(inventory.rack[i]!, (onRack.get(inventory.rack[i]!) ?? 0) + n);
  let best = -1;
  let bestScore = -Infinity;
  let bestRackLoad = 0;
  for (let i = 0; i < inventory.size; i++) {
    if (firstRejection(FEASIBILITY, inventory, i, demand)) continue;
    const u = utilisationAfter(inventory.freeCpuMilli[i]!, inventory.cpuScale[i]!, inventory.freeMemoryMb[i]!, inventory.memoryScale[i]!, demand);
    const score = fitScore(u, req.policy) - spreadPenalty(where?.get(i) ?? 0);
    const rackLoad = onRack.get(inventory.rack[i]!) ?? 0;
    if (best < 0 || outranks(score, rackLoad, bestScore, bestRackLoad)) {
      best = i;
      bestScore = score;
      bestRackLoad = rackLoad;
    }
  }
  return best < 0 ? undefined : inventory.ids[best];
}

describe('the engine agrees with its definitions', () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8])('slot by slot with the filter chain and scoring helpers, on random fleet %i', (seed) => {
    const rnd = mulberry32(seed);
    const fleet = randomFleet(rnd, 60);
    // Both see the same assignments: the fleet fills up as the requests go.
    const engine = Inventory.of(fleet);
    const reference = Inventory.of(fleet);
    const ids = fleet.map((h) => h.id);
    for (let r = 0; r < 40; r++) {
      const req = randomRequest(rnd, ids);
      const count = 1 + Math.floor(rnd() * 4);
      const expected: string[] = [];
      for (let n = 0; n < count; n++) {
        const id = referenceBest(reference, req);
        if (id === undefined) break;
        expected.push(id);
        reference.assign(id, req);
      }
      const d = placeMany(req, count, engine);
      expect(hostsOf(d)).toEqual(expected);
      expect(d.ok).toBe(expected.length === count);
      for (const id of hostsOf(d)) engine.assign(id, req);
    }
  });

  /**
   * Places again and again, excluding every host already chosen, until refused: the hosts
   * chosen must be exactly those the chain admits, best score first, and the refusal must
   * count every host under some reason.
   */
  it.each([1, 2, 3, 4, 5, 6, 7, 8])('chooses exactly the hosts the chain admits, on random fleet %i', (seed) => {
    const rnd = mulberry32(100 + seed);
    const fleet = randomFleet(rnd, 60);
    const inventory = Inventory.of(fleet);
    const ids = fleet.map((h) => h.id);
    for (let r = 0; r < 40; r++) {
      const req = randomRequest(rnd, ids);
      const demand = demandOf(req);
      const admitted = new Set(ids.filter((id) => !firstRejection(FEASIBILITY, inventory, inventory.indexOf(id)!, demand)));
      const chosen: string[] = [];
      let lastScore = Infinity;
      // Bounded: an engine that ignored exclusions would otherwise choose the same host for ever.
      for (let attempt = 0; attempt <= fleet.length; attempt++) {
        const d = place({ ...req, excludeHosts: [...(req.excludeHosts ?? []), ...chosen] }, inventory);
        if (!d.ok) {
          const counted = Object.values(d.reason.details.filtered).reduce((a, b) => a + b, 0);
          expect(counted).toBe(fleet.length);
          break;
        }
        expect(admitted.has(d.hostId), `${d.hostId} is not admitted by the chain`).toBe(true);
        expect(chosen, `${d.hostId} chosen twice`).not.toContain(d.hostId);
        expect(d.score).toBeLessThanOrEqual(lastScore + 1e-9);
        lastScore = d.score;
        chosen.push(d.hostId);
      }
      expect(new Set(chosen)).toEqual(admitted);
    }
  });
});

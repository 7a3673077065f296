import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { demandOf, FEASIBILITY, firstRejection } from './filters';
import { BUCKETS, bucketOf, FreeIndex, SAMPLE } from './free-index';
import { Inventory } from './inventory';
import { place, placeMany } from './place';
import { esxHost, host, mulberry32, rack, randomFleet, randomRequest, request, used } from './testing/fleet';
import type { HostView, PlacementRequest } from './types';

/**
 * The indexed search (the default) against the exhaustive one (`search: 'exhaustive'`) on
 * the same inventory, decision by decision, on fleets large enough that the walk stops on
 * its sample rather than on its bound.
 */

/** A fleet of `size` hosts: a random mix (every filter has work) or a uniform one (large ties). */
function fleetOf(seed: number, size: number, uniform: boolean): HostView[] {
  const rnd = mulberry32(seed);
  if (!uniform) return randomFleet(rnd, size);
  return Array.from({ length: size }, (_, i) =>
    host(`u${String(i).padStart(4, '0')}`, {
      ...rack(`r${Math.floor(rnd() * 4)}`),
      ...(rnd() < 0.2 ? used(Math.round(rnd() * 6), Math.round(rnd() * 12_000)) : {}),
    }),
  );
}

/** What the FEASIBILITY chain and spread say of host `id` for `req` on `inventory`. */
function judge(inventory: Inventory, req: PlacementRequest, id: string): { fits: boolean; instances: number } {
  const demand = demandOf(req);
  const i = inventory.indexOf(id)!;
  return {
    fits: !firstRejection(FEASIBILITY, inventory, i, demand),
    instances: req.spread === 'host' ? (inventory.instancesOf(demand.key)?.get(i) ?? 0) : 0,
  };
}

/**
 * The most the indexed answer may lose to the exhaustive one: a bucket of free fraction,
 * plus the spread of d inside a shape class (read from the index's scratch, which holds
 * the last decision's, i.e. this request's).
 */
function tolerance(inventory: Inventory, req: PlacementRequest): number {
  const d = demandOf(req);
  const key = `${d.backends}/${d.vlan}`;
  const classOk = inventory.classVerdict(
    key,
    inventory.verdict(key, () => true),
  ); // both cached by the decision
  const index = inventory.freeIndex();
  let spread = 0;
  for (let c = 0; c < index.classes; c++) if (classOk[c] === 1) spread = Math.max(spread, index.dHigh[c]! - index.dLow[c]!);
  return 1 / BUCKETS + spread + 1e-9;
}

describe('indexed placement against the exhaustive search', () => {
  it('never a host that does not fit, spread kept whenever the exhaustive search keeps it, refusals alike, score within the bound', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.boolean(), fc.integer({ min: 40, max: 400 }), (seed, uniform, size) => {
        const rnd = mulberry32(seed ^ 0x5a5a);
        const fleet = fleetOf(seed, size, uniform);
        const inventory = Inventory.of(fleet);
        const ids = fleet.map((h) => h.id);
        for (let r = 0; r < 60; r++) {
          const req: PlacementRequest = uniform
            ? request({
                app: `a${Math.floor(rnd() * 5)}`,
                resources: { cpu: [0.5, 1, 2][Math.floor(rnd() * 3)]!, memoryMb: 1024 },
                policy: rnd() < 0.5 ? 'binpack' : 'least-loaded',
                spread: rnd() < 0.8 ? 'host' : 'none',
              })
            : randomRequest(rnd, ids);
          const slots = 1 + Math.floor(rnd() * 6);
          for (let n = 0; n < slots; n++) {
            const exhaustive = place(req, inventory, { search: 'exhaustive' });
            const indexed = place(req, inventory);
            expect(indexed.ok).toBe(exhaustive.ok);
            if (!indexed.ok || !exhaustive.ok) break;
            const got = judge(inventory, req, indexed.hostId);
            const best = judge(inventory, req, exhaustive.hostId);
            expect(got.fits, `${indexed.hostId} does not fit`).toBe(true);
            // spread: as few instances of the app on the chosen host as the exhaustive choice
            expect(got.instances).toBe(best.instances);
            expect(indexed.score).toBeGreaterThanOrEqual(exhaustive.score - tolerance(inventory, req));
            inventory.assign(indexed.hostId, req);
          }
        }
      }),
      { seed: 0x17, numRuns: 40 },
    );
  });

  it('is deterministic: the same fleet and requests give the same hosts, whatever the order of the snapshot', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
        const fleet = fleetOf(seed, 300, seed % 2 === 0);
        const run = (hosts: readonly HostView[]) => {
          const rnd = mulberry32(seed);
          const inventory = Inventory.of(hosts);
          const ids = fleet.map((h) => h.id);
          const out: string[][] = [];
          for (let r = 0; r < 30; r++) {
            const req = randomRequest(rnd, ids);
            const d = placeMany(req, 1 + Math.floor(rnd() * 5), inventory);
            const chosen = d.placements.map((p) => p.hostId);
            for (const id of chosen) inventory.assign(id, req);
            out.push(chosen);
          }
          return out;
        };
        expect(run([...fleet].reverse())).toEqual(run(fleet));
      }),
      { seed: 0x18, numRuns: 20 },
    );
  });

  it('stops on its sample in a large tie: an empty uniform fleet is not scanned, and the sample still spreads across racks', () => {
    const fleet = Array.from({ length: 5000 }, (_, i) => host(`h${String(i).padStart(4, '0')}`, rack(`r${i % 4}`)));
    const chosen = placeMany(request({ policy: 'least-loaded' }), 8, fleet);
    expect(chosen.ok).toBe(true);
    const hosts = chosen.placements.map((p) => p.hostId);
    expect(new Set(hosts).size).toBe(8);
    // the 8 replicas are 2 per rack: the rack tie-break works inside the sample
    const racks = hosts.map((id) => Number(id.slice(1)) % 4);
    expect([0, 1, 2, 3].map((r) => racks.filter((x) => x === r).length)).toEqual([2, 2, 2, 2]);
    // all among the first hosts of the bucket: the walk stopped after its sample
    expect(Math.max(...hosts.map((id) => Number(id.slice(1))))).toBeLessThan(SAMPLE * 2);
  });

  it('with more VLAN sets than classes tell apart, still only hosts reaching the VLAN', () => {
    // 60 ESXi hosts, each its own VLAN set: the classes fall back to backend + shape
    const fleet = Array.from({ length: 60 }, (_, i) => esxHost(`e${String(i).padStart(2, '0')}`, { vlans: [1000 + i, 2000 + (i % 7)] }));
    const inventory = Inventory.of(fleet);
    expect(inventory.classes).toBe(1);
    for (const vlan of [1000, 1033, 1059, 2003]) {
      for (const policy of ['binpack', 'least-loaded'] as const) {
        const d = place(request({ vlan, policy, backend: 'vmware' }), inventory);
        const exhaustive = place(request({ vlan, policy, backend: 'vmware' }), inventory, { search: 'exhaustive' });
        expect(d.ok && fleet.find((h) => h.id === d.hostId)!.vlans).toContain(vlan);
        expect(d).toEqual(exhaustive);
      }
    }
    expect(place(request({ vlan: 3000, backend: 'vmware' }), inventory).ok).toBe(false);
  });

  it('finds the one host without the app however many hosts run it', () => {
    const fleet = Array.from({ length: 500 }, (_, i) => host(`h${String(i).padStart(3, '0')}`, i === 377 ? used(7, 0) : {}));
    const inventory = Inventory.of(fleet);
    const req = request({ policy: 'least-loaded' });
    for (let i = 0; i < 500; i++) if (i !== 377) inventory.assign(`h${String(i).padStart(3, '0')}`, req);
    expect(place(req, inventory)).toMatchObject({ ok: true, hostId: 'h377' });
  });
});

describe('FreeIndex', () => {
  it('keeps every host in the bucket of its free fraction as instances come and go', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
        const rnd = mulberry32(seed);
        const fleet = fleetOf(seed, 120, false);
        const inventory = Inventory.of(fleet);
        const ids = fleet.map((h) => h.id);
        const req = randomRequest(rnd, ids);
        place(req, inventory); // builds the index for the request's backends and VLAN
        const placed: [string, PlacementRequest][] = [];
        for (let k = 0; k < 200; k++) {
          if (placed.length > 0 && rnd() < 0.4) {
            const [id, r] = placed.splice(Math.floor(rnd() * placed.length), 1)[0]!;
            inventory.unassign(id, r);
          } else {
            const r = randomRequest(rnd, ids);
            const id = ids[Math.floor(rnd() * ids.length)]!;
            inventory.assign(id, r);
            placed.push([id, r]);
          }
        }
        const index = inventory.freeIndex();
        let held = 0;
        for (let slot = 0; slot < index.classes * BUCKETS; slot++) {
          const b = slot % BUCKETS;
          for (let i = index.head[slot]!; i >= 0; i = index.next[i]!) {
            expect(index.bucket[i]).toBe(b);
            expect(bucketOf(inventory.freeFraction(i))).toBe(b);
            held++;
          }
        }
        expect(held).toBe(index.members);
      }),
      { seed: 0x19, numRuns: 30 },
    );
  });

  it('finds the buckets in use on either side of a bucket, per shape class', () => {
    const admitted = Uint8Array.from([1, 1, 1, 0, 1]);
    const f = [0, 0.5, 0.99999, 0.7, 0.25];
    // hosts 0-3 one shape (8 CPU, 16 GiB), host 4 another (64 CPU, 256 GiB)
    const cpu = Float64Array.from([8, 8, 8, 8, 64], (x) => 1 / (x * 1000));
    const mem = Float64Array.from([16, 16, 16, 16, 256], (x) => 1 / (x * 1024));
    // free amounts giving the fractions f: f = (freeCpu * cpuScale + freeMemory * memoryScale) / 2
    const freeCpu = Float64Array.from(f, (x, i) => x / cpu[i]!);
    const freeMem = Float64Array.from(f, (x, i) => x / mem[i]!);
    const shape = Int32Array.from([0, 0, 0, 0, 1]);
    const index = new FreeIndex(admitted, shape, 2, cpu, mem, freeCpu, freeMem);
    expect(index.classes).toBe(2);
    const [b0, b1, b2] = [bucketOf(0), bucketOf(0.5), bucketOf(0.99999)];
    expect([b0, b1, b2]).toEqual([0, BUCKETS / 2, BUCKETS - 1]);
    expect(index.below(0, BUCKETS - 1)).toBe(b2);
    expect(index.below(0, b2 - 1)).toBe(b1);
    expect(index.below(0, b1 - 1)).toBe(b0);
    expect(index.above(0, 1)).toBe(b1);
    expect(index.above(0, b1 + 1)).toBe(b2);
    expect(index.above(0, 0)).toBe(0);
    expect(index.below(1, BUCKETS - 1)).toBe(bucketOf(0.25));
    index.move(2, b1);
    expect(index.above(0, b1 + 1)).toBe(-1);
    expect(index.below(0, BUCKETS - 1)).toBe(b1);
    index.move(0, 31);
    index.move(1, 32);
    expect(index.above(0, 0)).toBe(31);
    expect(index.below(0, 30)).toBe(-1);
    expect(index.above(0, 32)).toBe(32);
    // a host the index does not hold is never moved in
    index.move(3, 5);
    expect(index.above(0, 0)).toBe(31);
    expect(index.below(1, BUCKETS - 1)).toBe(bucketOf(0.25));
  });
});

import type { Amounts } from '@orangery/contracts';
import { CAPACITY, demandOf, FEASIBILITY, firstRejection, STATIC, type Demand } from './filters';
import { Inventory } from './inventory';
import { fitScore, SCORE_EPSILON, SPREAD_PENALTY, spreadPenalty, utilisationAfter } from './scoring';
import type { FilterReason, HostView, InsufficientCapacity, ManyDecision, PlacementDecision, PlacementRequest, SlotPlacement } from './types';

/**
 * Chooses the host for one instance. `hosts` is a snapshot, or an Inventory kept by the
 * caller (built once, much cheaper for many decisions); either way nothing is changed.
 */
export function place(request: PlacementRequest, hosts: readonly HostView[] | Inventory): PlacementDecision {
  const inventory = hosts instanceof Inventory ? hosts : Inventory.of(hosts);
  const demand = demandOf(request);
  const best = bestHost(inventory, demand);
  if (best < 0) return { ok: false, reason: insufficientCapacity(inventory, demand) };
  return { ok: true, hostId: inventory.ids[best]!, score: scoreOf(inventory, best, demand) };
}

/**
 * Places `count` instances one after another, each seeing the ones before it (so spread
 * holds across them). Stops at the first that does not fit, returning those placed before.
 * A caller's Inventory serves as the working copy and is restored before returning: the
 * caller assigns what it actually commits.
 */
export function placeMany(request: PlacementRequest, count: number, hosts: readonly HostView[] | Inventory): ManyDecision {
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a whole number >= 0, got ${count}`);
  const borrowed = hosts instanceof Inventory;
  const inventory = borrowed ? hosts : Inventory.of(hosts);
  const demand = demandOf(request);
  const taken: number[] = [];
  const placements: SlotPlacement[] = [];
  try {
    for (let n = 0; n < count; n++) {
      const best = bestHost(inventory, demand);
      if (best < 0) return { ok: false, placements, reason: insufficientCapacity(inventory, demand) };
      placements.push({ hostId: inventory.ids[best]!, score: scoreOf(inventory, best, demand) });
      inventory.take(best, demand, +1);
      inventory.count(demand.key, best, +1);
      taken.push(best);
    }
    return { ok: true, placements };
  } finally {
    if (borrowed) {
      for (const i of taken) {
        inventory.take(i, demand, -1);
        inventory.count(demand.key, i, -1);
      }
    }
  }
}

/**
 * The index of the best feasible host, or -1. With spread: host, the app's instances per
 * host and per rack go into the inventory's scratch arrays first (O(instances of the
 * app)) and are cleared after, so the pass over the hosts allocates nothing.
 */
function bestHost(inventory: Inventory, demand: Demand): number {
  const { onHost, onRack, rack } = inventory;
  const where = demand.spread === 'host' ? inventory.instancesOf(demand.key) : undefined;
  if (where) {
    for (const [i, n] of where) {
      onHost[i] = n;
      onRack[rack[i]!]! += n;
    }
  }
  try {
    return scan(inventory, demand);
  } finally {
    if (where) {
      for (const [i] of where) {
        onHost[i] = 0;
        onRack[rack[i]!] = 0;
      }
    }
  }
}

/**
 * The hot loop, the engine's whole cost: the FEASIBILITY chain of filters.ts, then the
 * ranking of scoring.ts, for every host. The STATIC filters' verdicts come cached from the
 * inventory; the rest is written out over columns and constants held in locals, because
 * through the filter objects and the scoring helpers V8 reloads every column and constant
 * for every host (measured about 1.5x slower on 5,000 hosts). place.spec.ts holds this
 * loop to the chain and the helpers on seeded random fleets. Hosts are in id order, so on
 * a full tie the lowest id stays the best.
 */
function scan(inventory: Inventory, demand: Demand): number {
  const { size, ids, rack, onHost, onRack, freeCpuMilli, freeMemoryMb, freeDiskMb, cpuScale, memoryScale } = inventory;
  const { excluded, cpuMilli, memoryMb, diskMb } = demand;
  const eligible = inventory.verdict(`${demand.backends}/${demand.vlan}/${demand.labelsKey}`, (i) => !firstRejection(STATIC, inventory, i, demand));
  const anyExcluded = excluded.size > 0;
  const binpack = demand.policy === 'binpack';
  const penalty = SPREAD_PENALTY;
  const epsilon = SCORE_EPSILON;
  let best = -1;
  let bestScore = -Infinity;
  let bestRackLoad = 0;
  for (let i = 0; i < size; i++) {
    if (
      eligible[i] === 0 || // STATIC: backendAllowed, labelsMatch, hostReady, vlanReachable
      (anyExcluded && excluded.has(ids[i]!)) || // notExcluded
      freeCpuMilli[i]! < cpuMilli || // cpuFree
      freeMemoryMb[i]! < memoryMb || // memoryFree
      freeDiskMb[i]! < diskMb // diskFree
    ) {
      continue;
    }
    // utilisationAfter, fitScore, spreadPenalty
    const utilisation = 1 - ((freeCpuMilli[i]! - cpuMilli) * cpuScale[i]! + (freeMemoryMb[i]! - memoryMb) * memoryScale[i]!) / 2;
    const score = (binpack ? utilisation : 1 - utilisation) - penalty * onHost[i]!;
    // outranks, with the rack looked up only when the score is not clearly worse
    if (score < bestScore - epsilon) continue;
    const rackLoad = onRack[rack[i]!]!;
    if (best < 0 || score > bestScore + epsilon || rackLoad < bestRackLoad) {
      best = i;
      bestScore = score;
      bestRackLoad = rackLoad;
    }
  }
  return best;
}

function scoreOf(inventory: Inventory, i: number, demand: Demand): number {
  const instances = demand.spread === 'host' ? (inventory.instancesOf(demand.key)?.get(i) ?? 0) : 0;
  const utilisation = utilisationAfter(inventory.freeCpuMilli[i]!, inventory.cpuScale[i]!, inventory.freeMemoryMb[i]!, inventory.memoryScale[i]!, demand);
  return fitScore(utilisation, demand.policy) - spreadPenalty(instances);
}

/** What host `i` lacks to take the demand (cpu in cores). */
function shortfallOf(inventory: Inventory, i: number, demand: Demand): Amounts {
  return {
    cpu: Math.max(0, demand.cpuMilli - inventory.freeCpuMilli[i]!) / 1000,
    memoryMb: Math.max(0, demand.memoryMb - inventory.freeMemoryMb[i]!),
    diskMb: Math.max(0, demand.diskMb - inventory.freeDiskMb[i]!),
  };
}

/** The shortfall relative to the need, summed over the dimensions: how far from fitting. */
function distance(inventory: Inventory, i: number, demand: Demand): number {
  const s = shortfallOf(inventory, i, demand);
  return (s.cpu * 1000) / demand.cpuMilli + s.memoryMb / Math.max(1, demand.memoryMb) + s.diskMb / Math.max(1, demand.diskMb);
}

/**
 * Why no host fits: every host counted under the first filter that rejected it, and what
 * the closest candidate (eligible, only short of room) lacks. Runs only on a refusal.
 */
function insufficientCapacity(inventory: Inventory, demand: Demand): InsufficientCapacity {
  const filtered: Partial<Record<FilterReason, number>> = {};
  let closest = -1;
  let closestDistance = Infinity;
  for (let i = 0; i < inventory.size; i++) {
    const rejection = firstRejection(FEASIBILITY, inventory, i, demand);
    if (!rejection) continue;
    filtered[rejection.reason] = (filtered[rejection.reason] ?? 0) + 1;
    if (!CAPACITY.includes(rejection)) continue;
    const d = distance(inventory, i, demand);
    if (d < closestDistance) {
      closest = i;
      closestDistance = d;
    }
  }
  const need: Amounts = { cpu: demand.cpuMilli / 1000, memoryMb: demand.memoryMb, diskMb: demand.diskMb };
  const shortfall = closest >= 0 ? shortfallOf(inventory, closest, demand) : need;
  const counts = Object.entries(filtered).map(([reason, n]) => `${reason}: ${n}`);
  const why =
    inventory.size === 0
      ? 'the inventory has no hosts'
      : `${inventory.size} host(s) filtered out (${counts.join(', ')}); ` +
        (closest >= 0
          ? `the closest, ${inventory.ids[closest]}, lacks ${amountsText(shortfall)}`
          : 'none is eligible for the request, whatever its free capacity');
  return {
    code: 'INSUFFICIENT_CAPACITY',
    message: `no host can take ${amountsText(need)}: ${why}`,
    details: { filtered, shortfall },
  };
}

const amountsText = (a: Amounts): string => `${a.cpu} CPU, ${a.memoryMb} MiB memory, ${a.diskMb} MiB disk`;

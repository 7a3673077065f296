import type { Amounts } from '@orangery/contracts';
import type { HostView, PlacementRequest } from '../types';

/** Small factories for placement tests: hosts and requests with plain defaults. */

/** An empty, ready docker host: 8 CPU, 16 GiB, 100 GiB disk, no rack, any VLAN. */
export const host = (id: string, over: Partial<HostView> = {}): HostView =>
  deepFreeze({
    id,
    backend: 'docker',
    state: 'ready',
    capacity: { cpu: 8, memoryMb: 16_384, diskMb: 102_400 },
    allocated: { cpu: 0, memoryMb: 0, diskMb: 0 },
    labels: {},
    vlans: 'any',
    instances: [],
    ...over,
  });

/** An ESXi host reaching VLANs 100 and 200; otherwise like `host`. */
export const esxHost = (id: string, over: Partial<HostView> = {}): HostView => host(id, { backend: 'vmware', vlans: [100, 200], ...over });

/** What is already allocated on a host: `used(6, 12_288)` is 6 CPU and 12 GiB. */
export const used = (cpu: number, memoryMb: number, diskMb = 0): Pick<HostView, 'allocated'> => ({
  allocated: { cpu, memoryMb, diskMb },
});

export const capacity = (cpu: number, memoryMb: number, diskMb = 102_400): Pick<HostView, 'capacity'> => ({
  capacity: { cpu, memoryMb, diskMb },
});

export const rack = (name: string): Pick<HostView, 'labels'> => ({ labels: { rack: name } });

/** prod/web: 1 CPU, 1 GiB, no heap, no disk; auto backend on VLAN 100; spread host; binpack. */
export const request = (over: Partial<PlacementRequest> = {}): PlacementRequest =>
  deepFreeze({
    env: 'prod',
    app: 'web',
    resources: { cpu: 1, memoryMb: 1024 },
    backend: 'auto',
    vlan: 100,
    spread: 'host',
    policy: 'binpack',
    ...over,
  });

/** How many of `hostIds` went to each host, e.g. { a: 2, b: 2 }. */
export function tally(hostIds: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const id of hostIds) counts[id] = (counts[id] ?? 0) + 1;
  return counts;
}

/** Frozen all the way down: the engine must not write to its inputs. */
export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** mulberry32: a small seeded PRNG, so "random" fleets are the same on every run. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = <T>(rnd: () => number, items: readonly T[]): T => items[Math.floor(rnd() * items.length)]!;

/**
 * A small fleet where every filter has work: both backends, every state, VLAN-limited
 * ESXi hosts, 3 racks, uneven allocations (some hosts nearly full, one overcommitted),
 * and instances of a few apps already running.
 */
export function randomFleet(rnd: () => number, size: number): HostView[] {
  return Array.from({ length: size }, (_, i) => {
    const vmware = rnd() < 0.3;
    const total: Amounts = { cpu: pick(rnd, [2, 4, 8, 16]), memoryMb: pick(rnd, [4096, 8192, 16_384]), diskMb: pick(rnd, [0, 10_240, 51_200]) };
    const fill = pick(rnd, [0, 0, 0.3, 0.6, 0.9, 1, 1.05]);
    const s = rnd();
    return host(`h${String(i).padStart(3, '0')}`, {
      backend: vmware ? 'vmware' : 'docker',
      state: s < 0.1 ? 'draining' : s < 0.2 ? 'lost' : 'ready',
      capacity: total,
      allocated: {
        cpu: Math.round(total.cpu * fill * 10) / 10,
        memoryMb: Math.round(total.memoryMb * fill * rnd()),
        diskMb: Math.round(total.diskMb * fill * rnd()),
      },
      labels: rnd() < 0.9 ? { rack: pick(rnd, ['r1', 'r2', 'r3']) } : {},
      vlans: vmware ? pick(rnd, [[100], [200], [100, 200]]) : 'any',
      instances: Array.from({ length: Math.floor(rnd() * 3) }, () => ({ env: pick(rnd, ['prod', 'qa']), app: pick(rnd, ['web', 'api']) })),
    });
  });
}

export function randomRequest(rnd: () => number, fleetIds: readonly string[]): PlacementRequest {
  const heap = rnd() < 0.4;
  return request({
    env: pick(rnd, ['prod', 'qa']),
    app: pick(rnd, ['web', 'api', 'batch']),
    resources: {
      cpu: pick(rnd, [0.1, 0.5, 1, 2, 3]),
      memoryMb: pick(rnd, [256, 1024, 2048, 4096]),
      ...(heap ? { heapMb: pick(rnd, [512, 1024, 3072]) } : {}),
      ...(rnd() < 0.5 ? { diskMb: pick(rnd, [1024, 20_480]) } : {}),
    },
    backend: pick(rnd, ['auto', 'auto', 'docker', 'vmware'] as const),
    vlan: pick(rnd, [100, 200, 300]),
    spread: pick(rnd, ['host', 'none'] as const),
    policy: pick(rnd, ['binpack', 'least-loaded'] as const),
    ...(rnd() < 0.3 ? { allowedBackends: [pick(rnd, ['docker', 'vmware'] as const)] } : {}),
    ...(rnd() < 0.3 ? { excludeHosts: [pick(rnd, fleetIds), pick(rnd, fleetIds)] } : {}),
  });
}

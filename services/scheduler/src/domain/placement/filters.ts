import { appKey, BACKEND_BIT, needOf, READY, type Inventory, type Need } from './inventory';
import { BACKENDS } from '@orangery/contracts';
import type { FilterReason, PlacementRequest } from './types';

/**
 * Feasibility: small filters chained Nomad-style. A host is feasible when every filter
 * admits it; a host filtered out is counted under the reason of the first filter that
 * rejected it, which is what INSUFFICIENT_CAPACITY reports.
 */

/** A request compiled once per decision into what the filters and scores compare. */
export interface Demand extends Need {
  readonly key: string;
  /** BACKEND_BIT of each backend the request and the env's policy both allow */
  readonly backends: number;
  /** the env's hostLabels as pairs (empty: any host) */
  readonly labels: readonly (readonly [string, string])[];
  /** the same as text, part of the key of the STATIC verdicts */
  readonly labelsKey: string;
  readonly vlan: number;
  readonly excluded: ReadonlySet<string>;
  readonly spread: PlacementRequest['spread'];
  readonly policy: PlacementRequest['policy'];
}

export function demandOf(request: PlacementRequest): Demand {
  const need = needOf(request.resources);
  let backends = 0;
  for (const b of BACKENDS) {
    const asked = request.backend === 'auto' || request.backend === b;
    if (asked && (request.allowedBackends?.includes(b) ?? true)) backends |= BACKEND_BIT[b];
  }
  const labels = request.hostLabels ? Object.entries(request.hostLabels) : [];
  // A plain literal, not a spread: every demand must share one hidden class, or the
  // engine's hot loop is deoptimized again and again (V8 gives spread objects fresh maps).
  return {
    cpuMilli: need.cpuMilli,
    memoryMb: need.memoryMb,
    diskMb: need.diskMb,
    key: appKey(request),
    backends,
    labels,
    labelsKey: labels.length === 0 ? '' : JSON.stringify(labels),
    vlan: request.vlan,
    excluded: new Set(request.excludeHosts ?? []),
    spread: request.spread,
    policy: request.policy,
  };
}

/** One stage of the chain: whether host `i` of the inventory may take the demand. */
export interface HostFilter {
  readonly reason: FilterReason;
  readonly admits: (hosts: Inventory, i: number, demand: Demand) => boolean;
}

/** The request's backend (auto: both), narrowed by the env's allowed backends. */
export const backendAllowed: HostFilter = {
  reason: 'backend-not-allowed',
  admits: (hosts, i, d) => (hosts.backend[i]! & d.backends) !== 0,
};

/** The env's hostLabels: the host carries every one of them. */
export const labelsMatch: HostFilter = {
  reason: 'labels-mismatch',
  admits: (hosts, i, d) => {
    if (d.labels.length === 0) return true;
    const own = hosts.labels[i]!;
    for (const [k, v] of d.labels) if (own[k] !== v) return false;
    return true;
  },
};

/** Draining hosts take nothing new; lost hosts cannot. */
export const hostReady: HostFilter = {
  reason: 'host-not-ready',
  admits: (hosts, i) => hosts.state[i] === READY,
};

export const notExcluded: HostFilter = {
  reason: 'host-excluded',
  admits: (hosts, i, d) => d.excluded.size === 0 || !d.excluded.has(hosts.ids[i]!),
};

/** The instance's address lives on the pool's VLAN: the host must reach it. */
export const vlanReachable: HostFilter = {
  reason: 'vlan-unreachable',
  admits: (hosts, i, d) => hosts.vlanAny[i] === 1 || hosts.vlans[i]!.has(d.vlan),
};

export const cpuFree: HostFilter = {
  reason: 'cpu-exhausted',
  admits: (hosts, i, d) => hosts.freeCpuMilli[i]! >= d.cpuMilli,
};

/** Against the container's limit (heap rule included), not the memory asked. */
export const memoryFree: HostFilter = {
  reason: 'memory-exhausted',
  admits: (hosts, i, d) => hosts.freeMemoryMb[i]! >= d.memoryMb,
};

export const diskFree: HostFilter = {
  reason: 'disk-exhausted',
  admits: (hosts, i, d) => hosts.freeDiskMb[i]! >= d.diskMb,
};

/**
 * The filters that read only a host's fixed facts and the request's backends, labels and
 * VLAN: the engine asks them once per (backends, labels, VLAN) and keeps the verdict per host.
 */
export const STATIC: readonly HostFilter[] = [backendAllowed, labelsMatch, hostReady, vlanReachable];
/** Whether the host could ever take the request, whatever runs on it. */
export const ELIGIBILITY: readonly HostFilter[] = [backendAllowed, labelsMatch, hostReady, notExcluded, vlanReachable];
/** Whether it has room now; a host rejected here is a candidate for the shortfall. */
export const CAPACITY: readonly HostFilter[] = [cpuFree, memoryFree, diskFree];
export const FEASIBILITY: readonly HostFilter[] = [...ELIGIBILITY, ...CAPACITY];

/** The first filter of `chain` that rejects host `i`, or undefined when all admit it. */
export function firstRejection(chain: readonly HostFilter[], hosts: Inventory, i: number, demand: Demand): HostFilter | undefined {
  for (const filter of chain) if (!filter.admits(hosts, i, demand)) return filter;
  return undefined;
}

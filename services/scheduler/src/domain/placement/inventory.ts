import { memoryLimitMb, type Amounts, type Backend, type Resources } from '@orangery/contracts';
import type { AppRef, HostState, HostView } from './types';

/** The label spread balances across when several hosts score the same. */
export const RACK_LABEL = 'rack';

/** Backends as bits, so a request's allowed backends are one mask. */
export const BACKEND_BIT: Readonly<Record<Backend, number>> = { docker: 1, vmware: 2, swarm: 4 };
export const HOST_STATES: readonly HostState[] = ['ready', 'draining', 'lost', 'unknown'];
export const READY = HOST_STATES.indexOf('ready');

/**
 * CPU is counted in millicores inside the engine: integer arithmetic, so adding and
 * removing 0.1 CPU a thousand times leaves a host exactly as free as it was.
 */
export const toMillicores = (cpu: number): number => Math.round(cpu * 1000);

/** What one instance takes on its host. */
export interface Need {
  readonly cpuMilli: number;
  /** the container's limit: the heap rule can raise it above `memoryMb` */
  readonly memoryMb: number;
  readonly diskMb: number;
}

export function needOf(resources: Readonly<Resources>): Need {
  return {
    // Never 0: an instance always takes something, and 0 would fit a full host.
    cpuMilli: Math.max(1, toMillicores(resources.cpu)),
    memoryMb: memoryLimitMb(resources.memoryMb, resources.heapMb),
    diskMb: resources.diskMb ?? 0,
  };
}

export const appKey = (ref: AppRef): string => `${ref.env}:${ref.app}`;

const MAX_VERDICTS = 64;

type Placed = AppRef & { readonly resources: Readonly<Resources> };

/**
 * A working copy of the fleet for placement, built once from a snapshot: each host's free
 * capacity after reservations and allocations, and where each env+app already runs.
 *
 * Hosts are sorted by id (the deterministic tie-break) and stored column by column, one
 * typed array per field, indexed by host: a decision is one pass over flat numbers that
 * allocates nothing, which is what makes 5,000 hosts cheap to scan. `assign` and
 * `unassign` keep it current as placements are made or given back.
 */
export class Inventory {
  readonly size: number;
  readonly ids: readonly string[];
  /** BACKEND_BIT of each host */
  readonly backend: Uint8Array;
  /** index in HOST_STATES */
  readonly state: Uint8Array;
  /** the rack label as an index into `racks`; hosts without one share the rack '' */
  readonly rack: Int32Array;
  readonly racks: readonly string[];
  /** each host's labels (the env hostLabels filter reads them) */
  readonly labels: readonly Readonly<Record<string, string>>[];
  /** 1 when the host reaches any VLAN (docker), else `vlans` lists them */
  readonly vlanAny: Uint8Array;
  readonly vlans: readonly ReadonlySet<number>[];
  readonly capacityCpuMilli: Float64Array;
  readonly capacityMemoryMb: Float64Array;
  readonly capacityDiskMb: Float64Array;
  /** 1 / capacity (0 for none), so scoring multiplies instead of dividing */
  readonly cpuScale: Float64Array;
  readonly memoryScale: Float64Array;
  readonly freeCpuMilli: Float64Array;
  readonly freeMemoryMb: Float64Array;
  readonly freeDiskMb: Float64Array;
  /**
   * Scratch for the engine, all zero between decisions: the instances of the app being
   * placed per host and per rack. Filling them for one app is O(its instances), where a
   * fresh array per decision would be O(hosts).
   */
  readonly onHost: Int32Array;
  readonly onRack: Int32Array;

  private readonly byId = new Map<string, number>();
  /** verdicts on the hosts' fixed facts (backend, state, VLANs), by what was asked of them */
  private readonly verdicts = new Map<string, Uint8Array>();
  /** env:app -> host index -> instances of it there */
  private readonly apps = new Map<string, Map<number, number>>();

  private constructor(views: readonly HostView[]) {
    const n = (this.size = views.length);
    this.ids = views.map((v) => v.id);
    this.backend = Uint8Array.from(views, (v) => BACKEND_BIT[v.backend]);
    this.state = Uint8Array.from(views, (v) => HOST_STATES.indexOf(v.state));
    const rackIndex = new Map<string, number>();
    this.rack = Int32Array.from(views, (v) => {
      const name = v.labels[RACK_LABEL] ?? '';
      if (!rackIndex.has(name)) rackIndex.set(name, rackIndex.size);
      return rackIndex.get(name)!;
    });
    this.racks = [...rackIndex.keys()];
    this.labels = views.map((v) => v.labels);
    this.vlanAny = Uint8Array.from(views, (v) => (v.vlans === 'any' ? 1 : 0));
    this.vlans = views.map((v) => new Set(v.vlans === 'any' ? [] : v.vlans));
    this.capacityCpuMilli = Float64Array.from(views, (v) => toMillicores(v.capacity.cpu));
    this.capacityMemoryMb = Float64Array.from(views, (v) => v.capacity.memoryMb);
    this.capacityDiskMb = Float64Array.from(views, (v) => v.capacity.diskMb);
    this.cpuScale = this.capacityCpuMilli.map((c) => (c > 0 ? 1 / c : 0));
    this.memoryScale = this.capacityMemoryMb.map((m) => (m > 0 ? 1 / m : 0));
    this.freeCpuMilli = Float64Array.from(views, (v, i) => this.capacityCpuMilli[i]! - toMillicores(v.allocated.cpu));
    this.freeMemoryMb = Float64Array.from(views, (v) => v.capacity.memoryMb - v.allocated.memoryMb);
    this.freeDiskMb = Float64Array.from(views, (v) => v.capacity.diskMb - v.allocated.diskMb);
    this.onHost = new Int32Array(n);
    this.onRack = new Int32Array(this.racks.length);
    views.forEach((v, i) => {
      if (this.byId.has(v.id)) throw new Error(`host '${v.id}' appears twice in the inventory`);
      this.byId.set(v.id, i);
      // The snapshot's allocations already include these instances: only count them.
      for (const ref of v.instances) this.count(appKey(ref), i, +1);
    });
  }

  static of(hosts: readonly HostView[]): Inventory {
    return new Inventory([...hosts].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));
  }

  indexOf(hostId: string): number | undefined {
    return this.byId.get(hostId);
  }

  /** Where instances of env:app run: host index -> count. */
  instancesOf(key: string): ReadonlyMap<number, number> | undefined {
    return this.apps.get(key);
  }

  /**
   * For the engine: a per-host verdict on facts that never change in this inventory, made
   * once per `key` by `judge` and kept. Bounded: requests name few distinct VLANs, and a
   * flood of them only costs rebuilding.
   */
  verdict(key: string, judge: (i: number) => boolean): Uint8Array {
    let verdict = this.verdicts.get(key);
    if (!verdict) {
      if (this.verdicts.size >= MAX_VERDICTS) this.verdicts.clear();
      verdict = Uint8Array.from({ length: this.size }, (_, i) => (judge(i) ? 1 : 0));
      this.verdicts.set(key, verdict);
    }
    return verdict;
  }

  /** Free capacity of a host (cpu in cores). */
  free(hostId: string): Amounts {
    const i = this.indexOfKnown(hostId);
    return { cpu: this.freeCpuMilli[i]! / 1000, memoryMb: this.freeMemoryMb[i]!, diskMb: this.freeDiskMb[i]! };
  }

  /** Takes one instance's resources on the host and counts it for spread. */
  assign(hostId: string, instance: Placed): void {
    const i = this.indexOfKnown(hostId);
    this.take(i, needOf(instance.resources), +1);
    this.count(appKey(instance), i, +1);
  }

  /** Gives back what `assign` took. */
  unassign(hostId: string, instance: Placed): void {
    const i = this.indexOfKnown(hostId);
    const key = appKey(instance);
    if (!this.apps.get(key)?.get(i)) throw new Error(`no instance of ${key} is assigned to host '${hostId}'`);
    this.take(i, needOf(instance.resources), -1);
    this.count(key, i, -1);
  }

  /** For the engine: `sign` +1 takes `need` from host `i`, -1 gives it back. */
  take(i: number, need: Need, sign: 1 | -1): void {
    this.freeCpuMilli[i]! -= sign * need.cpuMilli;
    this.freeMemoryMb[i]! -= sign * need.memoryMb;
    this.freeDiskMb[i]! -= sign * need.diskMb;
  }

  /** For the engine: adds `delta` instances of `key` on host `i`. */
  count(key: string, i: number, delta: number): void {
    let where = this.apps.get(key);
    if (!where) this.apps.set(key, (where = new Map()));
    const n = (where.get(i) ?? 0) + delta;
    if (n > 0) where.set(i, n);
    else where.delete(i);
    if (where.size === 0) this.apps.delete(key);
  }

  private indexOfKnown(hostId: string): number {
    const i = this.byId.get(hostId);
    if (i === undefined) throw new Error(`host '${hostId}' is not in the inventory`);
    return i;
  }
}

import type { Amounts, Backend, Resources } from '@orangery/contracts';

/**
 * The placement engine's vocabulary. Placement is a pure function of (request, inventory):
 * the inventory is a read-only snapshot of the fleet, and the answer is a host or a
 * refusal that names why every host was filtered out (Nomad's "plan", CONTRACT.md's
 * INSUFFICIENT_CAPACITY). Committing a placement (ipam, agent) happens elsewhere.
 */

/** unknown: silent, but its instances may still serve (nothing of it moves); lost: silent and off the wire */
export type HostState = 'ready' | 'draining' | 'unknown' | 'lost';

/** The env and app of an instance: what spread counts. */
export interface AppRef {
  readonly env: string;
  readonly app: string;
}

/** One host as the scheduler's inventory knows it (from registrations and heartbeats). */
export interface HostView {
  readonly id: string;
  readonly backend: Backend;
  readonly state: HostState;
  /** what instances may use: the host's total less its reservations */
  readonly capacity: Readonly<Amounts>;
  /** what the instances placed on it take, out of `capacity` */
  readonly allocated: Readonly<Amounts>;
  /** e.g. `rack`, which spread uses as a tie-breaker */
  readonly labels: Readonly<Record<string, string>>;
  /** VLANs the host can reach: docker hosts any (through <uplink>.<vlan>), ESXi hosts their port groups' */
  readonly vlans: 'any' | readonly number[];
  readonly instances: readonly AppRef[];
}

export type PlacementPolicy = 'binpack' | 'least-loaded';

/** Where one instance of `env`/`app` may go and how to choose among the hosts that fit. */
export interface PlacementRequest extends AppRef {
  readonly resources: Readonly<Resources>;
  /** `auto` compares docker and vmware hosts by the same score */
  readonly backend: 'auto' | Backend;
  /** the VLAN of the instance's pool: the host must reach it */
  readonly vlan: number;
  /** `host`: avoid a second instance of the same env+app on a host whenever another host fits */
  readonly spread: 'host' | 'none';
  /** `binpack` fills the fullest hosts first; `least-loaded` the emptiest */
  readonly policy: PlacementPolicy;
  /** the env's policy: the only backends its instances may use (all when absent) */
  readonly allowedBackends?: readonly Backend[];
  /** hosts never to use, e.g. those a failed attempt already ran on */
  readonly excludeHosts?: readonly string[];
  /** the env's hostLabels: an eligible host carries every one of these labels */
  readonly hostLabels?: Readonly<Record<string, string>>;
}

/** The names under which filtered-out hosts are counted, one per feasibility filter. */
export type FilterReason =
  'backend-not-allowed' | 'labels-mismatch' | 'host-not-ready' | 'host-excluded' | 'vlan-unreachable' | 'cpu-exhausted' | 'memory-exhausted' | 'disk-exhausted';

export interface InsufficientCapacity {
  readonly code: 'INSUFFICIENT_CAPACITY';
  readonly message: string;
  readonly details: {
    /** hosts filtered out, by the first filter that rejected each */
    readonly filtered: Readonly<Partial<Record<FilterReason, number>>>;
    /**
     * What the closest candidate lacks: the host that passes every filter but capacity
     * and is the least short (the whole need when no host gets that far). cpu in cores.
     */
    readonly shortfall: Readonly<Amounts>;
  };
}

export interface Placed {
  readonly ok: true;
  readonly hostId: string;
  /** higher is better; a host already running the app is worth SPREAD_PENALTY less per instance */
  readonly score: number;
}

export interface NotPlaced {
  readonly ok: false;
  readonly reason: InsufficientCapacity;
}

export type PlacementDecision = Placed | NotPlaced;

export type SlotPlacement = Omit<Placed, 'ok'>;

export type ManyDecision =
  | { readonly ok: true; readonly placements: readonly SlotPlacement[] }
  | {
      readonly ok: false;
      /** the slots placed before the failure, in order */
      readonly placements: readonly SlotPlacement[];
      readonly reason: InsufficientCapacity;
    };

import type { Amounts, Backend, ContainerSecurity, InstanceLifecycleState, Resources, ScaleBackend } from '@orangery/contracts';

/**
 * The scheduler's records. The leader keeps them in memory and journals every change to
 * the database before it acts on the outside world (ipam, agents), so a leader killed at
 * any point is replaced by one that reads the journal and carries on.
 */

/** What an app should look like: the latest accepted scale request, resolved. */
export interface AppSpec {
  readonly replicas: number;
  readonly resources: Resources;
  readonly image?: string;
  readonly template?: string;
  /** the backends this app may use: what the request asked, what its image/template allow, and the env's policy */
  readonly backends: readonly Backend[];
  readonly pool: string;
  /** the pool's VLAN, learnt from ipam when the request was accepted */
  readonly vlan: number;
  readonly spread: 'host' | 'none';
  readonly environment?: Record<string, string>;
  /** the env record's backends when the request was accepted (absent: no record): a migration's toBackend must be one */
  readonly envBackends?: readonly Backend[];
  /** the env record's hostLabels when the request was accepted: an eligible host carries every one */
  readonly hostLabels?: Readonly<Record<string, string>>;
  /** the env record's containerSecurity when the request was accepted (containers only) */
  readonly security?: ContainerSecurity;
}

export type Outcome = 'pending' | 'completed' | 'rejected';

export interface AppRecord {
  readonly env: string;
  readonly app: string;
  /** the request whose spec is desired now */
  readonly requestId: string;
  /** its position in the scale stream: an older request never overrides a newer one */
  readonly seq: number;
  /** the scale stream's generation it came from (ScaleMessage.generation); absent in older records */
  readonly generation?: number;
  readonly spec: AppSpec;
  /** the spec of the last completed request: what a rejected request falls back to */
  readonly stable: AppSpec | null;
  readonly outcome: Outcome;
  readonly backend: ScaleBackend;
  readonly traceparent?: string;
}

/**
 * What the leader is doing with a slot. `create`: get it running on `hostId` (placing it
 * first when hostId is null). `remove`: take it off its host and give its IP back.
 * `replace`: take a failed copy off its host, then create it elsewhere with the same IP.
 * null: nothing; observations (events, agent lists) may start one.
 */
export type Phase = 'create' | 'remove' | 'replace' | null;

export interface SlotError {
  readonly code: string;
  readonly message: string;
  readonly host?: string;
}

/** What a slot's instance is made of; taken from the app's spec when the slot is (re)placed. */
export interface SlotSpec {
  readonly resources: Resources;
  readonly image?: string;
  readonly template?: string;
  readonly pool: string;
  readonly vlan: number;
  readonly environment?: Record<string, string>;
  /** what the container may relax of the agent's secure defaults (the env record's, snapshot with the app's spec) */
  readonly security?: ContainerSecurity;
}

export interface SlotRecord {
  readonly id: string;
  readonly env: string;
  readonly app: string;
  readonly slot: number;
  readonly state: InstanceLifecycleState;
  readonly phase: Phase;
  readonly backend: Backend | null;
  readonly hostId: string | null;
  readonly ip: string | null;
  readonly mac: string | null;
  readonly spec: SlotSpec;
  /** hosts where a start failed during the current placement round */
  readonly tried: readonly string[];
  /** placements of this slot so far in the current round (1 = first) */
  readonly attempts: number;
  readonly lastError: SlotError | null;
  /** the request this slot's placement serves */
  readonly requestId: string | null;
  /** a migration owns the slot for now: the scheduler leaves it alone (absent in older records) */
  readonly hold?: SlotHold | null;
  /** the last migration that committed a move of this slot (a repeated commit is answered, not refused) */
  readonly movedBy?: string;
}

/** A migration's claim on a slot, and the target it reserved. */
export interface SlotHold {
  readonly by: string;
  readonly target?: { readonly hostId: string; readonly backend: Backend };
}

/** The resources a slot takes on its host: cpu in cores, memory at the container's real limit. */
export type Demand = Amounts;

export const appKeyOf = (r: { env: string; app: string }): string => `${r.env}:${r.app}`;

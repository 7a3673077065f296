import type { AgentInstance, Backend, InstanceNetwork, InstanceSummary, NewEvent, Owner, Placement, SlotView } from '@orangery/contracts';
import type { DrainRecord, MigrationRecord } from './model';

/**
 * What the migrator's domain needs from the outside. The adapters (MySQL, NATS) implement
 * these; the unit tests fake them.
 */

/** Errors of the ports carry a contract code; `transient` ones are worth retrying. */
export { PortError } from '@orangery/contracts';

/** The scheduler leader's slot API (docs/scheduler.md "Slot API"); no leader = transient. */
export interface SchedulerPort {
  /** undefined when the slot does not exist */
  slotGet(instanceId: string): Promise<SlotView | undefined>;
  hold(instanceId: string, by: string): Promise<SlotView>;
  reserve(instanceId: string, by: string, where: { toHost?: string; toBackend?: Backend; exclude?: string[] }): Promise<Placement>;
  /**
   * The leader creates the held slot's copy on its reserved target with the app's
   * environment, which the migrator never sees (issue 13). The target agent's reply.
   */
  createOnTarget(instanceId: string, by: string, network: InstanceNetwork): Promise<AgentInstance>;
  commit(instanceId: string, by: string): Promise<SlotView>;
  release(instanceId: string, by: string): Promise<SlotView>;
  hostDrain(hostId: string, drain: boolean): Promise<void>;
  instances(): Promise<InstanceSummary[]>;
}

export interface AgentPort {
  /** the instance as the agent replies after the stop; NOT_FOUND is `undefined` */
  stop(hostId: string, instanceId: string): Promise<AgentInstance | undefined>;
  start(hostId: string, instanceId: string): Promise<AgentInstance>;
  /** succeeds when the instance is gone (also when it never existed) */
  remove(hostId: string, instanceId: string): Promise<void>;
  get(hostId: string, instanceId: string): Promise<AgentInstance | undefined>;
  /** ARP probes from `hostId`'s interface on `vlan`: ip -> whether something answered */
  probe(hostId: string, vlan: number, ips: readonly string[]): Promise<Map<string, boolean>>;
}

export interface AddressInfo {
  ip: string;
  mac: string;
  prefixLength: number;
  gateway: string;
  vlan: number;
}

export interface IpamPort {
  /** the slot's allocation; undefined when it has none */
  get(owner: Owner): Promise<AddressInfo | undefined>;
  bind(ip: string, instanceId: string, backend: Backend, host: string): Promise<void>;
}

/** Whether a host is gone (v1.1: silent AND its instances off the wire, as the scheduler judges it). */
export interface Liveness {
  /**
   * ms since the host's last heartbeat while the scheduler judges it `lost`; 0 otherwise
   * (silence alone proves nothing: a frozen or partitioned agent's instances still serve)
   */
  goneForMs(hostId: string): number;
  /** a ready docker host (its agent can probe the wire on any VLAN) other than `exclude`, if any */
  proberFor(exclude: readonly string[]): string | undefined;
}

/** Thrown by the store when another replica holds the migration's lease now. */
export class LeaseLostError extends Error {
  constructor(readonly migrationId: string) {
    super(`the lease on migration ${migrationId} is held by another replica`);
    this.name = 'LeaseLostError';
  }
}

export interface MigrationStore {
  /** A new migration, its lease held by `owner` (or free when `owner` is undefined). */
  insert(m: MigrationRecord, owner: string | undefined, events?: NewEvent<unknown>[]): Promise<void>;
  /** A new drain with its queued migrations, atomically. */
  insertDrain(d: DrainRecord, migrations: MigrationRecord[]): Promise<void>;
  /** Writes the record with its events (outbox), if `owner` still holds the lease; else LeaseLostError. */
  save(m: MigrationRecord, owner: string, events?: NewEvent<unknown>[]): Promise<void>;
  /** Deletes a migration that never started (its request was refused), if `owner` holds it. */
  discard(id: string, owner: string): Promise<void>;
  get(id: string): Promise<MigrationRecord | undefined>;
  /**
   * Takes the lease of running migrations nobody holds (free or expired) and whose `after`
   * has ended; returns them. Conditional updates: two replicas never get the same one.
   */
  claim(owner: string, limit: number): Promise<MigrationRecord[]>;
  /** Extends the leases `owner` still holds; returns the ids it lost. */
  renew(owner: string, ids: string[]): Promise<string[]>;
  /** Gives a lease back (shutdown), so another replica resumes at once. */
  unlease(owner: string, ids: string[]): Promise<void>;
  /** Running drains whose migrations have all ended. */
  finishedDrains(): Promise<{ drain: DrainRecord; migrations: MigrationRecord[] }[]>;
  /** Marks a drain ended with its event, exactly once across replicas; false when another did. */
  endDrain(id: string, state: 'completed' | 'failed', events: NewEvent<unknown>[]): Promise<boolean>;
}

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
};

export interface DomainLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  debug(fields: Record<string, unknown>, msg: string): void;
}

export const silentLog: DomainLog = { info: () => undefined, warn: () => undefined, debug: () => undefined };

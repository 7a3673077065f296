import type { AgentInstance, Amounts, Backend, CreateInstanceCommand, HostFacts, NewEvent, Owner, SwarmCreateInstanceCommand } from '@orangery/contracts';
import type { AppRecord, SlotRecord } from './model';

/**
 * What the scheduler's core needs from the outside. The adapters (MySQL, NATS) implement
 * these; the unit tests fake them.
 */

/** One atomic write of the journal, checked against the leader's epoch (fencing token). */
export interface Changes {
  apps?: AppRecord[];
  slots?: SlotRecord[];
  deleteSlots?: string[];
  /** scale requests seen, with their outcome once decided (dedupe of redeliveries) */
  requests?: { requestId: string; env: string; app: string; seq: number; outcome: 'accepted' | 'completed' | 'rejected'; reason?: unknown }[];
  /** hosts set to draining (or back) by the migrator */
  hostDrains?: { hostId: string; drain: boolean; backend: Backend; facts: HostFacts; usage: Amounts }[];
  /** events to publish once committed (transactional outbox) */
  events?: NewEvent<unknown>[];
}

export interface SchedulerStore {
  /** Everything the leader needs in memory. */
  load(): Promise<{ apps: AppRecord[]; slots: SlotRecord[]; drained?: string[] }>;
  /** Writes atomically, or throws NotLeaderError when another replica has taken over. */
  commit(changes: Changes): Promise<void>;
  /** Whether a scale request id was seen already. */
  requestSeen(requestId: string): Promise<boolean>;
}

/**
 * A change too large for the journal to take in one write (the database's
 * max_allowed_packet): writing it again cannot succeed.
 */
export class JournalTooLarge extends Error {
  constructor(
    /** the database's limit on one write, in bytes, when known */
    readonly limitBytes: number | undefined,
    cause: string,
  ) {
    super(`the change is larger than the journal takes in one write${limitBytes ? ` (max_allowed_packet ${limitBytes} bytes)` : ''}: ${cause}`);
    this.name = 'JournalTooLarge';
  }
}

export class NotLeaderError extends Error {
  constructor() {
    super('this replica is no longer the scheduler leader');
    this.name = 'NotLeaderError';
  }
}

export interface PoolInfo {
  name: string;
  vlan: number;
}

export interface AllocationInfo {
  ip: string;
  mac: string;
  prefixLength: number;
  gateway: string;
  vlan: number;
}

/** Errors of the ports carry a contract code; `transient` ones are worth retrying later. */
export { PortError } from '@orangery/contracts';

export interface IpamPort {
  /** undefined when the pool does not exist */
  pool(name: string): Promise<PoolInfo | undefined>;
  /** idempotent per owner: the slot's address, the same one every time */
  allocate(pool: string, owner: Owner): Promise<AllocationInfo>;
  bind(ip: string, instanceId: string, backend: Backend, host: string): Promise<void>;
  /** NOT_FOUND is success: nothing to give back */
  release(owner: Owner): Promise<void>;
}

export interface AgentPort {
  /** a swarm node takes a SwarmCreateInstanceCommand: its agent picks, binds and answers the task's address and node */
  create(hostId: string, command: CreateInstanceCommand | SwarmCreateInstanceCommand): Promise<AgentInstance>;
  start(hostId: string, instanceId: string): Promise<AgentInstance>;
  /** succeeds when the instance is gone (also when it never existed) */
  remove(hostId: string, instanceId: string): Promise<void>;
  get(hostId: string, instanceId: string): Promise<AgentInstance | undefined>;
  list(hostId: string): Promise<AgentInstance[]>;
  /** stops (a VM: powers off) and keeps the instance; undefined when the host has no such instance */
  stop(hostId: string, instanceId: string): Promise<AgentInstance | undefined>;
  /** ARP probes from `hostId`'s interface on `vlan`: ip -> whether something answered */
  probe(hostId: string, vlan: number, ips: readonly string[]): Promise<Map<string, boolean>>;
  /**
   * The host's facts from its own agent (`orangery.agent.<hostId>.host.get`, a subject only
   * that agent may subscribe to): unchecked data, the caller decodes it (issue 13).
   */
  hostFacts(hostId: string): Promise<unknown>;
}

export interface Clock {
  now(): number;
}

/**
 * Durations (silence, fence deadlines) are measured on the monotonic clock: a wall-clock
 * step (NTP, an operator's `date -s`) must neither fail a host over nor hold one back.
 */
export const systemClock: Clock = { now: () => performance.now() };

/** The core logs through this (pino in the service, silent in unit tests). */
export interface CoreLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  debug(fields: Record<string, unknown>, msg: string): void;
}

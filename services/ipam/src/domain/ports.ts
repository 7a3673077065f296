import type { Backend, EventEnvelope, Owner } from '@orangery/contracts';
import type { PoolPlan } from './pool-plan';

/** What the domain needs from storage. The MySQL adapter implements it with row locks. */

export type AddressState = 'free' | 'allocated' | 'bound' | 'released';

export interface PoolRecord {
  id: number;
  name: string;
  cidrText: string;
  prefixLength: number;
  first: number;
  last: number;
  gateway: number;
  vlan: number;
  reserved: string[];
  cooldownSeconds: number;
  size: number;
  createdAt: Date;
}

export interface AddressRecord {
  ip: number;
  poolId: number;
  state: AddressState;
  /** the current or, once released, the last owner (affinity) */
  owner: Owner | undefined;
  /** epoch ms from which a fresh owner may take it; 0 = never used; null while live */
  availableAt: number | null;
  releasedAt: Date | null;
  instanceId: string | null;
  backend: Backend | null;
  host: string | null;
}

export type AddressPatch = Omit<AddressRecord, 'ip' | 'poolId'>;

export interface AuditEntry {
  action: 'pool.create' | 'pool.delete' | 'allocate' | 'bind' | 'release' | BlockAuditAction;
  ip: number | null;
  poolName: string;
  before: unknown;
  after: unknown;
  /** the event to publish once this change is committed (transactional outbox) */
  event?: { natsSubject: string; event: EventEnvelope };
}

export interface PoolUsage {
  used: number;
  quarantined: number;
  /** addresses inside swarm nodes' blocks that no task holds (available_at = BLOCKED_AT) */
  blocked: number;
  /** earliest moment a quarantined address becomes free, epoch ms */
  nextAvailableAt: number | null;
}

/** One database transaction. Every method runs inside it; locks last until it ends. */
export interface IpamTx {
  /** Starts an allocation: the pool under a shared lock and the owner's rows locked. */
  openAllocation(poolName: string, owner: Owner): Promise<{ pool: PoolRecord | undefined; mine: AddressRecord[] }>;
  lockPoolCatalog(): Promise<void>;
  findPool(name: string, lock: 'none' | 'share' | 'update'): Promise<PoolRecord | undefined>;
  findPoolById(id: number): Promise<PoolRecord | undefined>;
  findOverlappingPool(first: number, last: number): Promise<PoolRecord | undefined>;
  /** the addresses (rows) every pool holds together: the sum of their sizes */
  totalPoolSize(): Promise<number>;
  /** up to `limit` pools in name order, after the name `after` (none: from the first) */
  listPools(page: { after: string | undefined; limit: number }): Promise<PoolRecord[]>;
  insertPool(plan: PoolPlan, now: Date): Promise<PoolRecord>;
  deletePool(poolId: number): Promise<void>;
  usage(poolId: number, nowMs: number): Promise<PoolUsage>;
  /** every address whose current or last owner is `owner`, locked for update */
  lockOwnerAddresses(owner: Owner): Promise<AddressRecord[]>;
  lockAddress(ip: number): Promise<AddressRecord | undefined>;
  /**
   * Locks the best address a fresh owner may take: never used first (lowest IP), then the
   * one released longest ago whose cooldown has passed. Skips rows other transactions hold.
   */
  lockNextAvailable(poolId: number, nowMs: number): Promise<AddressRecord | undefined>;
  /** throws OwnerConflict when another transaction gave `owner` a live address meanwhile */
  updateAddress(ip: number, patch: AddressPatch): Promise<void>;
  audit(entry: AuditEntry): Promise<void>;

  // ---- batches: the same operations over many rows, in as few round trips as possible ----

  /**
   * Starts a batch allocation: the named pools under a shared lock (missing names are
   * absent from `pools`) and every row whose current or last owner is one of `owners`,
   * locked for update.
   */
  openAllocations(poolNames: readonly string[], owners: readonly Owner[]): Promise<{ pools: PoolRecord[]; mine: AddressRecord[] }>;
  /** The rows of `ips` that exist, locked for update. */
  lockAddresses(ips: readonly number[]): Promise<AddressRecord[]>;
  /**
   * Like lockNextAvailable, for up to `limit` addresses in pick order, never one of
   * `excluding` (rows this transaction has already given out but not yet written).
   */
  lockNextAvailableMany(poolId: number, nowMs: number, limit: number, excluding: readonly number[]): Promise<AddressRecord[]>;
  /** Starts a batch bind: the rows of `ips` that exist, locked for update, and their pools. */
  openBinds(ips: readonly number[]): Promise<{ rows: AddressRecord[]; pools: PoolRecord[] }>;
  findPoolsByIds(ids: readonly number[]): Promise<PoolRecord[]>;
  /** Many updateAddress at once (one ip at most once); throws OwnerConflict likewise. */
  updateAddresses(changes: readonly { ip: number; patch: AddressPatch }[]): Promise<void>;
  /** Many audit entries at once, in order. */
  auditAll(entries: readonly AuditEntry[]): Promise<void>;

  // ---- swarm node blocks (domain/blocks.ts, docs/ipam.md "Blocks") ----

  /** `host`'s block of pool `poolId`; 'share' / 'update' lock its row. */
  findBlock(poolId: number, host: string, lock: 'none' | 'share' | 'update'): Promise<BlockRecord | undefined>;
  /** The block that contains `ip`, if any. */
  findBlockAt(ip: number): Promise<BlockRecord | undefined>;
  /** Blocks in (pool name, first address) order, each with its addresses bound now. */
  listBlocks(filter: { poolId?: number; host?: string }): Promise<(BlockRecord & { bound: number })[]>;
  countBlocks(poolId: number): Promise<number>;
  /**
   * First addresses of up to `limit` aligned ranges of `size` addresses of the pool whose every
   * address is allocatable and available now (committed state, no locks): ranges made only of
   * never-used addresses first, then by address.
   */
  freeBlockCandidates(poolId: number, size: number, nowMs: number, limit: number): Promise<number[]>;
  /** The rows of [first, last], locked for update (waiting for other holders), in ip order. */
  lockRange(first: number, last: number): Promise<AddressRecord[]>;
  /** Sets available_at of `ips` to `value` (nothing else changes). */
  setAvailableAt(ips: readonly number[], value: number): Promise<void>;
  /** Throws OwnerConflict when the host has a block in the pool already (a concurrent reserve). */
  insertBlock(block: Omit<BlockRecord, 'id'>): Promise<BlockRecord>;
  deleteBlock(id: number): Promise<void>;
}

export type BlockAuditAction = 'block.reserve' | 'block.release' | 'block.bind' | 'block.unbind';

/** A swarm node's block: an aligned range [first, last] of a pool only that node's tasks use. */
export interface BlockRecord {
  id: number;
  poolId: number;
  host: string;
  first: number;
  last: number;
  size: number;
  createdAt: Date;
}

/**
 * available_at of an address inside a block that no task holds: above every `<= now` range,
 * so the pick of a fresh address (index ix_pick) never reaches it, and told apart from a
 * cooldown by its value. Number.MAX_SAFE_INTEGER: exact in JS and in BIGINT.
 */
export const BLOCKED_AT = Number.MAX_SAFE_INTEGER;

/** Raised by updateAddress: the owner's live address was created concurrently. */
export class OwnerConflict extends Error {
  constructor() {
    super('owner already holds a live address (concurrent allocation)');
  }
}

export interface IpamStore {
  /** Runs `work` in a transaction; events it audited are published after the commit. */
  transaction<T>(work: (tx: IpamTx) => Promise<T>, actor?: string): Promise<T>;
  /** A read-only view without locks. */
  read<T>(work: (tx: IpamTx) => Promise<T>): Promise<T>;
}

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

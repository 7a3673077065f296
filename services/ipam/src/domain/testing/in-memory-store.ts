import type { Owner } from '@orangery/contracts';
import { poolRecordOf, type PoolPlan } from '../pool-plan';
import {
  BLOCKED_AT,
  OwnerConflict,
  type BlockRecord,
  type AddressPatch,
  type AddressRecord,
  type AuditEntry,
  type Clock,
  type IpamStore,
  type IpamTx,
  type PoolRecord,
  type PoolUsage,
} from '../ports';

/** Test double for the IPAM storage ports; see InMemoryIpamStore. */

export interface StoreState {
  pools: Map<number, PoolRecord>;
  addresses: Map<number, AddressRecord>;
  nextPoolId: number;
  blocks: Map<number, BlockRecord>;
  nextBlockId: number;
}

/** Points in a transaction where a test may step in (to fail, or to commit a rival change). */
export interface StoreHooks {
  beforeUpdateAddress?: (ip: number, patch: AddressPatch) => void | Promise<void>;
  beforeAudit?: (entry: AuditEntry) => void | Promise<void>;
}

const sameOwner = (a: Owner | undefined, b: Owner | undefined): boolean =>
  a !== undefined && b !== undefined && a.env === b.env && a.app === b.app && a.slot === b.slot;

const isLive = (r: AddressRecord): boolean => r.state === 'allocated' || r.state === 'bound';

class InMemoryTx implements IpamTx {
  readonly audits: AuditEntry[] = [];
  /** addresses this transaction has written */
  private readonly touched = new Set<number>();

  constructor(
    private readonly state: StoreState,
    private readonly store: InMemoryIpamStore,
  ) {}

  async openAllocation(poolName: string, owner: Owner): Promise<{ pool: PoolRecord | undefined; mine: AddressRecord[] }> {
    return { pool: await this.findPool(poolName), mine: await this.lockOwnerAddresses(owner) };
  }

  async lockPoolCatalog(): Promise<void> {}

  async findPool(name: string): Promise<PoolRecord | undefined> {
    return structuredClone([...this.state.pools.values()].find((p) => p.name === name));
  }

  async findPoolById(id: number): Promise<PoolRecord | undefined> {
    return structuredClone(this.state.pools.get(id));
  }

  async findOverlappingPool(first: number, last: number): Promise<PoolRecord | undefined> {
    const overlapping = [...this.state.pools.values()].filter((p) => p.first <= last && first <= p.last);
    return structuredClone(overlapping.sort((a, b) => a.first - b.first)[0]);
  }

  async totalPoolSize(): Promise<number> {
    return [...this.state.pools.values()].reduce((n, p) => n + p.size, 0);
  }

  async listPools(page: { after: string | undefined; limit: number }): Promise<PoolRecord[]> {
    const sorted = [...this.state.pools.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return structuredClone(sorted.filter((p) => page.after === undefined || p.name > page.after).slice(0, page.limit));
  }

  async insertPool(plan: PoolPlan, now: Date): Promise<PoolRecord> {
    const id = this.state.nextPoolId++;
    const pool = poolRecordOf(plan, id, now);
    this.state.pools.set(id, pool);
    for (const r of plan.allocatable) {
      for (let ip = r.start; ip <= r.end; ip++) {
        this.state.addresses.set(ip, {
          ip,
          poolId: id,
          state: 'free',
          owner: undefined,
          availableAt: 0,
          releasedAt: null,
          instanceId: null,
          backend: null,
          host: null,
        });
      }
    }
    return structuredClone(pool);
  }

  async deletePool(poolId: number): Promise<void> {
    for (const [ip, row] of this.state.addresses) if (row.poolId === poolId) this.state.addresses.delete(ip);
    this.state.pools.delete(poolId);
  }

  async usage(poolId: number, nowMs: number): Promise<PoolUsage> {
    const rows = this.rowsOf(poolId);
    const waiting = rows.filter((r) => r.availableAt !== null && r.availableAt > nowMs && r.availableAt < BLOCKED_AT).map((r) => r.availableAt!);
    return {
      used: rows.filter((r) => r.availableAt === null).length,
      quarantined: waiting.length,
      blocked: rows.filter((r) => r.availableAt === BLOCKED_AT).length,
      nextAvailableAt: waiting.length > 0 ? Math.min(...waiting) : null,
    };
  }

  async lockOwnerAddresses(owner: Owner): Promise<AddressRecord[]> {
    return structuredClone([...this.state.addresses.values()].filter((r) => sameOwner(r.owner, owner)));
  }

  async lockAddress(ip: number): Promise<AddressRecord | undefined> {
    return structuredClone(this.state.addresses.get(ip));
  }

  async lockNextAvailable(poolId: number, nowMs: number): Promise<AddressRecord | undefined> {
    const candidates = this.rowsOf(poolId).filter((r) => r.availableAt !== null && r.availableAt <= nowMs);
    candidates.sort((a, b) => a.availableAt! - b.availableAt! || a.ip - b.ip);
    return structuredClone(candidates[0]);
  }

  async updateAddress(ip: number, patch: AddressPatch): Promise<void> {
    await this.store.hooks.beforeUpdateAddress?.(ip, patch);
    const row = this.state.addresses.get(ip);
    if (!row) throw new Error(`no address row for ${ip}`);
    if ((patch.state === 'allocated' || patch.state === 'bound') && patch.owner) {
      // Like a unique index on the live owner: sees this transaction's rows and committed ones.
      const clash = (rows: Iterable<AddressRecord>) => [...rows].some((r) => r.ip !== ip && isLive(r) && sameOwner(r.owner, patch.owner));
      // Committed rows this transaction has rewritten count as this transaction's (the index
      // sees a transaction's own changes): a block.bind releases the owner's old row first.
      const committedOnly = [...this.store.committed().addresses.values()].filter((r) => !this.touched.has(r.ip));
      if (clash(this.state.addresses.values()) || clash(committedOnly)) {
        throw new OwnerConflict();
      }
    }
    this.touched.add(ip);
    this.state.addresses.set(ip, { ...structuredClone(patch), ip, poolId: row.poolId });
  }

  async audit(entry: AuditEntry): Promise<void> {
    await this.store.hooks.beforeAudit?.(entry);
    this.audits.push(structuredClone(entry));
  }

  async openAllocations(poolNames: readonly string[], owners: readonly Owner[]): Promise<{ pools: PoolRecord[]; mine: AddressRecord[] }> {
    this.store.roundTrips++;
    const pools = [...this.state.pools.values()].filter((p) => poolNames.includes(p.name));
    const mine = [...this.state.addresses.values()].filter((r) => owners.some((o) => sameOwner(r.owner, o)));
    return structuredClone({ pools, mine });
  }

  async lockAddresses(ips: readonly number[]): Promise<AddressRecord[]> {
    this.store.roundTrips++;
    return structuredClone(ips.flatMap((ip) => this.state.addresses.get(ip) ?? []));
  }

  async lockNextAvailableMany(poolId: number, nowMs: number, limit: number, excluding: readonly number[]): Promise<AddressRecord[]> {
    this.store.roundTrips++;
    const skip = new Set(excluding);
    const candidates = this.rowsOf(poolId).filter((r) => r.availableAt !== null && r.availableAt <= nowMs && !skip.has(r.ip));
    candidates.sort((a, b) => a.availableAt! - b.availableAt! || a.ip - b.ip);
    return structuredClone(candidates.slice(0, limit));
  }

  async openBinds(ips: readonly number[]): Promise<{ rows: AddressRecord[]; pools: PoolRecord[] }> {
    this.store.roundTrips++;
    const rows = ips.flatMap((ip) => this.state.addresses.get(ip) ?? []);
    const poolIds = new Set(rows.map((r) => r.poolId));
    return structuredClone({ rows, pools: [...this.state.pools.values()].filter((p) => poolIds.has(p.id)) });
  }

  async findPoolsByIds(ids: readonly number[]): Promise<PoolRecord[]> {
    this.store.roundTrips++;
    return structuredClone(ids.flatMap((id) => this.state.pools.get(id) ?? []));
  }

  async updateAddresses(changes: readonly { ip: number; patch: AddressPatch }[]): Promise<void> {
    if (new Set(changes.map((c) => c.ip)).size !== changes.length) throw new Error('updateAddresses: an ip appears twice');
    // Row by row, like the unique index checks a multi-row UPDATE.
    for (const c of changes) await this.updateAddress(c.ip, c.patch);
  }

  async auditAll(entries: readonly AuditEntry[]): Promise<void> {
    for (const e of entries) await this.audit(e);
  }

  async findBlock(poolId: number, host: string): Promise<BlockRecord | undefined> {
    return structuredClone([...this.state.blocks.values()].find((b) => b.poolId === poolId && b.host === host));
  }

  async findBlockAt(ip: number): Promise<BlockRecord | undefined> {
    return structuredClone([...this.state.blocks.values()].find((b) => b.first <= ip && ip <= b.last));
  }

  async listBlocks(filter: { poolId?: number; host?: string }): Promise<(BlockRecord & { bound: number })[]> {
    const blocks = [...this.state.blocks.values()]
      .filter((b) => (filter.poolId === undefined || b.poolId === filter.poolId) && (filter.host === undefined || b.host === filter.host))
      .sort((a, b) => a.first - b.first);
    return structuredClone(
      blocks.map((b) => ({
        ...b,
        bound: [...this.state.addresses.values()].filter((r) => r.ip >= b.first && r.ip <= b.last && r.availableAt === null).length,
      })),
    );
  }

  async countBlocks(poolId: number): Promise<number> {
    return [...this.state.blocks.values()].filter((b) => b.poolId === poolId).length;
  }

  async freeBlockCandidates(poolId: number, size: number, nowMs: number, limit: number): Promise<number[]> {
    const ranges = new Map<number, { n: number; fresh: number }>();
    for (const r of this.rowsOf(poolId)) {
      if (r.availableAt === null || r.availableAt > nowMs) continue;
      const k = Math.floor(r.ip / size);
      const range = ranges.get(k) ?? { n: 0, fresh: 0 };
      range.n++;
      if (r.availableAt === 0) range.fresh++;
      ranges.set(k, range);
    }
    return [...ranges.entries()]
      .filter(([, r]) => r.n === size)
      .sort(([ka, a], [kb, b]) => Number(a.fresh < size) - Number(b.fresh < size) || ka - kb)
      .slice(0, limit)
      .map(([k]) => k * size);
  }

  async lockRange(first: number, last: number): Promise<AddressRecord[]> {
    return structuredClone([...this.state.addresses.values()].filter((r) => r.ip >= first && r.ip <= last).sort((a, b) => a.ip - b.ip));
  }

  async setAvailableAt(ips: readonly number[], value: number): Promise<void> {
    for (const ip of ips) {
      const row = this.state.addresses.get(ip);
      if (row) row.availableAt = value;
    }
  }

  async insertBlock(block: Omit<BlockRecord, 'id'>): Promise<BlockRecord> {
    const clash = (blocks: Iterable<BlockRecord>) => [...blocks].some((b) => (b.poolId === block.poolId && b.host === block.host) || b.first === block.first);
    // Like the unique keys (pool_id, host) and (first_ip): this transaction's rows and committed ones.
    if (clash(this.state.blocks.values()) || clash(this.store.committed().blocks.values())) throw new OwnerConflict();
    const id = this.state.nextBlockId++;
    const row = { ...structuredClone(block), id };
    this.state.blocks.set(id, row);
    return structuredClone(row);
  }

  async deleteBlock(id: number): Promise<void> {
    this.state.blocks.delete(id);
  }

  private rowsOf(poolId: number): AddressRecord[] {
    return [...this.state.addresses.values()].filter((r) => r.poolId === poolId);
  }
}

/**
 * An IpamStore in memory that keeps the port contracts:
 * - transactions run one at a time (serializable), each on a copy of the state that replaces
 *   the state only when `work` succeeds, so a throwing transaction changes nothing;
 * - reads run on a snapshot and never change anything;
 * - `audits` (and so `events`) list only what committed transactions recorded.
 * Tests may step into a transaction through `hooks`, and `commitOutside` changes the
 * committed state directly as another replica's transaction would.
 */
export class InMemoryIpamStore implements IpamStore {
  readonly audits: AuditEntry[] = [];
  readonly hooks: StoreHooks = {};
  transactions = 0;
  /** reads the batch methods made (the MySQL store sends each as one round trip) */
  roundTrips = 0;
  private state: StoreState = { pools: new Map(), addresses: new Map(), nextPoolId: 1, blocks: new Map(), nextBlockId: 1 };
  private queue: Promise<unknown> = Promise.resolve();

  async transaction<T>(work: (tx: IpamTx) => Promise<T>): Promise<T> {
    const run = this.queue.then(async () => {
      this.transactions++;
      const draft = structuredClone(this.state);
      const tx = new InMemoryTx(draft, this);
      const result = await work(tx);
      this.state = draft;
      this.audits.push(...tx.audits);
      return result;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  async read<T>(work: (tx: IpamTx) => Promise<T>): Promise<T> {
    return work(new InMemoryTx(structuredClone(this.state), this));
  }

  /** The events of committed transactions, in commit order. */
  get events() {
    return this.audits.flatMap((a) => (a.event ? [a.event] : []));
  }

  /** A deep copy of the committed state, to compare before and after. */
  snapshot(): StoreState {
    return structuredClone(this.state);
  }

  /** Read-only access for InMemoryTx's unique-owner check. */
  committed(): StoreState {
    return this.state;
  }

  /** Applies `change` to the committed state at once, outside the transaction queue. */
  async commitOutside(change: (tx: IpamTx) => Promise<void>): Promise<void> {
    const draft = structuredClone(this.state);
    const tx = new InMemoryTx(draft, this);
    await change(tx);
    this.state = draft;
    this.audits.push(...tx.audits);
  }
}

/** A clock that stands still until a test moves it. */
export class FakeClock implements Clock {
  constructor(private ms = Date.parse('2030-01-01T00:00:00.000Z')) {}

  now(): number {
    return this.ms;
  }

  advance(seconds: number): void {
    this.ms += seconds * 1000;
  }
}

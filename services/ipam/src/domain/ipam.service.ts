import {
  CURSORS,
  DEFAULT_PAGE_LIMIT,
  instanceIdOf,
  OrangeryError,
  pageOf,
  type PageQuery,
  type AddressLookupRequest,
  type AllocateRequest,
  type Allocation,
  type BindRequest,
  type Owner,
  type PoolCreateRequest,
  type Pool,
  type PoolWithUsage,
  type Reply,
} from '@orangery/contracts';
import { ipv4ToInt } from '@orangery/netaddr';
import {
  allocatedTo,
  auditEntryOf,
  bindChangesNothing,
  checkRequestable,
  checkRequestedRow,
  isBlockedRow,
  isLive,
  latestReleased,
  notBindable,
  ownerHasBlockIp,
  ownerHasIp,
  poolExhausted,
  poolNotFound,
  poolVanished,
  toAllocation,
  toPool,
  type CallContext,
} from './allocation-rules';
import { AllocationBatch, bindBatchInTx, lookupKey, releaseBatchInTx, type ItemTrace, type ReleaseItem } from './ipam-batch';
import { DEFAULT_GROUP_LIMITS, GroupCommitter, type GroupLimits } from './group-commit';
import { checkBindOutsideBlockRules, releasedRow } from './blocks';
import { planPool } from './pool-plan';
import { OwnerConflict, type AddressRecord, type Clock, type IpamStore, type IpamTx, type PoolRecord } from './ports';

/** Addresses all pools may hold together, by default: sixteen /16 pools. */
export const DEFAULT_MAX_ADDRESSES = 16 * 65_536;

export { EVENT_SOURCE, toAllocation, toPool, type CallContext } from './allocation-rules';

/** A batch is retried this often when a concurrent request gave one of its fresh owners an address first. */
const BATCH_OWNER_CONFLICT_RETRIES = 8;

/**
 * The IPAM rules of CONTRACT.md. Correct under any number of replicas because every
 * decision is taken inside one database transaction over locked rows:
 * - an owner's rows are locked first, so two requests for one owner serialize;
 * - a fresh address is taken with FOR UPDATE SKIP LOCKED, so concurrent allocations in a
 *   pool take different rows without waiting for each other;
 * - a unique index on the live owner makes "one live address per owner" hold even if two
 *   transactions race past the owner check (the loser retries and sees the winner's row);
 * - allocations hold a shared lock on their pool's row, which pool.delete takes exclusively.
 */
export class IpamService {
  /** group commit of concurrent singles (docs/ipam.md "Group commit"); undefined: every single alone */
  private readonly groups:
    | {
        allocate: GroupCommitter<AllocateRequest & ItemTrace, Allocation>;
        bind: GroupCommitter<BindRequest & ItemTrace, Allocation>;
        release: GroupCommitter<ReleaseItem, Allocation>;
      }
    | undefined;

  /** pool name -> id, a hint for batches to lock fresh rows in their first round trip (checked there) */
  private readonly poolIds = new Map<string, number>();

  constructor(
    private readonly store: IpamStore,
    private readonly clock: Clock,
    /** addresses all pools may hold together (ORANGERY_IPAM_MAX_ADDRESSES): each is a row */
    private readonly maxAddresses = DEFAULT_MAX_ADDRESSES,
    /** group commit limits (ORANGERY_IPAM_GROUP_MAX, ORANGERY_IPAM_GROUP_IN_FLIGHT); a maxSize of 1 turns it off */
    groupLimits: GroupLimits = DEFAULT_GROUP_LIMITS,
  ) {
    if (groupLimits.maxSize > 1) {
      // Each grouped item carries its caller's trace and actor; the group's transaction none.
      this.groups = {
        allocate: new GroupCommitter(
          (items, committed) => this.allocateBatch(items, {}, committed),
          ({ traceparent, actor, ...req }, committed) => this.allocateAlone(req, contextOf(traceparent, actor), committed),
          groupLimits,
        ),
        bind: new GroupCommitter(
          (items, committed) => this.bindBatch(items, {}, committed),
          ({ traceparent, actor, ...req }, committed) => this.bindAlone(req, contextOf(traceparent, actor), committed),
          groupLimits,
        ),
        release: new GroupCommitter(
          (items, committed) => this.store.transaction((tx) => releaseBatchInTx(tx, this.clock.now(), items, {}), undefined, committed),
          ({ traceparent, actor, ...by }, committed) => this.releaseAlone(by, contextOf(traceparent, actor), committed),
          groupLimits,
        ),
      };
    }
  }

  /** Requests served through group commit and the transactions that served them (tests, bench). */
  groupStats(): { groups: number; served: number } {
    const all = this.groups ? [this.groups.allocate, this.groups.bind, this.groups.release] : [];
    return { groups: all.reduce((n, g) => n + g.groups, 0), served: all.reduce((n, g) => n + g.served, 0) };
  }

  async createPool(req: PoolCreateRequest, ctx: CallContext = {}): Promise<Pool> {
    const plan = planPool(req);
    return this.store.transaction(async (tx) => {
      // Serializes pool creation platform-wide: the overlap check must see every pool.
      await tx.lockPoolCatalog();
      if (await tx.findPool(plan.name, 'none')) {
        throw new OrangeryError('POOL_EXISTS', `pool '${plan.name}' already exists`, { name: plan.name });
      }
      const other = await tx.findOverlappingPool(plan.cidr.first, plan.cidr.last);
      if (other) {
        throw new OrangeryError('POOL_OVERLAP', `${plan.cidr.text} overlaps pool '${other.name}' (${other.cidrText})`, {
          pool: other.name,
          cidr: other.cidrText,
        });
      }
      // Under the catalog lock: two creations cannot both fit in the last of the quota.
      const inUse = await tx.totalPoolSize();
      if (inUse + plan.size > this.maxAddresses) {
        throw new OrangeryError(
          'INVALID_REQUEST',
          `cidr: a pool of ${plan.size} addresses would exceed this IPAM's quota of ${this.maxAddresses} addresses (${inUse} in pools already)`,
          { field: 'cidr', size: plan.size, quota: this.maxAddresses, inPools: inUse },
        );
      }
      const pool = await tx.insertPool(plan, new Date(this.clock.now()));
      await tx.audit({ action: 'pool.create', ip: null, poolName: pool.name, before: null, after: toPool(pool) });
      return toPool(pool);
    }, ctx.actor);
  }

  async getPool(name: string): Promise<PoolWithUsage> {
    return this.store.read(async (tx) => {
      const pool = await this.requirePool(tx, name, 'none');
      return this.withUsage(tx, pool);
    });
  }

  /** One page of pools in name order (v1.1): `nextCursor` while more remain. */
  async listPools(page: PageQuery<[string]> = { limit: DEFAULT_PAGE_LIMIT, after: undefined }): Promise<{ pools: PoolWithUsage[]; nextCursor?: string }> {
    return this.store.read(async (tx) => {
      // One row more than the page tells whether more remain.
      const rows = await tx.listPools({ after: page.after?.[0], limit: page.limit + 1 });
      const { items, nextCursor } = pageOf(CURSORS.pools, rows, page.limit, (p): [string] => [p.name]);
      return { pools: await Promise.all(items.map((p) => this.withUsage(tx, p))), ...(nextCursor ? { nextCursor } : {}) };
    });
  }

  async deletePool(name: string, ctx: CallContext = {}): Promise<Record<string, never>> {
    return this.store.transaction(async (tx) => {
      const pool = await this.requirePool(tx, name, 'update');
      const usage = await tx.usage(pool.id, this.clock.now());
      const blocks = await tx.countBlocks(pool.id);
      if (blocks > 0) {
        throw new OrangeryError('POOL_IN_USE', `pool '${name}' still has ${blocks} swarm node block(s); release them first (orangery.ipam.block.release)`, {
          name,
          used: usage.used,
          blocks,
        });
      }
      if (usage.used > 0) {
        throw new OrangeryError('POOL_IN_USE', `pool '${name}' still has ${usage.used} address(es) allocated or bound`, {
          name,
          used: usage.used,
        });
      }
      await tx.deletePool(pool.id);
      await tx.audit({ action: 'pool.delete', ip: null, poolName: name, before: toPool(pool), after: null });
      return {};
    }, ctx.actor);
  }

  async allocate(req: AllocateRequest, ctx: CallContext = {}): Promise<Allocation> {
    if (this.groups) return this.groups.allocate.submit({ ...req, ...itemTraceOf(ctx) });
    return this.allocateAlone(req, ctx);
  }

  private async allocateAlone(req: AllocateRequest, ctx: CallContext, onCommitted?: () => void): Promise<Allocation> {
    const wanted = req.ip === undefined ? undefined : ipv4ToInt(req.ip);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.store.transaction((tx) => this.allocateInTx(tx, req.pool, req.owner, wanted, ctx), ctx.actor, onCommitted);
      } catch (e) {
        // Another request for the same owner committed first; running again returns its
        // address (idempotent) or OWNER_HAS_IP.
        if (e instanceof OwnerConflict && attempt < 3) continue;
        throw e;
      }
    }
  }

  private async allocateInTx(tx: IpamTx, poolName: string, owner: Owner, wanted: number | undefined, ctx: CallContext): Promise<Allocation> {
    const now = this.clock.now();
    const { pool, mine } = await tx.openAllocation(poolName, owner);
    if (!pool) throw poolNotFound(poolName);
    const live = mine.find(isLive);
    if (live) {
      // A swarm task's address inside a node's block is never handed to another backend.
      const block = live.backend === 'swarm' ? await tx.findBlockAt(live.ip) : undefined;
      const holding = live.poolId === pool.id ? pool : await tx.findPoolById(live.poolId);
      if (block) throw ownerHasBlockIp(owner, live, holding, block);
      if (live.poolId === pool.id && (wanted === undefined || wanted === live.ip)) return toAllocation(live, pool);
      throw ownerHasIp(owner, live, holding);
    }
    let chosen: AddressRecord | undefined;
    if (wanted !== undefined) {
      chosen = await this.lockRequested(tx, pool, owner, wanted, now);
    } else {
      // Affinity: the owner's own most recently released address in this pool, cooldown or not
      // (not one inside a swarm node's block: only that node's tasks use those).
      chosen = latestReleased(mine.filter((r) => r.poolId === pool.id && !isBlockedRow(r)));
      chosen ??= await tx.lockNextAvailable(pool.id, now);
      if (!chosen) throw poolExhausted(pool, await tx.usage(pool.id, now));
    }
    const after = allocatedTo(chosen, owner);
    return this.commitChange(tx, 'allocate', pool, chosen, after, ctx);
  }

  private async lockRequested(tx: IpamTx, pool: PoolRecord, owner: Owner, ip: number, now: number): Promise<AddressRecord> {
    checkRequestable(pool, ip);
    const row = await tx.lockAddress(ip);
    // Only for an ip inside a swarm node's block (an error path): its refusal names the node.
    return checkRequestedRow(pool, owner, ip, row, now, row && isBlockedRow(row) ? await tx.findBlockAt(ip) : undefined);
  }

  async bind(req: BindRequest, ctx: CallContext = {}): Promise<Allocation> {
    if (this.groups) return this.groups.bind.submit({ ...req, ...itemTraceOf(ctx) });
    return this.bindAlone(req, ctx);
  }

  private async bindAlone(req: BindRequest, ctx: CallContext, onCommitted?: () => void): Promise<Allocation> {
    const ip = ipv4ToInt(req.ip);
    return this.store.transaction(
      async (tx) => {
        const row = await tx.lockAddress(ip);
        if (!row || !isLive(row)) {
          throw notBindable(req.ip);
        }
        const pool = await this.requirePoolById(tx, row.poolId);
        if (bindChangesNothing(row, req)) {
          return toAllocation(row, pool);
        }
        // Only block.bind makes an address inside a block live, always with backend swarm.
        if (row.backend === 'swarm') checkBindOutsideBlockRules(req, await tx.findBlockAt(ip), pool);
        const after: AddressRecord = { ...row, state: 'bound', instanceId: req.instanceId, backend: req.backend, host: req.host };
        return this.commitChange(tx, 'bind', pool, row, after, ctx);
      },
      ctx.actor,
      onCommitted,
    );
  }

  /**
   * `allocate` for many items at once, in one transaction: each item's result is what the
   * single request would have replied (ipam-batch.ts says in which order they are served).
   * All of the batch's changes commit together or not at all.
   */
  async allocateBatch(reqs: readonly (AllocateRequest & ItemTrace)[], ctx: CallContext = {}, onCommitted?: () => void): Promise<Reply<Allocation>[]> {
    if (reqs.length === 0) return [];
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.store.transaction((tx) => new AllocationBatch(tx, this.clock.now(), reqs, ctx, this.poolIds).run(), ctx.actor, onCommitted);
      } catch (e) {
        // A single or another batch gave one of our fresh owners an address first: the whole
        // batch runs again and now finds that owner's row (each item is idempotent).
        if (e instanceof OwnerConflict && attempt < BATCH_OWNER_CONFLICT_RETRIES) continue;
        throw e;
      }
    }
  }

  /** `bind` for many items at once, in one transaction, each item as the single request. */
  async bindBatch(reqs: readonly (BindRequest & ItemTrace)[], ctx: CallContext = {}, onCommitted?: () => void): Promise<Reply<Allocation>[]> {
    if (reqs.length === 0) return [];
    return this.store.transaction((tx) => bindBatchInTx(tx, this.clock.now(), reqs, ctx), ctx.actor, onCommitted);
  }

  async release(req: AddressLookupRequest, ctx: CallContext = {}): Promise<Allocation> {
    const by = lookupKey(req);
    if (this.groups) return this.groups.release.submit({ ...by, ...itemTraceOf(ctx) });
    return this.releaseAlone(by, ctx);
  }

  private async releaseAlone(by: { ip: number; text: string } | { owner: Owner }, ctx: CallContext, onCommitted?: () => void): Promise<Allocation> {
    return this.store.transaction(
      async (tx) => {
        const row = await this.findForLookup(tx, by);
        const pool = await this.requirePoolById(tx, row.poolId);
        if (row.state === 'released') return toAllocation(row, pool);
        // A live address inside a block is a swarm task's (backend swarm): it stays in its block.
        const inBlock = row.backend === 'swarm' && (await tx.findBlockAt(row.ip)) !== undefined;
        return this.commitChange(tx, 'release', pool, row, releasedRow(row, pool, this.clock.now(), inBlock), ctx);
      },
      ctx.actor,
      onCommitted,
    );
  }

  async get(req: AddressLookupRequest): Promise<Allocation> {
    const by = lookupKey(req);
    return this.store.read(async (tx) => {
      const row = await this.findForLookup(tx, by);
      return toAllocation(row, await this.requirePoolById(tx, row.poolId));
    });
  }

  private async findForLookup(tx: IpamTx, by: { ip: number; text: string } | { owner: Owner }): Promise<AddressRecord> {
    if ('ip' in by) {
      const row = await tx.lockAddress(by.ip);
      if (!row || row.state === 'free') throw new OrangeryError('NOT_FOUND', `${by.text} is not allocated`, { ip: by.text });
      return row;
    }
    const rows = await tx.lockOwnerAddresses(by.owner);
    const live = rows.find(isLive);
    if (live) return live;
    const last = latestReleased(rows);
    if (!last) throw new OrangeryError('NOT_FOUND', `${instanceIdOf(by.owner)} holds no address`, { owner: by.owner });
    return last;
  }

  private async requirePool(tx: IpamTx, name: string, lock: 'none' | 'share' | 'update'): Promise<PoolRecord> {
    const pool = await tx.findPool(name, lock);
    if (!pool) throw poolNotFound(name);
    return pool;
  }

  private async requirePoolById(tx: IpamTx, id: number): Promise<PoolRecord> {
    const pool = await tx.findPoolById(id);
    if (!pool) throw poolVanished(id);
    return pool;
  }

  private async withUsage(tx: IpamTx, pool: PoolRecord): Promise<PoolWithUsage> {
    const u = await tx.usage(pool.id, this.clock.now());
    return {
      ...toPool(pool),
      size: pool.size,
      used: u.used,
      quarantined: u.quarantined,
      free: pool.size - u.used - u.quarantined - u.blocked,
      blocked: u.blocked,
    };
  }

  /** Writes an address change with its audit row and event (in the same transaction). */
  private async commitChange(
    tx: IpamTx,
    action: 'allocate' | 'bind' | 'release',
    pool: PoolRecord,
    before: AddressRecord,
    next: AddressRecord,
    ctx: CallContext,
  ): Promise<Allocation> {
    await tx.updateAddress(before.ip, next);
    const after = toAllocation(next, pool);
    await tx.audit(auditEntryOf(action, pool, before, after, ctx, this.clock.now()));
    return after;
  }
}

/** A grouped single's own trace and actor (null: it named none), carried by its item. */
function itemTraceOf(ctx: CallContext): ItemTrace {
  return { ...(ctx.traceparent ? { traceparent: ctx.traceparent } : {}), actor: ctx.actor ?? null };
}

function contextOf(traceparent: string | undefined, actor: string | null | undefined): CallContext {
  return { ...(traceparent ? { traceparent } : {}), ...(actor ? { actor } : {}) };
}

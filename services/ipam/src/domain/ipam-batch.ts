import {
  errorReply,
  instanceIdOf,
  OrangeryError,
  okReply,
  type AllocateRequest,
  type Allocation,
  type BindRequest,
  type Owner,
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
  ownerHasIp,
  poolExhausted,
  poolNotFound,
  poolVanished,
  sameOwner,
  toAllocation,
  type CallContext,
} from './allocation-rules';
import type { AddressPatch, AddressRecord, AuditEntry, BlockRecord, IpamTx, PoolRecord } from './ports';
import { blocksOfSwarmRows, checkBindOutsideBlockRules } from './blocks';

/**
 * Batch allocate and bind (docs/ipam.md "Batch requests"). Each item gets exactly the reply
 * its single request would get; the batch saves the per-item transaction and round trips:
 * one transaction per batch, rows read and written many at a time.
 */

const ownerKey = (o: Owner): string => instanceIdOf(o);

/** An item's failure as its result; anything but an OrangeryError fails the whole batch. */
function failure(e: unknown): Reply<never> {
  if (e instanceof OrangeryError) return errorReply(e.toBody());
  throw e;
}

/** A batch item may carry its caller's trace: its event carries that one (default: the request's). */
export interface ItemTrace {
  traceparent?: string;
}

const itemContext = (ctx: CallContext, item: ItemTrace): CallContext => (item.traceparent ? { ...ctx, traceparent: item.traceparent } : ctx);

interface Change {
  /** the batch item it serves */
  index: number;
  pool: PoolRecord;
  before: AddressRecord;
  after: AddressRecord;
}

/**
 * One batch allocation inside one transaction. The items are served as if they had been sent
 * as singles in this order:
 * - rounds: each owner's first item in round 1, its second in round 2, and so on, so a later
 *   item of an owner sees what its earlier one did (the same address back, OWNER_HAS_IP, or
 *   a new attempt when the earlier one failed);
 * - within a round, in item order, except that items needing a fresh address (no `ip`, no
 *   affinity) draw from their pool at the end of the round, in item order: as if every
 *   explicit `ip` and affinity claim of the round had come first, which is one of the orders
 *   concurrent singles could have been served in.
 * Round trips: the pools and the owners' rows (1), the rows of explicit ips if any (1),
 * one pick per pool per round that needs fresh addresses, and the writes with COMMIT (1).
 */
export class AllocationBatch {
  private readonly results: (Reply<Allocation> | undefined)[];
  private readonly wanted: (number | undefined)[];
  private readonly poolsByName = new Map<string, PoolRecord>();
  private readonly poolsById = new Map<number, PoolRecord>();
  /** every row this transaction holds a lock on, as this batch has left it so far */
  private readonly rows = new Map<number, AddressRecord>();
  /** owner -> ips of its rows (current or last owner when locked; filter with sameOwner) */
  private readonly rowsOfOwner = new Map<string, number[]>();
  /** owner -> ip of its live row */
  private readonly liveOf = new Map<string, number>();
  private readonly changes: Change[] = [];
  private readonly exhausted: { index: number; pool: PoolRecord }[] = [];
  /** blocks of explicitly asked ips that are inside one */
  private readonly blockOf = new Map<number, BlockRecord | undefined>();

  constructor(
    private readonly tx: IpamTx,
    private readonly now: number,
    private readonly reqs: readonly (AllocateRequest & ItemTrace)[],
    private readonly ctx: CallContext,
  ) {
    this.results = reqs.map(() => undefined);
    this.wanted = reqs.map((r) => (r.ip === undefined ? undefined : ipv4ToInt(r.ip)));
  }

  async run(): Promise<Reply<Allocation>[]> {
    await this.open();
    let pending = this.reqs.map((_, i) => i);
    while (pending.length > 0) {
      const round: number[] = [];
      const later: number[] = [];
      const seen = new Set<string>();
      for (const i of pending) {
        const key = ownerKey(this.reqs[i]!.owner);
        (seen.has(key) ? later : round).push(i);
        seen.add(key);
      }
      await this.serveRound(round);
      pending = later;
    }
    await this.write();
    // After the writes (sent with this query), so the counts include this batch's own.
    for (const pool of new Set(this.exhausted.map((x) => x.pool))) {
      const error = errorReply(poolExhausted(pool, await this.tx.usage(pool.id, this.now)).toBody());
      for (const x of this.exhausted) if (x.pool === pool) this.results[x.index] = error;
    }
    return this.results.map((r, i) => r ?? errorReply(new OrangeryError('INTERNAL', `batch item ${i} was not served`).toBody()));
  }

  /** Locks the pools (shared), every row of the batch's owners, and the rows of explicit ips. */
  private async open(): Promise<void> {
    const owners = new Map(this.reqs.map((r) => [ownerKey(r.owner), r.owner]));
    const { pools, mine } = await this.tx.openAllocations([...new Set(this.reqs.map((r) => r.pool))], [...owners.values()]);
    for (const p of pools) this.remember(p);
    for (const row of mine) {
      this.rows.set(row.ip, row);
      if (!row.owner) continue;
      const key = ownerKey(row.owner);
      this.rowsOfOwner.set(key, [...(this.rowsOfOwner.get(key) ?? []), row.ip]);
      if (isLive(row)) this.liveOf.set(key, row.ip);
    }
    // Pools where owners hold their live address, for OWNER_HAS_IP's details.
    const elsewhere = [...this.liveOf.values()].map((ip) => this.rows.get(ip)!.poolId).filter((id) => !this.poolsById.has(id));
    if (elsewhere.length > 0) for (const p of await this.tx.findPoolsByIds([...new Set(elsewhere)])) this.remember(p);
    const explicit = new Set<number>();
    this.reqs.forEach((r, i) => {
      const ip = this.wanted[i];
      const pool = this.poolsByName.get(r.pool);
      if (ip === undefined || !pool || this.rows.has(ip)) return;
      try {
        checkRequestable(pool, ip);
        explicit.add(ip);
      } catch {
        // answered with its error when the item is served
      }
    });
    if (explicit.size > 0) {
      for (const row of await this.tx.lockAddresses([...explicit].sort((a, b) => a - b))) this.rows.set(row.ip, row);
      // Only for an ip inside a swarm node's block (an error path): its refusal names the node.
      for (const row of this.rows.values()) if (isBlockedRow(row)) this.blockOf.set(row.ip, await this.tx.findBlockAt(row.ip));
    }
  }

  private remember(p: PoolRecord): void {
    this.poolsByName.set(p.name, p);
    this.poolsById.set(p.id, p);
  }

  private async serveRound(round: readonly number[]): Promise<void> {
    const fresh = new Map<PoolRecord, number[]>();
    for (const i of round) {
      try {
        const pool = this.serveWithoutDraw(i);
        if (pool) fresh.set(pool, [...(fresh.get(pool) ?? []), i]);
      } catch (e) {
        this.results[i] = failure(e);
      }
    }
    for (const [pool, items] of fresh) {
      const taken = this.changes.filter((c) => c.pool.id === pool.id).map((c) => c.before.ip);
      const picked = await this.tx.lockNextAvailableMany(pool.id, this.now, items.length, taken);
      items.forEach((i, k) => {
        const row = picked[k];
        if (row) this.claim(i, pool, this.rows.get(row.ip) ?? row);
        else this.exhausted.push({ index: i, pool });
      });
      for (const row of picked) if (!this.rows.has(row.ip)) this.rows.set(row.ip, row);
    }
  }

  /**
   * Serves item `i` from the rows already locked, as allocateInTx does; returns its pool when
   * it needs a fresh address from the pool's pick order instead.
   */
  private serveWithoutDraw(i: number): PoolRecord | undefined {
    const { owner, pool: poolName } = this.reqs[i]!;
    const wanted = this.wanted[i];
    const pool = this.poolsByName.get(poolName);
    if (!pool) throw poolNotFound(poolName);
    const liveIp = this.liveOf.get(ownerKey(owner));
    if (liveIp !== undefined) {
      const live = this.rows.get(liveIp)!;
      if (live.poolId === pool.id && (wanted === undefined || wanted === live.ip)) {
        this.results[i] = okReply(toAllocation(live, pool));
        return undefined;
      }
      throw ownerHasIp(owner, live, this.poolsById.get(live.poolId));
    }
    if (wanted !== undefined) {
      checkRequestable(pool, wanted);
      this.claim(i, pool, checkRequestedRow(pool, owner, wanted, this.rows.get(wanted), this.now, this.blockOf.get(wanted)));
      return undefined;
    }
    // Affinity: the owner's own most recently released address in this pool, cooldown or not
    // (unless another item of this batch took it after its cooldown: then its owner changed).
    const mine = (this.rowsOfOwner.get(ownerKey(owner)) ?? [])
      .map((ip) => this.rows.get(ip)!)
      .filter((r) => r.poolId === pool.id && sameOwner(r.owner, owner) && !isBlockedRow(r));
    const affinity = latestReleased(mine);
    if (affinity) {
      this.claim(i, pool, affinity);
      return undefined;
    }
    return pool;
  }

  private claim(i: number, pool: PoolRecord, before: AddressRecord): void {
    const owner = this.reqs[i]!.owner;
    const after = allocatedTo(before, owner);
    this.rows.set(before.ip, after);
    this.liveOf.set(ownerKey(owner), before.ip);
    this.changes.push({ index: i, pool, before, after });
    this.results[i] = okReply(toAllocation(after, pool));
  }

  private async write(): Promise<void> {
    if (this.changes.length === 0) return;
    await this.tx.updateAddresses(this.changes.map((c) => ({ ip: c.before.ip, patch: patchOf(c.after) })));
    await this.tx.auditAll(
      this.changes.map((c) => auditEntryOf('allocate', c.pool, c.before, toAllocation(c.after, c.pool), itemContext(this.ctx, this.reqs[c.index]!), this.now)),
    );
  }
}

/**
 * Batch bind in one transaction: every address locked and its pool read in one round trip,
 * then the items applied in order (a later item for the same ip sees the earlier one, as a
 * later single would), and the writes sent with COMMIT.
 */
export async function bindBatchInTx(tx: IpamTx, now: number, reqs: readonly (BindRequest & ItemTrace)[], ctx: CallContext): Promise<Reply<Allocation>[]> {
  const ips = reqs.map((r) => ipv4ToInt(r.ip));
  const { rows: locked, pools } = await tx.openBinds([...new Set(ips)].sort((a, b) => a - b));
  const rows = new Map(locked.map((r) => [r.ip, r]));
  const poolsById = new Map(pools.map((p) => [p.id, p]));
  const blockOf = await blocksOfSwarmRows(tx, locked);
  const finalState = new Map<number, AddressRecord>();
  const audits: AuditEntry[] = [];
  const results = reqs.map((req, i): Reply<Allocation> => {
    try {
      const row = rows.get(ips[i]!);
      if (!row || !isLive(row)) throw notBindable(req.ip);
      const pool = poolsById.get(row.poolId);
      if (!pool) throw poolVanished(row.poolId);
      if (bindChangesNothing(row, req)) return okReply(toAllocation(row, pool));
      if (row.backend === 'swarm') checkBindOutsideBlockRules(req, blockOf.get(row.ip), pool);
      const after: AddressRecord = { ...row, state: 'bound', instanceId: req.instanceId, backend: req.backend, host: req.host };
      const allocation = toAllocation(after, pool);
      audits.push(auditEntryOf('bind', pool, row, allocation, itemContext(ctx, req), now));
      rows.set(row.ip, after);
      finalState.set(row.ip, after);
      return okReply(allocation);
    } catch (e) {
      return failure(e);
    }
  });
  if (finalState.size > 0) {
    await tx.updateAddresses([...finalState.values()].map((r) => ({ ip: r.ip, patch: patchOf(r) })));
    await tx.auditAll(audits);
  }
  return results;
}

function patchOf(r: AddressRecord): AddressPatch {
  const { ip: _ip, poolId: _poolId, ...patch } = r;
  return patch;
}

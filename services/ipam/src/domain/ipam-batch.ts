import {
  errorReply,
  instanceIdOf,
  invalidRequest,
  type AddressLookupRequest,
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
  ownerHasBlockIp,
  ownerHasIp,
  poolExhausted,
  poolNotFound,
  poolVanished,
  sameOwner,
  toAllocation,
  type CallContext,
} from './allocation-rules';
import type { AddressPatch, AddressRecord, AuditEntry, BlockRecord, IpamTx, PoolRecord } from './ports';
import { blocksOfSwarmRows, checkBindOutsideBlockRules, releasedRow } from './blocks';

/**
 * Batch allocate and bind (docs/ipam.md "Batch requests"). Each item gets exactly the reply
 * its single request would get; the batch saves the per-item transaction and round trips:
 * one transaction per batch, rows read and written many at a time.
 */

const ownerKey = (o: Owner): string => instanceIdOf(o);

/** Pool name -> id entries a service keeps at most (cleared when full: it is only a hint). */
const POOL_ID_CACHE_MAX = 10_000;

/** An item's failure as its result; anything but an OrangeryError fails the whole batch. */
function failure(e: unknown): Reply<never> {
  if (e instanceof OrangeryError) return errorReply(e.toBody());
  throw e;
}

/** A batch item may carry its caller's trace: its event carries that one (default: the request's). */
export interface ItemTrace {
  traceparent?: string;
  /** group commit only (never from a batch request): the single's own actor, null when it named none */
  actor?: string | null;
}

const itemContext = (ctx: CallContext, item: ItemTrace): CallContext =>
  item.traceparent || item.actor !== undefined
    ? { ...ctx, ...(item.traceparent ? { traceparent: item.traceparent } : {}), ...(item.actor !== undefined ? { itemActor: item.actor } : {}) }
    : ctx;

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
  /** blocks holding owners' live swarm task addresses (allocate never returns those) */
  private readonly liveBlockOf = new Map<number, BlockRecord>();
  /** fresh rows locked ahead with the owners' rows, for the first round's draws, by pool id */
  private ahead = new Map<number, AddressRecord[]>();

  constructor(
    private readonly tx: IpamTx,
    private readonly now: number,
    private readonly reqs: readonly (AllocateRequest & ItemTrace)[],
    private readonly ctx: CallContext,
    /**
     * pool name -> id as seen by earlier transactions (the service's cache): the first round's
     * fresh draws are locked in the first round trip by these ids, and used only when the
     * pool read in that round trip still has the id
     */
    private readonly knownPoolIds: Map<string, number> = new Map(),
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
    // Upper bound of the first round's fresh draws per pool: each owner's first item without an ip.
    const limits = new Map<number, number>();
    const firsts = new Set<string>();
    for (const r of this.reqs) {
      const key = ownerKey(r.owner);
      if (firsts.has(key)) continue;
      firsts.add(key);
      const id = this.knownPoolIds.get(r.pool);
      if (r.ip === undefined && id !== undefined) limits.set(id, (limits.get(id) ?? 0) + 1);
    }
    const { pools, mine, picked } = await this.tx.openAllocations([...new Set(this.reqs.map((r) => r.pool))], [...owners.values()], {
      nowMs: this.now,
      limits,
    });
    for (const p of pools) {
      this.remember(p);
      if (this.knownPoolIds.size >= POOL_ID_CACHE_MAX) this.knownPoolIds.clear();
      this.knownPoolIds.set(p.name, p.id);
      const ahead = picked.get(p.id);
      if (ahead) this.ahead.set(p.id, ahead);
    }
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
    // Owners' live swarm task addresses inside a node's block: OWNER_HAS_IP naming the node.
    for (const ip of this.liveOf.values()) {
      if (this.rows.get(ip)!.backend !== 'swarm') continue;
      const block = await this.tx.findBlockAt(ip);
      if (block) this.liveBlockOf.set(ip, block);
    }
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
      const picked = await this.draw(pool, items.length, taken);
      items.forEach((i, k) => {
        const row = picked[k];
        if (row) this.claim(i, pool, this.rows.get(row.ip) ?? row);
        else this.exhausted.push({ index: i, pool });
      });
      for (const row of picked) if (!this.rows.has(row.ip)) this.rows.set(row.ip, row);
    }
  }

  /**
   * Up to `n` fresh rows of `pool` in pick order, never one of `taken`: from the rows locked
   * ahead (first round), then from the database for what they lack.
   */
  private async draw(pool: PoolRecord, n: number, taken: readonly number[]): Promise<AddressRecord[]> {
    const ahead = this.ahead.get(pool.id);
    if (!ahead) return this.tx.lockNextAvailableMany(pool.id, this.now, n, taken);
    this.ahead.delete(pool.id);
    const skip = new Set(taken);
    const usable = ahead.filter((r) => !skip.has(r.ip)).slice(0, n);
    // fewer than needed (rows this batch took otherwise, or the pool ran short): ask for the rest
    if (usable.length < n) {
      const more = await this.tx.lockNextAvailableMany(pool.id, this.now, n - usable.length, [...taken, ...ahead.map((r) => r.ip)]);
      return [...usable, ...more];
    }
    return usable;
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
      if (live.poolId === pool.id && (wanted === undefined || wanted === live.ip) && !this.liveBlockOf.has(live.ip)) {
        this.results[i] = okReply(toAllocation(live, pool));
        return undefined;
      }
      const block = this.liveBlockOf.get(live.ip);
      if (block) throw ownerHasBlockIp(owner, live, this.poolsById.get(live.poolId), block);
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
 * The changes of a bind or release batch: each item's new row (a later item of the same ip
 * sees it in `rows`), its audit row with its event, and one write of the rows' final states
 * and the audit rows at the end.
 */
class RowChanges {
  private readonly finalState = new Map<number, AddressRecord>();
  private readonly audits: AuditEntry[] = [];

  constructor(
    private readonly rows: Map<number, AddressRecord>,
    private readonly now: number,
  ) {}

  record(action: 'bind' | 'release', pool: PoolRecord, before: AddressRecord, after: AddressRecord, ctx: CallContext): Allocation {
    const allocation = toAllocation(after, pool);
    this.audits.push(auditEntryOf(action, pool, before, allocation, ctx, this.now));
    this.rows.set(after.ip, after);
    this.finalState.set(after.ip, after);
    return allocation;
  }

  async write(tx: IpamTx): Promise<void> {
    if (this.finalState.size === 0) return;
    await tx.updateAddresses([...this.finalState.values()].map((r) => ({ ip: r.ip, patch: patchOf(r) })));
    await tx.auditAll(this.audits);
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
  const changes = new RowChanges(rows, now);
  const results = reqs.map((req, i): Reply<Allocation> => {
    try {
      const row = rows.get(ips[i]!);
      if (!row || !isLive(row)) throw notBindable(req.ip);
      const pool = poolsById.get(row.poolId);
      if (!pool) throw poolVanished(row.poolId);
      if (bindChangesNothing(row, req)) return okReply(toAllocation(row, pool));
      if (row.backend === 'swarm') checkBindOutsideBlockRules(req, blockOf.get(row.ip), pool);
      const after: AddressRecord = { ...row, state: 'bound', instanceId: req.instanceId, backend: req.backend, host: req.host };
      return okReply(changes.record('bind', pool, row, after, itemContext(ctx, req)));
    } catch (e) {
      return failure(e);
    }
  });
  await changes.write(tx);
  return results;
}

/** A release item: its lookup (by ip, or by owner), validated before it is queued. */
export type ReleaseItem = ({ ip: number; text: string } | { owner: Owner }) & ItemTrace;

/**
 * Group-committed `release` singles in one transaction (docs/ipam.md "Group commit"): the
 * rows of every ip and every owner locked (two round trips), their pools read (one), then
 * the items applied in order (a later item sees what an earlier one did, as a later single
 * would), and the writes sent with COMMIT.
 */
export async function releaseBatchInTx(tx: IpamTx, now: number, items: readonly ReleaseItem[], ctx: CallContext): Promise<Reply<Allocation>[]> {
  const ips = [...new Set(items.flatMap((it) => ('ip' in it ? [it.ip] : [])))].sort((a, b) => a - b);
  const owners = items.flatMap((it) => ('owner' in it ? [it.owner] : []));
  const rows = new Map<number, AddressRecord>();
  for (const r of await tx.lockAddresses(ips)) rows.set(r.ip, r);
  if (owners.length > 0) for (const r of await tx.lockOwnersAddresses(owners)) if (!rows.has(r.ip)) rows.set(r.ip, r);
  const poolsById = new Map((await tx.findPoolsByIds([...new Set([...rows.values()].map((r) => r.poolId))])).map((p) => [p.id, p]));
  // A live address inside a block is a swarm task's: released, it stays in its block.
  const inBlock = await blocksOfSwarmRows(tx, rows.values());
  const changes = new RowChanges(rows, now);
  const results = items.map((item): Reply<Allocation> => {
    try {
      let row: AddressRecord | undefined;
      if ('ip' in item) {
        row = rows.get(item.ip);
        if (!row || row.state === 'free') throw new OrangeryError('NOT_FOUND', `${item.text} is not allocated`, { ip: item.text });
      } else {
        const mine = [...rows.values()].filter((r) => sameOwner(r.owner, item.owner));
        row = mine.find(isLive) ?? latestReleased(mine);
        if (!row) throw new OrangeryError('NOT_FOUND', `${instanceIdOf(item.owner)} holds no address`, { owner: item.owner });
      }
      const pool = poolsById.get(row.poolId);
      if (!pool) throw poolVanished(row.poolId);
      if (row.state === 'released') return okReply(toAllocation(row, pool));
      const after = releasedRow(row, pool, now, inBlock.has(row.ip));
      return okReply(changes.record('release', pool, row, after, itemContext(ctx, item)));
    } catch (e) {
      return failure(e);
    }
  });
  await changes.write(tx);
  return results;
}

/** The lookup of a `release` or `get` request; both or neither of ip and owner is INVALID_REQUEST. */
export function lookupKey(req: AddressLookupRequest): { ip: number; text: string } | { owner: Owner } {
  if (req.ip !== undefined && req.owner !== undefined) throw invalidRequest('ip', 'give either ip or owner, not both');
  if (req.ip !== undefined) return { ip: ipv4ToInt(req.ip), text: req.ip };
  if (req.owner !== undefined) return { owner: req.owner };
  throw invalidRequest('ip', 'is required (or owner)');
}

function patchOf(r: AddressRecord): AddressPatch {
  const { ip: _ip, poolId: _poolId, ...patch } = r;
  return patch;
}

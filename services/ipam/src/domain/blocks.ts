import {
  instanceIdOf,
  invalidRequest,
  OrangeryError,
  type Allocation,
  type BlockBindRequest,
  type BlockListRequest,
  type BlockRef,
  type BlockReserveRequest,
  type BlockUnbindRequest,
  type IpBlock,
} from '@orangery/contracts';
import { intToIpv4, ipv4ToInt } from '@orangery/netaddr';
import { auditEntryOf, blockCidr, isLive, ownerHasIp, poolNotFound, poolVanished, sameOwner, toAllocation, toPool, type CallContext } from './allocation-rules';
import {
  BLOCKED_AT,
  OwnerConflict,
  type AddressRecord,
  type AuditEntry,
  type BlockRecord,
  type Clock,
  type IpamStore,
  type IpamTx,
  type PoolRecord,
} from './ports';

/**
 * Swarm nodes' address blocks (docs/ipam.md "Blocks"). Docker's swarm-scoped macvlan IPAM
 * is per node and hands one address out on several nodes (moby/moby#49921), so every swarm
 * node gets its own aligned range of a pool, which only its tasks use (`--ip-range`).
 *
 * How a block keeps its addresses away from `allocate` without touching its hot path:
 * every address of a block that no task holds has `available_at = BLOCKED_AT`, above every
 * `<= now` range the fresh-address pick scans; a task's address is `bound` (available_at
 * NULL, counted as used). The block table says which range belongs to which node.
 *
 * Concurrency is the database's, as for single addresses: a reserve locks the rows of the
 * range it takes (FOR UPDATE, waiting for other holders, then re-checked) and writes every one
 * of them, so two reserves, or a reserve and an allocation, that want one address serialize
 * on that row on one server and conflict at certification on Galera (the loser reruns whole,
 * sees the winner's rows and takes another range). `UNIQUE (pool_id, host)` keeps one block
 * per host and pool.
 */

/** Reruns of a block.bind that lost a race for its owner's live address to a concurrent one. */
const BIND_OWNER_CONFLICT_RERUNS = 16;

/** Candidate ranges read per attempt; the k-th of k concurrent reserves may try k of them. */
const CANDIDATES = 64;
/** Whole-transaction reruns when every candidate was taken meanwhile, or a rival made the host's block. */
const RESERVE_ATTEMPTS = 8;

export const notInBlock = (ipText: string, poolName: string, host: string, block: BlockRecord | undefined): OrangeryError =>
  new OrangeryError(
    'NOT_IN_BLOCK',
    block
      ? `${ipText} is not inside host '${host}''s block ${blockCidr(block)} of pool '${poolName}'`
      : `host '${host}' holds no block in pool '${poolName}' (orangery.ipam.block.reserve first)`,
    { ip: ipText, pool: poolName, host, ...(block ? { block: blockCidr(block) } : {}) },
  );

/**
 * A plain `bind` of an address that a swarm task holds inside a block: only its node may hold
 * it (Docker on that node may hand it to another of its tasks once this one is gone).
 */
export function checkBindOutsideBlockRules(req: { ip: string; backend: string; host: string }, block: BlockRecord | undefined, pool: PoolRecord): void {
  if (!block) return;
  if (req.backend === 'swarm' && req.host === block.host) return;
  throw new OrangeryError(
    'NOT_IN_BLOCK',
    `${req.ip} is inside swarm node '${block.host}''s block ${blockCidr(block)} of pool '${pool.name}': only that node's tasks may hold it ` +
      `(backend swarm, host '${block.host}'); release it (or orangery.ipam.block.unbind) and allocate another address`,
    { ip: req.ip, pool: pool.name, host: block.host, block: blockCidr(block) },
  );
}

/**
 * The blocks of those `rows` a swarm task holds (live, backend swarm): only block.bind makes an
 * address inside a block live, always with backend swarm, so other rows need no lookup (none
 * on the docker/vmware paths). For batch paths: bind (checkBindOutsideBlockRules) and release
 * (releasedRow's `inBlock`).
 */
export async function blocksOfSwarmRows(tx: IpamTx, rows: Iterable<AddressRecord>): Promise<Map<number, BlockRecord>> {
  const out = new Map<number, BlockRecord>();
  for (const row of rows) {
    if (row.backend !== 'swarm' || !isLive(row)) continue;
    const block = await tx.findBlockAt(row.ip);
    if (block) out.set(row.ip, block);
  }
  return out;
}

/**
 * `row` released at `now`. Inside a block it stays blocked (Docker picks addresses there, so
 * no cooldown can hold); `releasedAt` is kept, and the cooldown counts from it once the block
 * goes back to the pool.
 */
export function releasedRow(row: AddressRecord, pool: PoolRecord, now: number, inBlock: boolean): AddressRecord {
  return {
    ...row,
    state: 'released',
    availableAt: inBlock ? BLOCKED_AT : now + pool.cooldownSeconds * 1000,
    releasedAt: new Date(now),
    instanceId: null,
    backend: null,
    host: null,
  };
}

/** What an address of a block returns to when the block goes: its cooldown as if never blocked. */
const availableAtOutsideBlock = (row: AddressRecord, pool: PoolRecord): number =>
  row.state === 'released' && row.releasedAt ? row.releasedAt.getTime() + pool.cooldownSeconds * 1000 : 0;

export function toIpBlock(b: BlockRecord, pool: PoolRecord, bound: number): IpBlock {
  const p = toPool(pool);
  return {
    pool: pool.name,
    host: b.host,
    cidr: blockCidr(b),
    first: intToIpv4(b.first),
    last: intToIpv4(b.last),
    size: b.size,
    prefixLength: p.prefixLength,
    gateway: p.gateway,
    vlan: p.vlan,
    bound,
    createdAt: b.createdAt.toISOString(),
  };
}

const isPowerOfTwo = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

/** Thrown inside a reserve's transaction when every candidate range was taken meanwhile: rerun. */
class CandidatesTaken extends Error {}

export class IpBlocks {
  constructor(
    private readonly store: IpamStore,
    private readonly clock: Clock,
  ) {}

  async reserve(req: BlockReserveRequest, ctx: CallContext = {}): Promise<IpBlock> {
    if (!isPowerOfTwo(req.size)) {
      throw new OrangeryError('INVALID_REQUEST', `size: must be a power of two from 4 to 4096 (an aligned CIDR range), got ${req.size}`, {
        field: 'size',
      });
    }
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.store.transaction((tx) => this.reserveInTx(tx, req), ctx.actor);
      } catch (e) {
        // A rival made this host's block first (unique key): rerunning returns it. Every
        // candidate taken by rivals: rerunning reads fresh candidates.
        if ((e instanceof OwnerConflict || e instanceof CandidatesTaken) && attempt < RESERVE_ATTEMPTS) continue;
        if (e instanceof CandidatesTaken) {
          throw new OrangeryError('UNAVAILABLE', `pool '${req.pool}': too many concurrent block reservations; nothing was changed, retry`, { retryable: true });
        }
        throw e;
      }
    }
  }

  private async reserveInTx(tx: IpamTx, req: BlockReserveRequest): Promise<IpBlock> {
    const now = this.clock.now();
    // Shared, as allocate: pool.delete (exclusive) cannot remove the pool under a reserve.
    const pool = await tx.findPool(req.pool, 'share');
    if (!pool) throw poolNotFound(req.pool);
    const held = await tx.findBlock(pool.id, req.host, 'none');
    if (held) return toIpBlock(held, pool, await this.boundIn(tx, held));
    const candidates = await tx.freeBlockCandidates(pool.id, req.size, now, CANDIDATES);
    for (const first of candidates) {
      const last = first + req.size - 1;
      // Locked, then checked again: the candidates came from a read without locks, and a
      // rival may have taken an address of the range since (we waited for its commit).
      const rows = await tx.lockRange(first, last);
      if (rows.length !== req.size || !rows.every((r) => r.availableAt !== null && r.availableAt <= now)) continue;
      await tx.setAvailableAt(
        rows.map((r) => r.ip),
        BLOCKED_AT,
      );
      const block = await tx.insertBlock({ poolId: pool.id, host: req.host, first, last, size: req.size, createdAt: new Date(now) });
      const out = toIpBlock(block, pool, 0);
      await tx.audit(blockAudit('block.reserve', pool, null, out));
      return out;
    }
    if (candidates.length === CANDIDATES) throw new CandidatesTaken();
    const usage = await tx.usage(pool.id, now);
    throw new OrangeryError('POOL_EXHAUSTED', `pool '${pool.name}' has no aligned range of ${req.size} free addresses for a block`, {
      pool: pool.name,
      size: pool.size,
      blockSize: req.size,
      used: usage.used,
      quarantined: usage.quarantined,
      blocked: usage.blocked,
    });
  }

  async release(req: BlockRef, ctx: CallContext = {}): Promise<IpBlock> {
    return this.store.transaction(async (tx) => {
      const pool = await tx.findPool(req.pool, 'share');
      if (!pool) throw poolNotFound(req.pool);
      const block = await tx.findBlock(pool.id, req.host, 'update');
      if (!block) throw new OrangeryError('NOT_FOUND', `host '${req.host}' holds no block in pool '${req.pool}'`, { pool: req.pool, host: req.host });
      const rows = await tx.lockRange(block.first, block.last);
      const bound = rows.filter(isLive);
      if (bound.length > 0) {
        throw new OrangeryError(
          'POOL_IN_USE',
          `host '${req.host}''s block ${blockCidr(block)} of pool '${req.pool}' still has ${bound.length} address(es) bound to tasks`,
          { pool: req.pool, host: req.host, bound: bound.length, ips: bound.slice(0, 16).map((r) => intToIpv4(r.ip)) },
        );
      }
      // Every row of the range is written (not only those that change): on Galera that makes
      // a block.bind committed on another node conflict with this release.
      const byValue = new Map<number, number[]>();
      for (const r of rows) {
        const value = availableAtOutsideBlock(r, pool);
        byValue.set(value, [...(byValue.get(value) ?? []), r.ip]);
      }
      for (const [value, ips] of byValue) await tx.setAvailableAt(ips, value);
      await tx.deleteBlock(block.id);
      const out = toIpBlock(block, pool, 0);
      await tx.audit(blockAudit('block.release', pool, out, null));
      return out;
    }, ctx.actor);
  }

  async list(req: BlockListRequest): Promise<{ blocks: IpBlock[] }> {
    return this.store.read(async (tx) => {
      let poolId: number | undefined;
      if (req.pool !== undefined) {
        const pool = await tx.findPool(req.pool, 'none');
        if (!pool) return { blocks: [] };
        poolId = pool.id;
      }
      const blocks = await tx.listBlocks({ ...(poolId !== undefined ? { poolId } : {}), ...(req.host !== undefined ? { host: req.host } : {}) });
      const pools = new Map<number, PoolRecord>();
      const out: IpBlock[] = [];
      for (const b of blocks) {
        let pool = pools.get(b.poolId);
        if (!pool) {
          pool = await tx.findPoolById(b.poolId);
          if (!pool) continue;
          pools.set(pool.id, pool);
        }
        out.push(toIpBlock(b, pool, b.bound));
      }
      return { blocks: out };
    });
  }

  async bind(req: BlockBindRequest, ctx: CallContext = {}): Promise<Allocation> {
    const ip = ipv4ToInt(req.ip);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.store.transaction((tx) => this.bindInTx(tx, req, ip, ctx), ctx.actor);
      } catch (e) {
        // Another request gave this owner a live address first: rerunning sees it (and moves
        // the owner from it). Many binds of one owner at once (a task restarting while the
        // watch catches up) can lose several times; past the bound, a retryable answer, never
        // INTERNAL: nothing was changed by this request.
        if (e instanceof OwnerConflict && attempt < BIND_OWNER_CONFLICT_RERUNS) continue;
        if (e instanceof OwnerConflict) {
          throw new OrangeryError('UNAVAILABLE', `concurrent binds for ${instanceIdOf(req.owner)}: nothing was changed, retry`, { retryable: true });
        }
        throw e;
      }
    }
  }

  private async bindInTx(tx: IpamTx, req: BlockBindRequest, ip: number, ctx: CallContext): Promise<Allocation> {
    if (req.instanceId !== instanceIdOf(req.owner)) {
      throw invalidRequest('instanceId', `'${req.instanceId}' is not the owner's instance id '${instanceIdOf(req.owner)}'`);
    }
    const now = this.clock.now();
    const pool = await tx.findPool(req.pool, 'share');
    if (!pool) throw poolNotFound(req.pool);
    // Shared: block.release (exclusive) waits for this bind, then sees the address bound.
    const block = await tx.findBlock(pool.id, req.host, 'share');
    if (!block || ip < block.first || ip > block.last) throw notInBlock(req.ip, pool.name, req.host, block);
    // The owner's rows before the address's, as allocate locks them.
    const mine = await tx.lockOwnerAddresses(req.owner);
    const row = await tx.lockAddress(ip);
    if (!row) throw new OrangeryError('INTERNAL', `block ${blockCidr(block)} of pool '${pool.name}' has no row for ${req.ip}`);
    if (isLive(row) && !sameOwner(row.owner, req.owner)) {
      throw new OrangeryError('IP_TAKEN', `${req.ip} is bound to ${row.instanceId ?? 'another instance'} on '${row.host ?? '?'}'`, {
        ip: req.ip,
        owner: row.owner,
        ...(row.instanceId ? { instanceId: row.instanceId } : {}),
        ...(row.host ? { host: row.host } : {}),
      });
    }
    const next: AddressRecord = {
      ...row,
      state: 'bound',
      owner: req.owner,
      availableAt: null,
      releasedAt: null,
      instanceId: req.instanceId,
      backend: 'swarm',
      host: req.host,
    };
    if (isLive(row) && row.state === 'bound' && row.instanceId === next.instanceId && row.backend === 'swarm' && row.host === next.host) {
      return toAllocation(row, pool);
    }
    const audits: AuditEntry[] = [];
    const elsewhere = mine.find((r) => isLive(r) && r.ip !== ip);
    if (elsewhere) {
      // The owner's task moved (or was replaced) inside the swarm: its old address, in a
      // block, goes in the same transaction. An address outside blocks is another backend's.
      const oldBlock = await tx.findBlockAt(elsewhere.ip);
      const oldPool = elsewhere.poolId === pool.id ? pool : await tx.findPoolById(elsewhere.poolId);
      if (!oldBlock) throw ownerHasIp(req.owner, elsewhere, oldPool);
      if (!oldPool) throw poolVanished(elsewhere.poolId);
      const released = releasedRow(elsewhere, oldPool, now, true);
      // Written first: the unique live owner index sees the old address go before the new one.
      await tx.updateAddress(elsewhere.ip, released);
      audits.push(auditEntryOf('block.unbind', oldPool, elsewhere, toAllocation(released, oldPool), ctx, now));
    }
    await tx.updateAddress(ip, next);
    const after = toAllocation(next, pool);
    audits.push(auditEntryOf('block.bind', pool, row, after, ctx, now));
    await tx.auditAll(audits);
    return after;
  }

  async unbind(req: BlockUnbindRequest, ctx: CallContext = {}): Promise<Allocation> {
    const ip = ipv4ToInt(req.ip);
    return this.store.transaction(async (tx) => {
      const block = await tx.findBlockAt(ip);
      if (!block) throw new OrangeryError('NOT_IN_BLOCK', `${req.ip} is not inside any swarm node's block`, { ip: req.ip });
      const row = await tx.lockAddress(ip);
      if (!row || row.state === 'free') throw new OrangeryError('NOT_FOUND', `${req.ip} was never bound`, { ip: req.ip });
      const pool = await tx.findPoolById(row.poolId);
      if (!pool) throw poolVanished(row.poolId);
      if (row.state === 'released') return toAllocation(row, pool);
      // A late unbind (the task gone, its address since bound to another task) frees nothing:
      // the allocation as it stands, unchanged (idempotent no-op), its instanceId the holder's.
      if (req.instanceId !== undefined && row.instanceId !== req.instanceId) return toAllocation(row, pool);
      const released = releasedRow(row, pool, this.clock.now(), true);
      const after = toAllocation(released, pool);
      await tx.updateAddress(ip, released);
      await tx.audit(auditEntryOf('block.unbind', pool, row, after, ctx, this.clock.now()));
      return after;
    }, ctx.actor);
  }

  private async boundIn(tx: IpamTx, block: BlockRecord): Promise<number> {
    const [listed] = await tx.listBlocks({ poolId: block.poolId, host: block.host });
    return listed?.bound ?? 0;
  }
}

function blockAudit(action: 'block.reserve' | 'block.release', pool: PoolRecord, before: IpBlock | null, after: IpBlock | null): AuditEntry {
  // No event: the contract's events are about addresses; a block is ipam's own bookkeeping.
  return { action, ip: null, poolName: pool.name, before, after };
}

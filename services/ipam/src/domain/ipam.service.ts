import {
  buildEvent,
  instanceIdOf,
  invalidRequest,
  OrangeryError,
  type AddressLookupRequest,
  type AllocateRequest,
  type Allocation,
  type BindRequest,
  type Owner,
  type PoolCreateRequest,
  type Pool,
  type PoolWithUsage,
} from '@orangery/contracts';
import { intToIpv4, ipv4ToInt, macForIpv4 } from '@orangery/netaddr';
import { classifyIp, planPool } from './pool-plan';
import { OwnerConflict, type AddressRecord, type AuditEntry, type Clock, type IpamStore, type IpamTx, type PoolRecord } from './ports';

export const EVENT_SOURCE = 'orangery/ipam';

/** Context of the caller, for the audit trail and events. */
export interface CallContext {
  traceparent?: string;
  /** the caller's own name for itself (header Orangery-Actor), kept in the audit trail */
  actor?: string;
}

const sameOwner = (a: Owner | undefined, b: Owner): boolean =>
  a !== undefined && a.env === b.env && a.app === b.app && a.slot === b.slot;

const isLive = (r: AddressRecord): boolean => r.state === 'allocated' || r.state === 'bound';

/** The most recently released of `rows` (affinity: an owner gets its last address back). */
const latestReleased = (rows: readonly AddressRecord[]): AddressRecord | undefined =>
  rows
    .filter((r) => r.state === 'released')
    .sort((a, b) => (b.releasedAt?.getTime() ?? 0) - (a.releasedAt?.getTime() ?? 0))[0];

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
  constructor(
    private readonly store: IpamStore,
    private readonly clock: Clock,
  ) {}

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

  async listPools(): Promise<{ pools: PoolWithUsage[] }> {
    return this.store.read(async (tx) => {
      const pools = await tx.listPools();
      return { pools: await Promise.all(pools.map((p) => this.withUsage(tx, p))) };
    });
  }

  async deletePool(name: string, ctx: CallContext = {}): Promise<Record<string, never>> {
    return this.store.transaction(async (tx) => {
      const pool = await this.requirePool(tx, name, 'update');
      const usage = await tx.usage(pool.id, this.clock.now());
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
    const wanted = req.ip === undefined ? undefined : ipv4ToInt(req.ip);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.store.transaction((tx) => this.allocateInTx(tx, req.pool, req.owner, wanted, ctx), ctx.actor);
      } catch (e) {
        // Another request for the same owner committed first; running again returns its
        // address (idempotent) or OWNER_HAS_IP.
        if (e instanceof OwnerConflict && attempt < 3) continue;
        throw e;
      }
    }
  }

  private async allocateInTx(
    tx: IpamTx,
    poolName: string,
    owner: Owner,
    wanted: number | undefined,
    ctx: CallContext,
  ): Promise<Allocation> {
    const now = this.clock.now();
    const { pool, mine } = await tx.openAllocation(poolName, owner);
    if (!pool) throw new OrangeryError('POOL_NOT_FOUND', `pool '${poolName}' does not exist`, { pool: poolName });
    const live = mine.find(isLive);
    if (live) {
      if (live.poolId === pool.id && (wanted === undefined || wanted === live.ip)) return toAllocation(live, pool);
      const holding = live.poolId === pool.id ? pool : await tx.findPoolById(live.poolId);
      throw new OrangeryError(
        'OWNER_HAS_IP',
        `${instanceIdOf(owner)} already holds ${intToIpv4(live.ip)} in pool '${holding?.name ?? '?'}'; release it first`,
        { pool: holding?.name, ip: intToIpv4(live.ip) },
      );
    }
    let chosen: AddressRecord | undefined;
    if (wanted !== undefined) {
      chosen = await this.lockRequested(tx, pool, owner, wanted, now);
    } else {
      // Affinity: the owner's own most recently released address in this pool, cooldown or not.
      chosen = latestReleased(mine.filter((r) => r.poolId === pool.id));
      chosen ??= await tx.lockNextAvailable(pool.id, now);
      if (!chosen) {
        const usage = await tx.usage(pool.id, now);
        throw new OrangeryError('POOL_EXHAUSTED', `pool '${pool.name}' has no free address`, {
          pool: pool.name,
          size: pool.size,
          used: usage.used,
          quarantined: usage.quarantined,
          ...(usage.nextAvailableAt !== null ? { nextAvailableAt: new Date(usage.nextAvailableAt).toISOString() } : {}),
        });
      }
    }
    const after: AddressRecord = {
      ...chosen,
      state: 'allocated',
      owner,
      availableAt: null,
      releasedAt: null,
      instanceId: null,
      backend: null,
      host: null,
    };
    return this.commitChange(tx, 'allocate', pool, chosen, after, ctx);
  }

  private async lockRequested(tx: IpamTx, pool: PoolRecord, owner: Owner, ip: number, now: number): Promise<AddressRecord> {
    const ipText = intToIpv4(ip);
    const cls = classifyIp(planOf(pool), ip);
    if (cls === 'outside') {
      throw new OrangeryError('IP_OUT_OF_POOL', `${ipText} is not inside pool '${pool.name}' (${pool.cidrText})`, {
        ip: ipText,
        pool: pool.name,
        cidr: pool.cidrText,
      });
    }
    if (cls === 'reserved') {
      throw new OrangeryError('IP_RESERVED', `${ipText} is the network, broadcast, gateway or a reserved address of pool '${pool.name}'`, {
        ip: ipText,
        pool: pool.name,
      });
    }
    const row = await tx.lockAddress(ip);
    if (!row) throw new OrangeryError('INTERNAL', `pool '${pool.name}' has no row for ${ipText}`);
    if (isLive(row)) {
      throw new OrangeryError('IP_TAKEN', `${ipText} is held by another instance`, { ip: ipText, owner: row.owner });
    }
    if (row.state === 'released' && !sameOwner(row.owner, owner) && (row.availableAt ?? 0) > now) {
      throw new OrangeryError('IP_TAKEN', `${ipText} was released recently and is in cooldown for its former owner`, {
        ip: ipText,
        availableAt: new Date(row.availableAt ?? 0).toISOString(),
      });
    }
    return row;
  }

  async bind(req: BindRequest, ctx: CallContext = {}): Promise<Allocation> {
    const ip = ipv4ToInt(req.ip);
    return this.store.transaction(async (tx) => {
      const row = await tx.lockAddress(ip);
      if (!row || !isLive(row)) {
        throw new OrangeryError('NOT_FOUND', `${req.ip} is not allocated; allocate it before binding`, { ip: req.ip });
      }
      const pool = await this.requirePoolById(tx, row.poolId);
      if (row.state === 'bound' && row.instanceId === req.instanceId && row.backend === req.backend && row.host === req.host) {
        return toAllocation(row, pool);
      }
      const after: AddressRecord = { ...row, state: 'bound', instanceId: req.instanceId, backend: req.backend, host: req.host };
      return this.commitChange(tx, 'bind', pool, row, after, ctx);
    }, ctx.actor);
  }

  async release(req: AddressLookupRequest, ctx: CallContext = {}): Promise<Allocation> {
    const by = lookupKey(req);
    return this.store.transaction(async (tx) => {
      const row = await this.findForLookup(tx, by);
      const pool = await this.requirePoolById(tx, row.poolId);
      if (row.state === 'released') return toAllocation(row, pool);
      const now = this.clock.now();
      const after: AddressRecord = {
        ...row,
        state: 'released',
        availableAt: now + pool.cooldownSeconds * 1000,
        releasedAt: new Date(now),
        instanceId: null,
        backend: null,
        host: null,
      };
      return this.commitChange(tx, 'release', pool, row, after, ctx);
    }, ctx.actor);
  }

  async get(req: AddressLookupRequest): Promise<Allocation> {
    const by = lookupKey(req);
    return this.store.read(async (tx) => {
      const row = await this.findForLookup(tx, by);
      return toAllocation(row, await this.requirePoolById(tx, row.poolId));
    });
  }

  private async findForLookup(
    tx: IpamTx,
    by: { ip: number; text: string } | { owner: Owner },
  ): Promise<AddressRecord> {
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
    if (!pool) throw new OrangeryError('POOL_NOT_FOUND', `pool '${name}' does not exist`, { pool: name });
    return pool;
  }

  private async requirePoolById(tx: IpamTx, id: number): Promise<PoolRecord> {
    const pool = await tx.findPoolById(id);
    if (!pool) throw new OrangeryError('INTERNAL', `pool #${id} vanished under a live address`);
    return pool;
  }

  private async withUsage(tx: IpamTx, pool: PoolRecord): Promise<PoolWithUsage> {
    const u = await tx.usage(pool.id, this.clock.now());
    return { ...toPool(pool), size: pool.size, used: u.used, quarantined: u.quarantined, free: pool.size - u.used - u.quarantined };
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
    await tx.audit(this.change(action, pool, before, after, ctx));
    return after;
  }

  private change(
    action: 'allocate' | 'bind' | 'release',
    pool: PoolRecord,
    before: AddressRecord,
    after: Allocation,
    ctx: CallContext,
  ): AuditEntry {
    const what = action === 'allocate' ? 'allocated' : action === 'bind' ? 'bound' : 'released';
    return {
      action,
      ip: before.ip,
      poolName: pool.name,
      before: before.state === 'free' ? null : toAllocation(before, pool),
      after,
      event: buildEvent({
        area: 'ip',
        what,
        source: EVENT_SOURCE,
        subject: after.ip,
        data: after,
        time: new Date(this.clock.now()),
        ...(ctx.traceparent ? { traceparent: ctx.traceparent } : {}),
      }),
    };
  }
}

function lookupKey(req: AddressLookupRequest): { ip: number; text: string } | { owner: Owner } {
  if (req.ip !== undefined && req.owner !== undefined) throw invalidRequest('ip', 'give either ip or owner, not both');
  if (req.ip !== undefined) return { ip: ipv4ToInt(req.ip), text: req.ip };
  if (req.owner !== undefined) return { owner: req.owner };
  throw invalidRequest('ip', 'is required (or owner)');
}

function planOf(pool: PoolRecord) {
  return planPool({
    name: pool.name,
    cidr: pool.cidrText,
    gateway: intToIpv4(pool.gateway),
    vlan: pool.vlan,
    reserved: pool.reserved,
    cooldownSeconds: pool.cooldownSeconds,
  });
}

export function toPool(p: PoolRecord): Pool {
  return {
    name: p.name,
    cidr: p.cidrText,
    gateway: intToIpv4(p.gateway),
    vlan: p.vlan,
    reserved: p.reserved,
    cooldownSeconds: p.cooldownSeconds,
    prefixLength: p.prefixLength,
    createdAt: p.createdAt.toISOString(),
  };
}

export function toAllocation(r: AddressRecord, pool: PoolRecord): Allocation {
  if (!r.owner) throw new OrangeryError('INTERNAL', `address ${intToIpv4(r.ip)} has no owner`);
  const a: Allocation = {
    ip: intToIpv4(r.ip),
    pool: pool.name,
    prefixLength: pool.prefixLength,
    gateway: intToIpv4(pool.gateway),
    vlan: pool.vlan,
    mac: macForIpv4(r.ip),
    owner: { env: r.owner.env, app: r.owner.app, slot: r.owner.slot },
    state: r.state === 'free' ? 'released' : r.state,
  };
  if (r.instanceId) a.instanceId = r.instanceId;
  if (r.backend) a.backend = r.backend;
  if (r.host) a.host = r.host;
  if (r.state === 'released' && r.releasedAt) a.releasedAt = r.releasedAt.toISOString();
  return a;
}

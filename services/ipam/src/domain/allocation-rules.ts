import { buildEvent, instanceIdOf, OrangeryError, type Allocation, type Owner, type Pool } from '@orangery/contracts';
import { intToIpv4, macForIpv4 } from '@orangery/netaddr';
import { classifyIp, planPool } from './pool-plan';
import { BLOCKED_AT, type AddressRecord, type AuditEntry, type BlockRecord, type PoolRecord, type PoolUsage } from './ports';

/**
 * The allocation rules of CONTRACT.md as pure functions over rows, shared by the single
 * requests and the batches (ipam.service.ts, ipam-batch.ts): one wording of every error,
 * one way to build an allocation, its audit row and its event.
 */

export const EVENT_SOURCE = 'orangery/ipam';

/** Context of the caller, for the audit trail and events. */
export interface CallContext {
  traceparent?: string;
  /** the caller's own name for itself (header Orangery-Actor), kept in the audit trail */
  actor?: string;
  /**
   * group commit: the audit row's actor for this change alone (null: none), where one
   * transaction serves several callers; unset, the transaction's actor applies
   */
  itemActor?: string | null;
}

export const sameOwner = (a: Owner | undefined, b: Owner): boolean => a !== undefined && a.env === b.env && a.app === b.app && a.slot === b.slot;

export const isLive = (r: AddressRecord): boolean => r.state === 'allocated' || r.state === 'bound';

/** An address inside a swarm node's block that no task holds: never handed out by allocate. */
export const isBlockedRow = (r: AddressRecord): boolean => r.availableAt === BLOCKED_AT;

/** The CIDR text of a block (sizes are powers of two, blocks aligned). */
export const blockCidr = (b: Pick<BlockRecord, 'first' | 'size'>): string => `${intToIpv4(b.first)}/${32 - Math.log2(b.size)}`;

/** `allocate` with an `ip` inside a swarm node's block (the block's host named when known). */
export const ipInBlock = (ipText: string, block: BlockRecord | undefined, poolName: string): OrangeryError =>
  new OrangeryError(
    'IP_TAKEN',
    block
      ? `${ipText} is inside swarm node '${block.host}''s address block ${blockCidr(block)} of pool '${poolName}': only that node's tasks use it`
      : `${ipText} is inside a swarm node's address block of pool '${poolName}' (orangery.ipam.block.list names it)`,
    { ip: ipText, pool: poolName, ...(block ? { block: { host: block.host, cidr: blockCidr(block) } } : {}) },
  );

/** The most recently released of `rows` (affinity: an owner gets its last address back). */
export const latestReleased = (rows: readonly AddressRecord[]): AddressRecord | undefined =>
  rows.filter((r) => r.state === 'released').sort((a, b) => (b.releasedAt?.getTime() ?? 0) - (a.releasedAt?.getTime() ?? 0))[0];

export const poolNotFound = (name: string): OrangeryError => new OrangeryError('POOL_NOT_FOUND', `pool '${name}' does not exist`, { pool: name });

/** `owner` holds `live` (in pool `holding`) and asked for another pool or address. */
export const ownerHasIp = (owner: Owner, live: AddressRecord, holding: PoolRecord | undefined): OrangeryError =>
  new OrangeryError('OWNER_HAS_IP', `${instanceIdOf(owner)} already holds ${intToIpv4(live.ip)} in pool '${holding?.name ?? '?'}'; release it first`, {
    pool: holding?.name,
    ip: intToIpv4(live.ip),
  });

/**
 * `owner`'s live address `live` is a swarm task's, inside node `block.host`'s block: allocate
 * never returns it (Docker on that node may hand it to another task once the task goes).
 */
export const ownerHasBlockIp = (owner: Owner, live: AddressRecord, holding: PoolRecord | undefined, block: BlockRecord): OrangeryError =>
  new OrangeryError(
    'OWNER_HAS_IP',
    `${instanceIdOf(owner)} already holds ${intToIpv4(live.ip)} in pool '${holding?.name ?? '?'}', held by a swarm task on node '${block.host}' inside its block ${blockCidr(block)}; the swarm-agent unbinds it when the task goes`,
    { pool: holding?.name, ip: intToIpv4(live.ip), block: { host: block.host, cidr: blockCidr(block) } },
  );

/** bind of an address that is not allocated or bound. */
export const notBindable = (ipText: string): OrangeryError =>
  new OrangeryError('NOT_FOUND', `${ipText} is not allocated; allocate it before binding`, { ip: ipText });

export const poolVanished = (id: number): OrangeryError => new OrangeryError('INTERNAL', `pool #${id} vanished under a live address`);

/** A bind that changes nothing (same instance, backend and host) writes nothing and publishes nothing. */
export const bindChangesNothing = (row: AddressRecord, req: { instanceId: string; backend: string; host: string }): boolean =>
  row.state === 'bound' && row.instanceId === req.instanceId && row.backend === req.backend && row.host === req.host;

export const poolExhausted = (pool: PoolRecord, usage: PoolUsage): OrangeryError =>
  new OrangeryError('POOL_EXHAUSTED', `pool '${pool.name}' has no free address`, {
    pool: pool.name,
    size: pool.size,
    used: usage.used,
    quarantined: usage.quarantined,
    blocked: usage.blocked,
    ...(usage.nextAvailableAt !== null ? { nextAvailableAt: new Date(usage.nextAvailableAt).toISOString() } : {}),
  });

/** An `ip` asked for explicitly must be an allocatable address of `pool` (checked before any row is read). */
export function checkRequestable(pool: PoolRecord, ip: number): void {
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
}

/** The locked row of an explicitly requested `ip`, if `owner` may take it now. */
export function checkRequestedRow(
  pool: PoolRecord,
  owner: Owner,
  ip: number,
  row: AddressRecord | undefined,
  now: number,
  /** the block `row` is in, when it is blocked and the caller looked it up (names its host) */
  block?: BlockRecord,
): AddressRecord {
  const ipText = intToIpv4(ip);
  if (!row) throw new OrangeryError('INTERNAL', `pool '${pool.name}' has no row for ${ipText}`);
  // Before the cooldown rule: a blocked address's former owner has no claim on it either.
  if (isBlockedRow(row)) throw ipInBlock(ipText, block, pool.name);
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

/** `chosen` as `owner`'s freshly allocated address. */
export const allocatedTo = (chosen: AddressRecord, owner: Owner): AddressRecord => ({
  ...chosen,
  state: 'allocated',
  owner,
  availableAt: null,
  releasedAt: null,
  instanceId: null,
  backend: null,
  host: null,
});

/** What each address change is published as (ip.<what>): block.bind binds, block.unbind releases. */
const EVENT_OF = {
  allocate: 'allocated',
  bind: 'bound',
  release: 'released',
  'block.bind': 'bound',
  'block.unbind': 'released',
} as const;

/** The audit row of an address change, carrying its CloudEvent (transactional outbox). */
export function auditEntryOf(
  action: keyof typeof EVENT_OF,
  pool: PoolRecord,
  before: AddressRecord,
  after: Allocation,
  ctx: CallContext,
  nowMs: number,
): AuditEntry {
  const what = EVENT_OF[action];
  return {
    action,
    ip: before.ip,
    poolName: pool.name,
    before: before.state === 'free' ? null : toAllocation(before, pool),
    after,
    // a grouped single's own caller (a group's transaction serves several)
    ...(ctx.itemActor !== undefined ? { actor: ctx.itemActor } : {}),
    event: buildEvent({
      area: 'ip',
      what,
      source: EVENT_SOURCE,
      subject: after.ip,
      data: after,
      time: new Date(nowMs),
      ...(ctx.traceparent ? { traceparent: ctx.traceparent } : {}),
    }),
  };
}

export function planOf(pool: PoolRecord) {
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

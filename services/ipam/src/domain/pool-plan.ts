import { invalidRequest, type PoolCreateRequest } from '@orangery/contracts';
import {
  AddressError,
  cidrContains,
  hasNetworkAndBroadcast,
  ipv4ToInt,
  mergeRanges,
  parseCidr,
  parseRange,
  rangeLength,
  subtractRanges,
  type Cidr,
  type Range,
} from '@orangery/netaddr';
import type { PoolRecord } from './ports';

/**
 * The largest pool this service supports: a /16 (65,536 addresses). Every allocatable
 * address is one row, created with the pool, so that picking a free address is one index
 * range scan whatever the pool's size; larger pools would make pool creation the slow part.
 */
export const LARGEST_POOL_PREFIX = 16;
export const DEFAULT_COOLDOWN_SECONDS = 300;

export interface PoolSpec {
  name: string;
  cidr: Cidr;
  gateway: number;
  gatewayText: string;
  vlan: number;
  /** as given, normalized (trimmed), for display */
  reserved: string[];
  cooldownSeconds: number;
}

export interface PoolPlan extends PoolSpec {
  /** never handed out: network and broadcast (not in /31, /32), gateway, reserved */
  excluded: Range[];
  /** what can be handed out, ascending */
  allocatable: Range[];
  size: number;
}

export type IpClass = 'outside' | 'reserved' | 'allocatable';

/**
 * Validates the semantics of a pool.create request (the schema has checked its shape) and
 * computes what the pool hands out. Throws INVALID_REQUEST naming the field.
 */
export function planPool(req: PoolCreateRequest): PoolPlan {
  let cidr: Cidr;
  try {
    cidr = parseCidr(req.cidr, 8, 32);
  } catch (e) {
    throw invalidRequest('cidr', (e as AddressError).reason ?? String(e));
  }
  if (cidr.prefixLength < LARGEST_POOL_PREFIX) {
    throw invalidRequest(
      'cidr',
      `pools larger than /${LARGEST_POOL_PREFIX} (65,536 addresses) are not supported; split ${cidr.text} into /${LARGEST_POOL_PREFIX} pools`,
      { limit: `/${LARGEST_POOL_PREFIX}` },
    );
  }
  const gateway = ipv4ToInt(req.gateway);
  if (!cidrContains(cidr, gateway)) throw invalidRequest('gateway', `${req.gateway} is not inside ${cidr.text}`);
  const edges = hasNetworkAndBroadcast(cidr) ? [cidr.first, cidr.last] : [];
  if (edges.includes(gateway)) {
    throw invalidRequest('gateway', `${req.gateway} is the ${gateway === cidr.first ? 'network' : 'broadcast'} address of ${cidr.text}`);
  }
  const reservedText = (req.reserved ?? []).map((r) => r.trim());
  const reserved: Range[] = reservedText.map((text, index) => {
    let r: Range;
    try {
      r = parseRange(text);
    } catch (e) {
      throw invalidRequest('reserved', `entry ${index} ('${text}'): ${(e as AddressError).reason ?? String(e)}`, { index });
    }
    if (!cidrContains(cidr, r.start) || !cidrContains(cidr, r.end)) {
      throw invalidRequest('reserved', `entry ${index} ('${text}') is not inside ${cidr.text}`, { index });
    }
    return r;
  });
  const excluded = mergeRanges([...edges.map((e) => ({ start: e, end: e })), { start: gateway, end: gateway }, ...reserved]);
  const allocatable = subtractRanges({ start: cidr.first, end: cidr.last }, excluded);
  return {
    name: req.name,
    cidr,
    gateway,
    gatewayText: req.gateway,
    vlan: req.vlan ?? 0,
    reserved: reservedText,
    cooldownSeconds: req.cooldownSeconds ?? DEFAULT_COOLDOWN_SECONDS,
    excluded,
    allocatable,
    size: allocatable.reduce((n, r) => n + rangeLength(r), 0),
  };
}

export function classifyIp(plan: Pick<PoolPlan, 'cidr' | 'excluded'>, ip: number): IpClass {
  if (!cidrContains(plan.cidr, ip)) return 'outside';
  return plan.excluded.some((r) => ip >= r.start && ip <= r.end) ? 'reserved' : 'allocatable';
}

/** The stored form of a planned pool, once the store has given it an id. */
export function poolRecordOf(plan: PoolPlan, id: number, createdAt: Date): PoolRecord {
  return {
    id,
    name: plan.name,
    cidrText: plan.cidr.text,
    prefixLength: plan.cidr.prefixLength,
    first: plan.cidr.first,
    last: plan.cidr.last,
    gateway: plan.gateway,
    vlan: plan.vlan,
    reserved: [...plan.reserved],
    cooldownSeconds: plan.cooldownSeconds,
    size: plan.size,
    createdAt: new Date(createdAt),
  };
}

import ipaddr from 'ipaddr.js';

/**
 * IPv4 address math. Parsing and validation come from ipaddr.js; ranges are plain uint32
 * integers because pools are stored and scanned as integer ranges (index-friendly), and
 * ipaddr.js has no range arithmetic.
 */
export class AddressError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'AddressError';
  }
}

export interface Cidr {
  /** canonical text, e.g. 198.18.0.0/24 */
  text: string;
  prefixLength: number;
  /** first and last address of the block (network and broadcast for /0../30) */
  first: number;
  last: number;
}

export function isStrictIpv4(text: string): boolean {
  return ipaddr.IPv4.isValidFourPartDecimal(text);
}

export function ipv4ToInt(text: string): number {
  if (!isStrictIpv4(text)) throw new AddressError(`'${text}' is not a dotted-quad IPv4 address`);
  const b = ipaddr.IPv4.parse(text).octets;
  return ((b[0]! << 24) >>> 0) + (b[1]! << 16) + (b[2]! << 8) + b[3]!;
}

export function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseCidr(text: string, minPrefix = 0, maxPrefix = 32): Cidr {
  const slash = text.indexOf('/');
  if (slash < 0) throw new AddressError(`'${text}' is not in a.b.c.d/n form`);
  const addr = text.slice(0, slash);
  const lenText = text.slice(slash + 1);
  if (!isStrictIpv4(addr)) throw new AddressError(`'${addr}' is not a dotted-quad IPv4 address`);
  if (!/^(0|[1-9][0-9]?)$/.test(lenText) || Number(lenText) > 32) {
    throw new AddressError(`prefix length '${lenText}' must be an integer from 0 to 32`);
  }
  const prefixLength = Number(lenText);
  if (prefixLength < minPrefix || prefixLength > maxPrefix) {
    throw new AddressError(`prefix length /${prefixLength} is outside /${minPrefix}../${maxPrefix}`);
  }
  const first = ipv4ToInt(addr);
  const size = 2 ** (32 - prefixLength);
  if (first % size !== 0) {
    const network = intToIpv4(first - (first % size));
    throw new AddressError(`host bits are set: the network of ${text} is ${network}/${prefixLength}`);
  }
  return { text: `${addr}/${prefixLength}`, prefixLength, first, last: first + size - 1 };
}

export const cidrSize = (c: Cidr): number => c.last - c.first + 1;
export const cidrContains = (c: Cidr, ip: number): boolean => ip >= c.first && ip <= c.last;
export const cidrsOverlap = (a: Cidr, b: Cidr): boolean => a.first <= b.last && b.first <= a.last;

/** RFC 3021: /31 and /32 have no network or broadcast address. */
export const hasNetworkAndBroadcast = (c: Cidr): boolean => c.prefixLength <= 30;

export function netmaskOf(prefixLength: number): string {
  return ipaddr.IPv4.subnetMaskFromPrefixLength(prefixLength).toString();
}

export interface Range {
  start: number;
  end: number;
}

/** Parses `a.b.c.d` or the inclusive range `a.b.c.d-e.f.g.h` (a <= b). */
export function parseRange(text: string): Range {
  const dash = text.indexOf('-');
  if (dash < 0) {
    const ip = ipv4ToInt(text.trim());
    return { start: ip, end: ip };
  }
  const start = ipv4ToInt(text.slice(0, dash).trim());
  const end = ipv4ToInt(text.slice(dash + 1).trim());
  if (start > end) throw new AddressError(`range '${text}' ends before it starts`);
  return { start, end };
}

/** Sorts and merges overlapping or adjacent ranges. */
export function mergeRanges(ranges: readonly Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end + 1) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out;
}

/** The ranges of `within` not covered by `holes` (holes merged first). */
export function subtractRanges(within: Range, holes: readonly Range[]): Range[] {
  const out: Range[] = [];
  let cursor = within.start;
  for (const h of mergeRanges(holes)) {
    if (h.end < cursor || h.start > within.end) continue;
    if (h.start > cursor) out.push({ start: cursor, end: h.start - 1 });
    cursor = Math.max(cursor, h.end + 1);
    if (cursor > within.end) break;
  }
  if (cursor <= within.end) out.push({ start: cursor, end: within.end });
  return out;
}

export const rangeLength = (r: Range): number => r.end - r.start + 1;

/**
 * The MAC of an IPv4 address: 02:4f followed by the four address bytes. 0x02 in the first
 * octet means locally administered and unicast (IEEE 802 U/L and I/G bits); 0x4f ('O') keeps
 * us apart from Docker's own 02:42 addresses. Pools never overlap, so one IP is one MAC
 * platform-wide, in a VM or in a container.
 */
export function macForIpv4(ip: string | number): string {
  const n = typeof ip === 'number' ? ip : ipv4ToInt(ip);
  const bytes = [0x02, 0x4f, n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** The cidr (`a.b.c.d/n`, host bits cleared) that `ip` belongs to at `prefixLength`. */
export function cidrOf(ip: string, prefixLength: number): string {
  const n = ipv4ToInt(ip);
  const size = 2 ** (32 - prefixLength);
  return `${intToIpv4(n - (n % size))}/${prefixLength}`;
}

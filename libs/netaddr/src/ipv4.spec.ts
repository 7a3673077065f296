import { describe, it, expect } from 'vitest';
import {
  AddressError,
  cidrContains,
  cidrSize,
  cidrsOverlap,
  hasNetworkAndBroadcast,
  intToIpv4,
  ipv4ToInt,
  isStrictIpv4,
  macForIpv4,
  mergeRanges,
  netmaskOf,
  parseCidr,
  parseRange,
  rangeLength,
  subtractRanges,
  type Range,
} from './ipv4';

/** Dotted quad of an integer, computed independently of intToIpv4. */
const dotted = (n: number): string => [2 ** 24, 2 ** 16, 2 ** 8, 1].map((d) => Math.floor(n / d) % 256).join('.');

const r = (start: number, end: number = start): Range => ({ start, end });

/** The AddressError `fn` throws (fails the test when it throws nothing or something else). */
function addressErrorOf(fn: () => unknown): AddressError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(AddressError);
    return e as AddressError;
  }
  throw new Error('expected an AddressError, nothing was thrown');
}

describe('ipv4ToInt / intToIpv4', () => {
  it.each([
    ['0.0.0.0', 0],
    ['0.0.0.1', 1],
    ['0.0.1.0', 256],
    ['1.0.0.0', 16_777_216],
    ['10.0.0.0', 167_772_160],
    ['127.0.0.1', 2_130_706_433],
    ['128.0.0.0', 2_147_483_648],
    ['198.18.0.2', 3_323_068_418],
    ['255.255.255.254', 4_294_967_294],
    ['255.255.255.255', 4_294_967_295],
  ])('%s is the unsigned integer %i and converts back', (text, n) => {
    expect(ipv4ToInt(text)).toBe(n);
    expect(intToIpv4(n)).toBe(text);
  });

  it('round-trips addresses across the whole space, including the sign bit', () => {
    for (let n = 0; n < 2 ** 32; n += 16_777_259) {
      expect(ipv4ToInt(intToIpv4(n))).toBe(n);
      expect(intToIpv4(n)).toBe(dotted(n));
    }
  });

  it.each(['', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.04', '256.1.1.1', '1.2.3.-1', ' 1.2.3.4', '1.2.3.4 ', '0x1.2.3.4', 'a.b.c.d', '1..3.4', '::1'])(
    "refuses '%s' as not a dotted quad",
    (text) => {
      expect(isStrictIpv4(text)).toBe(false);
      expect(addressErrorOf(() => ipv4ToInt(text)).reason).toContain('dotted-quad');
    },
  );
});

describe('parseCidr', () => {
  const prefixes = Array.from({ length: 25 }, (_, i) => i + 8);

  it.each(prefixes)('10.0.0.0/%i spans 2^(32-n) addresses from its network to its last address', (n) => {
    const c = parseCidr(`10.0.0.0/${n}`);
    const size = 2 ** (32 - n);
    expect(c).toEqual({ text: `10.0.0.0/${n}`, prefixLength: n, first: 167_772_160, last: 167_772_160 + size - 1 });
    expect(cidrSize(c)).toBe(size);
  });

  it.each(prefixes)('the /%i holding 198.18.255.255 starts at its aligned network', (n) => {
    const size = 2 ** (32 - n);
    const network = Math.floor(ipv4ToInt('198.18.255.255') / size) * size;
    const c = parseCidr(`${dotted(network)}/${n}`);
    expect(c.first).toBe(network);
    expect(c.last).toBe(network + size - 1);
    expect(intToIpv4(c.last)).toBe(dotted(network + size - 1));
  });

  it.each([
    ['198.18.0.0/24', '198.18.0.0', '198.18.0.255'],
    ['198.18.0.4/30', '198.18.0.4', '198.18.0.7'],
    ['198.18.0.6/31', '198.18.0.6', '198.18.0.7'],
    ['198.18.0.7/32', '198.18.0.7', '198.18.0.7'],
    ['0.0.0.0/0', '0.0.0.0', '255.255.255.255'],
    ['255.255.255.255/32', '255.255.255.255', '255.255.255.255'],
  ])('%s runs from %s to %s', (text, first, last) => {
    const c = parseCidr(text);
    expect(intToIpv4(c.first)).toBe(first);
    expect(intToIpv4(c.last)).toBe(last);
    expect(c.text).toBe(text);
  });

  it.each([
    ['198.18.0.1/24', '198.18.0.0/24'],
    ['198.18.0.255/24', '198.18.0.0/24'],
    ['10.1.0.0/8', '10.0.0.0/8'],
    ['198.18.0.5/30', '198.18.0.4/30'],
    ['198.18.0.7/31', '198.18.0.6/31'],
    ['198.19.0.0/15', '198.18.0.0/15'],
  ])('refuses %s because host bits are set, naming the network %s', (text, network) => {
    const { reason } = addressErrorOf(() => parseCidr(text));
    expect(reason).toContain('host bits');
    expect(reason).toContain(network);
  });

  it.each([
    '1.2.3/24',
    '1.2.3.4/33',
    '01.2.3.0/24',
    '1.2.3.0/',
    '1.2.3.0/024',
    ' 1.2.3.0/24',
    '1.2.3.0/24 ',
    '1.2.3.0',
    '1.2.3.0/-1',
    '1.2.3.0/2.5',
    '1.2.3.0/x',
    '1.2.3.0/24/1',
    '256.0.0.0/8',
    '/24',
    '',
  ])("refuses the malformed cidr '%s'", (text) => {
    expect(() => parseCidr(text)).toThrow(AddressError);
  });

  it.each([
    ['10.0.0.0/7', 8, 32],
    ['10.0.0.0/25', 8, 24],
    ['0.0.0.0/0', 1, 32],
  ])('refuses %s outside the allowed prefixes /%i../%i, saying so', (text, min, max) => {
    expect(addressErrorOf(() => parseCidr(text, min, max)).reason).toContain(`/${min}../${max}`);
  });

  it.each([
    ['10.0.0.0/8', 8, 32],
    ['10.0.0.0/32', 8, 32],
  ])('accepts %s at the edge of /%i../%i', (text, min, max) => {
    expect(parseCidr(text, min, max).text).toBe(text);
  });
});

describe('cidr helpers', () => {
  const c24 = parseCidr('198.18.0.0/24');

  it.each([
    ['198.17.255.255', false],
    ['198.18.0.0', true],
    ['198.18.0.128', true],
    ['198.18.0.255', true],
    ['198.18.1.0', false],
  ])('198.18.0.0/24 contains %s: %s', (ip, inside) => {
    expect(cidrContains(c24, ipv4ToInt(ip))).toBe(inside);
  });

  it.each([
    ['198.18.0.0/24', '198.18.0.0/24', true],
    ['198.18.0.0/24', '198.18.0.128/25', true],
    ['198.18.0.0/16', '198.18.200.0/24', true],
    ['198.18.0.0/24', '198.18.1.0/24', false],
    ['198.18.0.254/31', '198.18.1.0/31', false],
    ['198.18.0.255/32', '198.18.0.0/24', true],
  ])('%s and %s overlap: %s', (a, b, overlap) => {
    expect(cidrsOverlap(parseCidr(a), parseCidr(b))).toBe(overlap);
    expect(cidrsOverlap(parseCidr(b), parseCidr(a))).toBe(overlap);
  });

  it.each([
    [8, true],
    [24, true],
    [29, true],
    [30, true],
    [31, false],
    [32, false],
  ])('a /%i has a network and broadcast address: %s', (n, expected) => {
    expect(hasNetworkAndBroadcast(parseCidr(`10.0.0.0/${n}`))).toBe(expected);
  });

  it.each([
    [0, '0.0.0.0'],
    [1, '128.0.0.0'],
    [8, '255.0.0.0'],
    [16, '255.255.0.0'],
    [23, '255.255.254.0'],
    [24, '255.255.255.0'],
    [30, '255.255.255.252'],
    [31, '255.255.255.254'],
    [32, '255.255.255.255'],
  ])('the netmask of /%i is %s', (n, mask) => {
    expect(netmaskOf(n)).toBe(mask);
  });
});

describe('parseRange', () => {
  const ip = ipv4ToInt;

  it.each([
    ['198.18.0.5', r(ip('198.18.0.5'))],
    ['  198.18.0.5 ', r(ip('198.18.0.5'))],
    ['198.18.0.10-198.18.0.20', r(ip('198.18.0.10'), ip('198.18.0.20'))],
    ['198.18.0.10 - 198.18.0.20', r(ip('198.18.0.10'), ip('198.18.0.20'))],
    ['198.18.0.7-198.18.0.7', r(ip('198.18.0.7'))],
    ['198.18.0.250-198.18.1.3', r(ip('198.18.0.250'), ip('198.18.1.3'))],
  ])("parses '%s'", (text, expected) => {
    expect(parseRange(text)).toEqual(expected);
  });

  it.each([
    ['198.18.0.6', 1],
    ['198.18.0.10-198.18.0.20', 11],
    ['0.0.0.0-255.255.255.255', 2 ** 32],
  ])("'%s' holds %i address(es)", (text, n) => {
    expect(rangeLength(parseRange(text))).toBe(n);
  });

  it('refuses a range that ends before it starts', () => {
    expect(addressErrorOf(() => parseRange('198.18.0.20-198.18.0.10')).reason).toContain('ends before it starts');
  });

  it.each(['', 'x', '198.18.0.300', '198.18.0.5-', '-198.18.0.5', '198.18.0.1-198.18.0.2-198.18.0.3', '198.18.0.0/24'])(
    "refuses the malformed range '%s'",
    (text) => {
      expect(() => parseRange(text)).toThrow(AddressError);
    },
  );
});

describe('mergeRanges', () => {
  it.each<[string, Range[], Range[]]>([
    ['nothing', [], []],
    ['a single range', [r(1, 5)], [r(1, 5)]],
    ['disjoint ranges, sorted', [r(20, 30), r(1, 5)], [r(1, 5), r(20, 30)]],
    ['overlapping ranges', [r(1, 5), r(3, 8)], [r(1, 8)]],
    ['adjacent ranges', [r(6, 8), r(1, 5)], [r(1, 8)]],
    ['ranges one apart', [r(1, 5), r(7, 8)], [r(1, 5), r(7, 8)]],
    ['a range inside another', [r(1, 10), r(3, 4)], [r(1, 10)]],
    ['duplicates', [r(4), r(4), r(4)], [r(4)]],
    ['a chain of single addresses', [r(3), r(1), r(2), r(9)], [r(1, 3), r(9)]],
    ['a long range swallowing later ones', [r(1, 100), r(5, 6), r(50, 120), r(122)], [r(1, 120), r(122)]],
    ['the top of the address space', [r(2 ** 32 - 1), r(2 ** 32 - 2)], [r(2 ** 32 - 2, 2 ** 32 - 1)]],
  ])('merges %s', (_what, input, expected) => {
    expect(mergeRanges(input)).toEqual(expected);
  });

  it('leaves its input untouched', () => {
    const input = [r(6, 8), r(1, 5)];
    mergeRanges(input);
    expect(input).toEqual([r(6, 8), r(1, 5)]);
  });
});

describe('subtractRanges', () => {
  const within = r(10, 20);

  it.each<[string, Range, Range[], Range[]]>([
    ['no holes', within, [], [r(10, 20)]],
    ['a hole in the middle', within, [r(12, 14)], [r(10, 11), r(15, 20)]],
    ['a hole at the start', within, [r(10)], [r(11, 20)]],
    ['a hole at the end', within, [r(20)], [r(10, 19)]],
    ['holes at both ends', within, [r(20), r(10)], [r(11, 19)]],
    ['a hole covering everything', within, [r(0, 30)], []],
    ['a hole exactly the range', within, [r(10, 20)], []],
    ['holes entirely outside', within, [r(0, 5), r(25, 30), r(9), r(21)], [r(10, 20)]],
    ['a hole overlapping the start', within, [r(5, 12)], [r(13, 20)]],
    ['a hole overlapping the end', within, [r(18, 25)], [r(10, 17)]],
    ['unsorted overlapping holes', within, [r(15, 16), r(12, 13), r(13, 14)], [r(10, 11), r(17, 20)]],
    ['adjacent holes', within, [r(12), r(13)], [r(10, 11), r(14, 20)]],
    ['holes leaving single addresses', within, [r(11), r(13, 19)], [r(10), r(12), r(20)]],
    ['a single address removed from itself', r(7), [r(7)], []],
    ['a single address with a hole elsewhere', r(7), [r(8)], [r(7)]],
    ['the whole space less its last address', r(0, 2 ** 32 - 1), [r(2 ** 32 - 1)], [r(0, 2 ** 32 - 2)]],
  ])('handles %s', (_what, range, holes, expected) => {
    expect(subtractRanges(range, holes)).toEqual(expected);
  });
});

describe('macForIpv4', () => {
  it.each([
    ['198.18.0.2', '02:4f:c6:12:00:02'],
    ['0.0.0.0', '02:4f:00:00:00:00'],
    ['10.1.2.3', '02:4f:0a:01:02:03'],
    ['255.255.255.255', '02:4f:ff:ff:ff:ff'],
  ])('the MAC of %s is %s', (ip, mac) => {
    expect(macForIpv4(ip)).toBe(mac);
    expect(macForIpv4(ipv4ToInt(ip))).toBe(mac);
  });

  it.each(['0.0.0.0', '10.0.0.1', '198.18.0.2', '203.0.113.77', '255.255.255.255'])('the MAC of %s is locally administered and unicast', (ip) => {
    const mac = macForIpv4(ip);
    expect(mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    const firstOctet = parseInt(mac.slice(0, 2), 16);
    expect(firstOctet & 0x02).toBe(0x02);
    expect(firstOctet & 0x01).toBe(0);
  });

  it('is stable: the same IP always has the same MAC', () => {
    expect(macForIpv4('198.18.3.4')).toBe(macForIpv4('198.18.3.4'));
  });

  it('gives distinct IPs distinct MACs', () => {
    const base = ipv4ToInt('198.18.0.0');
    const macs = new Set(Array.from({ length: 1024 }, (_, i) => macForIpv4(base + i)));
    expect(macs.size).toBe(1024);
  });

  it('refuses a string that is not an IPv4 address', () => {
    expect(() => macForIpv4('198.18.0')).toThrow(AddressError);
  });
});

import { describe, it, expect } from 'vitest';
import { OrangeryError, type PoolCreateRequest } from '@orangery/contracts';
import { intToIpv4, ipv4ToInt } from '@orangery/netaddr';
import { classifyIp, DEFAULT_COOLDOWN_SECONDS, LARGEST_POOL_PREFIX, planPool, type PoolPlan } from './pool-plan';

const poolReq = (over: Partial<PoolCreateRequest> = {}): PoolCreateRequest => ({
  name: 'prod-net',
  cidr: '198.18.0.0/24',
  gateway: '198.18.0.1',
  ...over,
});

/** The ranges of a plan as text, e.g. ['198.18.0.2-198.18.0.4', '198.18.0.9']. */
const rangesText = (ranges: PoolPlan['allocatable']): string[] =>
  ranges.map((x) => (x.start === x.end ? intToIpv4(x.start) : `${intToIpv4(x.start)}-${intToIpv4(x.end)}`));

/** The OrangeryError planPool throws for `req`. */
function refusal(req: PoolCreateRequest): OrangeryError {
  try {
    planPool(req);
  } catch (e) {
    expect(e).toBeInstanceOf(OrangeryError);
    return e as OrangeryError;
  }
  throw new Error(`expected ${JSON.stringify(req)} to be refused`);
}

describe('planPool sizes', () => {
  it.each<[string, Partial<PoolCreateRequest>, number]>([
    ['a /24 with gateway .1', {}, 253],
    ['a /24 with reserved .5 and .10-.20', { reserved: ['198.18.0.5', '198.18.0.10-198.18.0.20'] }, 253 - 12],
    ['a /24 with a reserved range overlapping the gateway', { reserved: ['198.18.0.1-198.18.0.3'] }, 251],
    ['a /24 reserving its network and broadcast again', { reserved: ['198.18.0.0', '198.18.0.255'] }, 253],
    ['a /24 with a reserved address given twice', { reserved: ['198.18.0.5', '198.18.0.5'] }, 252],
    ['a /24 with overlapping reserved ranges', { reserved: ['198.18.0.10-198.18.0.20', '198.18.0.15-198.18.0.25'] }, 253 - 16],
    ['a /24 with everything reserved', { reserved: ['198.18.0.2-198.18.0.254'] }, 0],
    ['a /31 with the gateway first', { cidr: '198.18.0.0/31', gateway: '198.18.0.0' }, 1],
    ['a /31 with the gateway second', { cidr: '198.18.0.0/31', gateway: '198.18.0.1' }, 1],
    ['a /32', { cidr: '198.18.0.7/32', gateway: '198.18.0.7' }, 0],
    ['a /30', { cidr: '198.18.0.4/30', gateway: '198.18.0.5' }, 1],
    ['a /29', { cidr: '198.18.0.8/29', gateway: '198.18.0.9' }, 5],
    ['a /16', { cidr: '198.18.0.0/16', gateway: '198.18.0.1' }, 65_533],
  ])('%s hands out %i addresses', (_what, over, size) => {
    const plan = planPool(poolReq(over));
    expect(plan.size).toBe(size);
    expect(plan.allocatable.reduce((n, x) => n + x.end - x.start + 1, 0)).toBe(size);
  });

  it.each<[string, Partial<PoolCreateRequest>, string[], string[]]>([
    ['a /24', {}, ['198.18.0.2-198.18.0.254'], ['198.18.0.0-198.18.0.1', '198.18.0.255']],
    [
      'a /24 with reserved addresses',
      { reserved: ['198.18.0.5', '198.18.0.10-198.18.0.20'] },
      ['198.18.0.2-198.18.0.4', '198.18.0.6-198.18.0.9', '198.18.0.21-198.18.0.254'],
      ['198.18.0.0-198.18.0.1', '198.18.0.5', '198.18.0.10-198.18.0.20', '198.18.0.255'],
    ],
    [
      'a /24 with the gateway in the middle',
      { gateway: '198.18.0.100' },
      ['198.18.0.1-198.18.0.99', '198.18.0.101-198.18.0.254'],
      ['198.18.0.0', '198.18.0.100', '198.18.0.255'],
    ],
    ['a /31 with the gateway first', { cidr: '198.18.0.0/31', gateway: '198.18.0.0' }, ['198.18.0.1'], ['198.18.0.0']],
    ['a /31 with the gateway second', { cidr: '198.18.0.0/31', gateway: '198.18.0.1' }, ['198.18.0.0'], ['198.18.0.1']],
    ['a /32', { cidr: '198.18.0.7/32', gateway: '198.18.0.7' }, [], ['198.18.0.7']],
    ['a /30', { cidr: '198.18.0.4/30', gateway: '198.18.0.6' }, ['198.18.0.5'], ['198.18.0.4', '198.18.0.6-198.18.0.7']],
  ])('%s hands out exactly the expected ranges', (_what, over, allocatable, excluded) => {
    const plan = planPool(poolReq(over));
    expect(rangesText(plan.allocatable)).toEqual(allocatable);
    expect(rangesText(plan.excluded)).toEqual(excluded);
  });
});

describe('planPool refusals', () => {
  it.each(['198.18.0.0/15', '198.0.0.0/8', '198.16.0.0/14'])('refuses %s as larger than the supported limit, naming it', (cidr) => {
    const e = refusal(poolReq({ cidr, gateway: '198.18.0.1' }));
    expect(e.code).toBe('INVALID_REQUEST');
    expect(e.details).toMatchObject({ field: 'cidr', limit: `/${LARGEST_POOL_PREFIX}` });
    expect(e.message).toContain(`/${LARGEST_POOL_PREFIX}`);
  });

  it.each(['10.0.0.0/7', '0.0.0.0/0', '128.0.0.0/1'])('refuses %s: the prefix must be at least /8', (cidr) => {
    const e = refusal(poolReq({ cidr, gateway: '10.0.0.1' }));
    expect(e.code).toBe('INVALID_REQUEST');
    expect(e.details).toMatchObject({ field: 'cidr' });
  });

  it.each(['198.18.0.0', '198.18.0.0/33', '198.18.0/24', '198.18.0.0/024', 'x'])("refuses the malformed cidr '%s'", (cidr) => {
    const e = refusal(poolReq({ cidr }));
    expect(e.code).toBe('INVALID_REQUEST');
    expect(e.details).toMatchObject({ field: 'cidr' });
  });

  it('refuses a cidr with host bits set, naming its network', () => {
    const e = refusal(poolReq({ cidr: '198.18.0.1/24' }));
    expect(e.details).toMatchObject({ field: 'cidr' });
    expect(e.message).toContain('198.18.0.0/24');
  });

  it.each<[string, Partial<PoolCreateRequest>, string]>([
    ['outside the cidr', { gateway: '198.18.1.1' }, 'not inside'],
    ['just below the cidr', { gateway: '198.17.255.255' }, 'not inside'],
    ['the network address', { gateway: '198.18.0.0' }, 'network'],
    ['the broadcast address', { gateway: '198.18.0.255' }, 'broadcast'],
    ['the network address of a /30', { cidr: '198.18.0.4/30', gateway: '198.18.0.4' }, 'network'],
    ['the broadcast address of a /30', { cidr: '198.18.0.4/30', gateway: '198.18.0.7' }, 'broadcast'],
    ['outside a /32', { cidr: '198.18.0.7/32', gateway: '198.18.0.6' }, 'not inside'],
  ])('refuses a gateway %s', (_what, over, words) => {
    const e = refusal(poolReq(over));
    expect(e.code).toBe('INVALID_REQUEST');
    expect(e.details).toMatchObject({ field: 'gateway' });
    expect(e.message).toContain(words);
  });

  it.each([
    ['198.18.0.0/31', '198.18.0.0'],
    ['198.18.0.0/31', '198.18.0.1'],
    ['198.18.0.7/32', '198.18.0.7'],
  ])('accepts in %s the gateway %s (RFC 3021: no network or broadcast)', (cidr, gateway) => {
    expect(planPool(poolReq({ cidr, gateway })).gateway).toBe(ipv4ToInt(gateway));
  });

  it.each<[string, string[], number]>([
    ['an address outside the cidr', ['198.18.1.5'], 0],
    ['a range crossing the end of the cidr', ['198.18.0.5', '198.18.0.250-198.18.1.3'], 1],
    ['a range crossing the start of the cidr', ['198.17.255.255-198.18.0.3'], 0],
    ['a range that ends before it starts', ['198.18.0.20-198.18.0.10'], 0],
    ['something that is not an address', ['198.18.0.5', 'nope'], 1],
    ['an address with a leading zero', ['198.18.0.05'], 0],
    ['a cidr', ['198.18.0.0/28'], 0],
  ])('refuses as reserved %s, naming the entry', (_what, reserved, index) => {
    const e = refusal(poolReq({ reserved }));
    expect(e.code).toBe('INVALID_REQUEST');
    expect(e.details).toMatchObject({ field: 'reserved', index });
  });

  it('accepts a reserved range that overlaps the gateway', () => {
    expect(planPool(poolReq({ reserved: ['198.18.0.1-198.18.0.9'] })).size).toBe(245);
  });
});

describe('planPool fields', () => {
  it('defaults to vlan 0 (untagged) and a 300 s cooldown', () => {
    const plan = planPool(poolReq());
    expect(plan.vlan).toBe(0);
    expect(plan.cooldownSeconds).toBe(300);
    expect(DEFAULT_COOLDOWN_SECONDS).toBe(300);
  });

  it.each([
    [0, 0],
    [4094, 86_400],
    [100, 30],
  ])('keeps vlan %i and cooldown %i when given', (vlan, cooldownSeconds) => {
    expect(planPool(poolReq({ vlan, cooldownSeconds }))).toMatchObject({ vlan, cooldownSeconds });
  });

  it('keeps the name, the canonical cidr and the gateway', () => {
    const plan = planPool(poolReq({ name: 'edge-1', cidr: '198.18.4.0/22', gateway: '198.18.7.254' }));
    expect(plan).toMatchObject({
      name: 'edge-1',
      gateway: ipv4ToInt('198.18.7.254'),
      gatewayText: '198.18.7.254',
      cidr: { text: '198.18.4.0/22', prefixLength: 22, first: ipv4ToInt('198.18.4.0'), last: ipv4ToInt('198.18.7.255') },
    });
  });

  it('keeps reserved entries as given, trimmed', () => {
    expect(planPool(poolReq({ reserved: [' 198.18.0.5 ', '198.18.0.10 - 198.18.0.20'] })).reserved).toEqual(['198.18.0.5', '198.18.0.10 - 198.18.0.20']);
  });

  it('has no reserved entries when none are given', () => {
    expect(planPool(poolReq()).reserved).toEqual([]);
  });
});

describe('classifyIp', () => {
  const plan = planPool(poolReq({ reserved: ['198.18.0.5', '198.18.0.10-198.18.0.20'] }));

  it.each([
    ['198.17.255.255', 'outside', 'just below the cidr'],
    ['198.18.1.0', 'outside', 'just above the cidr'],
    ['10.0.0.1', 'outside', 'far away'],
    ['198.18.0.0', 'reserved', 'the network address'],
    ['198.18.0.255', 'reserved', 'the broadcast address'],
    ['198.18.0.1', 'reserved', 'the gateway'],
    ['198.18.0.5', 'reserved', 'a reserved address'],
    ['198.18.0.10', 'reserved', 'the start of a reserved range'],
    ['198.18.0.15', 'reserved', 'inside a reserved range'],
    ['198.18.0.20', 'reserved', 'the end of a reserved range'],
    ['198.18.0.2', 'allocatable', 'the first allocatable address'],
    ['198.18.0.4', 'allocatable', 'just before a reserved address'],
    ['198.18.0.21', 'allocatable', 'just after a reserved range'],
    ['198.18.0.254', 'allocatable', 'the last allocatable address'],
  ])('%s is %s (%s)', (ip, cls) => {
    expect(classifyIp(plan, ipv4ToInt(ip))).toBe(cls);
  });

  it.each([
    ['198.18.0.0', 'reserved'],
    ['198.18.0.1', 'allocatable'],
    ['198.18.0.2', 'outside'],
  ])('in a /31 whose gateway is its first address, %s is %s', (ip, cls) => {
    expect(classifyIp(planPool(poolReq({ cidr: '198.18.0.0/31', gateway: '198.18.0.0' })), ipv4ToInt(ip))).toBe(cls);
  });
});

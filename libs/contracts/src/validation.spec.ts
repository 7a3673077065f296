import { describe, it, expect } from 'vitest';
import type { TSchema } from '@sinclair/typebox';
import { OrangeryError } from './errors';
import {
  AddressLookupRequest,
  AllocateBatchRequest,
  AllocateRequest,
  BindBatchRequest,
  BindRequest,
  PoolListRequest,
  MAX_BATCH_ITEMS,
  PoolCreateRequest,
  PoolNameRequest,
} from './ipam';
import { decode, decodeBatch, parseJsonObject } from './validation';

type Json = Record<string, unknown>;

/** `base` with `path` (dotted) set to `value`, or removed when `value` is `absent`. */
const absent = Symbol('absent');
function withField(base: Json, path: string, value: unknown): Json {
  const copy = structuredClone(base);
  const keys = path.split('.');
  const last = keys.pop()!;
  const parent = keys.reduce((o, k) => o[k] as Json, copy);
  if (value === absent) delete parent[last];
  else parent[last] = value;
  return copy;
}

/** The OrangeryError thrown by `fn`. */
function errorOf(fn: () => unknown): OrangeryError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(OrangeryError);
    return e as OrangeryError;
  }
  throw new Error('expected an OrangeryError, nothing was thrown');
}

function expectInvalid(schema: TSchema, value: unknown, field: string): void {
  const e = errorOf(() => decode(schema, value));
  expect(e.code).toBe('INVALID_REQUEST');
  expect(e.details).toMatchObject({ field });
  if (field !== '') expect(e.message).toContain(`'${field}'`);
}

/** [case, path, value] rows: set `path` to `value` (or remove it) and expect `path` named. */
type Row = [string, string, unknown];

const badNames = (path: string): Row[] => [
  ['an upper-case name', path, 'Prod'],
  ['a leading hyphen', path, '-a'],
  ['a trailing hyphen', path, 'a-'],
  ['64 characters', path, 'a'.repeat(64)],
  ['an empty string', path, ''],
  ['an underscore', path, 'a_b'],
  ['a dot', path, 'a.b'],
  ['a number', path, 5],
  ['null', path, null],
  ['missing', path, absent],
];

const badSlots = (path: string): Row[] => [
  ['slot 10000', path, 10_000],
  ['slot -1', path, -1],
  ['slot 1.5', path, 1.5],
  ['a string slot', path, '1'],
  ['missing slot', path, absent],
];

const badIps = (path: string): Row[] => [
  ['not an address', path, 'x'],
  ['an octet over 255', path, '198.18.0.256'],
  ['a leading zero', path, '198.18.0.01'],
  ['three octets', path, '198.18.0'],
  ['a cidr', path, '198.18.0.0/24'],
  ['a number', path, 3_323_068_418],
];

describe('decode(PoolCreateRequest)', () => {
  const valid: Json = {
    name: 'prod-app',
    cidr: '198.18.0.0/24',
    gateway: '198.18.0.1',
    vlan: 100,
    reserved: ['198.18.0.5', '198.18.0.10-198.18.0.20'],
    cooldownSeconds: 300,
  };

  it('returns a valid request as it is', () => {
    expect(decode(PoolCreateRequest, valid)).toEqual(valid);
  });

  it('accepts a request with only the required fields', () => {
    const minimal = { name: 'a', cidr: '198.18.0.0/24', gateway: '198.18.0.1' };
    expect(decode(PoolCreateRequest, minimal)).toEqual(minimal);
  });

  it.each<Row>([
    ['name 0', 'name', '0'],
    ['name of 63 characters', 'name', 'a'.repeat(63)],
    ['name with inner hyphens', 'name', 'pay-gate-1'],
    ['vlan 0', 'vlan', 0],
    ['vlan 4094', 'vlan', 4094],
    ['cooldown 0', 'cooldownSeconds', 0],
    ['cooldown 86400', 'cooldownSeconds', 86_400],
    ['no reserved addresses', 'reserved', []],
  ])('accepts %s', (_what, path, value) => {
    expect(() => decode(PoolCreateRequest, withField(valid, path, value))).not.toThrow();
  });

  it.each<Row>([
    ...badNames('name'),
    ['a numeric cidr', 'cidr', 24],
    ['missing cidr', 'cidr', absent],
    ...badIps('gateway'),
    ['missing gateway', 'gateway', absent],
    ['a string vlan', 'vlan', '100'],
    ['vlan 4095', 'vlan', 4095],
    ['vlan -1', 'vlan', -1],
    ['vlan 1.5', 'vlan', 1.5],
    ['null vlan', 'vlan', null],
    ['reserved as a string', 'reserved', '198.18.0.5'],
    ['a number in reserved', 'reserved', [5]],
    ['a number after a valid entry in reserved', 'reserved', ['198.18.0.5', 5]],
    ['more than 4096 reserved entries', 'reserved', Array.from({ length: 4097 }, () => '198.18.0.5')],
    ['cooldownSeconds 86401', 'cooldownSeconds', 86_401],
    ['cooldownSeconds -1', 'cooldownSeconds', -1],
    ['cooldownSeconds 1.5', 'cooldownSeconds', 1.5],
    ['a string cooldownSeconds', 'cooldownSeconds', '300'],
    ['an unknown field', 'size', 256],
    ['an unknown field of the pool record', 'prefixLength', 24],
  ])('refuses %s, naming the field', (_what, path, value) => {
    expectInvalid(PoolCreateRequest, withField(valid, path, value), path);
  });
});

describe('decode(AllocateRequest)', () => {
  const valid: Json = { pool: 'prod-app', owner: { env: 'prod', app: 'web', slot: 0 }, ip: '198.18.0.7' };

  it('returns a valid request as it is', () => {
    expect(decode(AllocateRequest, valid)).toEqual(valid);
  });

  it.each<Row>([
    ['no ip', 'ip', absent],
    ['slot 9999', 'owner.slot', 9999],
    ['slot 0', 'owner.slot', 0],
  ])('accepts %s', (_what, path, value) => {
    expect(() => decode(AllocateRequest, withField(valid, path, value))).not.toThrow();
  });

  it.each<Row>([
    ...badNames('pool'),
    ['missing owner', 'owner', absent],
    ['owner as an instance id string', 'owner', 'prod:web:0'],
    ['owner null', 'owner', null],
    ['owner as an array', 'owner', ['prod', 'web', 0]],
    ...badNames('owner.env'),
    ...badNames('owner.app'),
    ...badSlots('owner.slot'),
    ['an unknown owner field', 'owner.host', 'esx-1'],
    ...badIps('ip'),
    ['an unknown field', 'vlan', 100],
  ])('refuses %s, naming the field', (_what, path, value) => {
    expectInvalid(AllocateRequest, withField(valid, path, value), path);
  });
});

describe('decode(BindRequest)', () => {
  const valid: Json = { ip: '198.18.0.7', instanceId: 'prod:web:0', backend: 'docker', host: 'esx-01' };

  it('returns a valid request as it is', () => {
    expect(decode(BindRequest, valid)).toEqual(valid);
  });

  it.each<Row>([
    ['the vmware backend', 'backend', 'vmware'],
    ['slot 9999 in the instance id', 'instanceId', 'prod:web:9999'],
    ['an instance id of another form (contract: bind may move an address to a new instanceId)', 'instanceId', 'vm-4711'],
    ['a host id of 63 characters', 'host', 'h'.repeat(63)],
    ['a host id ending in a hyphen', 'host', 'esx-'],
    ['a numeric host id', 'host', '0'],
  ])('accepts %s', (_what, path, value) => {
    expect(() => decode(BindRequest, withField(valid, path, value))).not.toThrow();
  });

  it.each<Row>([
    ...badIps('ip'),
    ['missing ip', 'ip', absent],
    ['missing instanceId', 'instanceId', absent],
    ['an empty instance id', 'instanceId', ''],
    ['an instance id with a space', 'instanceId', 'prod web 0'],
    ['an instance id of 256 characters', 'instanceId', 'i'.repeat(256)],
    ['a numeric instance id', 'instanceId', 5],
    ['missing backend', 'backend', absent],
    ['an unknown backend', 'backend', 'kvm'],
    ['an upper-case backend', 'backend', 'Docker'],
    ['a numeric backend', 'backend', 1],
    ['missing host', 'host', absent],
    ['an upper-case host id', 'host', 'Esx-01'],
    ['a host id starting with a hyphen', 'host', '-esx'],
    ['a host id of 64 characters', 'host', 'h'.repeat(64)],
    ['a host FQDN', 'host', 'esx.example.com'],
    ['a numeric host', 'host', 1],
    ['an unknown field', 'owner', { env: 'prod', app: 'web', slot: 0 }],
  ])('refuses %s, naming the field', (_what, path, value) => {
    expectInvalid(BindRequest, withField(valid, path, value), path);
  });
});

describe('decode(AddressLookupRequest)', () => {
  it.each<[string, Json]>([
    ['an ip', { ip: '198.18.0.7' }],
    ['an owner', { owner: { env: 'prod', app: 'web', slot: 3 } }],
    ['nothing (exactly-one is checked by the service)', {}],
  ])('accepts %s', (_what, value) => {
    expect(decode(AddressLookupRequest, value)).toEqual(value);
  });

  const withOwner: Json = { owner: { env: 'prod', app: 'web', slot: 3 } };

  it.each<[string, Json, string, unknown]>([
    ['a malformed ip', {}, 'ip', '198.18.0'],
    ['a numeric ip', {}, 'ip', 7],
    ['owner as a string', {}, 'owner', 'prod:web:3'],
    ['a bad owner env', withOwner, 'owner.env', 'Prod'],
    ['a missing owner app', withOwner, 'owner.app', absent],
    ['owner slot -1', withOwner, 'owner.slot', -1],
    ['owner slot 10000', withOwner, 'owner.slot', 10_000],
    ['owner slot 1.5', withOwner, 'owner.slot', 1.5],
    ['an unknown owner field', withOwner, 'owner.pool', 'x'],
    ['an unknown field', {}, 'pool', 'prod-app'],
  ])('refuses %s, naming the field', (_what, base, path, value) => {
    expectInvalid(AddressLookupRequest, withField(base, path, value), path);
  });
});

describe('decode of the other requests', () => {
  it.each<[string, TSchema, unknown, string]>([
    ['pool.get without a name', PoolNameRequest, {}, 'name'],
    ['pool.get with a bad name', PoolNameRequest, { name: 'Prod' }, 'name'],
    ['pool.get with an unknown field', PoolNameRequest, { name: 'p', cidr: '198.18.0.0/24' }, 'cidr'],
    ['pool.list with an unknown field', PoolListRequest, { name: 'p' }, 'name'],
  ])('refuses %s, naming the field', (_what, schema, value, field) => {
    expectInvalid(schema, value, field);
  });

  it.each<[string, unknown]>([
    ['null', null],
    ['an array', []],
    ['a string', 'x'],
    ['a number', 1],
  ])('refuses %s where an object is expected, naming no field', (_what, value) => {
    expectInvalid(AllocateRequest, value, '');
  });

  it('explains why in the message and in details.reason', () => {
    const e = errorOf(() => decode(AllocateRequest, { pool: 'p', owner: { env: 'prod', app: 'web' } }));
    expect(e.details).toMatchObject({ field: 'owner.slot', reason: 'is required' });
    expect(e.message).toBe("field 'owner.slot': is required");
  });

  it('says an unknown field is not known', () => {
    const e = errorOf(() => decode(PoolNameRequest, { name: 'p', extra: 1 }));
    expect(e.details).toMatchObject({ field: 'extra', reason: 'is not a known field' });
  });

  it('says an integer is expected', () => {
    const e = errorOf(() => decode(PoolCreateRequest, { name: 'p', cidr: '198.18.0.0/24', gateway: '198.18.0.1', vlan: 'x' }));
    expect(e.details).toMatchObject({ field: 'vlan', reason: 'must be an integer' });
  });

  it('does not coerce or fill in values', () => {
    const req = { name: 'p', cidr: '198.18.0.0/24', gateway: '198.18.0.1' };
    expect(decode(PoolCreateRequest, req)).toStrictEqual({ name: 'p', cidr: '198.18.0.0/24', gateway: '198.18.0.1' });
    expectInvalid(AllocateRequest, { pool: 'p', owner: { env: 'prod', app: 'web', slot: '0' } }, 'owner.slot');
  });

  it('gives the same answer for the same schema twice (compiled once)', () => {
    expectInvalid(PoolNameRequest, {}, 'name');
    expectInvalid(PoolNameRequest, {}, 'name');
    expect(decode(PoolNameRequest, { name: 'p' })).toEqual({ name: 'p' });
  });
});

describe('parseJsonObject', () => {
  it.each<[string, string | Uint8Array, Json]>([
    ['a JSON object', '{"name":"p","vlan":1}', { name: 'p', vlan: 1 }],
    ['bytes of a JSON object', new TextEncoder().encode('{"ip":"198.18.0.7"}'), { ip: '198.18.0.7' }],
    ['an empty object', '{}', {}],
    ['an object with surrounding whitespace', ' \n{"a":[1]}\n', { a: [1] }],
    ['an empty body', '', {}],
    ['an empty byte array', new Uint8Array(0), {}],
    ['a blank body', '  \n\t', {}],
  ])('parses %s', (_what, raw, expected) => {
    expect(parseJsonObject(raw)).toEqual(expected);
  });

  it.each<[string, string | Uint8Array]>([
    ['text that is not JSON', 'hello'],
    ['truncated JSON', '{"name":'],
    ['single-quoted JSON', "{'name':'p'}"],
    ['invalid UTF-8 bytes', new Uint8Array([0xff, 0xfe])],
    // found by the fuzz suite: decoded with U+FFFD, '{"a":"\ufffd("}' was accepted as valid JSON
    ['invalid UTF-8 inside a JSON string', new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d])],
    ['a JSON array', '[]'],
    ['a JSON array of objects', '[{"name":"p"}]'],
    ['JSON null', 'null'],
    ['a number', '42'],
    ['a string', '"{}"'],
    ['a boolean', 'true'],
  ])('refuses %s as INVALID_REQUEST', (_what, raw) => {
    const e = errorOf(() => parseJsonObject(raw));
    expect(e.code).toBe('INVALID_REQUEST');
    expect(e.details).toMatchObject({ field: '' });
  });
});

describe('decodeBatch', () => {
  const item = (slot: unknown) => ({ pool: 'net', owner: { env: 'prod', app: 'web', slot } });

  it.each([
    ['items missing', {}, 'items'],
    ['items empty', { items: [] }, 'items'],
    ['items not an array', { items: 'x' }, 'items'],
    ['too many items', { items: Array.from({ length: MAX_BATCH_ITEMS + 1 }, (_, i) => item(i)) }, 'items'],
    ['an unknown field', { items: [item(0)], extra: 1 }, 'extra'],
  ])('refuses the whole batch when %s', (_label, value, field) => {
    const e = errorOf(() => decodeBatch(AllocateBatchRequest, value));
    expect(e.code).toBe('INVALID_REQUEST');
    expect(e.details).toMatchObject({ field });
  });

  it('accepts MAX_BATCH_ITEMS items, and what the documented schema accepts', () => {
    const items = Array.from({ length: MAX_BATCH_ITEMS }, (_, i) => item(i % 10_000));
    expect(decodeBatch(AllocateBatchRequest, { items }).every((d) => d.ok)).toBe(true);
    expect(() => decode(AllocateBatchRequest, { items })).not.toThrow();
  });

  it('answers each bad item alone with an indexed field and path', () => {
    const decoded = decodeBatch(AllocateBatchRequest, { items: [item(0), item('1'), null, { ...item(3), x: 1 }] });
    expect(decoded.map((d) => d.ok)).toEqual([true, false, false, false]);
    const details = decoded.map((d) => (d.ok ? undefined : d.error.details));
    expect(details[1]).toMatchObject({ field: 'items[1].owner.slot', path: '/items/1/owner/slot' });
    expect(details[2]).toMatchObject({ field: 'items[2]', path: '/items/2' });
    expect(details[3]).toMatchObject({ field: 'items[3].x' });
    expect(decoded[1]!.ok ? '' : decoded[1]!.error.message).toContain("'items[1].owner.slot'");
  });

  it('decodes bind items with the bind schema', () => {
    const good = { ip: '198.18.0.2', instanceId: 'prod:web:0', backend: 'vmware', host: 'esx-1' };
    const decoded = decodeBatch(BindBatchRequest, { items: [good, { ...good, host: 'ESX' }] });
    expect(decoded[0]).toEqual({ ok: true, value: good });
    expect(decoded[1]!.ok ? undefined : decoded[1]!.error.details).toMatchObject({ field: 'items[1].host' });
  });
});

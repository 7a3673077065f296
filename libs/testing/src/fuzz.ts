import fc from 'fast-check';
import type { TSchema } from '@sinclair/typebox';

/**
 * Adversarial payloads for every subject, derived from the same TypeBox schemas the
 * services validate with (libs/contracts). `validOf(schema)` generates values the schema
 * accepts; `adversarialPayload(schema, example)` mutates a valid request (drop or mistype a
 * field, huge and negative numbers, 1 MB strings, unicode, control characters, CR/LF,
 * deep nesting, `__proto__`/`constructor` keys, duplicate keys) or sends no JSON at all.
 *
 * fast-check is used only in this file: the rest of the suite sees `FuzzPayload`s and
 * `samplePayloads(arbitrary, seed, runs)`, so another generator library is one file away.
 */

/** One message to send: its body (text or raw bytes), optional headers, and what it is. */
export interface FuzzPayload {
  /** the mutation that made it, for the failure report (e.g. `string:crlf at owner.env`) */
  what: string;
  body: string | Uint8Array;
  /** header name -> value; sent through the client (which refuses CR/LF) */
  headers?: Record<string, string>;
  /** a whole header block sent as raw protocol bytes (`NATS/1.0\r\n...`), bypassing the client's checks */
  rawHeaders?: string;
}

/** Most bytes of a body: under NATS' default max_payload (1 MiB) with room for headers. */
export const FUZZ_MAX_BODY = 1_000_000;
/** Nesting depth of the deep-nesting payloads. */
export const FUZZ_DEPTH = 10_000;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Schema = TSchema & Record<string, unknown>;

const MAX_SAMPLE_ITEMS = 3;

/** A string arbitrary for a JSON Schema string (pattern, format, length). */
function stringOf(s: Schema): fc.Arbitrary<string> {
  const min = typeof s['minLength'] === 'number' ? s['minLength'] : 0;
  const max = typeof s['maxLength'] === 'number' ? s['maxLength'] : undefined;
  let arb: fc.Arbitrary<string>;
  if (s['format'] === 'ipv4') arb = fc.ipV4();
  else if (s['format'] === 'ipv6') arb = fc.ipV6();
  else if (s['format'] === 'date-time')
    arb = fc.date({ min: new Date('2000-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }).map((d) => d.toISOString());
  else if (s['format'] === 'uri-reference') arb = fc.constantFrom('/upstream', 'orangery/fuzz', 'https://example.test/x');
  else if (typeof s['pattern'] === 'string') arb = fc.stringMatching(new RegExp(s['pattern']));
  else arb = fc.string({ minLength: min, maxLength: Math.min(max ?? 24, 24) });
  return arb.filter((v) => v.length >= min && (max === undefined || v.length <= max));
}

function numberOf(s: Schema, integer: boolean): fc.Arbitrary<number> {
  const lo = typeof s['minimum'] === 'number' ? s['minimum'] : typeof s['exclusiveMinimum'] === 'number' ? s['exclusiveMinimum'] : -1e6;
  const hi = typeof s['maximum'] === 'number' ? s['maximum'] : typeof s['exclusiveMaximum'] === 'number' ? s['exclusiveMaximum'] : 1e6;
  const exclusiveLo = typeof s['exclusiveMinimum'] === 'number';
  const exclusiveHi = typeof s['exclusiveMaximum'] === 'number';
  if (integer) {
    return fc.integer({ min: Math.ceil(exclusiveLo ? lo + 1 : lo), max: Math.floor(exclusiveHi ? hi - 1 : hi) });
  }
  return fc.double({ min: lo, max: hi, noNaN: true, noDefaultInfinity: true, minExcluded: exclusiveLo, maxExcluded: exclusiveHi });
}

/**
 * Values the JSON Schema `schema` accepts (the subset TypeBox emits for our contracts:
 * objects, records, strings with pattern/format/length, integers and numbers with bounds,
 * booleans, null, arrays, literals, unions, intersections). Cross-field rules a schema
 * cannot say (`{ ip }` or `{ owner }`) are the service's: it may still refuse a value.
 */
export function validOf(schema: TSchema): fc.Arbitrary<Json> {
  const s = schema as Schema;
  if ('const' in s) return fc.constant(s['const'] as Json);
  if (Array.isArray(s['enum'])) return fc.constantFrom(...(s['enum'] as Json[]));
  if (Array.isArray(s['anyOf'])) return fc.oneof(...(s['anyOf'] as TSchema[]).map(validOf));
  if (Array.isArray(s['allOf'])) {
    return fc.tuple(...(s['allOf'] as TSchema[]).map(validOf)).map((parts) => Object.assign({}, ...parts) as Json);
  }
  switch (s['type']) {
    case 'object': {
      const props = (s['properties'] ?? {}) as Record<string, TSchema>;
      const required = new Set((s['required'] ?? []) as string[]);
      const model: Record<string, fc.Arbitrary<Json>> = {};
      for (const [k, v] of Object.entries(props)) model[k] = validOf(v);
      const known = fc.record(model, { requiredKeys: Object.keys(props).filter((k) => required.has(k)) }) as fc.Arbitrary<Record<string, Json>>;
      const patterns = s['patternProperties'] as Record<string, TSchema> | undefined;
      if (!patterns) return known;
      const [keyPattern, valueSchema] = Object.entries(patterns)[0]!;
      const maxKeys = Math.min(typeof s['maxProperties'] === 'number' ? s['maxProperties'] : MAX_SAMPLE_ITEMS, MAX_SAMPLE_ITEMS);
      const extra = fc.dictionary(fc.stringMatching(new RegExp(keyPattern)), validOf(valueSchema), { maxKeys });
      return fc.tuple(known, extra).map(([a, b]) => ({ ...b, ...a }));
    }
    case 'array': {
      const min = typeof s['minItems'] === 'number' ? s['minItems'] : 0;
      const max = Math.max(min, Math.min(typeof s['maxItems'] === 'number' ? s['maxItems'] : MAX_SAMPLE_ITEMS, MAX_SAMPLE_ITEMS));
      const item: fc.Arbitrary<Json> = s['items'] ? validOf(s['items'] as TSchema) : (fc.jsonValue({ maxDepth: 1 }) as fc.Arbitrary<Json>);
      if (s['uniqueItems']) return fc.uniqueArray(item, { minLength: min, maxLength: max, selector: (v) => JSON.stringify(v) }) as fc.Arbitrary<Json>;
      return fc.array(item, { minLength: min, maxLength: max }) as fc.Arbitrary<Json>;
    }
    case 'string':
      return stringOf(s);
    case 'integer':
      return numberOf(s, true);
    case 'number':
      return numberOf(s, false);
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    default:
      // Type.Unknown() and friends: any small JSON value
      return fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>;
  }
}

// ---- adversarial values ------------------------------------------------------------------

/** Strings a careless upstream or an attacker sends: each category named for the report. */
export const ADVERSARIAL_STRINGS: Readonly<Record<string, () => string>> = {
  empty: () => '',
  crlf: () => 'a\r\nNats-Msg-Id: injected\r\n\r\nb',
  cr: () => 'x\ry',
  lf: () => 'x\ny',
  nul: () => 'a\u0000b',
  control: () => Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)).join('') + '\u007f',
  spaces: () => '  padded  ',
  unicode: () => 'ünïcødé-名前-🚀-\u200b\u202e-עברית',
  loneSurrogate: () => 'a\ud800b\udfffc',
  huge: () => 'A'.repeat(FUZZ_MAX_BODY - 2_000),
  long: () => 'x'.repeat(70_000),
  sql: () => "' OR '1'='1'; DROP TABLE pools; --",
  format: () => '%s%n%x${jndi:ldap://x}{{7*7}}',
  path: () => '../../../../etc/passwd',
  nanLike: () => 'NaN',
  infinityLike: () => 'Infinity',
  numeric: () => '-1',
  protoName: () => '__proto__',
  dottedSubject: () => 'a.b.*.>',
};

/** Numbers no field expects: huge, negative, fractional, out of every range. */
export const ADVERSARIAL_NUMBERS: readonly number[] = [
  -1,
  -0,
  0.5,
  -2_147_483_649,
  2_147_483_648,
  Number.MAX_SAFE_INTEGER + 2,
  -Number.MAX_SAFE_INTEGER - 2,
  1e308,
  -1e308,
  5e-324,
  4_294_967_296,
  18_446_744_073_709_552_000,
];

/** Values of the wrong type for any field. */
const WRONG_TYPES: readonly Json[] = [null, true, false, 0, 1, -1, '', '1', 'true', [], [null], {}, { a: 1 }];

/** Number literals JSON.parse reads but no schema expects (written into the text as is). */
const NUMBER_LITERALS: readonly string[] = ['1e999', '-1e999', '123456789012345678901234567890', '-0.0', '1E400', '0.0000000000000000000000001'];

const nested = (depth: number, open: string, close: string, inner = '1'): string => open.repeat(depth) + inner + close.repeat(depth);

/** A field path in a JSON value: every property and array index, depth first. */
function pathsOf(v: Json, prefix: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = [];
  if (Array.isArray(v)) v.forEach((x, i) => out.push([...prefix, i], ...pathsOf(x, [...prefix, i])));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push([...prefix, k], ...pathsOf(x, [...prefix, k]));
  return out;
}

const clone = (v: Json): Json => JSON.parse(JSON.stringify(v)) as Json;

function setAt(root: Json, path: (string | number)[], value: Json | undefined): Json {
  const copy = clone(root);
  if (path.length === 0) return value === undefined ? {} : value;
  let cur = copy as Record<string | number, Json>;
  for (const k of path.slice(0, -1)) cur = cur[k] as Record<string | number, Json>;
  const last = path[path.length - 1]!;
  if (value === undefined) {
    if (Array.isArray(cur)) cur.splice(Number(last), 1);
    else delete cur[last];
  } else cur[last] = value;
  return copy;
}

const label = (path: (string | number)[]): string => (path.length === 0 ? '(root)' : path.join('.'));

/** Replaces the JSON of `path`'s value in `text` form: a marker string swapped for raw text. */
function withRawAt(root: Json, path: (string | number)[], raw: string): string {
  const marker = '\u0000__fuzz_raw__\u0000';
  return JSON.stringify(setAt(root, path, marker)).replace(JSON.stringify(marker), raw);
}

/** Inserts raw `"key": value` members at the start of the top-level object's text. */
function withLeadingMembers(root: Json, members: string): string {
  const text = JSON.stringify(root);
  if (!text.startsWith('{')) return `{${members}}`;
  return text === '{}' ? `{${members}}` : `{${members},${text.slice(1)}`;
}

/** A mutation of one valid request: its body text and what was done. */
type Mutation = { what: string; body: string };

function mutationsOf(valid: Json): fc.Arbitrary<Mutation> {
  const paths = pathsOf(valid);
  const pathArb = paths.length > 0 ? fc.constantFrom(...paths) : fc.constant([] as (string | number)[]);
  const strings = Object.keys(ADVERSARIAL_STRINGS);
  return fc.oneof(
    // the valid request itself: a contract must hold for ok replies too
    { arbitrary: fc.constant({ what: 'valid', body: JSON.stringify(valid) }), weight: 1 },
    { arbitrary: pathArb.map((p) => ({ what: `drop ${label(p)}`, body: JSON.stringify(setAt(valid, p, undefined)) })), weight: 3 },
    {
      arbitrary: fc
        .tuple(pathArb, fc.constantFrom(...WRONG_TYPES))
        .map(([p, v]) => ({ what: `mistype ${label(p)} = ${JSON.stringify(v)}`, body: JSON.stringify(setAt(valid, p, v)) })),
      weight: 4,
    },
    {
      arbitrary: fc
        .tuple(pathArb, fc.constantFrom(...strings))
        .map(([p, k]) => ({ what: `string:${k} at ${label(p)}`, body: JSON.stringify(setAt(valid, p, ADVERSARIAL_STRINGS[k]!())) })),
      weight: 6,
    },
    {
      arbitrary: fc
        .tuple(pathArb, fc.constantFrom(...ADVERSARIAL_NUMBERS))
        .map(([p, n]) => ({ what: `number ${n} at ${label(p)}`, body: JSON.stringify(setAt(valid, p, n)) })),
      weight: 4,
    },
    {
      arbitrary: fc
        .tuple(pathArb, fc.constantFrom(...NUMBER_LITERALS))
        .map(([p, lit]) => ({ what: `literal ${lit} at ${label(p)}`, body: withRawAt(valid, p, lit) })),
      weight: 2,
    },
    {
      arbitrary: fc.tuple(pathArb, fc.constantFrom('[', '{"a":')).map(([p, open]) => ({
        what: `nesting ${FUZZ_DEPTH} ${open} at ${label(p)}`,
        body: withRawAt(valid, p, nested(FUZZ_DEPTH, open, open === '[' ? ']' : '}')),
      })),
      weight: 1,
    },
    {
      arbitrary: fc
        .tuple(
          fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'unknownField', ''),
          fc.constantFrom<Json>({ polluted: true }, 'x', 1, null),
        )
        .map(([k, v]) => ({ what: `extra key ${k}`, body: withLeadingMembers(valid, `${JSON.stringify(k)}:${JSON.stringify(v)}`) })),
      weight: 2,
    },
    {
      // duplicate keys: JSON.parse keeps the last; a validator must see what the handler uses
      arbitrary: fc
        .constantFrom(...(valid !== null && typeof valid === 'object' && !Array.isArray(valid) && Object.keys(valid).length > 0 ? Object.keys(valid) : ['k']))
        .map((k) => ({
          what: `duplicate key ${k}`,
          body: withLeadingMembers(valid, `${JSON.stringify(k)}:{"__proto__":{"admin":true}}`),
        })),
      weight: 2,
    },
    {
      arbitrary: fc.constant({ what: 'constructor.prototype pollution', body: withLeadingMembers(valid, '"constructor":{"prototype":{"polluted":true}}') }),
      weight: 1,
    },
  );
}

/** Bodies that are not a JSON object at all. */
export const NOT_AN_OBJECT: readonly { what: string; body: () => string | Uint8Array }[] = [
  { what: 'empty body', body: () => '' },
  { what: 'whitespace', body: () => ' \r\n\t ' },
  { what: 'null', body: () => 'null' },
  { what: 'array', body: () => '[]' },
  { what: 'number', body: () => '123' },
  { what: 'string', body: () => '"str"' },
  { what: 'true', body: () => 'true' },
  { what: 'truncated', body: () => '{"name": "a' },
  { what: 'trailing garbage', body: () => '{} {}' },
  { what: 'single quotes', body: () => "{'name':'a'}" },
  { what: 'NaN literal', body: () => '{"a": NaN}' },
  { what: 'BOM', body: () => '\ufeff{}' },
  { what: 'invalid utf-8', body: () => new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d]) },
  { what: 'binary', body: () => new Uint8Array(Array.from({ length: 512 }, (_, i) => (i * 131 + 7) % 256)) },
  { what: 'deep array', body: () => nested(FUZZ_DEPTH, '[', ']') },
  { what: 'deep object', body: () => nested(FUZZ_DEPTH, '{"a":', '}') },
  { what: 'deep unclosed', body: () => '['.repeat(FUZZ_DEPTH * 10) },
  { what: 'huge string', body: () => JSON.stringify('x'.repeat(FUZZ_MAX_BODY - 100)) },
  { what: 'many keys', body: () => JSON.stringify(Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, i]))) },
  { what: 'xml', body: () => '<?xml version="1.0"?><a/>' },
];

/** Header sets sent with a request (through the client: CR/LF in a value is refused by it, see `rawHeaders`). */
const HEADER_SETS: readonly { what: string; headers?: Record<string, string>; rawHeaders?: string }[] = [
  { what: 'actor unicode', headers: { 'Orangery-Actor': 'ünï 🚀 \u202e' } },
  { what: 'actor huge', headers: { 'Orangery-Actor': 'a'.repeat(60_000) } },
  { what: 'traceparent garbage', headers: { traceparent: 'zz-not-a-trace', tracestate: '=,=,=' } },
  { what: 'traceparent all zero', headers: { traceparent: '00-00000000000000000000000000000000-0000000000000000-00' } },
  { what: 'msg id spaces', headers: { 'Nats-Msg-Id': '  spaced  ' } },
  { what: 'many headers', headers: Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`X-H${i}`, `v${i}`])) },
  { what: 'raw: header name with a space', rawHeaders: 'NATS/1.0\r\nBad Key: v\r\n\r\n' },
  { what: 'raw: header name with a colon run', rawHeaders: 'NATS/1.0\r\n::: v\r\nOrangery-Actor\r\n\r\n' },
  { what: 'raw: not a NATS header block', rawHeaders: 'HTTP/1.1 200 OK\r\nX: y\r\n\r\n' },
  { what: 'raw: status line garbage', rawHeaders: 'NATS/1.0 999999999999 oops\r\nX-A: b\r\n\r\n' },
  { what: 'raw: header injection', rawHeaders: 'NATS/1.0\r\nOrangery-Actor: a\r\nOrangery-Actor: b\r\nNats-Msg-Id: x\r\n\r\n' },
  { what: 'raw: control chars in a value', rawHeaders: 'NATS/1.0\r\nOrangery-Actor: a\u0000\u0001\u007fb\r\n\r\n' },
];

/**
 * Adversarial payloads for a subject whose valid request is `valid` (a hand-written
 * example) or generated from `schema`: mostly mutations of a valid request, some bodies
 * that are not a JSON object, some with hostile headers.
 */
export function adversarialPayload(schema: TSchema | undefined, valid?: unknown): fc.Arbitrary<FuzzPayload> {
  const bases: fc.Arbitrary<Json>[] = [];
  if (valid !== undefined) bases.push(fc.constant(valid as Json));
  if (schema) bases.push(validOf(schema));
  if (bases.length === 0) bases.push(fc.constant({}));
  const mutated = fc.oneof(...bases).chain(mutationsOf);
  const notObject = fc.constantFrom(...NOT_AN_OBJECT).map((n) => ({ what: n.what, body: n.body() }));
  const withHeaders = fc.tuple(fc.oneof(...bases), fc.constantFrom(...HEADER_SETS)).map(([v, h]): FuzzPayload => ({
    what: `headers: ${h.what}`,
    body: JSON.stringify(v),
    ...(h.headers ? { headers: h.headers } : {}),
    ...(h.rawHeaders ? { rawHeaders: h.rawHeaders } : {}),
  }));
  return fc.oneof({ arbitrary: mutated as fc.Arbitrary<FuzzPayload>, weight: 14 }, { arbitrary: notObject, weight: 3 }, { arbitrary: withHeaders, weight: 3 });
}

/**
 * Not random: every field of `valid` (and the whole body) given each of `kinds` of
 * adversarial string, and every header set once. What a sample of a few dozen payloads may
 * miss for a subject, this sweep sends to each.
 */
export function fieldSweep(valid: unknown, kinds: readonly string[] = ['huge', 'crlf', 'control', 'loneSurrogate']): FuzzPayload[] {
  const v = valid as Json;
  const out: FuzzPayload[] = [];
  for (const p of pathsOf(v)) {
    for (const k of kinds) out.push({ what: `string:${k} at ${label(p)}`, body: JSON.stringify(setAt(v, p, ADVERSARIAL_STRINGS[k]!())) });
  }
  for (const h of HEADER_SETS)
    out.push({
      what: `headers: ${h.what}`,
      body: JSON.stringify(v),
      ...(h.headers ? { headers: h.headers } : {}),
      ...(h.rawHeaders ? { rawHeaders: h.rawHeaders } : {}),
    });
  for (const n of NOT_AN_OBJECT) out.push({ what: n.what, body: n.body() });
  return out;
}

/** `runs` values of `arb`, the same for the same seed (replay: ORANGERY_FUZZ_SEED). */
export function samplePayloads<T>(arb: fc.Arbitrary<T>, seed: number, runs: number): T[] {
  return fc.sample(arb, { seed, numRuns: runs });
}

/** The seed of this run: ORANGERY_FUZZ_SEED when set (replay), else a fresh one. */
export function fuzzSeed(): number {
  const fromEnv = Number(process.env['ORANGERY_FUZZ_SEED']);
  return Number.isInteger(fromEnv) && process.env['ORANGERY_FUZZ_SEED'] !== '' ? fromEnv : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
}

/** A short, printable description of a payload for failure reports. */
export function describePayload(p: FuzzPayload): string {
  const body = typeof p.body === 'string' ? p.body : `bytes ${Buffer.from(p.body).toString('hex').slice(0, 40)}`;
  const shown = body.length > 160 ? `${body.slice(0, 160)}... (${body.length} chars)` : body;
  return `${p.what}: ${JSON.stringify(shown)}`;
}

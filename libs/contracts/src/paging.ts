import { Type, type TObject, type TProperties } from '@sinclair/typebox';
import { invalidRequest } from './errors';
import { HOST_ID_PATTERN, MAX_SLOT, NAME_PATTERN } from './names';

/**
 * Paging of the list subjects (CONTRACT.md "Operators", v1.1): `ipam.pool.list`,
 * `hosts.list`, `instances.list` (and `envs.list`) accept `limit?` (default 1000, at most
 * 10000) and `cursor?`, and answer `nextCursor` while more remain.
 *
 * A cursor is opaque to callers: base64url of a JSON array `[kind, ...last sort key]`. It
 * is checked at the edge like any other field: its length is bounded by the schema, and
 * `decodeCursor` accepts only the shape this service issues for that list (its kind, and
 * every key part matching the list's key patterns); anything else is INVALID_REQUEST
 * naming `cursor`. It holds nothing a caller could not read in the page itself.
 */
export const DEFAULT_PAGE_LIMIT = 1000;
export const MAX_PAGE_LIMIT = 10_000;
/** Longest cursor we issue is about 200 characters (an instance key of two 63-character names). */
export const MAX_CURSOR_LENGTH = 256;

const CURSOR_PATTERN = '^[A-Za-z0-9_-]+$';

/** `limit?` and `cursor?` of every list request. */
export const PageFields = {
  limit: Type.Optional(
    Type.Integer({ minimum: 1, maximum: MAX_PAGE_LIMIT, description: `items per page (default ${DEFAULT_PAGE_LIMIT}, at most ${MAX_PAGE_LIMIT})` }),
  ),
  cursor: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: MAX_CURSOR_LENGTH,
      pattern: CURSOR_PATTERN,
      description: "opaque: the previous page's nextCursor, as it was",
    }),
  ),
};

/** `nextCursor?` of every list reply: present while more items remain. */
export const NextCursorField = {
  nextCursor: Type.Optional(Type.String({ description: 'present while more remain: send it as `cursor` for the next page' })),
};

/** A strict list request: the list's own filters plus limit and cursor. */
export const PagedRequest = <P extends TProperties>(filters: P): TObject<P & typeof PageFields> =>
  Type.Object({ ...filters, ...PageFields }, { additionalProperties: false });

/** One key part of a cursor: a string matching a pattern, or an integer in a range. */
export type KeyPart = { pattern: string } | { min: number; max: number };

/** What a cursor of one list holds: its kind and the parts of the list's sort key. */
export interface CursorShape<K extends readonly (string | number)[]> {
  readonly kind: string;
  readonly parts: readonly KeyPart[];
  /** compile-time only: the key's type */
  readonly _key?: K;
}

const shape = <K extends readonly (string | number)[]>(kind: string, parts: readonly KeyPart[]): CursorShape<K> => ({ kind, parts });

/** The sort keys of the list subjects. */
export const CURSORS = {
  /** ipam.pool.list: ORDER BY name */
  pools: shape<[string]>('pool', [{ pattern: NAME_PATTERN }]),
  /** scheduler.hosts.list: ORDER BY id */
  hosts: shape<[string]>('host', [{ pattern: HOST_ID_PATTERN }]),
  /** scheduler.instances.list: ORDER BY env, app, slot */
  instances: shape<[string, string, number]>('inst', [{ pattern: NAME_PATTERN }, { pattern: NAME_PATTERN }, { min: 0, max: MAX_SLOT }]),
  /** scheduler.envs.list: ORDER BY name */
  envs: shape<[string]>('env', [{ pattern: NAME_PATTERN }]),
} as const;

type KeyOf<S> = S extends CursorShape<infer K> ? K : never;

export function encodeCursor<S extends CursorShape<readonly (string | number)[]>>(s: S, key: KeyOf<S>): string {
  return Buffer.from(JSON.stringify([s.kind, ...key]), 'utf8').toString('base64url');
}

const patterns = new Map<string, RegExp>();
const regexOf = (p: string): RegExp => {
  let r = patterns.get(p);
  if (!r) patterns.set(p, (r = new RegExp(p)));
  return r;
};

/** The sort key in `cursor`, or INVALID_REQUEST naming `cursor` when it is not one `s` issues. */
export function decodeCursor<S extends CursorShape<readonly (string | number)[]>>(s: S, cursor: string): KeyOf<S> {
  const bad = (reason: string) => invalidRequest('cursor', reason);
  if (cursor.length === 0 || cursor.length > MAX_CURSOR_LENGTH || !regexOf(CURSOR_PATTERN).test(cursor)) throw bad('is not a cursor this list issued');
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad('is not a cursor this list issued');
  }
  if (!Array.isArray(value) || value.length !== s.parts.length + 1 || value[0] !== s.kind) throw bad('is not a cursor this list issued');
  const key = value.slice(1) as unknown[];
  s.parts.forEach((part, i) => {
    const v = key[i];
    const ok =
      'pattern' in part
        ? typeof v === 'string' && regexOf(part.pattern).test(v)
        : typeof v === 'number' && Number.isInteger(v) && v >= part.min && v <= part.max;
    if (!ok) throw bad('is not a cursor this list issued');
  });
  // Only the canonical encoding is one we issued (base64url decoding ignores stray bits).
  if (encodeCursor(s, key as unknown as KeyOf<S>) !== cursor) throw bad('is not a cursor this list issued');
  return key as unknown as KeyOf<S>;
}

/** A validated page request: how many items, and the key to start after (none: from the start). */
export interface PageQuery<K> {
  limit: number;
  after: K | undefined;
}

/** The page query of a decoded list request (`decode` has checked limit's range already). */
export function pageQueryOf<S extends CursorShape<readonly (string | number)[]>>(s: S, req: { limit?: number; cursor?: string }): PageQuery<KeyOf<S>> {
  return { limit: req.limit ?? DEFAULT_PAGE_LIMIT, after: req.cursor === undefined ? undefined : decodeCursor(s, req.cursor) };
}

/**
 * The page out of `limit + 1` rows read in key order: the first `limit` items, and
 * `nextCursor` (the last item's key) only when the extra row shows that more remain.
 */
export function pageOf<T, S extends CursorShape<readonly (string | number)[]>>(
  s: S,
  rows: readonly T[],
  limit: number,
  keyOf: (item: T) => KeyOf<S>,
): { items: T[]; nextCursor?: string } {
  if (rows.length <= limit) return { items: [...rows] };
  const items = rows.slice(0, limit);
  return { items, nextCursor: encodeCursor(s, keyOf(items[items.length - 1]!)) };
}

/** For docs: a list request schema's description. */
export const pagedDescription = (what: string): string =>
  `${what} Paged (v1.1): at most \`limit\` items (default ${DEFAULT_PAGE_LIMIT}, at most ${MAX_PAGE_LIMIT}) in key order, after \`cursor\`; ` +
  '`nextCursor` is present while more remain.';

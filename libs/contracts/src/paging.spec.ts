import { describe, expect, it } from 'vitest';
import { OrangeryError } from './errors';
import { InstancesListRequest, HostsListRequest } from './scheduler';
import { PoolListRequest } from './ipam';
import { CURSORS, DEFAULT_PAGE_LIMIT, decodeCursor, encodeCursor, MAX_CURSOR_LENGTH, pageOf, pageQueryOf } from './paging';
import { decode } from './validation';

function errorOf(f: () => unknown): OrangeryError {
  try {
    f();
  } catch (e) {
    if (e instanceof OrangeryError) return e;
    throw e;
  }
  throw new Error('no error');
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v), 'utf8').toString('base64url');

describe('cursor codec', () => {
  it('round-trips each list key, opaque and URL-safe', () => {
    const c = encodeCursor(CURSORS.instances, ['prod', 'web-api', 9999]);
    expect(c).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeCursor(CURSORS.instances, c)).toEqual(['prod', 'web-api', 9999]);
    expect(decodeCursor(CURSORS.hosts, encodeCursor(CURSORS.hosts, ['docker-1']))).toEqual(['docker-1']);
    expect(decodeCursor(CURSORS.pools, encodeCursor(CURSORS.pools, ['prod']))).toEqual(['prod']);
  });

  it('issues cursors well within the bound for the longest keys', () => {
    const n = 'a'.repeat(63);
    expect(encodeCursor(CURSORS.instances, [n, n, 9999]).length).toBeLessThanOrEqual(MAX_CURSOR_LENGTH);
  });

  it.each<[string, string]>([
    ['not base64url', 'a+b/c='],
    ['base64url of no JSON', Buffer.from('{nope', 'utf8').toString('base64url')],
    ['a JSON object', b64({ k: 'inst' })],
    ['another list kind', encodeCursor(CURSORS.hosts, ['prod'])],
    ['too few key parts', b64(['inst', 'prod', 'web'])],
    ['too many key parts', b64(['inst', 'prod', 'web', 1, 2])],
    ['a slot out of range', b64(['inst', 'prod', 'web', 10_000])],
    ['a fractional slot', b64(['inst', 'prod', 'web', 1.5])],
    ['a slot as a string', b64(['inst', 'prod', 'web', '1'])],
    ['a name that is no name', b64(['inst', "x' OR 1=1 --", 'web', 1])],
    ['an upper-case name', b64(['inst', 'Prod', 'web', 1])],
    ['too long', 'A'.repeat(MAX_CURSOR_LENGTH + 1)],
    ['empty', ''],
    ['non-canonical padding bits', encodeCursor(CURSORS.hosts, ['h1']).replace(/.$/, (ch) => String.fromCharCode(ch.charCodeAt(0) + 1))],
  ])('refuses %s as INVALID_REQUEST naming cursor', (_what, cursor) => {
    const e = errorOf(() => decodeCursor(CURSORS.instances, cursor));
    expect(e.code).toBe('INVALID_REQUEST');
    expect(e.details).toMatchObject({ field: 'cursor' });
  });
});

describe('list request schemas', () => {
  it.each([PoolListRequest, HostsListRequest, InstancesListRequest])('accept limit 1..10000 and a cursor', (schema) => {
    expect(decode(schema, {})).toEqual({});
    expect(decode(schema, { limit: 1 })).toEqual({ limit: 1 });
    expect(decode(schema, { limit: 10_000, cursor: 'abc' })).toEqual({ limit: 10_000, cursor: 'abc' });
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['limit 0', { limit: 0 }, 'limit'],
    ['limit -1', { limit: -1 }, 'limit'],
    ['limit 10001', { limit: 10_001 }, 'limit'],
    ['limit 1.5', { limit: 1.5 }, 'limit'],
    ['limit "10"', { limit: '10' }, 'limit'],
    ['an empty cursor', { cursor: '' }, 'cursor'],
    ['a cursor with other characters', { cursor: 'ab/c=' }, 'cursor'],
    ['a numeric cursor', { cursor: 5 }, 'cursor'],
    ['an overlong cursor', { cursor: 'a'.repeat(MAX_CURSOR_LENGTH + 1) }, 'cursor'],
    ['an unknown field', { offset: 5 }, 'offset'],
  ])('refuse %s, naming the field', (_what, body, field) => {
    for (const schema of [PoolListRequest, HostsListRequest, InstancesListRequest]) {
      const e = errorOf(() => decode(schema, body));
      expect(e.code).toBe('INVALID_REQUEST');
      expect(e.details).toMatchObject({ field });
    }
  });

  it('keeps the instances filters', () => {
    expect(decode(InstancesListRequest, { env: 'prod', app: 'web', limit: 5 })).toEqual({ env: 'prod', app: 'web', limit: 5 });
  });
});

describe('pageQueryOf', () => {
  it('defaults to 1000 items from the start', () => {
    expect(pageQueryOf(CURSORS.hosts, {})).toEqual({ limit: DEFAULT_PAGE_LIMIT, after: undefined });
  });

  it('decodes the cursor into the key to start after', () => {
    expect(pageQueryOf(CURSORS.hosts, { limit: 7, cursor: encodeCursor(CURSORS.hosts, ['h9']) })).toEqual({ limit: 7, after: ['h9'] });
  });

  it('refuses a cursor of another list', () => {
    expect(errorOf(() => pageQueryOf(CURSORS.pools, { cursor: encodeCursor(CURSORS.hosts, ['h9']) })).details).toMatchObject({ field: 'cursor' });
  });
});

describe('pageOf (limit + 1 rows read)', () => {
  const key = (h: { id: string }): [string] => [h.id];
  const hosts = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `h${String(i).padStart(4, '0')}` }));

  it('has no nextCursor when the rows fit the limit', () => {
    expect(pageOf(CURSORS.hosts, hosts(3), 3, key)).toEqual({ items: hosts(3) });
    expect(pageOf(CURSORS.hosts, [], 3, key)).toEqual({ items: [] });
  });

  it("drops the extra row and points nextCursor at the page's last item", () => {
    const page = pageOf(CURSORS.hosts, hosts(4), 3, key);
    expect(page.items).toEqual(hosts(3));
    expect(decodeCursor(CURSORS.hosts, page.nextCursor!)).toEqual(['h0002']);
  });

  it('walks a list in pages: each item once, in order', () => {
    const all = hosts(2_500);
    const seen: string[] = [];
    let after: string | undefined;
    for (let guard = 0; guard < 10; guard++) {
      const rows = all.filter((h) => after === undefined || h.id > after).slice(0, 1_001);
      const page = pageOf(CURSORS.hosts, rows, 1_000, key);
      seen.push(...page.items.map((h) => h.id));
      if (!page.nextCursor) break;
      after = decodeCursor(CURSORS.hosts, page.nextCursor)[0];
    }
    expect(seen).toEqual(all.map((h) => h.id));
  });
});

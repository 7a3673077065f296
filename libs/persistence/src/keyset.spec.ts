import { describe, expect, it } from 'vitest';
import { keysetAfter } from './keyset';

describe('keysetAfter', () => {
  it('is empty on the first page', () => {
    expect(keysetAfter(['id'], undefined)).toEqual({ sql: '', params: [] });
  });

  it('compares one column', () => {
    expect(keysetAfter(['id'], ['h1'])).toEqual({ sql: 'id > ?', params: ['h1'] });
  });

  it('compares a composite key lexicographically', () => {
    expect(keysetAfter(['env', 'app', 'slot'], ['prod', 'web', 7])).toEqual({
      sql: '(env > ? OR (env = ? AND (app > ? OR (app = ? AND slot > ?))))',
      params: ['prod', 'prod', 'web', 'web', 7],
    });
  });

  it('selects exactly the rows after the key, as ORDER BY env, app, slot sorts them', () => {
    const rows: [string, string, number][] = [];
    for (const env of ['a', 'b']) for (const app of ['x', 'y']) for (let slot = 0; slot < 12; slot++) rows.push([env, app, slot]);
    const { sql, params } = keysetAfter(['env', 'app', 'slot'], ['a', 'y', 9]);
    // Evaluate the generated SQL on the rows: a tiny interpreter of its three operators.
    const evaluate = (row: [string, string, number]): boolean => {
      const p = [...params];
      const js = sql
        .replace(/(env|app|slot) (>|=) \?/g, (_m, col: string, op: string) => {
          const v = row[['env', 'app', 'slot'].indexOf(col)];
          const x = p.shift();
          return String(op === '>' ? (v as never) > (x as never) : v === x);
        })
        .replace(/ OR /g, ' || ')
        .replace(/ AND /g, ' && ');
      return Function(`return ${js}`)() as boolean;
    };
    const after = rows.filter(evaluate);
    expect(after[0]).toEqual(['a', 'y', 10]);
    expect(after).toEqual(rows.slice(rows.findIndex((r) => r[0] === 'a' && r[1] === 'y' && r[2] === 10)));
  });

  it('refuses a key of the wrong length and a column that is no name', () => {
    expect(() => keysetAfter(['env', 'app'], ['a'])).toThrow();
    expect(() => keysetAfter(['id; DROP TABLE x'], ['a'])).toThrow();
  });
});

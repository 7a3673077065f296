import { describe, expect, it } from 'vitest';
import { placeholders } from './sql-pool';

describe('placeholders (statements sent one per round trip on Galera take their own values)', () => {
  it.each([
    ['SELECT 1', 0],
    ['SELECT * FROM t WHERE a = ? AND b IN (?)', 2],
    ['SELECT \'?\' , "?", `?` FROM t WHERE a = ?', 1],
    ["SELECT 'it\\'s ?' FROM t WHERE a = ? AND b = ?", 2],
    ['INSERT INTO t (a, b) VALUES (?, ?), (?, ?)', 4],
  ])('%s has %i', (sql, n) => {
    expect(placeholders(sql)).toBe(n);
  });
});

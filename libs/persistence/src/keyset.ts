/**
 * Keyset pagination (list subjects, CONTRACT.md "Operators" v1.1): a page is read as
 * `WHERE <key> > <last key of the previous page> ORDER BY <key> LIMIT n + 1`, so each page
 * costs an index range scan whatever its depth, and rows inserted or removed meanwhile
 * never shift an item into a second page or out of all of them.
 */

/**
 * The condition "the row's key comes after `after`" for a key of one or more columns, as
 * nested ORs a range optimizer uses (`a > ? OR (a = ? AND b > ?)` ...), with its
 * parameters. Column names are the caller's constants, never input. Empty when there is
 * no `after` (the first page).
 */
export function keysetAfter(columns: readonly string[], after: readonly unknown[] | undefined): { sql: string; params: unknown[] } {
  if (after === undefined) return { sql: '', params: [] };
  if (after.length !== columns.length || columns.length === 0) throw new Error(`keyset of ${columns.length} column(s) given ${after.length} value(s)`);
  for (const c of columns) if (!/^[a-z_][a-z0-9_]*$/.test(c)) throw new Error(`not a column name: ${c}`);
  const build = (i: number): { sql: string; params: unknown[] } => {
    const col = columns[i]!;
    if (i === columns.length - 1) return { sql: `${col} > ?`, params: [after[i]] };
    const rest = build(i + 1);
    return { sql: `(${col} > ? OR (${col} = ? AND ${rest.sql}))`, params: [after[i], after[i], ...rest.params] };
  };
  return build(0);
}

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDbUrl, SqlPool } from '@orangery/persistence';
import { freshDatabase } from '@orangery/testing';

// Issue 13, no secret in any log: mysql2 puts the failed statement, with its values
// formatted in, on the error it throws (`sql`). Journaled records hold an app's
// `environment`, and a logged error object prints every enumerable field: SqlPool drops it.
let pool: SqlPool;
const SECRET = 's3cr3t-of-the-bank';

beforeAll(async () => {
  pool = new SqlPool(parseDbUrl(await freshDatabase('sql_errors')), 2);
  await pool.transaction(async (tx) => {
    await tx.query('CREATE TABLE t (id INT PRIMARY KEY, record VARCHAR(8) NOT NULL)');
  });
}, 30_000);

afterAll(async () => {
  await pool?.end();
});

describe('SqlPool errors', () => {
  it("carry the server's code and message but never the statement with its values", async () => {
    const failed = await pool
      .transaction(async (tx) => {
        await tx.query('INSERT INTO t (id, record) VALUES (?, ?)', [1, JSON.stringify({ environment: { DB_PASSWORD: SECRET } })]);
      })
      .then(
        () => undefined,
        (e: unknown) => e as Record<string, unknown>,
      );
    expect(failed).toBeDefined();
    expect(failed).toMatchObject({ code: expect.any(String), sqlMessage: expect.any(String) });
    expect(failed).not.toHaveProperty('sql');
    expect(JSON.stringify(failed) + String(failed)).not.toContain(SECRET);
    const read = await pool
      .read((tx) => tx.query('SELECT * FROM no_such_table WHERE record = ?', [SECRET]))
      .then(
        () => undefined,
        (e: unknown) => e as Record<string, unknown>,
      );
    expect(read).toMatchObject({ code: 'ER_NO_SUCH_TABLE' });
    expect(JSON.stringify(read) + String(read)).not.toContain(SECRET);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatabaseBusyError, parseDbUrl, SqlPool } from '@orangery/persistence';
import { freshDatabase } from '@orangery/testing';

// mysql2's wait queue is bounded (ORANGERY_DB_QUEUE_LIMIT): on a real MariaDB, a caller
// beyond the limit is refused at once with DatabaseBusyError (services answer UNAVAILABLE,
// retryable), while those within it are served.
let pool: SqlPool;

beforeAll(async () => {
  pool = new SqlPool(parseDbUrl(await freshDatabase('sql_pool_bounds')), 1, undefined, 1);
});

afterAll(async () => {
  await pool?.end();
});

describe('SqlPool queue limit', () => {
  it('refuses at once a caller beyond the queue limit, and serves the others', async () => {
    const holding = pool.read((q) => q.query('SELECT SLEEP(1) AS s'));
    const queued = pool.read((q) => q.query<{ one: number }[]>('SELECT 1 AS one'));
    // refused, not queued: a queued caller would be served once the holder is done
    await expect(pool.read((q) => q.query('SELECT 2'))).rejects.toBeInstanceOf(DatabaseBusyError);
    await holding;
    expect((await queued)[0]!.one).toBe(1);
    // and once the queue is empty again, callers are served
    expect(await pool.read((q) => q.query<{ two: number }[]>('SELECT 2 AS two'))).toEqual([{ two: 2 }]);
  });
});

import { describe, expect, it, vi } from 'vitest';
import { DatabaseBusyError, type OutboxRelay, type SqlPool } from '@orangery/persistence';
import type { Logger } from '@orangery/telemetry';
import { MysqlSchedulerStore } from './mysql-scheduler-store';

/** A pool whose first transaction waits for `release`, and every later one finds the database busy. */
function busyAfterFirst() {
  let calls = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const sql = {
    async transaction<T>(work: (tx: unknown) => Promise<T>): Promise<T> {
      calls++;
      if (calls > 1) throw new DatabaseBusyError(1000);
      await gate;
      return work({ query: async () => [{ epoch: 1 }], defer: () => undefined });
    },
  } as unknown as SqlPool;
  return { sql, release, calls: () => calls };
}

describe('MysqlSchedulerStore group commit', () => {
  it('a busy database fails the whole group at once instead of retrying each change one by one', async () => {
    const db = busyAfterFirst();
    const outbox = { publishCommitted: async () => undefined } as unknown as OutboxRelay;
    const log = { warn: vi.fn(), info: vi.fn(), debug: vi.fn(), error: vi.fn() } as unknown as Logger;
    const store = new MysqlSchedulerStore(db.sql, outbox, 'test', log);
    store.fenceWith(() => 1);
    const first = store.commit({ apps: [] });
    // these two wait for the first transaction and go together as the next group
    const grouped = [store.commit({ apps: [] }), store.commit({ apps: [] })].map((p) =>
      p.then(
        () => 'ok',
        (e: unknown) => (e as Error).name,
      ),
    );
    db.release();
    await first;
    expect(await Promise.all(grouped)).toEqual(['DatabaseBusyError', 'DatabaseBusyError']);
    expect(db.calls()).toBe(2);
  });
});

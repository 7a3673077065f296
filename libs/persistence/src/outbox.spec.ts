import { describe, expect, it, vi } from 'vitest';
import type { EventEnvelope } from '@orangery/contracts';
import type { Logger } from '@orangery/telemetry';
import { isPoisonPublishError, OutboxRelay, type OutboxPublisher } from './outbox';
import type { SqlPool } from './sql-pool';

interface Row {
  id: number;
  event_subject: string | null;
  event_json: string | null;
  sent?: number;
}

/** An outbox table in memory behind the statements the sweeper runs. */
function fakeSql(rows: Row[], floor = 0): { sql: SqlPool; sent: (id: number) => number | undefined } {
  const sql = {
    async transaction<T>(work: (tx: unknown) => Promise<T>): Promise<T> {
      const deferred: { text: string; params: unknown[] }[] = [];
      const tx = {
        async query(text: string, params: unknown[] = []): Promise<unknown> {
          if (text.includes('FOR UPDATE SKIP LOCKED')) return [{ last_id: floor }];
          return rows.filter((r) => (r.sent ?? 0) === 0 && r.id > Number(params[0])).sort((a, b) => a.id - b.id);
        },
        defer(text: string, params: unknown[] = []): void {
          deferred.push({ text, params });
        },
      };
      const result = await work(tx);
      for (const d of deferred) {
        const to = Number(/SET sent = (\d)/.exec(d.text)![1]);
        for (const r of rows) if ((d.params[0] as number[]).includes(r.id) && (r.sent ?? 0) === 0) r.sent = to;
      }
      return result;
    },
  } as unknown as SqlPool;
  return { sql, sent: (id) => rows.find((r) => r.id === id)?.sent };
}

const logger = () => ({ warn: vi.fn(), error: vi.fn(), debug: vi.fn(), info: vi.fn() });

const row = (id: number, eventId = `ev-${id}`): Row => ({
  id,
  event_subject: 'orangery.evt.scale.rejected',
  event_json: JSON.stringify({ id: eventId, type: 'io.orangery.scale.rejected' }),
});

/** The error the NATS client throws for a header value with CR or LF. */
function headerError(): Error {
  const e = new Error("'header' values cannot contain \\r or \\n");
  e.name = 'InvalidArgumentError';
  return e;
}

function transientError(): Error {
  const e = new Error('timeout');
  e.name = 'TimeoutError';
  return e;
}

function relay(rows: Row[], publish: (subject: string, event: EventEnvelope) => Promise<void>) {
  const { sql, sent } = fakeSql(rows);
  const log = logger();
  const publisher: OutboxPublisher = { publish: vi.fn(publish) };
  const r = new OutboxRelay(
    sql,
    publisher,
    log as unknown as Logger,
    { events: 'sched_outbox', cursor: 'sched_outbox_cursor' },
    { service: 'test', retentionSeconds: 0 },
  );
  return { r, sent, log, publisher };
}

describe('OutboxRelay.sweep', () => {
  it('skips and reports a row that can never be published, and publishes every later row', async () => {
    const rows = [row(1), row(2, 'scale-rejected:a\r\nb'), row(3), { id: 4, event_subject: 'orangery.evt.x', event_json: '{not json' }, row(5)];
    const published: string[] = [];
    const { r, sent, log } = relay(rows, async (_s, ev) => {
      if (ev.id.includes('\r')) throw headerError();
      published.push(ev.id);
    });
    expect(await r.sweep()).toBe(3);
    expect(published).toEqual(['ev-1', 'ev-3', 'ev-5']);
    expect([1, 2, 3, 4, 5].map(sent)).toEqual([1, 2, 1, 2, 1]);
    expect(r.stats()).toEqual({ poisoned: 2, lastPoisonedId: 4 });
    expect(log.error).toHaveBeenCalledTimes(2);
    expect(log.error.mock.calls[0]![0]).toMatchObject({ id: 2, table: 'sched_outbox' });
    // the next sweep does not try them again
    expect(await r.sweep()).toBe(0);
    expect(r.stats().poisoned).toBe(2);
  });

  it('stops at a transient failure without moving past it, and goes on once NATS is back', async () => {
    let down = true;
    const published: string[] = [];
    const { r, sent, log } = relay([row(1), row(2), row(3)], async (_s, ev) => {
      if (down && ev.id === 'ev-2') throw transientError();
      published.push(ev.id);
    });
    expect(await r.sweep()).toBe(1);
    expect([1, 2, 3].map(sent)).toEqual([1, undefined, undefined]);
    expect(log.warn).toHaveBeenCalled();
    expect(r.stats().poisoned).toBe(0);
    down = false;
    expect(await r.sweep()).toBe(2);
    expect(published).toEqual(['ev-1', 'ev-2', 'ev-3']);
    expect([1, 2, 3].map(sent)).toEqual([1, 1, 1]);
  });

  it('publishes a row that became visible after rows with higher ids were swept (out-of-order commit)', async () => {
    const rows = [row(1), row(3)];
    const published: string[] = [];
    const { r } = relay(rows, async (_s, ev) => void published.push(ev.id));
    expect(await r.sweep()).toBe(2);
    // id 2's transaction commits now, after 3 was swept: an id cursor at 3 would never see it
    rows.push(row(2));
    expect(await r.sweep()).toBe(1);
    expect(await r.sweep()).toBe(0);
    expect(published).toEqual(['ev-1', 'ev-3', 'ev-2']);
  });
});

describe('isPoisonPublishError', () => {
  it.each<[string, unknown, boolean]>([
    ['a CR/LF header value', headerError(), true],
    ['a stored event that is not JSON', new SyntaxError('Unexpected token'), true],
    ['max_payload exceeded', Object.assign(new Error("'payload' max_payload size exceeded"), { name: 'InvalidArgumentError' }), true],
    ['an illegal subject', Object.assign(new Error("illegal subject: 'a b'"), { name: 'InvalidSubjectError' }), true],
    ['JetStream refusing the size', Object.assign(new Error('message size exceeds maximum allowed'), { name: 'JetStreamApiError' }), true],
    ['a timeout', transientError(), false],
    ['no responders (stream down)', Object.assign(new Error('no responders'), { name: 'NoResponders' }), false],
    ['a closed connection', Object.assign(new Error('closed connection'), { name: 'ClosedConnectionError' }), false],
    ['JetStream 503', Object.assign(new Error('503'), { name: 'JetStreamStatusError' }), false],
    ['not an Error', 'boom', false],
  ])('%s -> %s', (_what, err, poison) => {
    expect(isPoisonPublishError(err)).toBe(poison);
  });
});

describe('OutboxRelay marks what JetStream acked', () => {
  /** Records the mark UPDATEs; `down` makes them fail like a database away. */
  function markingSql() {
    const updates: { fromId: number; ids: string[] }[] = [];
    let down = false;
    const sql = {
      async transaction<T>(work: (tx: unknown) => Promise<T>): Promise<T> {
        return work({
          async query(text: string, params: unknown[] = []) {
            if (down) throw Object.assign(new Error('database unavailable'), { name: 'DatabaseUnavailableError' });
            expect(text).toContain('SET sent = 1 WHERE id >= ? AND sent = 0 AND event_id IN (?)');
            updates.push({ fromId: params[0] as number, ids: params[1] as string[] });
            return { affectedRows: (params[1] as string[]).length };
          },
        });
      },
    } as unknown as SqlPool;
    return { sql, updates, setDown: (d: boolean) => (down = d) };
  }

  const pending = (id: string) => ({ natsSubject: 'orangery.evt.ip.bound', event: { id } as EventEnvelope });

  it("marks only the events whose publish was acked, from the transaction's first row id, in one UPDATE for several transactions", async () => {
    const m = markingSql();
    const r = new OutboxRelay(
      m.sql,
      { publish: async (_s, ev) => (ev.id === 'b' ? Promise.reject(transientError()) : undefined) },
      logger() as unknown as Logger,
      { events: 'ipam_audit', cursor: 'ipam_outbox_cursor' },
      { service: 'test', retentionSeconds: 0 },
    );
    await r.publishCommitted([pending('a'), pending('b')], 40);
    await r.publishCommitted([pending('c')], 42);
    // no row id (a caller that could not tell): nothing marked, the sweeper publishes it again
    await r.publishCommitted([pending('d')]);
    expect(await r.markConfirmed()).toBe(2);
    expect(m.updates).toEqual([{ fromId: 40, ids: ['a', 'c'] }]);
    expect(await r.markConfirmed()).toBe(0);
  });

  it('keeps the marks while the database is away and sends them once it is back', async () => {
    const m = markingSql();
    const r = new OutboxRelay(
      m.sql,
      { publish: async () => undefined },
      logger() as unknown as Logger,
      { events: 'sched_outbox', cursor: 'sched_outbox_cursor' },
      {
        service: 'test',
        retentionSeconds: 0,
      },
    );
    await r.publishCommitted([pending('a')], 7);
    m.setDown(true);
    expect(await r.markConfirmed()).toBe(0);
    m.setDown(false);
    expect(await r.markConfirmed()).toBe(1);
    expect(m.updates).toEqual([{ fromId: 7, ids: ['a'] }]);
  });
});

import { describe, expect, it, vi } from 'vitest';
import type { Msg, NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '@orangery/telemetry';
import { Responder } from './responder';

type Callback = (err: Error | null, msg: Msg) => void;

/** A NATS connection that hands each request to the Responder's callback and records replies. */
function fakeNats() {
  const callbacks = new Map<string, Callback>();
  const nc = {
    subscribe(subject: string, opts: { callback: Callback }) {
      callbacks.set(subject, opts.callback);
      return { drain: async () => undefined };
    },
  } as unknown as NatsConnection;
  const replies: unknown[] = [];
  const send = (subject: string, body: unknown) =>
    callbacks.get(subject)!(null, {
      subject,
      reply: '_INBOX.x',
      data: new TextEncoder().encode(JSON.stringify(body)),
      headers: undefined,
      respond: (data: string) => replies.push(JSON.parse(data)),
    } as unknown as Msg);
  return { nc, send, replies };
}

const logger = () => ({ warn: vi.fn(), error: vi.fn(), info: vi.fn(), debug: vi.fn() }) as unknown as Logger;

describe('Responder', () => {
  it('refuses a request beyond maxInFlight at once with a retryable UNAVAILABLE, and takes requests again once one is answered', async () => {
    const { nc, send, replies } = fakeNats();
    const gates: (() => void)[] = [];
    const handled: number[] = [];
    const r = new Responder(nc, 'q', logger(), { maxInFlight: 2 });
    r.serve([
      {
        subject: 's',
        handler: async (body) => {
          handled.push(body['n'] as number);
          await new Promise<void>((res) => gates.push(res));
          return { n: body['n'] };
        },
      },
    ]);
    send('s', { n: 1 });
    send('s', { n: 2 });
    send('s', { n: 3 });
    expect(handled).toEqual([1, 2]);
    expect(replies).toEqual([
      { ok: false, error: { code: 'UNAVAILABLE', message: expect.stringContaining('2 requests'), details: { retryable: true, limit: 2 } } },
    ]);
    expect(r.refusedCount()).toBe(1);
    gates.shift()!();
    await vi.waitFor(() => expect(replies).toHaveLength(2));
    send('s', { n: 4 });
    expect(handled).toEqual([1, 2, 4]);
    for (const g of gates.splice(0)) g();
    await vi.waitFor(() => expect(replies).toHaveLength(4));
  });

  it('answers a database that is unreachable or busy as a retryable UNAVAILABLE without the driver text', async () => {
    const { nc, send, replies } = fakeNats();
    const r = new Responder(nc, 'q', logger());
    const busy = Object.assign(new Error('database busy: 1000 requests already wait for a connection'), { name: 'DatabaseBusyError', unavailable: true });
    const down = Object.assign(new Error('database unavailable: connect ECONNREFUSED 10.1.2.3:3306'), { name: 'DatabaseUnavailableError', unavailable: true });
    let next: Error = busy;
    r.serve([{ subject: 's', handler: async () => Promise.reject(next) }]);
    send('s', {});
    await vi.waitFor(() => expect(replies).toHaveLength(1));
    next = down;
    send('s', {});
    await vi.waitFor(() => expect(replies).toHaveLength(2));
    expect(replies[0]).toMatchObject({ ok: false, error: { code: 'UNAVAILABLE', message: expect.stringContaining('busy'), details: { retryable: true } } });
    expect(replies[1]).toMatchObject({ ok: false, error: { code: 'UNAVAILABLE', details: { retryable: true } } });
    expect(JSON.stringify(replies)).not.toContain('10.1.2.3');
  });
});

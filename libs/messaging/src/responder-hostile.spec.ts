import { describe, expect, it, vi } from 'vitest';
import { headers, type Msg, type NatsConnection } from '@nats-io/nats-core';
import { pino } from 'pino';
import { headersOf } from './trace-headers';
import { OrangeryError } from '@orangery/contracts';
import { boundedErrorBody, MAX_ERROR_TEXT, Responder } from './responder';

/** What the client does on the first `msg.headers` of a block with a header name it would never write. */
function malformedHeaders(): never {
  const h = headers();
  h.append('Bad Key', 'v'); // throws InvalidArgumentError, as MsgHdrsImpl.decode does for a received 'Bad Key: v'
  throw new Error('unreachable');
}

type Callback = (err: Error | null, msg: Msg) => void;

/** A NatsConnection that records subscriptions; `deliver` hands a message to one. */
function fakeConnection() {
  const callbacks = new Map<string, Callback>();
  const nc = {
    subscribe: (subject: string, opts: { callback: Callback }) => {
      callbacks.set(subject, opts.callback);
      return { drain: async () => undefined };
    },
  } as unknown as NatsConnection;
  return { nc, deliver: (subject: string, msg: Msg) => callbacks.get(subject)!(null, msg) };
}

function message(subject: string, body: string, hdrs: () => ReturnType<typeof headers> | undefined) {
  const respond = vi.fn<(data: string) => boolean>(() => true);
  const msg = {
    subject,
    reply: '_INBOX.test',
    data: new TextEncoder().encode(body),
    get headers() {
      return hdrs();
    },
    respond,
  } as unknown as Msg;
  return { msg, respond };
}

const logger = pino({ level: 'silent' });

describe('headersOf', () => {
  it('hands back readable headers, and none (malformed) for a block the client cannot decode', () => {
    const h = headers();
    h.set('Orangery-Actor', 'ops');
    expect(headersOf({ headers: h })).toEqual({ headers: h, malformed: false });
    expect(headersOf({ headers: undefined })).toEqual({ headers: undefined, malformed: false });
    expect(
      headersOf({
        get headers() {
          return malformedHeaders();
        },
      }),
    ).toEqual({ headers: undefined, malformed: true });
  });
});

describe('Responder', () => {
  it('answers a request whose header block is malformed with INVALID_REQUEST, without calling the handler', async () => {
    const { nc, deliver } = fakeConnection();
    const handler = vi.fn(async () => ({ done: true }));
    new Responder(nc, 'q', logger).serve([{ subject: 's', handler }]);
    const { msg, respond } = message('s', '{}', malformedHeaders);
    deliver('s', msg);
    await vi.waitFor(() => expect(respond).toHaveBeenCalledTimes(1));
    const reply = JSON.parse(respond.mock.calls[0]![0]) as { ok: boolean; error: { code: string; details: { field: string } } };
    expect(reply).toMatchObject({ ok: false, error: { code: 'INVALID_REQUEST', details: { field: 'headers' } } });
    expect(handler).not.toHaveBeenCalled();
  });

  it('passes readable headers on: the actor comes from Orangery-Actor', async () => {
    const { nc, deliver } = fakeConnection();
    const handler = vi.fn(async (_b: Record<string, unknown>, ctx: { actor: string | undefined }) => ({ actor: ctx.actor }));
    new Responder(nc, 'q', logger).serve([{ subject: 's', handler }]);
    const h = headers();
    h.set('Orangery-Actor', 'ops');
    const { msg, respond } = message('s', '{"a":1}', () => h);
    deliver('s', msg);
    await vi.waitFor(() => expect(respond).toHaveBeenCalledTimes(1));
    expect(JSON.parse(respond.mock.calls[0]![0])).toEqual({ ok: true, data: { actor: 'ops' } });
  });
});

describe('error replies are bounded', () => {
  it('a refusal quoting a 1 MB input is answered in a few KB', async () => {
    const { nc, deliver } = fakeConnection();
    const huge = 'A'.repeat(1_000_000);
    const handler = vi.fn(async () => {
      throw new OrangeryError('INVALID_REQUEST', `field 'reserved': entry 0 ('${huge}') is not an address`, {
        field: 'reserved',
        reason: `'${huge}'`,
        nested: { list: [huge] },
      });
    });
    new Responder(nc, 'q', logger).serve([{ subject: 's', handler }]);
    const { msg, respond } = message('s', '{}', () => undefined);
    deliver('s', msg);
    await vi.waitFor(() => expect(respond).toHaveBeenCalledTimes(1));
    const text = respond.mock.calls[0]![0];
    expect(text.length).toBeLessThan(8 * MAX_ERROR_TEXT);
    const reply = JSON.parse(text) as { ok: boolean; error: { code: string; message: string; details: { field: string } } };
    expect(reply).toMatchObject({ ok: false, error: { code: 'INVALID_REQUEST', details: { field: 'reserved' } } });
    expect(reply.error.message).toMatch(/^field 'reserved': entry 0 \('AAAA+\.\.\. \(10000\d\d characters\)$/);
  });

  it('boundedErrorBody leaves a short body as it is', () => {
    const body = { code: 'NOT_FOUND' as const, message: 'no pool p', details: { pool: 'p', n: 1, list: ['a'] } };
    expect(boundedErrorBody(body)).toEqual(body);
    expect(boundedErrorBody({ code: 'NOT_FOUND', message: 'm' })).toEqual({ code: 'NOT_FOUND', message: 'm' });
  });

  it('a reply the connection refuses to send (over max_payload) is replaced by a short INTERNAL error', async () => {
    const { nc, deliver } = fakeConnection();
    new Responder(nc, 'q', logger).serve([{ subject: 's', handler: async () => ({ rows: 'x'.repeat(100) }) }]);
    const { msg, respond } = message('s', '{}', () => undefined);
    respond.mockImplementationOnce(() => {
      throw new Error('MAX_PAYLOAD_EXCEEDED');
    });
    deliver('s', msg);
    await vi.waitFor(() => expect(respond).toHaveBeenCalledTimes(2));
    expect(JSON.parse(respond.mock.calls[1]![0])).toMatchObject({ ok: false, error: { code: 'INTERNAL', details: { bytes: expect.any(Number) } } });
  });
});

import { errors, type NatsConnection } from '@nats-io/nats-core';
import { context } from '@opentelemetry/api';
import type { Reply } from '@orangery/contracts';
import { headersWithTrace } from './trace-headers';

/** Why a request got no reply: nobody serves the subject, or the server was too slow. */
export class NoReplyError extends Error {
  constructor(
    readonly subject: string,
    readonly kind: 'no-responders' | 'timeout',
  ) {
    super(kind === 'no-responders' ? `no service answers ${subject}` : `${subject} did not answer in time`);
    this.name = 'NoReplyError';
  }
}

/** Sends a contract request and returns the reply envelope; trace context rides along. */
export async function requestJson<T = unknown>(
  nc: NatsConnection,
  subject: string,
  body: unknown,
  timeoutMs = 5_000,
): Promise<Reply<T>> {
  try {
    const msg = await nc.request(subject, JSON.stringify(body), {
      timeout: timeoutMs,
      headers: headersWithTrace(context.active()),
    });
    return JSON.parse(msg.string()) as Reply<T>;
  } catch (e) {
    if (e instanceof errors.RequestError && e.isNoResponders()) throw new NoReplyError(subject, 'no-responders');
    if (e instanceof errors.NoRespondersError) throw new NoReplyError(subject, 'no-responders');
    if (e instanceof errors.TimeoutError) throw new NoReplyError(subject, 'timeout');
    throw e;
  }
}

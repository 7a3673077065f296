import { errors, type NatsConnection } from '@nats-io/nats-core';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { contractCode, PortError, RETRYABLE_CODES, type Reply } from '@orangery/contracts';
import { errorKindOf } from '@orangery/telemetry';
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

/**
 * Sends a contract request and returns the reply envelope. The request runs in a CLIENT span
 * (named after the subject, child of the active context) whose context rides in the headers,
 * so the server's span is its child.
 */
export async function requestJson<T = unknown>(nc: NatsConnection, subject: string, body: unknown, timeoutMs = 5_000): Promise<Reply<T>> {
  const span = trace
    .getTracer('orangery')
    .startSpan(subject, { kind: SpanKind.CLIENT, attributes: { 'messaging.system': 'nats', 'messaging.destination.name': subject } }, context.active());
  try {
    const msg = await nc.request(subject, JSON.stringify(body), {
      timeout: timeoutMs,
      headers: headersWithTrace(trace.setSpan(context.active(), span)),
    });
    const reply = JSON.parse(msg.string()) as Reply<T>;
    if (!reply.ok) span.setAttribute('orangery.error_code', reply.error.code);
    return reply;
  } catch (e) {
    // the error's name or contract code, not its text: a driver's message may name a host
    span.setStatus({ code: SpanStatusCode.ERROR, message: errorKindOf(e) });
    if (e instanceof errors.RequestError && e.isNoResponders()) throw new NoReplyError(subject, 'no-responders');
    if (e instanceof errors.NoRespondersError) throw new NoReplyError(subject, 'no-responders');
    if (e instanceof errors.TimeoutError) throw new NoReplyError(subject, 'timeout');
    throw e;
  } finally {
    span.end();
  }
}

/**
 * requestJson for a service's ports: no reply (nobody serves the subject now, or too slow)
 * becomes a retryable PortError UNAVAILABLE; the reply envelope is returned as it is.
 */
export async function callContract<T>(nc: NatsConnection, subject: string, body: unknown, timeoutMs: number): Promise<Reply<T>> {
  try {
    return await requestJson<T>(nc, subject, body, timeoutMs);
  } catch (e) {
    if (e instanceof NoReplyError) throw new PortError('UNAVAILABLE', e.message, true, { subject, kind: e.kind });
    throw new PortError('UNAVAILABLE', `${subject}: ${e instanceof Error ? e.message : String(e)}`, true);
  }
}

/** The data of an ok reply, or the reply's error as a PortError (retryable as RETRYABLE_CODES says). */
export function unwrapReply<T>(r: Reply<T>): T {
  if (r.ok) return r.data;
  throw replyError(r.error);
}

/** A reply's error as a PortError; a code this build does not know is INTERNAL. */
export function replyError(error: { code: string; message: string; details?: Record<string, unknown> }): PortError {
  const code = contractCode(error.code);
  return new PortError(code, error.message, RETRYABLE_CODES.has(code), error.details);
}

import type { Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/nats-core';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { errorReply, invalidRequest, isOrangeryError, okReply, OrangeryError, parseJsonObject, type ErrorBody, type Reply } from '@orangery/contracts';
import { requestDuration, requestsTotal, type Logger } from '@orangery/telemetry';
import { contextFromHeaders, headersOf } from './trace-headers';

export interface RequestContext {
  subject: string;
  headers: MsgHdrs | undefined;
  /** who sent it, when the caller says (header `Orangery-Actor`); for audit trails */
  actor: string | undefined;
}

/** Most characters of an error's message, and of each string in its details, in a reply. */
export const MAX_ERROR_TEXT = 1024;

const clip = (s: string): string => (s.length > MAX_ERROR_TEXT ? `${s.slice(0, MAX_ERROR_TEXT)}... (${s.length} characters)` : s);

function clipStrings(v: unknown, depth: number): unknown {
  if (typeof v === 'string') return clip(v);
  if (depth <= 0 || v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map((x) => clipStrings(x, depth - 1));
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, clipStrings(x, depth - 1)]));
}

/**
 * An error body with every string bounded: a refusal may quote the input it refuses (an
 * entry of `reserved`, a name), and a 1 MB field quoted in the message and again in the
 * details made a reply four times the request, over NATS' max_payload, so it was never
 * sent and the caller timed out (found by the fuzz suite).
 */
export function boundedErrorBody(body: ErrorBody): ErrorBody {
  const message = clip(body.message);
  return body.details === undefined
    ? { code: body.code, message }
    : { code: body.code, message, details: clipStrings(body.details, 4) as Record<string, unknown> };
}

export type RequestHandler = (body: Record<string, unknown>, ctx: RequestContext) => Promise<unknown>;

export interface Route {
  subject: string;
  handler: RequestHandler;
}

/** Requests handled at once per Responder, by default (ORANGERY_MAX_IN_FLIGHT_REQUESTS). */
export const DEFAULT_MAX_IN_FLIGHT = 1_024;
let processMaxInFlight = DEFAULT_MAX_IN_FLIGHT;

/** Sets the default cap of every Responder made afterwards (runService, from the environment). */
export function setDefaultMaxInFlight(n: number): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`max in-flight requests must be a positive integer, got ${n}`);
  processMaxInFlight = n;
}

export interface ResponderOptions {
  /** requests handled at once; beyond, a request is refused at once with a retryable UNAVAILABLE */
  maxInFlight?: number;
}

/**
 * Serves request-reply subjects with the contract's plain-JSON envelope: a bare NATS
 * client in any language sends a JSON object and gets `{ok, data}` or `{ok:false, error}`.
 * Replicas share a queue group. Handlers run concurrently, at most `maxInFlight` at once:
 * beyond that a request is answered at once with UNAVAILABLE (`retryable: true`) instead of
 * queueing without bound (a slow database or peer would otherwise turn into unbounded memory
 * and replies that arrive after the caller gave up). `drain()` stops taking new requests and
 * waits until those in flight have been answered.
 */
export class Responder {
  private readonly subs: Subscription[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly maxInFlight: number;
  private refused = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly queue: string,
    private readonly logger: Logger,
    options: ResponderOptions = {},
  ) {
    this.maxInFlight = options.maxInFlight ?? processMaxInFlight;
  }

  /** Requests refused because maxInFlight were being handled. */
  refusedCount(): number {
    return this.refused;
  }

  serve(routes: readonly Route[]): void {
    for (const route of routes) {
      const sub = this.nc.subscribe(route.subject, {
        queue: this.queue,
        callback: (err, msg) => {
          if (err) {
            this.logger.error({ err, subject: route.subject }, 'subscription error');
            return;
          }
          if (this.inFlight.size >= this.maxInFlight) {
            this.refuse(route, msg);
            return;
          }
          const p = this.handle(route, msg).finally(() => this.inFlight.delete(p));
          this.inFlight.add(p);
        },
      });
      this.subs.push(sub);
    }
  }

  private refuse(route: Route, msg: Msg): void {
    this.refused++;
    // one line per 1000 refusals: an overload must not also flood the log
    if (this.refused % 1000 === 1)
      this.logger.warn({ subject: route.subject, limit: this.maxInFlight, refused: this.refused }, 'too many requests in flight; refusing');
    requestsTotal.inc({ subject: route.subject, code: 'UNAVAILABLE' });
    if (!msg.reply) return;
    const error = new OrangeryError('UNAVAILABLE', `${this.maxInFlight} requests are already in flight here; retry shortly`, {
      retryable: true,
      limit: this.maxInFlight,
    });
    try {
      msg.respond(JSON.stringify(errorReply(error.toBody())));
    } catch (e) {
      this.logger.warn({ err: e, subject: route.subject }, 'could not send the reply');
    }
  }

  private async handle(route: Route, msg: Msg): Promise<void> {
    const started = performance.now();
    // A header block the client cannot read is the caller's error, answered like a bad body
    // (reading it here unguarded threw out of this method: no reply, the caller timed out).
    const { headers, malformed } = headersOf(msg);
    const parent = contextFromHeaders(headers);
    const span = trace.getTracer('orangery').startSpan(route.subject, { kind: SpanKind.SERVER }, parent);
    const reply = await context.with(trace.setSpan(parent, span), async (): Promise<Reply<unknown>> => {
      try {
        if (malformed) throw invalidRequest('headers', 'the message headers are malformed (a header name with a space, colon or control character)');
        const body = parseJsonObject(msg.data);
        const data = await route.handler(body, {
          subject: msg.subject,
          headers,
          actor: headers?.get('Orangery-Actor') || undefined,
        });
        return okReply(data ?? {});
      } catch (e) {
        if (isOrangeryError(e)) {
          span.setAttribute('orangery.error_code', e.code);
          if (e.code === 'INTERNAL' || e.code === 'UNAVAILABLE') this.logger.warn({ err: e, subject: route.subject }, e.message);
          return errorReply(boundedErrorBody(e.toBody()));
        }
        if ((e as { unavailable?: unknown } | null)?.unavailable === true) {
          // the database (DatabaseUnavailableError, DatabaseBusyError): nothing was done; retryable
          span.setAttribute('orangery.error_code', 'UNAVAILABLE');
          this.logger.warn({ err: String(e), subject: route.subject }, 'request refused: the database is unavailable or busy');
          // the driver's text stays in the log: it may name the database's host
          const busy = (e as Error).name === 'DatabaseBusyError';
          const what = busy ? 'the database is busy (too many requests wait for a connection)' : 'the database is unreachable';
          return errorReply(new OrangeryError('UNAVAILABLE', `${what}; nothing was changed, retry later`, { retryable: true }).toBody());
        }
        span.recordException(e as Error);
        span.setStatus({ code: SpanStatusCode.ERROR });
        this.logger.error({ err: e, subject: route.subject }, 'request failed with an unexpected error');
        const traceId = span.spanContext().traceId;
        return errorReply(new OrangeryError('INTERNAL', 'internal error; it was logged', { traceId }).toBody());
      }
    });
    span.end();
    requestsTotal.inc({ subject: route.subject, code: reply.ok ? 'ok' : reply.error.code });
    requestDuration.observe({ subject: route.subject }, (performance.now() - started) / 1000);
    if (!msg.reply) return;
    let text: string;
    try {
      text = JSON.stringify(reply);
    } catch (e) {
      // a handler's data that JSON cannot hold (a BigInt, a cycle): the caller still gets an answer
      this.logger.error({ err: e, subject: route.subject }, 'could not serialise the reply');
      text = JSON.stringify(errorReply({ code: 'INTERNAL', message: 'the reply could not be serialised; it was logged' }));
    }
    try {
      msg.respond(text);
    } catch (e) {
      this.logger.warn({ err: e, subject: route.subject, bytes: text.length }, 'could not send the reply');
      // Most likely over max_payload: a short error still tells the caller, who would otherwise wait for its timeout.
      try {
        msg.respond(
          JSON.stringify(
            errorReply({ code: 'INTERNAL', message: 'the reply could not be sent (larger than the server allows?)', details: { bytes: text.length } }),
          ),
        );
      } catch {
        /* the connection itself is gone: the caller's timeout tells it */
      }
    }
  }

  async drain(): Promise<void> {
    await Promise.all(this.subs.map((s) => s.drain().catch(() => undefined)));
    await Promise.allSettled([...this.inFlight]);
  }
}

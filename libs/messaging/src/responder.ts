import type { Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/nats-core';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { errorReply, invalidRequest, isOrangeryError, okReply, OrangeryError, parseJsonObject, type Reply } from '@orangery/contracts';
import type { Logger } from '@orangery/telemetry';
import { contextFromHeaders, headersOf } from './trace-headers';

export interface RequestContext {
  subject: string;
  headers: MsgHdrs | undefined;
  /** who sent it, when the caller says (header `Orangery-Actor`); for audit trails */
  actor: string | undefined;
}

export type RequestHandler = (body: Record<string, unknown>, ctx: RequestContext) => Promise<unknown>;

export interface Route {
  subject: string;
  handler: RequestHandler;
}

/**
 * Serves request-reply subjects with the contract's plain-JSON envelope: a bare NATS
 * client in any language sends a JSON object and gets `{ok, data}` or `{ok:false, error}`.
 * Replicas share a queue group. Handlers run concurrently; `drain()` stops taking new
 * requests and waits until those in flight have been answered.
 */
export class Responder {
  private readonly subs: Subscription[] = [];
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly queue: string,
    private readonly logger: Logger,
  ) {}

  serve(routes: readonly Route[]): void {
    for (const route of routes) {
      const sub = this.nc.subscribe(route.subject, {
        queue: this.queue,
        callback: (err, msg) => {
          if (err) {
            this.logger.error({ err, subject: route.subject }, 'subscription error');
            return;
          }
          const p = this.handle(route, msg).finally(() => this.inFlight.delete(p));
          this.inFlight.add(p);
        },
      });
      this.subs.push(sub);
    }
  }

  private async handle(route: Route, msg: Msg): Promise<void> {
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
          return errorReply(e.toBody());
        }
        span.recordException(e as Error);
        span.setStatus({ code: SpanStatusCode.ERROR });
        this.logger.error({ err: e, subject: route.subject }, 'request failed with an unexpected error');
        const traceId = span.spanContext().traceId;
        return errorReply(new OrangeryError('INTERNAL', 'internal error; it was logged', { traceId }).toBody());
      }
    });
    span.end();
    if (!msg.reply) return;
    try {
      msg.respond(JSON.stringify(reply));
    } catch (e) {
      this.logger.warn({ err: e, subject: route.subject }, 'could not send the reply');
    }
  }

  async drain(): Promise<void> {
    await Promise.all(this.subs.map((s) => s.drain().catch(() => undefined)));
    await Promise.allSettled([...this.inFlight]);
  }
}

import { context, propagation, ROOT_CONTEXT, type Context } from '@opentelemetry/api';
import { headers as newHeaders, type MsgHdrs } from '@nats-io/nats-core';

// W3C trace context travels in NATS message headers (`traceparent`, `tracestate`), the same
// names as in HTTP, so any language's propagator reads them.
const setter = { set: (h: MsgHdrs, k: string, v: string) => h.set(k, v) };
const getter = {
  get: (h: MsgHdrs | undefined, k: string) => h?.get(k) || undefined,
  keys: (h: MsgHdrs | undefined) => (h ? [...h.keys()] : []),
};

export function headersWithTrace(ctx: Context = context.active(), base?: MsgHdrs): MsgHdrs {
  const h = base ?? newHeaders();
  propagation.inject(ctx, h, setter);
  return h;
}

export function contextFromHeaders(h: MsgHdrs | undefined): Context {
  return propagation.extract(ROOT_CONTEXT, h, getter);
}

/** The active context's traceparent, for CloudEvents' `traceparent` extension. */
export function currentTraceparent(ctx: Context = context.active()): string | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier['traceparent'];
}

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

/**
 * A message's headers, or `malformed` when its header block cannot be read. The client
 * decodes headers lazily, on the first `msg.headers`, and throws there for a header name it
 * would never write (a space, a colon, a control character): any publisher on the bus can
 * send such a block as raw protocol bytes. Every read of a received message's headers goes
 * through here, so a bad block is bad input to answer or ignore, never an exception thrown
 * out of a subscription callback or a consumer loop.
 */
export function headersOf(msg: { readonly headers?: MsgHdrs | undefined }): { headers: MsgHdrs | undefined; malformed: boolean } {
  try {
    return { headers: msg.headers, malformed: false };
  } catch {
    return { headers: undefined, malformed: true };
  }
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

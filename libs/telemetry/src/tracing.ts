import { NodeSDK } from '@opentelemetry/sdk-node';
import { context, propagation, ROOT_CONTEXT, trace, type Context, type Tracer } from '@opentelemetry/api';

let sdk: NodeSDK | undefined;

// With no processor at all the SDK registers no tracer provider, and spans get no ids;
// this one keeps ids (for logs and `traceparent`) while exporting nothing.
const discardSpans = {
  onStart: () => undefined,
  onEnd: () => undefined,
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};

/**
 * Starts OpenTelemetry from the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT,
 * OTEL_TRACES_EXPORTER, OTEL_SDK_DISABLED, ...). With no exporter configured, spans are
 * still created (so trace ids reach logs and the `traceparent` of events) but exported
 * nowhere, rather than to a collector that is not there.
 */
export function startTelemetry(serviceName: string): void {
  if (sdk || process.env['OTEL_SDK_DISABLED'] === 'true') return;
  const exporterConfigured =
    process.env['OTEL_TRACES_EXPORTER'] !== undefined ||
    process.env['OTEL_EXPORTER_OTLP_ENDPOINT'] !== undefined ||
    process.env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] !== undefined;
  process.env['OTEL_SERVICE_NAME'] ??= `orangery-${serviceName}`;
  // No metrics or logs exporters unless asked for: the defaults would dial localhost:4318.
  process.env['OTEL_METRICS_EXPORTER'] ??= 'none';
  process.env['OTEL_LOGS_EXPORTER'] ??= 'none';
  sdk = new NodeSDK({
    serviceName: process.env['OTEL_SERVICE_NAME'],
    instrumentations: [],
    ...(exporterConfigured ? {} : { spanProcessors: [discardSpans] }),
  });
  sdk.start();
}

export async function stopTelemetry(): Promise<void> {
  await sdk?.shutdown().catch(() => undefined);
  sdk = undefined;
}

export const tracer = (name = 'orangery'): Tracer => trace.getTracer(name);

/**
 * The context that continues a stored W3C `traceparent` (a saga's, an app record's), through
 * the registered propagator; undefined when it is not a valid one.
 */
export function contextOfTraceparent(traceparent: string | undefined, tracestate?: string): Context | undefined {
  if (!traceparent) return undefined;
  const ctx = propagation.extract(ROOT_CONTEXT, { traceparent, ...(tracestate ? { tracestate } : {}) });
  return trace.getSpanContext(ctx) ? ctx : undefined;
}

/** The active context's W3C `traceparent`, to store with work that outlives it (a saga); undefined when there is no valid span. */
export function activeTraceparent(): string | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier['traceparent'];
}

/** What a span's error status says of `e`: its contract code (`code`) or its class name, never its message. */
export function errorKindOf(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(code)) return code;
  return e instanceof Error ? e.name : typeof e;
}

import { createRequire } from 'node:module';
import { context, propagation, ROOT_CONTEXT, trace, type Context, type Tracer } from '@opentelemetry/api';
import type { NodeSDK } from '@opentelemetry/sdk-node';
import type { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';

/** how the running telemetry stops (undefined: not started) */
let stopping: (() => Promise<void>) | undefined;
/** Loaded on demand: `@opentelemetry/sdk-node` brings every exporter (gRPC, protobuf...). */
const load = createRequire(import.meta.url);

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
  if (stopping || process.env['OTEL_SDK_DISABLED'] === 'true') return;
  const exporterConfigured =
    process.env['OTEL_TRACES_EXPORTER'] !== undefined ||
    process.env['OTEL_EXPORTER_OTLP_ENDPOINT'] !== undefined ||
    process.env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] !== undefined;
  process.env['OTEL_SERVICE_NAME'] ??= `orangery-${serviceName}`;
  // No metrics or logs exporters unless asked for: the defaults would dial localhost:4318.
  process.env['OTEL_METRICS_EXPORTER'] ??= 'none';
  process.env['OTEL_LOGS_EXPORTER'] ??= 'none';
  if (!exporterConfigured) {
    // Spans with ids, the async context and W3C propagation: sdk-node's tracer provider
    // alone, registered as sdk-node registers it. sdk-node itself is not loaded: with all
    // its exporters it is ~7 MiB of heap in every process, for nothing to export (issue 17).
    const { NodeTracerProvider: Provider } = load('@opentelemetry/sdk-trace-node') as { NodeTracerProvider: typeof NodeTracerProvider };
    const provider = new Provider({ spanProcessors: [discardSpans] });
    provider.register();
    stopping = () => provider.shutdown();
    return;
  }
  const { NodeSDK: Sdk } = load('@opentelemetry/sdk-node') as { NodeSDK: typeof NodeSDK };
  const sdk = new Sdk({ serviceName: process.env['OTEL_SERVICE_NAME'], instrumentations: [] });
  sdk.start();
  stopping = () => sdk.shutdown();
}

export async function stopTelemetry(): Promise<void> {
  await stopping?.().catch(() => undefined);
  stopping = undefined;
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

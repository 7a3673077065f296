import { createRequire } from 'node:module';
import { context, trace } from '@opentelemetry/api';
import { afterAll, describe, expect, it } from 'vitest';
import { activeTraceparent, contextOfTraceparent, startTelemetry, stopTelemetry, tracer } from './tracing';

describe('startTelemetry with no exporter configured (issue 17: without sdk-node)', () => {
  afterAll(() => stopTelemetry());

  it('spans get ids, the context follows awaits, traceparent goes out and comes back; sdk-node is not loaded', async () => {
    for (const k of ['OTEL_TRACES_EXPORTER', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_SDK_DISABLED']) delete process.env[k];
    startTelemetry('tracing-spec');
    const span = tracer().startSpan('work');
    const id = span.spanContext();
    expect(id.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(id.traceId).not.toBe('0'.repeat(32));
    const tp = await context.with(trace.setSpan(context.active(), span), async () => {
      await new Promise((r) => setTimeout(r, 5)); // the async context survives an await
      return activeTraceparent();
    });
    span.end();
    expect(tp).toBe(`00-${id.traceId}-${id.spanId}-01`);
    const back = contextOfTraceparent(tp);
    expect(trace.getSpanContext(back!)?.traceId).toBe(id.traceId);
    const cache = Object.keys(createRequire(import.meta.url).cache);
    expect(cache.filter((k) => k.includes('sdk-node'))).toEqual([]);
  });
});

import { pino, type Logger as PinoLogger } from 'pino';
import { trace, isSpanContextValid } from '@opentelemetry/api';

export type Logger = PinoLogger;

/** Paths never written to logs, whatever a caller passes in. */
const REDACT = ['password', '*.password', 'dbUrl', '*.dbUrl', 'config.dbUrl', 'vcenterPassword', '*.vcenterPassword', 'authorization', '*.authorization'];

/**
 * Structured JSON logs (pino) that carry the active trace and span ids, so a log line can be
 * found from a trace and the other way round. Level from LOG_LEVEL (default info).
 */
export function createLogger(service: string, extra: Record<string, unknown> = {}): Logger {
  return pino({
    name: service,
    level: process.env['LOG_LEVEL'] ?? 'info',
    base: { service, pid: process.pid, ...extra },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin() {
      const ctx = trace.getActiveSpan()?.spanContext();
      return ctx && isSpanContextValid(ctx) ? { trace_id: ctx.traceId, span_id: ctx.spanId } : {};
    },
  });
}

import { buildEvent, type EventEnvelope } from '@orangery/contracts';
import type { Logger } from '@orangery/telemetry';
import type { EventPublisher } from './jetstream';
import { currentTraceparent } from './trace-headers';

const MAX_QUEUED = 10_000;

/**
 * Events into JetStream, in order, surviving NATS outages, for processes without a
 * database (the host agents): events wait in memory (bounded: the oldest goes first when
 * full) and are published when NATS is back. The event id is the JetStream message id, so
 * a retried publish is stored once. An event pushed while serving a command continues the
 * command's trace.
 */
export class EventBuffer {
  private readonly queue: { subject: string; event: EventEnvelope }[] = [];
  private pumping = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly publisher: EventPublisher,
    private readonly logger: Logger,
    private readonly maxQueued = MAX_QUEUED,
  ) {}

  push(e: { area: string; what: string; source: string; subject: string; data: Record<string, unknown> }): void {
    const traceparent = currentTraceparent();
    const { natsSubject, event } = buildEvent({ ...e, ...(traceparent ? { traceparent } : {}) });
    if (this.queue.length >= this.maxQueued) {
      const dropped = this.queue.shift();
      this.logger.error({ dropped: dropped?.event.type }, 'event queue full; dropped the oldest event');
    }
    this.queue.push({ subject: natsSubject, event });
    void this.pump();
  }

  get pending(): number {
    return this.queue.length;
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length > 0) {
        const next = this.queue[0]!;
        try {
          await this.publisher.publish(next.subject, next.event);
          this.queue.shift();
        } catch (err) {
          this.logger.debug({ err: String(err), pending: this.queue.length }, 'event publish failed; retrying');
          clearTimeout(this.timer);
          this.timer = setTimeout(() => void this.pump(), 1_000);
          return;
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Waits up to `ms` for the queue to empty (shutdown). */
  async flush(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.queue.length > 0 && Date.now() < deadline) {
      await this.pump();
      await new Promise((r) => setTimeout(r, 50));
    }
    clearTimeout(this.timer);
  }
}

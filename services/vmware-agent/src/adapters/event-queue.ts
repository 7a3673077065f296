import { buildEvent, type EventEnvelope } from '@orangery/contracts';
import { currentTraceparent, type EventPublisher } from '@orangery/messaging';
import type { Logger } from '@orangery/telemetry';
import type { EventSink, InstanceEvent } from '../domain/ports';

const MAX_QUEUED = 10_000;

/**
 * The vmware-agent's events (one source per ESXi host) into JetStream, in order, surviving NATS outages: an agent has no database,
 * so events wait in memory (bounded) and are published when NATS is back. The event id is
 * the JetStream message id, so a retried publish is stored once.
 */
export class EventQueue implements EventSink {
  private readonly queue: { subject: string; event: EventEnvelope }[] = [];
  private pumping = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly publisher: EventPublisher,
    private readonly logger: Logger,
  ) {}

  instance(e: InstanceEvent): void {
    this.push(e.hostId, 'instance', e.what, e.instanceId, { instanceId: e.instanceId, hostId: e.hostId, backend: 'vmware', ...e.data });
  }

  host(hostId: string, what: string, data: Record<string, unknown>): void {
    this.push(hostId, 'host', what, hostId, { hostId, backend: 'vmware', ...data });
  }

  private push(hostId: string, area: string, what: string, subject: string, data: Record<string, unknown>): void {
    // Inside a command the caller's trace is active: the event continues it.
    const traceparent = currentTraceparent();
    const { natsSubject, event } = buildEvent({
      area,
      what,
      source: `orangery/vmware-agent/${hostId || 'unplaced'}`,
      subject,
      data,
      ...(traceparent ? { traceparent } : {}),
    });
    if (this.queue.length >= MAX_QUEUED) {
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

import { EventBuffer, type EventPublisher } from '@orangery/messaging';
import type { Logger } from '@orangery/telemetry';
import type { EventSink, InstanceEvent } from '../domain/ports';

/** The docker-agent's events, through an EventBuffer (in order, kept in memory across NATS outages). */
export class EventQueue implements EventSink {
  private readonly buffer: EventBuffer;

  constructor(
    publisher: EventPublisher,
    private readonly hostId: string,
    logger: Logger,
  ) {
    this.buffer = new EventBuffer(publisher, logger);
  }

  instance(e: InstanceEvent): void {
    this.push('instance', e.what, e.instanceId, { instanceId: e.instanceId, hostId: this.hostId, backend: 'docker', ...e.data });
  }

  host(what: string, data: Record<string, unknown>): void {
    this.push('host', what, this.hostId, { hostId: this.hostId, backend: 'docker', ...data });
  }

  private push(area: string, what: string, subject: string, data: Record<string, unknown>): void {
    this.buffer.push({ area, what, source: `orangery/docker-agent/${this.hostId}`, subject, data });
  }

  get pending(): number {
    return this.buffer.pending;
  }

  flush(ms: number): Promise<void> {
    return this.buffer.flush(ms);
  }
}

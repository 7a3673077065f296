import type { NatsConnection } from '@nats-io/nats-core';
import { EventBuffer, EventPublisher } from '@orangery/messaging';
import type { Logger } from '@orangery/telemetry';
import type { EventSink, InstanceEvent } from '../domain/ports';

type Pushed = Parameters<EventBuffer['push']>[0];

/**
 * The docker-agent's events, through an EventBuffer (in order, kept in memory across NATS
 * outages). It exists before NATS does: the self-fence runs from the start, and an agent
 * that starts during a partition may have to fence before it has ever connected. Events
 * pushed before `attach` wait here, in order, and go first.
 */
export class EventQueue implements EventSink {
  private buffer: EventBuffer | undefined;
  private readonly early: Pushed[] = [];

  constructor(
    private readonly hostId: string,
    private readonly logger: Logger,
  ) {}

  /** NATS is connected: from now on events are published (after those that waited). */
  attach(nc: NatsConnection): void {
    if (this.buffer) return;
    this.buffer = new EventBuffer(new EventPublisher(nc), this.logger);
    for (const e of this.early.splice(0)) this.buffer.push(e);
  }

  instance(e: InstanceEvent): void {
    this.push('instance', e.what, e.instanceId, { instanceId: e.instanceId, hostId: this.hostId, backend: 'docker', ...e.data });
  }

  host(what: string, data: Record<string, unknown>): void {
    this.push('host', what, this.hostId, { hostId: this.hostId, backend: 'docker', ...data });
  }

  private push(area: string, what: string, subject: string, data: Record<string, unknown>): void {
    const e = { area, what, source: `orangery/docker-agent/${this.hostId}`, subject, data };
    if (this.buffer) this.buffer.push(e);
    else if (this.early.length < 10_000) this.early.push(e);
  }

  get pending(): number {
    return (this.buffer?.pending ?? 0) + this.early.length;
  }

  async flush(ms: number): Promise<void> {
    await this.buffer?.flush(ms);
  }
}

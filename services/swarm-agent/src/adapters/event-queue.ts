import { EventBuffer, type EventPublisher } from '@orangery/messaging';
import type { Logger } from '@orangery/telemetry';
import type { EventSink, InstanceEventKind } from '../domain/ports';

/** The swarm-agent's events, one source per node host, through an EventBuffer (in order, kept across NATS outages). */
export class EventQueue implements EventSink {
  private readonly buffer: EventBuffer;

  constructor(publisher: EventPublisher, logger: Logger) {
    this.buffer = new EventBuffer(publisher, logger);
  }

  instance(hostId: string, what: InstanceEventKind, instanceId: string, data: Record<string, unknown>): void {
    this.push(hostId, 'instance', what, instanceId, { instanceId, hostId, backend: 'swarm', ...data });
  }

  host(hostId: string, what: string, data: Record<string, unknown>): void {
    this.push(hostId, 'host', what, hostId, { hostId, backend: 'swarm', ...data });
  }

  private push(hostId: string, area: string, what: string, subject: string, data: Record<string, unknown>): void {
    // undefined fields (an address not known yet) are left out of the event
    const clean = Object.fromEntries(Object.entries(data).filter(([, v]) => v !== undefined));
    this.buffer.push({ area, what, source: `orangery/swarm-agent/${hostId}`, subject, data: clean });
  }

  get pending(): number {
    return this.buffer.pending;
  }

  flush(ms: number): Promise<void> {
    return this.buffer.flush(ms);
  }
}

import { EventBuffer, type EventPublisher } from '@orangery/messaging';
import type { Logger } from '@orangery/telemetry';
import type { EventSink, InstanceEvent } from '../domain/ports';

/** The vmware-agent's events, one source per ESXi host, through an EventBuffer (in order, kept across NATS outages). */
export class EventQueue implements EventSink {
  private readonly buffer: EventBuffer;

  constructor(publisher: EventPublisher, logger: Logger) {
    this.buffer = new EventBuffer(publisher, logger);
  }

  instance(e: InstanceEvent): void {
    this.push(e.hostId, 'instance', e.what, e.instanceId, { instanceId: e.instanceId, hostId: e.hostId, backend: 'vmware', ...e.data });
  }

  host(hostId: string, what: string, data: Record<string, unknown>): void {
    this.push(hostId, 'host', what, hostId, { hostId, backend: 'vmware', ...data });
  }

  private push(hostId: string, area: string, what: string, subject: string, data: Record<string, unknown>): void {
    this.buffer.push({ area, what, source: `orangery/vmware-agent/${hostId || 'unplaced'}`, subject, data });
  }

  get pending(): number {
    return this.buffer.pending;
  }

  flush(ms: number): Promise<void> {
    return this.buffer.flush(ms);
  }
}

import { jetstreamManager, jetstream, RetentionPolicy, StorageType, DiscardPolicy, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { headers as newHeaders } from '@nats-io/nats-core';
import { EVENTS_STREAM, type EventEnvelope } from '@orangery/contracts';
import type { Logger } from '@orangery/telemetry';

const nanos = (seconds: number): number => seconds * 1_000_000_000;

/**
 * Creates ORANGERY_EVENTS if it does not exist. Every service calls this at start; the
 * configuration is one constant, so replicas racing here create the same stream and the
 * loser's "already in use" is success.
 */
export async function ensureEventsStream(nc: NatsConnection, logger: Logger): Promise<void> {
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.streams.info(EVENTS_STREAM.name);
    return;
  } catch {
    // not found: create below
  }
  try {
    await jsm.streams.add({
      name: EVENTS_STREAM.name,
      subjects: [...EVENTS_STREAM.subjects],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(EVENTS_STREAM.maxAgeSeconds),
      duplicate_window: nanos(EVENTS_STREAM.duplicateWindowSeconds),
    });
    logger.info({ stream: EVENTS_STREAM.name }, 'created the events stream');
  } catch (e) {
    await jsm.streams.info(EVENTS_STREAM.name).catch(() => {
      throw e;
    });
  }
}

/**
 * Publishes a CloudEvent into JetStream and waits for the stream's ack. The event id is the
 * JetStream message id, so publishing the same event twice (outbox retries) stores it once.
 */
export class EventPublisher {
  private readonly js: JetStreamClient;

  constructor(nc: NatsConnection) {
    this.js = jetstream(nc, { timeout: 5_000 });
  }

  async publish(natsSubject: string, event: EventEnvelope): Promise<void> {
    const h = newHeaders();
    h.set('Content-Type', 'application/cloudevents+json');
    if (event.traceparent) h.set('traceparent', event.traceparent);
    await this.js.publish(natsSubject, JSON.stringify(event), { msgID: event.id, headers: h });
  }
}

export { jetstream, jetstreamManager };

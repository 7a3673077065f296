import { jetstreamManager, jetstream, RetentionPolicy, StorageType, DiscardPolicy, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { headers as newHeaders } from '@nats-io/nats-core';
import { EVENTS_STREAM, messageIdOf, type EventEnvelope } from '@orangery/contracts';
import type { Logger } from '@orangery/telemetry';

const nanos = (seconds: number): number => seconds * 1_000_000_000;

export interface StreamSpec {
  readonly name: string;
  readonly subjects: readonly string[];
  readonly maxAgeSeconds: number;
  readonly duplicateWindowSeconds: number;
}

/**
 * Creates a stream if it does not exist. Every service that needs one calls this at start;
 * the configuration is one constant, so replicas racing here create the same stream and the
 * loser's "already in use" is success.
 */
export async function ensureStream(nc: NatsConnection, spec: StreamSpec, logger: Logger): Promise<void> {
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.streams.info(spec.name);
    return;
  } catch {
    // not found: create below
  }
  try {
    await jsm.streams.add({
      name: spec.name,
      subjects: [...spec.subjects],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(spec.maxAgeSeconds),
      duplicate_window: nanos(spec.duplicateWindowSeconds),
    });
    logger.info({ stream: spec.name }, 'created a stream');
  } catch (e) {
    await jsm.streams.info(spec.name).catch(() => {
      throw e;
    });
  }
}

/** ORANGERY_EVENTS (CONTRACT.md "Events"): every service that publishes ensures it. */
export const ensureEventsStream = (nc: NatsConnection, logger: Logger): Promise<void> => ensureStream(nc, EVENTS_STREAM, logger);

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
    await this.js.publish(natsSubject, JSON.stringify(event), { msgID: messageIdOf(event.id), headers: h });
  }
}

export { jetstream, jetstreamManager };

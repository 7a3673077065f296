import { jetstreamManager, jetstream, RetentionPolicy, StorageType, DiscardPolicy, type JetStreamClient, type StreamConfig } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { headers as newHeaders } from '@nats-io/nats-core';
import { EVENTS_STREAM, SCALE_STREAM, messageIdOf, type EventEnvelope } from '@orangery/contracts';
import type { Logger } from '@orangery/telemetry';

const nanos = (seconds: number): number => seconds * 1_000_000_000;

export interface StreamSpec {
  readonly name: string;
  readonly subjects: readonly string[];
  readonly maxAgeSeconds: number;
  readonly duplicateWindowSeconds: number;
  /** the stream's byte bound (max_bytes); none when absent */
  readonly maxBytes?: number;
  /** at the bound: `old` drops the oldest messages, `new` refuses the publish (the publisher gets an error) */
  readonly discard?: 'old' | 'new';
}

/** The settings ensureStream keeps in line on an existing stream, as JetStream spells them. */
export function desiredStreamConfig(spec: StreamSpec): Partial<StreamConfig> & { name: string; subjects: string[] } {
  return {
    name: spec.name,
    subjects: [...spec.subjects],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: spec.discard === 'new' ? DiscardPolicy.New : DiscardPolicy.Old,
    max_age: nanos(spec.maxAgeSeconds),
    duplicate_window: nanos(spec.duplicateWindowSeconds),
    max_bytes: spec.maxBytes ?? -1,
  };
}

/** The editable settings of `current` that differ from `desired` (empty: nothing to update). */
export function streamConfigDrift(current: Partial<StreamConfig>, desired: Partial<StreamConfig>): Partial<StreamConfig> {
  const drift: Partial<StreamConfig> = {};
  if ((current.max_bytes ?? -1) !== desired.max_bytes) drift.max_bytes = desired.max_bytes;
  if (current.discard !== desired.discard) drift.discard = desired.discard;
  return drift;
}

/**
 * Creates a stream if it does not exist. Every service that needs one calls this at start;
 * the configuration is one constant, so replicas racing here create the same stream and the
 * loser's "already in use" is success.
 */
export async function ensureStream(nc: NatsConnection, spec: StreamSpec, logger: Logger): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const desired = desiredStreamConfig(spec);
  let current: Partial<StreamConfig> | undefined;
  try {
    current = (await jsm.streams.info(spec.name)).config;
  } catch {
    // not found: create below
  }
  if (current) {
    // A stream made by an older build (no byte bound, say) is brought in line, not left as it was.
    const drift = streamConfigDrift(current, desired);
    if (Object.keys(drift).length > 0) {
      await jsm.streams.update(spec.name, drift);
      logger.info({ stream: spec.name, ...drift }, 'updated a stream');
    }
    return;
  }
  try {
    await jsm.streams.add(desired);
    logger.info({ stream: spec.name }, 'created a stream');
  } catch (e) {
    await jsm.streams.info(spec.name).catch(() => {
      throw e;
    });
  }
}

/** ORANGERY_EVENTS (CONTRACT.md "Events"): every service that publishes ensures it. */
export const ensureEventsStream = (nc: NatsConnection, logger: Logger): Promise<void> =>
  ensureStream(nc, { ...EVENTS_STREAM, maxBytes: streamByteLimits.events }, logger);

/** The byte bounds of the project's streams (ORANGERY_EVENTS_STREAM_MAX_MB, ORANGERY_SCALE_STREAM_MAX_MB). */
export const streamByteLimits = { events: EVENTS_STREAM.maxBytes as number, scale: SCALE_STREAM.maxBytes as number };

/** Sets the byte bounds every stream is created or updated with (runService, from the environment). */
export function setStreamByteLimits(limits: { events: number; scale: number }): void {
  streamByteLimits.events = limits.events;
  streamByteLimits.scale = limits.scale;
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
    await this.js.publish(natsSubject, JSON.stringify(event), { msgID: messageIdOf(event.id), headers: h });
  }
}

export { jetstream, jetstreamManager };

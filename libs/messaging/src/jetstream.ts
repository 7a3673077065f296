import {
  jetstreamManager,
  jetstream,
  RetentionPolicy,
  StorageType,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
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

/** The most replicas a stream gets (CONTRACT: "as many replicas as the cluster has nodes, up to 3"). */
export const MAX_REPLICAS = 3;

/**
 * How many JetStream servers this connection's cluster has, as the server it is connected to
 * tells its clients: a clustered server lists every member's client URL in `connect_urls`
 * (itself included); a standalone one has no `cluster`. An estimate only: ensureStream falls
 * back to fewer replicas when the server says it cannot place that many.
 */
export function clusterSizeOf(nc: NatsConnection): number {
  const info = nc.info as ({ cluster?: string; connect_urls?: string[] } & object) | undefined;
  if (!info?.cluster) return 1;
  return Math.max(1, new Set(info.connect_urls ?? []).size);
}

/** The configuration a stream of `spec` should have on a cluster of `clusterSize` servers. */
export function desiredStreamConfig(spec: StreamSpec, clusterSize: number): Partial<StreamConfig> & { name: string; num_replicas: number } {
  return {
    name: spec.name,
    subjects: [...spec.subjects],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: spec.discard === 'new' ? DiscardPolicy.New : DiscardPolicy.Old,
    max_age: nanos(spec.maxAgeSeconds),
    duplicate_window: nanos(spec.duplicateWindowSeconds),
    max_bytes: spec.maxBytes ?? -1,
    num_replicas: Math.max(1, Math.min(MAX_REPLICAS, clusterSize)),
  };
}

/** The settings of `desired` that `current` does not have (an empty list: nothing to update). */
export function streamConfigDrift(current: Partial<StreamConfig>, desired: Partial<StreamConfig>): string[] {
  const drift: string[] = [];
  for (const [key, want] of Object.entries(desired)) {
    const have = (current as Record<string, unknown>)[key];
    const same = Array.isArray(want) ? Array.isArray(have) && [...have].sort().join('\n') === [...(want as unknown[])].sort().join('\n') : have === want;
    if (!same) drift.push(key);
  }
  return drift;
}

/** The server could not place that many replicas (a standalone server, or too few peers). */
function isReplicaPlacementError(e: unknown): boolean {
  const x = e as { api_error?: { err_code?: number }; message?: string };
  const code = x.api_error?.err_code;
  // 10074 replicas > 1 not supported in non-clustered mode, 10023 insufficient resources,
  // 10005 no suitable peers for placement
  return code === 10074 || code === 10023 || code === 10005 || /replicas|insufficient resources|no suitable peers/i.test(x.message ?? '');
}

/**
 * Creates a stream, or brings an existing one to the settings of `spec`: every service
 * that needs one calls this at start, and the configuration is a pure function of the spec
 * and the cluster's size, so replicas racing here converge on the same stream (the loser's
 * "already in use" is success). A stream made with older settings, or on a smaller cluster
 * (one replica), is updated in place: JetStream keeps its messages.
 */
export async function ensureStream(nc: NatsConnection, spec: StreamSpec, logger: Logger): Promise<void> {
  const jsm = await jetstreamManager(nc);
  for (let replicas = Math.min(MAX_REPLICAS, clusterSizeOf(nc)); ; replicas--) {
    const desired = desiredStreamConfig(spec, replicas);
    try {
      await applyStreamConfig(jsm, desired, logger);
      return;
    } catch (e) {
      if (replicas > 1 && isReplicaPlacementError(e)) {
        logger.warn({ stream: spec.name, replicas, err: String(e) }, 'the cluster cannot place that many stream replicas; trying fewer');
        continue;
      }
      throw e;
    }
  }
}

async function applyStreamConfig(jsm: JetStreamManager, desired: ReturnType<typeof desiredStreamConfig>, logger: Logger): Promise<void> {
  const current = await jsm.streams.info(desired.name).catch((e: unknown) => {
    if (isNotFound(e)) return undefined;
    throw e;
  });
  if (current) {
    // Never fewer replicas than the stream has: a service that saw a smaller cluster (a node
    // away at its start) must not shrink what another one grew. Never a byte bound below
    // what the stream holds: JetStream applies it by deleting the oldest messages at once,
    // whatever the discard policy, and stored scale requests would vanish without an
    // outcome. Such a stream keeps its bound (an operator may shrink it deliberately).
    const want = desired.max_bytes ?? -1;
    const stored = current.state.bytes ?? 0;
    let maxBytes = want;
    if (want !== -1 && stored > want) {
      maxBytes = current.config.max_bytes ?? -1;
      if (maxBytes !== want)
        logger.warn(
          { stream: desired.name, stored, bound: want },
          'a stream holds more than its new byte bound: its bound is left as it is, nothing is deleted',
        );
    }
    const target = { ...desired, num_replicas: Math.max(desired.num_replicas, current.config.num_replicas ?? 1), max_bytes: maxBytes };
    const drift = streamConfigDrift(current.config, target);
    if (drift.length === 0) return;
    try {
      await jsm.streams.update(desired.name, target);
      logger.info({ stream: desired.name, changed: drift, replicas: target.num_replicas }, 'updated a stream to its current settings');
    } catch (e) {
      // A user without the right to update (docs/security.md), or a cluster that cannot place
      // the replicas: the stream exists and works as it is; say so and carry on.
      if (isReplicaPlacementError(e)) throw e;
      logger.warn({ stream: desired.name, changed: drift, err: String(e) }, 'could not update a stream to its current settings; using it as it is');
    }
    return;
  }
  try {
    await jsm.streams.add(desired);
    logger.info({ stream: desired.name, replicas: desired.num_replicas }, 'created a stream');
  } catch (e) {
    // a replica racing us created it first: bring it to our settings (or find it already there)
    if (
      isReplicaPlacementError(e) ||
      !(await jsm.streams.info(desired.name).then(
        () => true,
        () => false,
      ))
    )
      throw e;
    await applyStreamConfig(jsm, desired, logger);
  }
}

function isNotFound(e: unknown): boolean {
  const x = e as { api_error?: { err_code?: number; code?: number }; code?: string | number; message?: string };
  return x.api_error?.err_code === 10059 || x.api_error?.code === 404 || /not found/i.test(x.message ?? '');
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

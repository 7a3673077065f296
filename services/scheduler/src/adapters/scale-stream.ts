import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type ConsumerConfig, type ConsumerMessages } from '@nats-io/jetstream';
import { ensureStream, headersOf, streamByteLimits, streamConfigDrift } from '@orangery/messaging';
import type { MsgHdrs, NatsConnection } from '@nats-io/nats-core';
import { SCALE_STREAM, SUBJECTS } from '@orangery/contracts';
import type { Logger } from '@orangery/telemetry';
import type { ScaleMessage } from '../domain/scale-intake';

const nanos = (s: number): number => s * 1_000_000_000;
/** A leader killed mid-request: its unacked messages go to the next leader after this. */
const ACK_WAIT_SECONDS = 15;
const MAX_IN_FLIGHT = 256;
/**
 * A request is delivered at most this many times. Every request is judged and acked on its
 * first delivery unless it cannot be judged now (ipam or the database away: nak with a
 * backoff up to a minute, see retryDelayMs), so this bounds a loop to about three hours of
 * such an outage; a request that can never be journaled is rejected at once instead.
 */
export const SCALE_MAX_DELIVER = 200;

/** The nak delay after the `delivery`-th delivery (1-based): 2 s, doubling, at most 60 s. */
export function retryDelayMs(delivery: number): number {
  return Math.min(2_000 * 2 ** Math.max(0, Math.min(delivery - 1, 10)), 60_000);
}

/** The scheduler's durable consumer on ORANGERY_SCALE. */
export const SCALE_CONSUMER_CONFIG = {
  durable_name: SCALE_STREAM.consumer,
  ack_policy: AckPolicy.Explicit,
  deliver_policy: DeliverPolicy.All,
  ack_wait: nanos(ACK_WAIT_SECONDS),
  max_ack_pending: 4 * MAX_IN_FLIGHT,
  max_deliver: SCALE_MAX_DELIVER,
  filter_subject: SUBJECTS.scaleAll,
} satisfies Partial<ConsumerConfig>;

/** Creates the scale stream and the scheduler's durable consumer (idempotent; replicas may race). */
export async function ensureScaleStream(nc: NatsConnection, logger: Logger): Promise<void> {
  await ensureStream(nc, { ...SCALE_STREAM, maxBytes: streamByteLimits.scale }, logger);
  const jsm = await jetstreamManager(nc);
  try {
    const info = await jsm.consumers.info(SCALE_STREAM.name, SCALE_STREAM.consumer);
    // A consumer made with older settings (before max_deliver existed, another ack wait...)
    // is brought to the current ones; its replicas follow the stream's (num_replicas 0).
    const desired = Object.fromEntries(CONSUMER_UPDATABLE.map((k) => [k, SCALE_CONSUMER_CONFIG[k]])) as Partial<ConsumerConfig>;
    const drift = streamConfigDrift(info.config, desired);
    if (drift.length > 0) {
      await jsm.consumers.update(SCALE_STREAM.name, SCALE_STREAM.consumer, desired).then(
        () => logger.info({ changed: drift }, 'scale consumer updated to its current settings'),
        // it still delivers with its older settings: not a reason to stop the scheduler
        (err: unknown) => logger.warn({ changed: drift, err: String(err) }, 'scale consumer could not be updated'),
      );
    }
  } catch (e) {
    if (!isNotFoundError(e)) throw e;
    await jsm.consumers.add(SCALE_STREAM.name, SCALE_CONSUMER_CONFIG).catch(async (e: unknown) => {
      await jsm.consumers.info(SCALE_STREAM.name, SCALE_STREAM.consumer).catch(() => {
        throw e;
      });
    });
  }
}

/** The settings JetStream lets a durable consumer change in place. */
const CONSUMER_UPDATABLE = ['ack_wait', 'max_ack_pending', 'max_deliver', 'filter_subject'] as const;

const isNotFoundError = (e: unknown): boolean => {
  const x = e as { api_error?: { err_code?: number; code?: number }; message?: string };
  return x.api_error?.err_code === 10014 || x.api_error?.code === 404 || /not found/i.test(x.message ?? '');
};

/**
 * A stored message as the intake judges it. A header block the client cannot read (any
 * publisher can store one with raw protocol bytes) loses its traceparent, nothing else:
 * the request still gets its one outcome, and the consumer loop never sees the throw
 * (it used to end the loop, and with it every later scale request, for good).
 */
export function scaleMessageOf(
  m: { readonly seq: number; readonly subject: string; readonly data: Uint8Array; readonly headers?: MsgHdrs | undefined },
  generation: { generation?: number },
): ScaleMessage {
  const traceparent = headersOf(m).headers?.get('traceparent') || undefined;
  return { seq: m.seq, ...generation, subject: m.subject, body: m.data, ...(traceparent ? { traceparent } : {}) };
}

export type ScaleVerdict = 'ack' | 'retry' | 'abandon';

/**
 * Pulls scale requests for the leader. Every message is answered: ack once its fate is
 * journaled, nak with a delay when it could not be judged now (ipam or the database away),
 * and on leadership loss nothing (the next leader gets it after the ack wait). A message
 * that cannot even be parsed is judged too (INVALID_REQUEST) and acked: a poison message
 * never blocks the stream.
 */
export class ScaleConsumer {
  private messages: ConsumerMessages | undefined;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly handle: (m: ScaleMessage) => Promise<ScaleVerdict>,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const js = jetstream(this.nc);
    // The stream's generation: a recreated stream restarts its sequences (see ScaleMessage.generation).
    const created = Date.parse((await (await jetstreamManager(this.nc)).streams.info(SCALE_STREAM.name)).created);
    const generation = Number.isFinite(created) ? { generation: created } : {};
    const consumer = await js.consumers.get(SCALE_STREAM.name, SCALE_STREAM.consumer);
    this.messages = await consumer.consume({ max_messages: MAX_IN_FLIGHT });
    void (async () => {
      for await (const m of this.messages!) {
        while (this.inFlight.size >= MAX_IN_FLIGHT) await Promise.race(this.inFlight);
        const delivery = m.info.deliveryCount;
        const p = Promise.resolve()
          .then(() => this.handle(scaleMessageOf(m, generation)))
          .then((v) => {
            if (v === 'ack') m.ack();
            else if (v === 'retry') {
              if (delivery >= SCALE_MAX_DELIVER) {
                this.logger.error(
                  { seq: m.seq, subject: m.subject, deliveries: delivery },
                  'scale request could not be judged in any delivery; JetStream gives up on it',
                );
              }
              m.nak(retryDelayMs(delivery));
            }
          })
          .catch((err: unknown) => {
            this.logger.error({ err: String(err), seq: m.seq }, 'scale request handling failed; redelivering');
            m.nak(5_000);
          })
          .finally(() => this.inFlight.delete(p));
        this.inFlight.add(p);
      }
    })().catch((err: unknown) => this.logger.warn({ err: String(err) }, 'scale consumer stopped'));
  }

  async stop(): Promise<void> {
    await this.messages?.close().catch(() => undefined);
    await Promise.allSettled([...this.inFlight]);
  }
}

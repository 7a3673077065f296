import { randomUUID } from 'node:crypto';
import { DeliverPolicy, jetstream, jetstreamManager, type Consumer, type ConsumerMessages, type JetStreamClient } from '@nats-io/jetstream';
import { errors, headers as newHeaders, type NatsConnection } from '@nats-io/nats-core';
import { context } from '@opentelemetry/api';
import { EVENTS_STREAM, SCALE_REQUESTED_TYPE, SCALE_STREAM, SUBJECTS, messageIdOf, type Reply } from '@orangery/contracts';
import { currentTraceparent, ensureEventsStream, ensureStream, headersWithTrace, streamByteLimits } from '@orangery/messaging';
import type { Logger } from '@orangery/telemetry';
import { ApiError } from '../domain/http-errors';
import { outcomeOf, type RequestIndex } from '../domain/request-index';

/**
 * The console's way to the platform: contract requests on core NATS (with the operator's
 * token name as `Orangery-Actor`, the audit actor), scale requests published to JetStream,
 * and ordered (ephemeral) consumers of the event and scale streams. The console keeps no
 * state of its own: everything it answers comes from here.
 */
export class NatsGateway {
  private readonly js: JetStreamClient;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs: number,
  ) {
    this.js = jetstream(nc, { timeout: 10_000 });
  }

  /**
   * The streams the console uses. ORANGERY_EVENTS must exist: it is created if missing
   * (the same config as every service's), and where the console's NATS user may not create
   * it (docs/security.md: the `console` user reads it only) the console waits, logging,
   * until a service has. ORANGERY_SCALE is created if the user may; otherwise publishing a
   * scale request answers 503 until the scheduler has created it.
   */
  static async provision(nc: NatsConnection, logger: Logger, signal: { stopped: boolean }): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await ensureEventsStream(nc, logger);
        break;
      } catch (e) {
        if (signal.stopped) throw e;
        if (attempt === 1 || attempt % 30 === 0) logger.warn({ err: e, stream: EVENTS_STREAM.name }, 'the event stream is not there yet; waiting for it');
        await new Promise((r) => setTimeout(r, 2_000));
      }
    }
    await ensureStream(nc, { ...SCALE_STREAM, maxBytes: streamByteLimits.scale }, logger).catch((e: unknown) =>
      logger.info({ err: e, stream: SCALE_STREAM.name }, 'could not look up or create the scale stream (the scheduler creates it)'),
    );
  }

  /**
   * One contract request; its reply's data, or its refusal as an ApiError with the
   * service's code. No reply is 503 UNAVAILABLE, saying whether nobody serves the subject
   * (the service is not running, or does not exist yet) or it was too slow.
   */
  async request<T>(subject: string, body: unknown, actor: string): Promise<T> {
    const h = headersWithTrace(context.active());
    h.set('Orangery-Actor', actor);
    let text: string;
    try {
      const msg = await this.nc.request(subject, JSON.stringify(body), { timeout: this.timeoutMs, headers: h });
      text = msg.string();
    } catch (e) {
      if ((e instanceof errors.RequestError && e.isNoResponders()) || e instanceof errors.NoRespondersError) {
        throw new ApiError('UNAVAILABLE', `no service answers ${subject}: it is not running (or not deployed yet)`, { subject, kind: 'no-responders' });
      }
      if (e instanceof errors.TimeoutError) {
        throw new ApiError('UNAVAILABLE', `${subject} did not answer within ${this.timeoutMs} ms`, { subject, kind: 'timeout' });
      }
      throw new ApiError('UNAVAILABLE', `${subject}: ${e instanceof Error ? e.message : String(e)}`, { subject });
    }
    let reply: Reply<T>;
    try {
      reply = JSON.parse(text) as Reply<T>;
    } catch {
      throw new ApiError('INTERNAL', `${subject} answered something that is not JSON`, { subject });
    }
    if (reply.ok) return reply.data;
    const err = reply.error ?? { code: 'INTERNAL', message: 'malformed reply' };
    throw new ApiError(String(err.code), String(err.message), (err.details as Record<string, unknown> | undefined) ?? {});
  }

  /**
   * Publishes a scale request (CONTRACT.md "Scale requests") with a fresh id and waits for
   * JetStream's ack. The CloudEvent's source names the console and the operator
   * (`orangery/console/<token name>`), and so does the `Orangery-Actor` header.
   */
  async publishScale(env: string, app: string, data: Record<string, unknown>, actor: string): Promise<string> {
    const id = randomUUID();
    const traceparent = currentTraceparent();
    const event = {
      specversion: '1.0',
      id,
      source: `orangery/console/${actor}`,
      type: SCALE_REQUESTED_TYPE,
      subject: `${env}:${app}`,
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      data: { env, app, ...data },
      ...(traceparent ? { traceparent } : {}),
    };
    const h = newHeaders();
    h.set('Content-Type', 'application/cloudevents+json');
    h.set('Orangery-Actor', actor);
    if (traceparent) h.set('traceparent', traceparent);
    try {
      await this.js.publish(SUBJECTS.scale(env, app), JSON.stringify(event), { msgID: messageIdOf(id), headers: h });
    } catch (e) {
      throw new ApiError('UNAVAILABLE', `JetStream did not store the scale request: ${e instanceof Error ? e.message : String(e)}`, {
        subject: SUBJECTS.scale(env, app),
      });
    }
    return id;
  }

  /** The last sequence of ORANGERY_EVENTS (0 when empty). */
  async lastEventSeq(): Promise<number> {
    try {
      const jsm = await jetstreamManager(this.nc);
      return (await jsm.streams.info(EVENTS_STREAM.name)).state.last_seq;
    } catch (e) {
      throw unavailable('JetStream did not answer', e);
    }
  }

  /**
   * An ordered consumer of every event after `afterSeq` (undefined: from now on), and how
   * to end it: `close()` stops the pulling and deletes the consumer on the server (were
   * the console to die first, the server drops it after the inactivity threshold).
   */
  async events(afterSeq: number | undefined): Promise<{ messages: ConsumerMessages; close: () => Promise<void> }> {
    let consumer: Consumer;
    let messages: ConsumerMessages;
    try {
      consumer = await this.js.consumers.get(EVENTS_STREAM.name, {
        filter_subjects: SUBJECTS.eventsAll,
        ...(afterSeq === undefined ? { deliver_policy: DeliverPolicy.New } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: afterSeq + 1 }),
        inactive_threshold: 30_000_000_000,
      });
      // A small buffer: a slow SSE client stops the pulling rather than growing memory.
      messages = await consumer.consume({ max_messages: 64 });
    } catch (e) {
      throw unavailable('could not open a consumer of the event stream', e);
    }
    return {
      messages,
      close: async () => {
        await messages.close().catch(() => undefined);
        await consumer.delete().catch(() => undefined);
      },
    };
  }

  /**
   * Feeds the request index for as long as the connection lives: every scale outcome in
   * ORANGERY_EVENTS and every request id stored in ORANGERY_SCALE, from each stream's start
   * (the index keeps the newest). Resolves once the outcomes have caught up with what the
   * stream held when it was called (and the request ids too, when they can be read).
   *
   * Reading ORANGERY_SCALE is best effort: the `console` NATS user of docs/security.md may
   * only publish there (requests carry `environment` values, which may be secrets). Without
   * it, the index knows the requests this replica published and every outcome; a request
   * published elsewhere is unknown (404) until its outcome arrives. The console retries
   * every minute in case the stream appears or the permission is granted.
   */
  async feedIndex(index: RequestIndex, logger: Logger): Promise<{ stop: () => Promise<void> }> {
    const jsm = await jetstreamManager(this.nc);
    const feeds: ConsumerMessages[] = [];
    let stopped = false;
    const follow = async (stream: string, subject: string, onEvent: (value: unknown) => void): Promise<{ caughtUp: Promise<void> }> => {
      const lastSeq = (await jsm.streams.info(stream)).state.last_seq;
      const consumer = await this.js.consumers.get(stream, { filter_subjects: subject, deliver_policy: DeliverPolicy.All, inactive_threshold: 30_000_000_000 });
      const messages = await consumer.consume({ max_messages: 512 });
      feeds.push(messages);
      let done!: () => void;
      const caughtUp = new Promise<void>((r) => (done = r));
      if (lastSeq === 0) done();
      void (async () => {
        for await (const m of messages) {
          try {
            onEvent(m.json());
          } catch {
            // not JSON: not a request we could have published or an outcome we could read
          }
          if (m.seq >= lastSeq || m.info.pending === 0) done();
        }
      })().catch((e: unknown) => logger.warn({ err: e, stream }, 'the request index stopped reading a stream'));
      // A filtered stream may hold nothing for us below lastSeq: caught up when nothing is pending.
      const info = await consumer.info(false).catch(() => undefined);
      if (info && info.num_pending === 0 && info.delivered.stream_seq === 0) done();
      return { caughtUp };
    };
    const outcomes = await follow(EVENTS_STREAM.name, SUBJECTS.event('scale', '*'), (v) => {
      const o = outcomeOf(v);
      if (o) index.noteOutcome(o.requestId, o.status);
    });
    const followRequests = () =>
      follow(SCALE_STREAM.name, SUBJECTS.scaleAll, (v) => {
        const id = (v as { id?: unknown } | null)?.id;
        if (typeof id === 'string' && id !== '') index.noteRequest(id);
      });
    let requests: { caughtUp: Promise<void> } | undefined;
    try {
      requests = await followRequests();
    } catch (e) {
      logger.warn(
        { err: e, stream: SCALE_STREAM.name },
        'cannot read the scale stream: requests published elsewhere are known by their outcome only; retrying every minute',
      );
      void (async () => {
        while (!stopped) {
          await new Promise((r) => setTimeout(r, 60_000).unref());
          if (stopped) return;
          try {
            await followRequests();
            logger.info({ stream: SCALE_STREAM.name }, 'reading the scale stream now');
            return;
          } catch {
            // still not readable
          }
        }
      })();
    }
    await Promise.all([outcomes.caughtUp, requests?.caughtUp]);
    return {
      stop: async () => {
        stopped = true;
        await Promise.all(feeds.map((f) => f.close().catch(() => undefined)));
      },
    };
  }
}

const unavailable = (what: string, e: unknown): ApiError =>
  new ApiError('UNAVAILABLE', `${what}: ${e instanceof Error ? e.message : String(e)}`, { stream: EVENTS_STREAM.name });

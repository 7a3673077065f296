import { CloudEvent } from 'cloudevents';
import { createHash, randomUUID } from 'node:crypto';
import { SUBJECTS } from './subjects';

export const EVENT_TYPE_PREFIX = 'io.orangery.';

/** A CloudEvents 1.0 structured-mode JSON event as it travels on `orangery.evt.>`. */
export interface EventEnvelope<T = unknown> {
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  subject: string;
  time: string;
  datacontenttype: 'application/json';
  data: T;
  traceparent?: string;
  tracestate?: string;
}

export interface NewEvent<T> {
  area: string;
  what: string;
  source: string;
  subject: string;
  data: T;
  id?: string;
  time?: Date;
  traceparent?: string;
}

/**
 * Builds an event with the SDK (which validates the attributes) and returns it with the
 * NATS subject it is published on: `orangery.evt.<area>.<what>`, type `io.orangery.<area>.<what>`.
 */
export function buildEvent<T>(e: NewEvent<T>): { natsSubject: string; event: EventEnvelope<T> } {
  const ce = new CloudEvent<T>(
    {
      specversion: '1.0',
      id: e.id ?? randomUUID(),
      source: e.source,
      type: `${EVENT_TYPE_PREFIX}${e.area}.${e.what}`,
      subject: e.subject,
      time: (e.time ?? new Date()).toISOString(),
      datacontenttype: 'application/json',
      data: e.data,
      ...(e.traceparent ? { traceparent: e.traceparent } : {}),
    },
    true,
  );
  return { natsSubject: SUBJECTS.event(e.area, e.what), event: ce.toJSON() as unknown as EventEnvelope<T> };
}

const HEADER_SAFE_ID = /^[\x21-\x7E](?:[\x20-\x7E]*[\x21-\x7E])?$/;

/**
 * The JetStream message id (`Nats-Msg-Id` header) of an event: its id when a header keeps it
 * as it is, else `~sha256:` and the hex SHA-256 of the id. A NATS header cannot hold CR or
 * LF and loses surrounding spaces, so `scale-rejected:a ` and `scale-rejected:a` would
 * otherwise share a message id (and the second be dropped as a duplicate). Ids the platform
 * makes never start with `~`, so the two forms cannot collide.
 */
export function messageIdOf(eventId: string): string {
  return HEADER_SAFE_ID.test(eventId) ? eventId : `~sha256:${createHash('sha256').update(eventId, 'utf8').digest('hex')}`;
}

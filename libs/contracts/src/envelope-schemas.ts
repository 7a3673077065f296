import { Type, type TSchema } from '@sinclair/typebox';
import { ERROR_CODES, type ErrorCode } from './errors';

/**
 * JSON Schemas (TypeBox) of the wire envelopes of CONTRACT.md: the reply body of every
 * request-reply subject (envelope.ts has its TypeScript type) and the CloudEvents 1.0
 * structured-mode event (cloudevents.ts). They feed docs/asyncapi.yaml (asyncapi.ts) and
 * let any client validate what it receives.
 *
 * Unlike the request schemas in ipam.ts, these describe what the platform sends, and the
 * contract allows adding fields to it: none of them refuses unknown properties.
 */

export const ErrorCodeSchema = Type.Unsafe<ErrorCode>({
  type: 'string',
  enum: [...ERROR_CODES],
  description: 'stable error code; codes are only ever added',
});

export const ErrorBodySchema = Type.Object({
  code: ErrorCodeSchema,
  message: Type.String({ description: 'a human sentence' }),
  details: Type.Optional(Type.Object({}, { additionalProperties: true, description: 'machine-readable context, e.g. the offending field' })),
});

export const ErrorReplySchema = Type.Object({ ok: Type.Literal(false), error: ErrorBodySchema });

export const OkReplySchema = <T extends TSchema>(data: T) => Type.Object({ ok: Type.Literal(true), data });

/** `{ ok: true, data }` or `{ ok: false, error: { code, message, details? } }`. */
export const ReplySchema = <T extends TSchema>(data: T) => Type.Union([OkReplySchema(data), ErrorReplySchema]);

/**
 * An inbound CloudEvents `id` (CONTRACT.md v1.1): printable ASCII (space to `~`), at most
 * MAX_INBOUND_ID_LENGTH characters. It becomes part of a JetStream message id (a NATS
 * header), where CR or LF would make the client throw and other control characters have
 * no business.
 */
export const INBOUND_ID_PATTERN = '^[\\x20-\\x7E]+$';
export const MAX_INBOUND_ID_LENGTH = 128;

/** W3C trace context `traceparent` (version 00). */
export const TRACEPARENT_PATTERN = '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$';

/**
 * A CloudEvents 1.0 JSON event as the platform publishes it on `orangery.evt.>`: every
 * attribute that buildEvent() sets is present; `traceparent` when the cause was traced.
 */
export const EventEnvelopeSchema = <T extends TSchema>(type: string, data: T) =>
  Type.Object(
    {
      specversion: Type.Literal('1.0'),
      id: Type.String({ minLength: 1, description: 'unique per event; also the JetStream message id' }),
      source: Type.String({ minLength: 1, format: 'uri-reference', description: 'the publishing service, e.g. orangery/ipam' }),
      type: Type.Literal(type),
      subject: Type.String({ minLength: 1, description: "the object's id: host id, instance id, IP, migration id or <env>:<app>" }),
      time: Type.String({ format: 'date-time' }),
      datacontenttype: Type.Literal('application/json'),
      data,
      traceparent: Type.Optional(Type.String({ pattern: TRACEPARENT_PATTERN })),
      tracestate: Type.Optional(Type.String()),
    },
    { description: `CloudEvents 1.0, structured mode, type ${type}` },
  );

/**
 * A CloudEvents 1.0 JSON event published by a system outside the platform (scale
 * requests): only the attributes CloudEvents itself requires are required.
 */
export const InboundEventSchema = <T extends TSchema>(type: string, data: T) =>
  Type.Object(
    {
      specversion: Type.Literal('1.0'),
      id: Type.String({
        minLength: 1,
        maxLength: MAX_INBOUND_ID_LENGTH,
        pattern: INBOUND_ID_PATTERN,
        description: `unique per request; printable ASCII, at most ${MAX_INBOUND_ID_LENGTH} characters`,
      }),
      source: Type.String({ minLength: 1, format: 'uri-reference' }),
      type: Type.Literal(type),
      subject: Type.Optional(Type.String()),
      time: Type.Optional(Type.String({ format: 'date-time' })),
      datacontenttype: Type.Optional(Type.Literal('application/json')),
      data,
      traceparent: Type.Optional(Type.String({ pattern: TRACEPARENT_PATTERN })),
      tracestate: Type.Optional(Type.String()),
    },
    { description: `CloudEvents 1.0, structured mode, type ${type}` },
  );

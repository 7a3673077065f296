import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { invalidRequest, OrangeryError } from './errors';
import type { BatchRequestSchema } from './ipam';

// One Ajv instance for the process: schemas compile once, on first use.
const ajv = new Ajv({ allErrors: false, strict: true, coerceTypes: false, useDefaults: false });
addFormats(ajv, ['ipv4', 'ipv6', 'date-time', 'uri-reference']);
const compiled = new WeakMap<TSchema, ValidateFunction>();

/** The offending property as a dotted path without array indices (`owner.slot`, `reserved`). */
function fieldOf(e: ErrorObject): string {
  const base = e.instancePath
    .split('/')
    .filter((seg) => seg !== '' && !/^\d+$/.test(seg))
    .join('.');
  const child =
    e.keyword === 'required'
      ? (e.params as { missingProperty: string }).missingProperty
      : e.keyword === 'additionalProperties'
        ? (e.params as { additionalProperty: string }).additionalProperty
        : '';
  return [base, child].filter((s) => s !== '').join('.');
}

function reasonOf(e: ErrorObject): string {
  switch (e.keyword) {
    case 'required':
      return 'is required';
    case 'additionalProperties':
      return 'is not a known field';
    case 'type':
      return `must be ${e.params['type'] === 'integer' ? 'an integer' : `of type ${String(e.params['type'])}`}`;
    default:
      return e.message ?? 'is invalid';
  }
}

/**
 * Validates untrusted input against a schema and returns it typed, or throws
 * INVALID_REQUEST naming the first offending field (`details.field`, dotted path).
 */
export function decode<S extends TSchema>(schema: S, value: unknown): Static<S> {
  let validate = compiled.get(schema);
  if (!validate) {
    validate = ajv.compile(schema);
    compiled.set(schema, validate);
  }
  if (validate(value)) return value as Static<S>;
  const first = validate.errors?.[0];
  if (!first) throw invalidRequest('', 'does not match the schema');
  throw invalidRequest(fieldOf(first), reasonOf(first), first.instancePath ? { path: first.instancePath } : {});
}

/** One item of a batch after validation: the typed request, or the error of that item alone. */
export type DecodedItem<T> = { ok: true; value: T } | { ok: false; error: OrangeryError };

// The envelope of a batch schema with its items left unchecked (checked one by one after).
const envelopes = new WeakMap<TSchema, TSchema>();

/**
 * Validates a batch request `{ items: [...] }`. A bad envelope (not an object, items
 * missing, empty or too long, an unknown field) throws INVALID_REQUEST for the whole
 * request; a bad item becomes that item's INVALID_REQUEST, whose `details.field` is indexed
 * (`items[3].owner.slot`) and `details.path` the JSON pointer (`/items/3/owner/slot`).
 */
export function decodeBatch<T extends TSchema>(schema: BatchRequestSchema<T>, value: unknown): DecodedItem<Static<T>>[] {
  let envelope = envelopes.get(schema);
  if (!envelope) {
    const items = schema.properties.items;
    envelope = Type.Object({ items: Type.Array(Type.Unknown(), { minItems: items.minItems, maxItems: items.maxItems }) }, { additionalProperties: false });
    envelopes.set(schema, envelope);
  }
  const { items } = decode(envelope, value) as { items: unknown[] };
  const itemSchema = schema.properties.items.items;
  return items.map((item, i): DecodedItem<Static<T>> => {
    try {
      return { ok: true, value: decode(itemSchema, item) };
    } catch (e) {
      if (!(e instanceof OrangeryError)) throw e;
      const details = e.details ?? {};
      const field = String(details['field'] ?? '');
      const reason = String(details['reason'] ?? e.message);
      return {
        ok: false,
        error: invalidRequest(field === '' ? `items[${i}]` : `items[${i}].${field}`, reason, {
          path: `/items/${i}${typeof details['path'] === 'string' ? details['path'] : ''}`,
        }),
      };
    }
  });
}

// JSON on the wire is UTF-8 (RFC 8259): bytes that are not are refused, never replaced by
// U+FFFD (which would store a value other than the one sent, e.g. in an environment).
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses a message body that must be a JSON object (UTF-8). */
export function parseJsonObject(raw: Uint8Array | string): Record<string, unknown> {
  let text: string;
  try {
    text = typeof raw === 'string' ? raw : utf8.decode(raw);
  } catch {
    throw invalidRequest('', 'body is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = text.trim() === '' ? {} : JSON.parse(text);
  } catch {
    throw invalidRequest('', 'body is not valid JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalidRequest('', 'body must be a JSON object');
  }
  return value as Record<string, unknown>;
}

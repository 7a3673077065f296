import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import type { Static, TSchema } from '@sinclair/typebox';
import { invalidRequest } from './errors';

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

/** Parses a message body that must be a JSON object. */
export function parseJsonObject(raw: Uint8Array | string): Record<string, unknown> {
  const text = typeof raw === 'string' ? raw : new TextDecoder().decode(raw);
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

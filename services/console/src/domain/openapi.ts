import type { TSchema } from '@sinclair/typebox';
import { ErrorResponse, OPERATIONS, type Operation } from './api';
import { httpStatusOf } from './http-errors';

/**
 * The OpenAPI 3.1 document of the console's API (GET /openapi.json), built from the
 * operation table (api.ts), whose schemas are the contract's TypeBox schemas: the docs
 * cannot drift from what the services validate. OpenAPI 3.1 schemas are JSON Schema
 * 2020-12, which TypeBox's output is; symbols (TypeBox's own metadata) do not survive JSON.
 */
type Json = Record<string, unknown>;

/** A schema as plain JSON (TypeBox's symbol-keyed metadata dropped). */
const plain = (s: TSchema): Json => JSON.parse(JSON.stringify(s)) as Json;

const STATUS_TEXT: Record<number, string> = {
  400: 'bad input: INVALID_REQUEST naming the field in details',
  401: 'no valid bearer token: UNAUTHORIZED',
  403: 'a viewer token on a command: FORBIDDEN',
  404: 'NOT_FOUND or POOL_NOT_FOUND',
  409: 'a refusal by the platform (POOL_EXISTS, POOL_OVERLAP, INSUFFICIENT_CAPACITY, ...)',
  413: 'the body is larger than 64 KiB: PAYLOAD_TOO_LARGE',
  500: 'INTERNAL: a bug, logged with a trace id',
  503: 'UNAVAILABLE: the service behind this route did not answer (not running, or too slow)',
};

function responses(op: Operation): Json {
  const out: Json = {
    [String(op.success.status)]: {
      description: op.success.description,
      content: op.sse ? { 'text/event-stream': { schema: plain(op.success.schema) } } : { 'application/json': { schema: plain(op.success.schema) } },
    },
  };
  const statuses = new Set<number>([401, 503, 500]);
  if (op.command) statuses.add(403);
  if (op.body) statuses.add(413);
  for (const code of op.errors) statuses.add(httpStatusOf(code));
  for (const s of [...statuses].sort()) {
    const codes = op.errors.filter((c) => httpStatusOf(c) === s);
    out[String(s)] = {
      description: codes.length > 0 ? `${STATUS_TEXT[s] ?? 'error'}; here: ${codes.join(', ')}` : (STATUS_TEXT[s] ?? 'error'),
      content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
    };
  }
  return out;
}

function parameters(op: Operation): Json[] {
  const out: Json[] = [];
  for (const [name, schema] of Object.entries(op.params ?? {})) out.push({ name, in: 'path', required: true, schema: plain(schema) });
  const q = op.query;
  if (q) {
    const required = new Set((q.required as string[] | undefined) ?? []);
    for (const [name, schema] of Object.entries(q.properties as Record<string, TSchema>)) {
      const s = plain(schema);
      out.push({
        name,
        in: 'query',
        required: required.has(name),
        schema: s,
        ...(typeof s['description'] === 'string' ? { description: s['description'] } : {}),
      });
    }
  }
  if (op.sse) {
    out.push({
      name: 'Last-Event-ID',
      in: 'header',
      required: false,
      schema: { type: 'string', pattern: '^[0-9]+$' },
      description: 'resume after this stream sequence',
    });
  }
  return out;
}

export function openApiDocument(version: string): Json {
  const paths: Record<string, Json> = {};
  for (const op of OPERATIONS) {
    const item = (paths[op.path] ??= {});
    item[op.method.toLowerCase()] = {
      operationId: op.id,
      tags: [op.tag],
      summary: op.summary,
      ...(op.description ? { description: op.description } : {}),
      'x-orangery-role': op.command ? 'operator' : 'viewer',
      parameters: parameters(op),
      ...(op.body ? { requestBody: { required: true, content: { 'application/json': { schema: plain(op.body) } } } } : {}),
      responses: responses(op),
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Orangery console API',
      version,
      description:
        'The operators\' HTTP API of Orangery (CONTRACT.md "Console"). Every /api/ call needs `Authorization: Bearer <token>`: ' +
        'a viewer token reads, an operator token also sends commands (403 for a viewer). Errors are ' +
        '`{ "error": { code, message, details } }`. Commands carry the token\'s name as the audit actor.',
    },
    servers: [{ url: '/' }],
    security: [{ bearer: [] }],
    tags: [
      { name: 'pools', description: 'address pools (ipam)' },
      { name: 'fleet', description: 'hosts and instances (scheduler)' },
      { name: 'scale', description: 'scale requests (JetStream) and their outcomes' },
      { name: 'migrations', description: 'migrations and drains (migrator)' },
      { name: 'envs', description: 'environments (scheduler, v1.1)' },
      { name: 'events', description: 'the event stream (SSE)' },
    ],
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: { Error: plain(ErrorResponse) },
    },
  };
}

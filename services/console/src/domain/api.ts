import { Type, type TObject, type TSchema } from '@sinclair/typebox';
import {
  DrainReplyData,
  EnvList,
  EnvPutRequest,
  EnvRecord,
  ErrorBodySchema,
  HOST_ID_PATTERN,
  HostsListData,
  INBOUND_ID_PATTERN,
  INSTANCE_ID_PATTERN,
  InstancesListData,
  InstancesListRequest,
  MAX_INBOUND_ID_LENGTH,
  MIGRATION_ID_PATTERN,
  MigrateReplyData,
  MigrateRequest,
  MigrationView,
  Name,
  PageFields,
  Pool,
  PoolCreateRequest,
  PoolList,
  PoolWithUsage,
  ScaleRequestData,
} from '@orangery/contracts';

/**
 * The console's HTTP API (CONTRACT.md "Console"), one table for the router and for the
 * OpenAPI document (openapi.ts): each operation's path, role, parameters, body and reply
 * are the contract's TypeBox schemas, the same ones the services validate with.
 */
export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface Operation {
  id: string;
  method: Method;
  /** OpenAPI path template: `/api/v1/pools/{name}` */
  path: string;
  tag: 'pools' | 'fleet' | 'scale' | 'migrations' | 'envs' | 'events';
  summary: string;
  description?: string;
  /** a command: operator tokens only (403 for a viewer) */
  command: boolean;
  /** path parameters, in path order */
  params?: Record<string, TSchema>;
  /** query parameters (strings on the wire; integers are converted before validation) */
  query?: TObject;
  body?: TSchema;
  /** the success status and the body it carries */
  success: { status: 200 | 201 | 202; schema: TSchema; description: string };
  /** the error codes this route answers besides 401, 403 and 503 (see http-errors.ts) */
  errors: readonly string[];
  /** a text/event-stream instead of JSON */
  sse?: boolean;
}

const Paging = Type.Object({ ...PageFields }, { additionalProperties: false });

/** A scale request's `data` without env and app, which the path gives. */
export const ScaleBody = Type.Omit(ScaleRequestData, ['env', 'app'], { additionalProperties: false });
/** migrate's body: where to, both optional (the instance comes from the path). */
export const MigrateBody = Type.Omit(MigrateRequest, ['instanceId'], { additionalProperties: false });
export const DrainBody = Type.Object({}, { additionalProperties: false, description: 'empty; the host comes from the path' });

export const RequestId = Type.String({ minLength: 1, maxLength: MAX_INBOUND_ID_LENGTH, pattern: INBOUND_ID_PATTERN });
export const Accepted = Type.Object({ requestId: Type.String({ description: "the scale request's CloudEvents id" }) });
export const RequestStatusSchema = Type.Object({
  state: Type.Union([Type.Literal('pending'), Type.Literal('completed'), Type.Literal('rejected')]),
  reason: Type.Optional(
    Type.Object({
      code: Type.String({ description: 'INVALID_REQUEST, POOL_NOT_FOUND, INSUFFICIENT_CAPACITY, SUPERSEDED, POLICY_VIOLATION, START_FAILED' }),
      message: Type.String(),
      details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    }),
  ),
});

/**
 * Environments (CONTRACT.md v1.1 "Environments"): libs/contracts' EnvPutRequest, the name
 * from the path (in the body it may repeat it); the scheduler serves the records.
 */
export const EnvBody = Type.Object(
  { ...Type.Omit(EnvPutRequest, ['name']).properties, name: Type.Optional(Type.String({ description: 'if given, the same as the path' })) },
  { additionalProperties: false },
);

const EventStream = Type.String({
  description:
    'text/event-stream: one `id: <stream sequence>` and `data: <CloudEvent JSON>` per event; `: ping` comments every 15 s. ' +
    'Send `Last-Event-ID` (or `?lastEventId=`) to resume after that sequence; without it, events from now on ' +
    '(`?history=N` starts N events back, `?follow=false` ends the stream once it has caught up).',
});

export const OPERATIONS: readonly Operation[] = [
  {
    id: 'listPools',
    method: 'GET',
    path: '/api/v1/pools',
    tag: 'pools',
    summary: 'List the pools with their usage (orangery.ipam.pool.list).',
    command: false,
    query: Paging,
    success: { status: 200, schema: PoolList, description: 'one page of pools in name order; nextCursor while more remain' },
    errors: ['INVALID_REQUEST'],
  },
  {
    id: 'createPool',
    method: 'POST',
    path: '/api/v1/pools',
    tag: 'pools',
    summary: 'Create an address pool (orangery.ipam.pool.create).',
    command: true,
    body: PoolCreateRequest,
    success: { status: 201, schema: Pool, description: 'the pool' },
    errors: ['INVALID_REQUEST', 'POOL_EXISTS', 'POOL_OVERLAP'],
  },
  {
    id: 'getPool',
    method: 'GET',
    path: '/api/v1/pools/{name}',
    tag: 'pools',
    summary: 'A pool with its usage: size, used, free, quarantined (orangery.ipam.pool.get).',
    command: false,
    params: { name: Name },
    success: { status: 200, schema: PoolWithUsage, description: 'the pool with its usage' },
    errors: ['INVALID_REQUEST', 'POOL_NOT_FOUND'],
  },
  {
    id: 'listHosts',
    method: 'GET',
    path: '/api/v1/hosts',
    tag: 'fleet',
    summary: 'List the hosts (orangery.scheduler.hosts.list).',
    command: false,
    query: Paging,
    success: { status: 200, schema: HostsListData, description: 'one page of hosts in id order' },
    errors: ['INVALID_REQUEST'],
  },
  {
    id: 'listInstances',
    method: 'GET',
    path: '/api/v1/instances',
    tag: 'fleet',
    summary: 'List the instances, of one env or app when asked (orangery.scheduler.instances.list).',
    command: false,
    query: InstancesListRequest,
    success: { status: 200, schema: InstancesListData, description: 'one page of instances in (env, app, slot) order' },
    errors: ['INVALID_REQUEST'],
  },
  {
    id: 'scale',
    method: 'POST',
    path: '/api/v1/apps/{env}/{app}/scale',
    tag: 'scale',
    summary: 'Scale an app: publishes a scale request (CloudEvent) to JetStream.',
    description:
      "The body is a scale request's data without env and app. 202 once JetStream stored it; its outcome is " +
      'GET /api/v1/requests/{requestId} (or the scale.completed / scale.rejected event).',
    command: true,
    params: { env: Name, app: Name },
    body: ScaleBody,
    success: { status: 202, schema: Accepted, description: 'stored; the scheduler will act on it' },
    errors: ['INVALID_REQUEST'],
  },
  {
    id: 'getRequest',
    method: 'GET',
    path: '/api/v1/requests/{requestId}',
    tag: 'scale',
    summary: 'The state of a scale request: pending, completed or rejected (with the reason).',
    description:
      'From the scale.completed / scale.rejected events on ORANGERY_EVENTS. NOT_FOUND for an id the console has not seen ' +
      'published within its window (the newest 100,000 requests of the ORANGERY_SCALE stream, by default).',
    command: false,
    params: { requestId: RequestId },
    success: { status: 200, schema: RequestStatusSchema, description: 'the state' },
    errors: ['INVALID_REQUEST', 'NOT_FOUND'],
  },
  {
    id: 'migrate',
    method: 'POST',
    path: '/api/v1/instances/{instanceId}/migrate',
    tag: 'migrations',
    summary: 'Migrate an instance to another host or backend with its IP and MAC (orangery.migrator.migrate).',
    command: true,
    params: { instanceId: Type.String({ pattern: INSTANCE_ID_PATTERN }) },
    body: MigrateBody,
    success: { status: 202, schema: MigrateReplyData, description: 'the migration started; follow it with GET /api/v1/migrations/{id}' },
    errors: ['INVALID_REQUEST', 'NOT_FOUND', 'INSUFFICIENT_CAPACITY'],
  },
  {
    id: 'getMigration',
    method: 'GET',
    path: '/api/v1/migrations/{id}',
    tag: 'migrations',
    summary: 'A migration and its steps (orangery.migrator.migrations.get).',
    command: false,
    params: { id: Type.String({ pattern: MIGRATION_ID_PATTERN }) },
    success: { status: 200, schema: MigrationView, description: 'the migration' },
    errors: ['INVALID_REQUEST', 'NOT_FOUND'],
  },
  {
    id: 'drainHost',
    method: 'POST',
    path: '/api/v1/hosts/{hostId}/drain',
    tag: 'migrations',
    summary: 'Drain a host: every instance migrates away (orangery.migrator.drain).',
    command: true,
    params: { hostId: Type.String({ pattern: HOST_ID_PATTERN }) },
    body: DrainBody,
    success: { status: 202, schema: DrainReplyData, description: 'the migrations started' },
    errors: ['INVALID_REQUEST', 'NOT_FOUND'],
  },
  {
    id: 'listEnvs',
    method: 'GET',
    path: '/api/v1/envs',
    tag: 'envs',
    summary: 'List the environments (orangery.scheduler.envs.list).',
    command: false,
    query: Paging,
    success: { status: 200, schema: EnvList, description: 'the environments' },
    errors: ['INVALID_REQUEST'],
  },
  {
    id: 'getEnv',
    method: 'GET',
    path: '/api/v1/envs/{name}',
    tag: 'envs',
    summary: 'One environment (orangery.scheduler.envs.get).',
    command: false,
    params: { name: Name },
    success: { status: 200, schema: EnvRecord, description: 'the env' },
    errors: ['INVALID_REQUEST', 'NOT_FOUND'],
  },
  {
    id: 'putEnv',
    method: 'PUT',
    path: '/api/v1/envs/{name}',
    tag: 'envs',
    summary: "Create or replace an environment's record (orangery.scheduler.envs.put).",
    command: true,
    params: { name: Name },
    body: EnvBody,
    success: { status: 200, schema: EnvRecord, description: 'the env' },
    errors: ['INVALID_REQUEST'],
  },
  {
    id: 'deleteEnv',
    method: 'DELETE',
    path: '/api/v1/envs/{name}',
    tag: 'envs',
    summary:
      "Delete an environment's record (orangery.scheduler.envs.delete): its apps keep running as they are; its next scale requests follow the rules without a record.",
    command: true,
    params: { name: Name },
    success: { status: 200, schema: Type.Object({}, { additionalProperties: false }), description: 'deleted' },
    errors: ['INVALID_REQUEST', 'NOT_FOUND'],
  },
  {
    id: 'events',
    method: 'GET',
    path: '/api/v1/events',
    tag: 'events',
    summary: 'Server-Sent Events: every orangery.evt.> CloudEvent of ORANGERY_EVENTS.',
    command: false,
    query: Type.Object(
      {
        lastEventId: Type.Optional(Type.Integer({ minimum: 0, description: 'as the Last-Event-ID header: resume after this stream sequence' })),
        history: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000, description: 'start this many events back (without a Last-Event-ID)' })),
        follow: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'false: end once caught up' })),
      },
      { additionalProperties: false },
    ),
    success: { status: 200, schema: EventStream, description: 'the event stream' },
    errors: ['INVALID_REQUEST'],
    sse: true,
  },
];

/** The error body of every failure. */
export const ErrorResponse = Type.Object({ error: Type.Composite([ErrorBodySchema, Type.Object({ details: Type.Record(Type.String(), Type.Unknown()) })]) });

export interface RouteMatch {
  op: Operation;
  params: Record<string, string>;
}

const compiled = OPERATIONS.map((op) => ({
  op,
  names: [...op.path.matchAll(/\{([A-Za-z]+)\}/g)].map((m) => m[1]!),
  regex: new RegExp(`^${op.path.replace(/\{[A-Za-z]+\}/g, '([^/]+)')}$`),
}));

/**
 * The operation for a method and path, or the methods the path allows (405), or undefined
 * (404). Path parameters are percent-decoded (an instance id's colons may come encoded); one
 * that does not decode is left as it was, and its schema refuses it.
 */
export function matchRoute(method: string, pathname: string): RouteMatch | { allowed: Method[] } | undefined {
  const allowed: Method[] = [];
  for (const c of compiled) {
    const m = c.regex.exec(pathname);
    if (!m) continue;
    if (c.op.method !== method) {
      allowed.push(c.op.method);
      continue;
    }
    const params: Record<string, string> = {};
    c.names.forEach((n, i) => {
      const raw = m[i + 1]!;
      try {
        params[n] = decodeURIComponent(raw);
      } catch {
        params[n] = raw;
      }
    });
    return { op: c.op, params };
  }
  return allowed.length > 0 ? { allowed } : undefined;
}

/**
 * A route's query string as an object to validate: integer fields converted from their
 * decimal text (anything else stays a string, and the schema names the field); a key given
 * twice is reported in `repeated` (INVALID_REQUEST); an empty value is no value.
 */
export function queryObject(op: Operation, search: URLSearchParams): { value: Record<string, unknown>; repeated?: string } {
  const props = (op.query?.properties ?? {}) as Record<string, { type?: string }>;
  const value: Record<string, unknown> = {};
  for (const [k, v] of search) {
    // `?env=&app=` (the contract's own spelling of optional filters) means no filter.
    if (v === '') continue;
    if (k in value) return { value, repeated: k };
    value[k] = props[k]?.type === 'integer' && /^-?\d{1,15}$/.test(v) ? Number(v) : v;
  }
  return { value };
}

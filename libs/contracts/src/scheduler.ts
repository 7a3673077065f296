import { Type, type Static } from '@sinclair/typebox';
import { InstanceNetwork, Resources } from './agent';
import { EVENT_TYPE_PREFIX } from './cloudevents';
import { InboundEventSchema } from './envelope-schemas';
import { Backend, Name } from './ipam';
import { HOST_ID_PATTERN, INSTANCE_ID_PATTERN, MAX_SLOT } from './names';
import { NextCursorField, PagedRequest } from './paging';

/**
 * Scale requests (CONTRACT.md "Scale requests") and the scheduler's operator queries
 * (CONTRACT.md "Operators"). One source for validation at the edge and for
 * docs/asyncapi.yaml. Unknown fields in `data` are refused like in every request of the
 * platform; CloudEvents extension attributes on the envelope are allowed.
 */
const strict = { additionalProperties: false } as const;

export const SCALE_REQUESTED_TYPE = `${EVENT_TYPE_PREFIX}scale.requested`;
/** slots are 0..9999, so an app has at most 10,000 replicas */
export const MAX_REPLICAS = MAX_SLOT + 1;
/**
 * At most this many replicas in one scale request: every new slot is journaled with the
 * request's spec in one write, so replicas times the environment must stay far inside the
 * database's max_allowed_packet.
 */
export const MAX_REPLICAS_PER_REQUEST = 10_000;
/** `environment` (CONTRACT.md v1.1): at most this many variables... */
export const MAX_ENVIRONMENT_KEYS = 256;
/** ...and at most 64 KB in all: the UTF-8 bytes of every name and value together. */
export const MAX_ENVIRONMENT_BYTES = 64 * 1024;

/** What an `environment` weighs against MAX_ENVIRONMENT_BYTES. */
export function environmentBytes(environment: Record<string, string>): number {
  let n = 0;
  for (const [k, v] of Object.entries(environment)) n += Buffer.byteLength(k, 'utf8') + Buffer.byteLength(v, 'utf8');
  return n;
}

export const ScaleBackend = Type.Union([Type.Literal('auto'), Type.Literal('docker'), Type.Literal('vmware'), Type.Literal('swarm')], {
  description: 'auto (default) compares hosts of every backend the env allows by free capacity',
});
export type ScaleBackend = Static<typeof ScaleBackend>;

export const ScaleRequestData = Type.Object(
  {
    app: Name,
    env: Name,
    replicas: Type.Integer({ minimum: 0, maximum: MAX_REPLICAS_PER_REQUEST }),
    resources: Resources,
    image: Type.Optional(Type.String({ minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9][A-Za-z0-9._/:@-]*$', description: 'for containers' })),
    template: Type.Optional(
      Type.String({ minLength: 1, maxLength: 80, pattern: '^[A-Za-z0-9][A-Za-z0-9._ -]*$', description: "for VMs: a template VM's name in vCenter" }),
    ),
    backend: Type.Optional(ScaleBackend),
    pool: Name,
    spread: Type.Optional(
      Type.Union([Type.Literal('host'), Type.Literal('none')], { description: 'host (default): at most one instance of the app per host while others fit' }),
    ),
    environment: Type.Optional(
      Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' }), Type.String({ maxLength: 4096 }), {
        maxProperties: MAX_ENVIRONMENT_KEYS,
        description: `environment variables of every instance: at most ${MAX_ENVIRONMENT_KEYS} and ${MAX_ENVIRONMENT_BYTES} bytes (UTF-8 names and values) in all; never echoed back`,
      }),
    ),
  },
  strict,
);
export type ScaleRequestData = Static<typeof ScaleRequestData>;

/** The envelope is open: CloudEvents extension attributes are allowed. */
export const ScaleRequestedEvent = InboundEventSchema(SCALE_REQUESTED_TYPE, ScaleRequestData);

/** `data` of io.orangery.scale.completed. */
export const ScaleCompletedData = Type.Object({
  requestId: Type.String({ description: "the request's CloudEvents id" }),
  env: Type.String(),
  app: Type.String(),
  replicas: Type.Integer({ description: 'slots 0..replicas-1, each running' }),
  instances: Type.Array(Type.Object({ id: Type.String(), slot: Type.Integer(), host: Type.String(), backend: Type.String(), ip: Type.String() })),
});
export type ScaleCompletedData = Static<typeof ScaleCompletedData>;

export const SCALE_REJECTION_CODES = ['INVALID_REQUEST', 'POOL_NOT_FOUND', 'INSUFFICIENT_CAPACITY', 'SUPERSEDED', 'START_FAILED', 'POLICY_VIOLATION'] as const;
export type ScaleRejectionCode = (typeof SCALE_REJECTION_CODES)[number];

/** `data` of io.orangery.scale.rejected. */
export const ScaleRejectedData = Type.Object({
  requestId: Type.String({ description: "the request's CloudEvents id (or js-<stream sequence> when it had none)" }),
  env: Type.Optional(Type.String()),
  app: Type.Optional(Type.String()),
  reason: Type.Object({
    code: Type.Unsafe<ScaleRejectionCode>({ type: 'string', enum: [...SCALE_REJECTION_CODES] }),
    message: Type.String(),
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  }),
});
export type ScaleRejectedData = Static<typeof ScaleRejectedData>;

/** `data` of io.orangery.instance.placed (published by the scheduler). */
export const InstancePlacedData = Type.Object({
  instanceId: Type.String({ pattern: INSTANCE_ID_PATTERN }),
  env: Type.String(),
  app: Type.String(),
  slot: Type.Integer(),
  hostId: Type.String({ pattern: HOST_ID_PATTERN }),
  backend: Backend,
  requestId: Type.Optional(Type.String({ description: 'the scale request the placement serves' })),
  attempt: Type.Integer({ minimum: 1, description: '1 for the first placement of this slot, more after a failed start elsewhere' }),
});
export type InstancePlacedData = Static<typeof InstancePlacedData>;

// ---- operator queries ------------------------------------------------------------------

export const HostsListRequest = PagedRequest({});
export type HostsListRequest = Static<typeof HostsListRequest>;

const Amounts = Type.Object({ cpu: Type.Number(), memoryMb: Type.Integer(), diskMb: Type.Integer() });

export const HostSummary = Type.Object({
  id: Type.String(),
  backend: Backend,
  state: Type.Union([Type.Literal('ready'), Type.Literal('draining'), Type.Literal('unknown'), Type.Literal('lost')]),
  capacity: Amounts,
  allocated: Amounts,
  usage: Amounts,
  labels: Type.Record(Type.String(), Type.String()),
  lastHeartbeat: Type.Optional(Type.String({ format: 'date-time', description: 'project addition' })),
  instances: Type.Optional(Type.Integer({ description: 'project addition: instances the scheduler placed there' })),
});
export type HostSummary = Static<typeof HostSummary>;
export const HostsListData = Type.Object({ hosts: Type.Array(HostSummary, { description: 'in id order' }), ...NextCursorField });
export type HostsListData = Static<typeof HostsListData>;

export const InstancesListRequest = PagedRequest({ env: Type.Optional(Name), app: Type.Optional(Name) });
export type InstancesListRequest = Static<typeof InstancesListRequest>;

export const INSTANCE_STATES = ['placed', 'starting', 'running', 'stopped', 'failed', 'removed'] as const;
export type InstanceLifecycleState = (typeof INSTANCE_STATES)[number];

export const InstanceSummary = Type.Object({
  id: Type.String(),
  env: Type.String(),
  app: Type.String(),
  slot: Type.Integer({ minimum: 0, maximum: MAX_SLOT }),
  state: Type.Unsafe<InstanceLifecycleState>({ type: 'string', enum: [...INSTANCE_STATES] }),
  backend: Type.Union([Backend, Type.Null()]),
  host: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  mac: Type.Union([Type.String(), Type.Null()]),
  error: Type.Optional(Type.String({ description: "project addition: the last start failure's reason" })),
});
export type InstanceSummary = Static<typeof InstanceSummary>;
export const InstancesListData = Type.Object({ instances: Type.Array(InstanceSummary, { description: 'in (env, app, slot) order' }), ...NextCursorField });
export type InstancesListData = Static<typeof InstancesListData>;

// ---- the leader's slot API for the migrator (internal) --------------------------------

const InstanceIdField = Type.String({ pattern: INSTANCE_ID_PATTERN });
const HolderField = Type.String({ minLength: 1, maxLength: 128, pattern: '^[!-~]+$', description: 'who holds the slot: a migration id' });

export const SlotGetRequest = Type.Object({ instanceId: InstanceIdField }, strict);
export const SlotHoldRequest = Type.Object({ instanceId: InstanceIdField, by: HolderField }, strict);
export type SlotHoldRequest = Static<typeof SlotHoldRequest>;
export const SlotReserveRequest = Type.Object(
  {
    instanceId: InstanceIdField,
    by: HolderField,
    toHost: Type.Optional(Type.String({ pattern: HOST_ID_PATTERN })),
    toBackend: Type.Optional(Backend),
    exclude: Type.Optional(Type.Array(Type.String({ pattern: HOST_ID_PATTERN }), { maxItems: 1000 })),
  },
  strict,
);
export type SlotReserveRequest = Static<typeof SlotReserveRequest>;
/**
 * `orangery.scheduler.slot.create` (issue 13): the leader builds the held slot's create
 * command from its own record (artifact for the target's backend, resources, environment)
 * and sends it to the reserved target's agent, so an app's environment (secrets) never
 * crosses the bus to the migrator. `network` is the slot's address as ipam has it; its ip
 * and mac must be the record's.
 */
export const SlotCreateRequest = Type.Object({ instanceId: InstanceIdField, by: HolderField, network: InstanceNetwork }, strict);
export type SlotCreateRequest = Static<typeof SlotCreateRequest>;
export const HostDrainRequest = Type.Object({ hostId: Type.String({ pattern: HOST_ID_PATTERN }), drain: Type.Boolean() }, strict);
export type HostDrainRequest = Static<typeof HostDrainRequest>;

export const SlotView = Type.Object({
  id: Type.String(),
  env: Type.String(),
  app: Type.String(),
  slot: Type.Integer(),
  state: Type.String(),
  phase: Type.Union([Type.String(), Type.Null()]),
  backend: Type.Union([Backend, Type.Null()]),
  hostId: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  mac: Type.Union([Type.String(), Type.Null()]),
  spec: Type.Object({
    resources: Resources,
    image: Type.Optional(Type.String()),
    template: Type.Optional(Type.String()),
    pool: Type.String(),
    vlan: Type.Integer(),
  }),
  hold: Type.Union([
    Type.Null(),
    Type.Object({
      by: Type.String(),
      target: Type.Optional(Type.Object({ hostId: Type.String(), backend: Backend })),
    }),
  ]),
});
export type SlotView = Static<typeof SlotView>;

import { Type, type Static, type TArray, type TObject, type TSchema } from '@sinclair/typebox';
import { ReplySchema, TRACEPARENT_PATTERN } from './envelope-schemas';
import { MAX_SLOT, NAME_PATTERN, HOST_ID_PATTERN } from './names';
import { NextCursorField, PagedRequest } from './paging';

/**
 * IPAM payloads of CONTRACT.md. These schemas are the single source for validation at
 * the edge and for docs/asyncapi.yaml (asyncapi.ts, `npm run docs:asyncapi`). Unknown fields
 * are refused in every request (`additionalProperties: false`), as pool.create requires;
 * replies may gain fields (CONTRACT.md: add, never rename or remove), so theirs are open.
 */
const strict = { additionalProperties: false } as const;

export const Name = Type.String({ pattern: NAME_PATTERN, description: 'lower-case DNS label' });
export const Ipv4 = Type.String({ format: 'ipv4', description: 'dotted-quad IPv4 address' });

export const OwnerSchema = Type.Object({ env: Name, app: Name, slot: Type.Integer({ minimum: 0, maximum: MAX_SLOT }) }, strict);

export const PoolCreateRequest = Type.Object(
  {
    name: Name,
    cidr: Type.String({ description: 'IPv4 a.b.c.d/n, host bits zero' }),
    gateway: Ipv4,
    vlan: Type.Optional(Type.Integer({ minimum: 0, maximum: 4094 })),
    reserved: Type.Optional(Type.Array(Type.String({ description: 'address or inclusive range a-b' }), { maxItems: 4096 })),
    cooldownSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 86400 })),
  },
  strict,
);
export type PoolCreateRequest = Static<typeof PoolCreateRequest>;

export const PoolNameRequest = Type.Object({ name: Name }, strict);
export type PoolNameRequest = Static<typeof PoolNameRequest>;
export const EmptyRequest = Type.Object({}, strict);
/** `pool.list` request (v1.1: paged). */
export const PoolListRequest = PagedRequest({});
export type PoolListRequest = Static<typeof PoolListRequest>;

export const AllocateRequest = Type.Object({ pool: Name, owner: OwnerSchema, ip: Type.Optional(Ipv4) }, strict);
export type AllocateRequest = Static<typeof AllocateRequest>;

/** Where instances run (v1.1 adds `swarm`: a Docker Swarm task). */
export const BACKENDS = ['docker', 'vmware', 'swarm'] as const;
export const Backend = Type.Union(BACKENDS.map((b) => Type.Literal(b)));
export type Backend = (typeof BACKENDS)[number];

export const BindRequest = Type.Object(
  {
    ip: Ipv4,
    // Usually `<env>:<app>:<slot>`, but the contract lets a rebind name a new instance id,
    // so any printable id is accepted.
    instanceId: Type.String({ pattern: '^[!-~]{1,255}$', description: 'the instance, usually <env>:<app>:<slot>' }),
    backend: Backend,
    host: Type.String({ pattern: HOST_ID_PATTERN }),
  },
  strict,
);
export type BindRequest = Static<typeof BindRequest>;

/** `{ ip }` or `{ owner }`: exactly one (checked after the schema). */
export const AddressLookupRequest = Type.Object({ ip: Type.Optional(Ipv4), owner: Type.Optional(OwnerSchema) }, strict);
export type AddressLookupRequest = Static<typeof AddressLookupRequest>;

export const AllocationState = Type.Union([Type.Literal('allocated'), Type.Literal('bound'), Type.Literal('released')]);
export type AllocationState = Static<typeof AllocationState>;

export const Allocation = Type.Object({
  ip: Ipv4,
  pool: Name,
  prefixLength: Type.Integer(),
  gateway: Ipv4,
  vlan: Type.Integer(),
  mac: Type.String({ description: 'locally administered unicast MAC derived from the IP' }),
  owner: OwnerSchema,
  state: AllocationState,
  instanceId: Type.Optional(Type.String()),
  backend: Type.Optional(Backend),
  host: Type.Optional(Type.String()),
  releasedAt: Type.Optional(Type.String({ format: 'date-time' })),
});
export type Allocation = Static<typeof Allocation>;

export const Pool = Type.Object({
  name: Name,
  cidr: Type.String(),
  gateway: Ipv4,
  vlan: Type.Integer(),
  reserved: Type.Array(Type.String()),
  cooldownSeconds: Type.Integer(),
  prefixLength: Type.Integer(),
  createdAt: Type.String({ format: 'date-time' }),
});
export type Pool = Static<typeof Pool>;

export const PoolWithUsage = Type.Intersect([
  Pool,
  Type.Object({
    size: Type.Integer(),
    used: Type.Integer(),
    free: Type.Integer(),
    quarantined: Type.Integer(),
    /** v1.1 (issue 16): addresses inside swarm nodes' blocks that no task holds; free = size - used - quarantined - blocked */
    blocked: Type.Optional(Type.Integer()),
  }),
]);
export type PoolWithUsage = Static<typeof PoolWithUsage>;

/** `pool.list` reply data. */
export const PoolList = Type.Object({ pools: Type.Array(PoolWithUsage, { description: 'in name order' }), ...NextCursorField });
export type PoolList = Static<typeof PoolList>;

// ---- batch requests (project addition, docs/ipam.md "Batch requests") -------------------

/** Most items one batch request may carry. */
export const MAX_BATCH_ITEMS = 500;

/** A batch request schema: `{ items: [ <item>, ... ] }` with 1..MAX_BATCH_ITEMS items. */
export type BatchRequestSchema<T extends TSchema> = TObject<{ items: TArray<T> }>;

/**
 * `{ items: [...] }` of 1..MAX_BATCH_ITEMS items, each exactly the single request. What it
 * accepts is what `decodeBatch` accepts; decodeBatch reports a bad item in that item's
 * result instead of refusing the whole request.
 */
export const BatchRequest = <T extends TSchema>(item: T, description: string): BatchRequestSchema<T> =>
  Type.Object({ items: Type.Array(item, { minItems: 1, maxItems: MAX_BATCH_ITEMS, description }) }, strict);

/**
 * A batch item's own trace (project addition): the W3C `traceparent` of the caller that asked
 * for this item, so ipam's event for it (ip.allocated, ip.bound) carries that caller's trace
 * rather than the batch's. Absent: the event takes the batch request's trace.
 */
const ItemTrace = {
  traceparent: Type.Optional(
    Type.String({ pattern: TRACEPARENT_PATTERN, description: "W3C trace context of the item's caller; its ip event carries it (default: the request's)" }),
  ),
};
export const AllocateBatchItem = Type.Object({ ...AllocateRequest.properties, ...ItemTrace }, strict);
export type AllocateBatchItem = Static<typeof AllocateBatchItem>;
export const BindBatchItem = Type.Object({ ...BindRequest.properties, ...ItemTrace }, strict);
export type BindBatchItem = Static<typeof BindBatchItem>;

export const AllocateBatchRequest = BatchRequest(AllocateBatchItem, 'each item is an orangery.ipam.allocate request, plus an optional traceparent');
export type AllocateBatchRequest = Static<typeof AllocateBatchRequest>;
export const BindBatchRequest = BatchRequest(BindBatchItem, 'each item is an orangery.ipam.bind request, plus an optional traceparent');
export type BindBatchRequest = Static<typeof BindBatchRequest>;

/** Reply data of a batch: one single-request reply per item, in item order. */
export const AllocationBatch = Type.Object({
  results: Type.Array(ReplySchema(Allocation), { description: "one reply per item, in the request's item order" }),
});
export type AllocationBatch = Static<typeof AllocationBatch>;

// ---- swarm node blocks (project addition, issue 16; docs/ipam.md "Blocks") ------------------

/**
 * Docker's swarm-scoped macvlan IPAM is per node and hands the same address out on several
 * nodes (moby/moby#49921). ipam gives every swarm node its own block of a pool: an aligned
 * CIDR range (Docker's `--ip-range`) of addresses nobody holds, that only that node's tasks
 * use. Inside a block Docker picks the address; the swarm-agent records each running task's
 * address as `bound` to its instance (`block.bind`) and returns it when the task goes
 * (`block.unbind`). A block goes back to the pool (`block.release`) when its node leaves.
 */
export const MAX_BLOCK_SIZE = 4096;
export const BlockReserveRequest = Type.Object(
  {
    pool: Name,
    /** the swarm node's host id (`<cluster>-<node hostname>`) */
    host: Type.String({ pattern: HOST_ID_PATTERN }),
    /** addresses in the block: a power of two (an aligned CIDR range), 4..MAX_BLOCK_SIZE */
    size: Type.Integer({ minimum: 4, maximum: MAX_BLOCK_SIZE }),
  },
  strict,
);
export type BlockReserveRequest = Static<typeof BlockReserveRequest>;
export const BlockRef = Type.Object({ pool: Name, host: Type.String({ pattern: HOST_ID_PATTERN }) }, strict);
export type BlockRef = Static<typeof BlockRef>;
export const BlockListRequest = Type.Object({ pool: Type.Optional(Name), host: Type.Optional(Type.String({ pattern: HOST_ID_PATTERN })) }, strict);
export type BlockListRequest = Static<typeof BlockListRequest>;
export const IpBlock = Type.Object({
  pool: Name,
  host: Type.String(),
  /** the block as a CIDR inside the pool's (Docker's --ip-range) */
  cidr: Type.String(),
  first: Ipv4,
  last: Ipv4,
  size: Type.Integer(),
  /** the pool's network: what a node's config-only macvlan network needs besides the range */
  prefixLength: Type.Integer(),
  gateway: Ipv4,
  vlan: Type.Integer(),
  /** addresses of the block bound to a task now */
  bound: Type.Integer(),
  createdAt: Type.String({ format: 'date-time' }),
});
export type IpBlock = Static<typeof IpBlock>;
export const BlockList = Type.Object({ blocks: Type.Array(IpBlock) });
export type BlockList = Static<typeof BlockList>;
/** A running task's address (inside `host`'s block of `pool`) recorded as bound to its instance. */
export const BlockBindRequest = Type.Object(
  {
    pool: Name,
    ip: Ipv4,
    owner: OwnerSchema,
    instanceId: Type.String({ pattern: '^[!-~]{1,255}$' }),
    host: Type.String({ pattern: HOST_ID_PATTERN }),
  },
  strict,
);
export type BlockBindRequest = Static<typeof BlockBindRequest>;
export const BlockUnbindRequest = Type.Object(
  {
    ip: Ipv4,
    /** only if the address is still bound to this instance (a late unbind must not free another task's address); absent: whoever holds it */
    instanceId: Type.Optional(Type.String({ pattern: '^[!-~]{1,255}$' })),
  },
  strict,
);
export type BlockUnbindRequest = Static<typeof BlockUnbindRequest>;

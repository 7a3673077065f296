import { Type, type TSchema } from '@sinclair/typebox';
import {
  AgentInstance,
  AgentInstanceList,
  CreateInstanceCommand,
  SwarmCreateInstanceCommand,
  Heartbeat,
  HostDisconnectedData,
  HostFacts,
  HostGetCommand,
  HostIsolatedData,
  HostUnknownData,
  FleetFailoverData,
  InstanceOrphanedData,
  ProbeWireCommand,
  ProbeWireResult,
  HostFencedData,
  HostRegisteredData,
  InstanceDiskData,
  InstanceEventData,
  InstanceRef,
  ListInstancesCommand,
  StopInstanceCommand,
} from './agent';
import { EVENT_TYPE_PREFIX } from './cloudevents';
import {
  HostDrainRequest,
  HostsListData,
  HostsListRequest,
  SlotCreateRequest,
  SlotGetRequest,
  SlotHoldRequest,
  SlotReserveRequest,
  SlotView,
  InstancePlacedData,
  InstancesListData,
  InstancesListRequest,
  ScaleCompletedData,
  ScaleRejectedData,
  ScaleRequestedEvent,
} from './scheduler';
import { ERROR_CODES, type ErrorCode } from './errors';
import { EventEnvelopeSchema, ReplySchema, TRACEPARENT_PATTERN } from './envelope-schemas';
import {
  AddressLookupRequest,
  AllocateBatchRequest,
  AllocateRequest,
  Allocation,
  AllocationBatch,
  BindBatchRequest,
  BindRequest,
  EmptyRequest,
  Pool,
  PoolCreateRequest,
  PoolList,
  PoolListRequest,
  PoolNameRequest,
  PoolWithUsage,
  Backend,
  BlockBindRequest,
  BlockList,
  BlockListRequest,
  BlockRef,
  BlockReserveRequest,
  BlockUnbindRequest,
  IpBlock,
} from './ipam';
import { EnvList, EnvListRequest, EnvNameRequest, EnvPutRequest, EnvRecord } from './envs';
import { HOST_ID_PATTERN, NAME_PATTERN } from './names';
import {
  DrainReplyData,
  DrainRequest,
  HostDrainedData,
  HostLostData,
  HostRecoveredData,
  MigrateReplyData,
  MigrateRequest,
  MigrationEventData,
  MigrationGetRequest,
  MigrationView,
} from './migrator';
import { EVENTS_STREAM, QUEUE_GROUPS, SUBJECTS } from './subjects';

/**
 * The project's AsyncAPI 3.0 document, built from the same TypeBox schemas that validate
 * requests at the edge, so validation and docs cannot drift apart. Pure: it returns an
 * object; tools/gen-asyncapi.ts writes it to docs/asyncapi.yaml (`npm run docs:asyncapi`)
 * and asyncapi.spec.ts fails when the committed file is stale.
 */

/** Version of the public contract (CONTRACT.md) the document describes. */
export const CONTRACT_VERSION = '1.0.0';

type IpamKey = keyof typeof SUBJECTS.ipam;

/** Error codes each IPAM subject can reply with (CONTRACT.md "IPAM"; the last two on any subject). */
export const IPAM_ERRORS: Record<IpamKey, readonly ErrorCode[]> = {
  poolCreate: ['INVALID_REQUEST', 'POOL_EXISTS', 'POOL_OVERLAP', 'UNAVAILABLE', 'INTERNAL'],
  poolGet: ['INVALID_REQUEST', 'POOL_NOT_FOUND', 'UNAVAILABLE', 'INTERNAL'],
  poolList: ['INVALID_REQUEST', 'UNAVAILABLE', 'INTERNAL'],
  poolDelete: ['INVALID_REQUEST', 'POOL_NOT_FOUND', 'POOL_IN_USE', 'UNAVAILABLE', 'INTERNAL'],
  allocate: ['INVALID_REQUEST', 'POOL_NOT_FOUND', 'POOL_EXHAUSTED', 'IP_OUT_OF_POOL', 'IP_RESERVED', 'IP_TAKEN', 'OWNER_HAS_IP', 'UNAVAILABLE', 'INTERNAL'],
  bind: ['INVALID_REQUEST', 'NOT_FOUND', 'NOT_IN_BLOCK', 'UNAVAILABLE', 'INTERNAL'],
  release: ['INVALID_REQUEST', 'NOT_FOUND', 'UNAVAILABLE', 'INTERNAL'],
  get: ['INVALID_REQUEST', 'NOT_FOUND', 'UNAVAILABLE', 'INTERNAL'],
  // The codes of a batch's own reply and of its items' results (those of the single subject).
  allocateBatch: [
    'INVALID_REQUEST',
    'POOL_NOT_FOUND',
    'POOL_EXHAUSTED',
    'IP_OUT_OF_POOL',
    'IP_RESERVED',
    'IP_TAKEN',
    'OWNER_HAS_IP',
    'UNAVAILABLE',
    'INTERNAL',
  ],
  bindBatch: ['INVALID_REQUEST', 'NOT_FOUND', 'NOT_IN_BLOCK', 'UNAVAILABLE', 'INTERNAL'],
  blockReserve: ['INVALID_REQUEST', 'POOL_NOT_FOUND', 'POOL_EXHAUSTED', 'UNAVAILABLE', 'INTERNAL'],
  blockRelease: ['INVALID_REQUEST', 'POOL_NOT_FOUND', 'NOT_FOUND', 'POOL_IN_USE', 'UNAVAILABLE', 'INTERNAL'],
  blockList: ['INVALID_REQUEST', 'UNAVAILABLE', 'INTERNAL'],
  blockBind: ['INVALID_REQUEST', 'POOL_NOT_FOUND', 'NOT_IN_BLOCK', 'IP_TAKEN', 'OWNER_HAS_IP', 'UNAVAILABLE', 'INTERNAL'],
  blockUnbind: ['INVALID_REQUEST', 'NOT_FOUND', 'NOT_IN_BLOCK', 'UNAVAILABLE', 'INTERNAL'],
};

type AgentKey = keyof typeof SUBJECTS.agent;

/**
 * Error codes each agent command can reply with (docs/docker-agent.md, docs/vmware-agent.md:
 * TEMPLATE_NOT_FOUND and START_FAILED are the vmware-agent's; UNAVAILABLE is a fenced
 * docker-agent or an unreachable vCenter, both retryable).
 */
export const AGENT_ERRORS: Record<AgentKey, readonly ErrorCode[]> = {
  create: [
    'INVALID_REQUEST',
    'INSTANCE_CONFLICT',
    'IP_IN_USE_ON_WIRE',
    'IMAGE_NOT_FOUND',
    'TEMPLATE_NOT_FOUND',
    'INSUFFICIENT_CAPACITY',
    'START_FAILED',
    'UNAVAILABLE',
    'INTERNAL',
  ],
  start: ['INVALID_REQUEST', 'NOT_FOUND', 'IP_IN_USE_ON_WIRE', 'START_FAILED', 'UNAVAILABLE', 'INTERNAL'],
  stop: ['INVALID_REQUEST', 'NOT_FOUND', 'UNAVAILABLE', 'INTERNAL'],
  remove: ['INVALID_REQUEST', 'UNAVAILABLE', 'INTERNAL'],
  get: ['INVALID_REQUEST', 'NOT_FOUND', 'UNAVAILABLE', 'INTERNAL'],
  list: ['INVALID_REQUEST', 'UNAVAILABLE', 'INTERNAL'],
  probe: ['INVALID_REQUEST', 'UNAVAILABLE', 'INTERNAL'],
  hostGet: ['INVALID_REQUEST', 'UNAVAILABLE', 'INTERNAL'],
};

/**
 * Event kinds of CONTRACT.md "Events": `orangery.evt.<area>.<what>`, type `io.orangery.<area>.<what>`;
 * plus the project's own host.fenced and instance.disk_warning|disk_exceeded (docs/docker-agent.md)
 * and host.disconnected (docs/vmware-agent.md).
 */
export const EVENT_KINDS = {
  host: ['registered', 'unknown', 'lost', 'recovered', 'drained', 'isolated', 'fenced', 'disconnected'],
  instance: ['placed', 'running', 'stopped', 'failed', 'removed', 'orphaned', 'disk_warning', 'disk_exceeded'],
  fleet: ['failover_paused', 'failover_resumed'],
  ip: ['allocated', 'bound', 'released'],
  migration: ['started', 'completed', 'failed'],
  scale: ['completed', 'rejected'],
} as const;

// ---------------------------------------------------------------------------------------
// Schemas (components.schemas): each one self-contained JSON Schema, no internal $ref.

/** Any JSON object: the payload of subjects whose service does not exist yet. */
const PlannedPayload = Type.Object(
  {},
  {
    additionalProperties: true,
    description: 'Planned: the service does not exist yet; CONTRACT.md gives the shape. Any JSON object until then.',
  },
);

const RequestHeaders = Type.Object(
  {
    'Orangery-Actor': Type.Optional(Type.String({ description: "the caller's name for itself, kept in the audit trail" })),
    traceparent: Type.Optional(Type.String({ pattern: TRACEPARENT_PATTERN, description: 'W3C trace context' })),
    tracestate: Type.Optional(Type.String()),
  },
  { description: 'optional NATS headers of a request' },
);

const EventHeaders = Type.Object(
  {
    'Content-Type': Type.Literal('application/cloudevents+json'),
    'Nats-Msg-Id': Type.Optional(Type.String({ description: "the event's id: JetStream stores a re-published event once" })),
    traceparent: Type.Optional(Type.String({ pattern: TRACEPARENT_PATTERN })),
  },
  { description: 'NATS headers of an event' },
);

/** snake_case and lower case -> PascalCase: disk_warning -> DiskWarning. */
const upper = (s: string): string =>
  s
    .split('_')
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('');
const eventSchemaName = (area: string, what: string): string => `${upper(area)}${upper(what)}Event`;

/** Published events, by `<area>.<what>`: who publishes them and their data. Every other kind is planned. */
const EVENT_SOURCES: Record<string, { source: string; data: TSchema; description?: string }> = {
  'host.lost': {
    source: 'orangery/scheduler',
    data: HostLostData,
    description:
      'v1.1: the host is silent past ORANGERY_FENCE_AFTER_SECONDS + margin AND its instances are off the wire (ARP probes ' +
      'from another agent on their VLAN), or its agent reports it isolated and its instances stopped: the scheduler ' +
      'replaces its instances with their IPs and MACs. Event id host-lost:<hostId>:<time of the last heartbeat>.',
  },
  'host.recovered': {
    source: 'orangery/scheduler',
    data: HostRecoveredData,
    description: 'v1.1: heartbeats resumed after host.unknown or host.lost. Event id host-recovered:<hostId>:<silentSince>.',
  },
  'host.drained': {
    source: 'orangery/migrator/<replica>',
    data: HostDrainedData,
    description:
      'Every migration of an orangery.migrator.drain completed: nothing of Orangery runs on the host (it stays draining). ' +
      'Not published when one of them failed (see its migration.failed). Event id host-drained:<drainId>.',
  },
  'migration.started': {
    source: 'orangery/migrator/<replica>',
    data: MigrationEventData,
    description: 'The target is reserved and the saga goes on to stop the old copy. Event id migration-started:<migrationId>.',
  },
  'migration.completed': {
    source: 'orangery/migrator/<replica>',
    data: MigrationEventData,
    description:
      'The instance runs on the target with the same IP and MAC, ipam is bound there, the old copy is removed. Event id migration-completed:<migrationId>.',
  },
  'migration.failed': {
    source: 'orangery/migrator/<replica>',
    data: MigrationEventData,
    description:
      'reason says why; whatever was done is undone (the target copy removed, the old one started again, the hold ' +
      'released). A drain migration refused before anything moved (no capacity) gets this event without started. ' +
      'Event id migration-failed:<migrationId>.',
  },
  'ip.allocated': { source: 'orangery/ipam', data: Allocation },
  'ip.bound': { source: 'orangery/ipam', data: Allocation },
  'ip.released': { source: 'orangery/ipam', data: Allocation },
  'host.registered': {
    source: 'orangery/docker-agent/<hostId> or orangery/vmware-agent/<esxiHostId>',
    data: HostRegisteredData,
    description:
      'When the agent starts (with engine and uplink), and again with reregistered: true and fencedAt when its instance ' +
      'network answers again after a self-fence (v1.1). The instances it stopped then stay stopped: the control plane decides.',
  },
  'host.fenced': {
    source: 'orangery/docker-agent/<hostId>',
    data: HostFencedData,
    description:
      'v1.0 only: agents before v1.1 fenced on loss of NATS and said so here. v1.1 agents never fence on a control-plane ' +
      'outage; they publish host.isolated when their instance network is isolated. Kept so that v1.0 consumers still validate.',
  },
  'instance.running': {
    source: 'orangery/docker-agent/<hostId> or orangery/vmware-agent/<esxiHostId>',
    data: InstanceEventData,
    description:
      'The container started (engine event) or the VM powered on (vCenter change). A starting agent also reports each instance it finds running, with adopted: true.',
  },
  'instance.stopped': {
    source: 'orangery/docker-agent/<hostId> or orangery/vmware-agent/<esxiHostId>',
    data: InstanceEventData,
    description:
      'The process exited 0, was stopped on request (reason "stopped on request") or by a self-fence; a VM powered off ' +
      '(on request, or "poweredOff in vCenter" when someone else did it).',
  },
  'instance.failed': {
    source: 'orangery/docker-agent/<hostId> or orangery/vmware-agent/<esxiHostId>',
    data: InstanceEventData,
    description:
      'The process exited non-zero or was OOM-killed (reason), or a create/start was refused before anything started ' +
      '(code IMAGE_NOT_FOUND, TEMPLATE_NOT_FOUND or IP_IN_USE_ON_WIRE, with reason and ip).',
  },
  'instance.removed': {
    source: 'orangery/docker-agent/<hostId> or orangery/vmware-agent/<esxiHostId>',
    data: InstanceEventData,
    description: 'The container (or the VM) is gone.',
  },
  'host.isolated': {
    source: 'orangery/docker-agent/<hostId>',
    data: HostIsolatedData,
    description:
      'v1.1: no isolation address (ORANGERY_ISOLATION_ADDRESSES, default the gateways of the pools its instances use) ' +
      'answered ARP for ORANGERY_FENCE_AFTER_SECONDS: the agent stopped every instance, whether or not NATS was reachable.',
  },
  'host.unknown': {
    source: 'orangery/scheduler',
    data: HostUnknownData,
    description:
      'v1.1: the agent is silent past ORANGERY_LOST_AFTER_SECONDS but its instances still answer on the wire (or the backend ' +
      'owns restarts, or failover is paused): nothing of it is replaced. Event id host-unknown:<hostId>:<silence number>.',
  },
  'instance.orphaned': {
    source: 'orangery/scheduler',
    data: InstanceOrphanedData,
    description:
      'v1.1: a copy found where no record places it (a returning host, an agent restarted after a move) was stopped (a VM ' +
      'powered off) and is kept until keptUntil (ORANGERY_LEFTOVER_RETENTION_HOURS); it is never started.',
  },
  'fleet.failover_paused': {
    source: 'orangery/scheduler',
    data: FleetFailoverData,
    description:
      "v1.1: more than half of a backend's hosts are silent: a mass silence is more likely the control plane's own partition, so no host of that backend is declared lost.",
  },
  'fleet.failover_resumed': {
    source: 'orangery/scheduler',
    data: FleetFailoverData,
    description: "v1.1: fewer than half of the backend's hosts are silent again: failover of that backend resumes.",
  },
  'host.disconnected': {
    source: 'orangery/vmware-agent/<esxiHostId>',
    data: HostDisconnectedData,
    description:
      'vCenter reports the ESXi host no longer connected (disconnected, notResponding): its heartbeats go on with connectionState (v1.1) and creates on it ' +
      'are refused (UNAVAILABLE). A host.registered with reregistered: true follows when it is connected again.',
  },
  'instance.disk_warning': {
    source: 'orangery/docker-agent/<hostId>',
    data: InstanceDiskData,
    description: "The container's writable layer passed 80% of resources.diskMb (checked every ORANGERY_DISK_CHECK_SECONDS).",
  },
  'instance.placed': {
    source: 'orangery/scheduler/<replica>',
    data: InstancePlacedData,
    description: 'The scheduler chose a host for the slot (journaled before the agent is asked); attempt > 1 after a failed start elsewhere.',
  },
  'scale.completed': {
    source: 'orangery/scheduler/<replica>',
    data: ScaleCompletedData,
    description: 'Every slot 0..replicas-1 runs and nothing above is left. Event id scale-completed:<requestId>.',
  },
  'scale.rejected': {
    source: 'orangery/scheduler/<replica>',
    data: ScaleRejectedData,
    description:
      'reason.code INVALID_REQUEST, POOL_NOT_FOUND, INSUFFICIENT_CAPACITY (details.shortfall), SUPERSEDED (details.by) or ' +
      "START_FAILED (details.slots: each unstarted slot's last error). Event id scale-rejected:<requestId>.",
  },
  'instance.disk_exceeded': {
    source: 'orangery/docker-agent/<hostId>',
    data: InstanceDiskData,
    description: 'The writable layer passed 100% of resources.diskMb; with policy stop the agent stops the instance.',
  },
};

function eventSchemas(): Record<string, TSchema> {
  const out: Record<string, TSchema> = {};
  for (const [area, whats] of Object.entries(EVENT_KINDS)) {
    for (const what of whats) {
      const data = EVENT_SOURCES[`${area}.${what}`]?.data ?? PlannedPayload;
      out[eventSchemaName(area, what)] = EventEnvelopeSchema(`${EVENT_TYPE_PREFIX}${area}.${what}`, data);
    }
  }
  return out;
}

const NAMED_SCHEMAS = {
  PoolCreateRequest,
  PoolNameRequest,
  EmptyRequest,
  PoolListRequest,
  AllocateRequest,
  BindRequest,
  AddressLookupRequest,
  AllocateBatchRequest,
  BindBatchRequest,
  PoolReply: ReplySchema(Pool),
  PoolWithUsageReply: ReplySchema(PoolWithUsage),
  PoolListReply: ReplySchema(PoolList),
  EmptyReply: ReplySchema(Type.Object({})),
  AllocationReply: ReplySchema(Allocation),
  AllocationBatchReply: ReplySchema(AllocationBatch),
  BlockReserveRequest,
  BlockRefRequest: BlockRef,
  BlockListRequest,
  BlockBindRequest,
  BlockUnbindRequest,
  IpBlockReply: ReplySchema(IpBlock),
  BlockListReply: ReplySchema(BlockList),
  EnvPutRequest,
  EnvNameRequest,
  EnvListRequest,
  EnvReply: ReplySchema(EnvRecord),
  EnvListReply: ReplySchema(EnvList),
  CreateInstanceCommand,
  SwarmCreateInstanceCommand,
  InstanceRef,
  StopInstanceCommand,
  ListInstancesCommand,
  AgentInstanceReply: ReplySchema(AgentInstance),
  AgentInstanceListReply: ReplySchema(AgentInstanceList),
  ProbeWireCommand,
  ProbeWireReply: ReplySchema(ProbeWireResult),
  HostGetCommand,
  HostFactsReply: ReplySchema(HostFacts),
  Heartbeat,
  RequestHeaders,
  PlannedPayload,
  PlannedReply: ReplySchema(PlannedPayload),
  ScaleRequestedEvent,
  HostsListRequest,
  HostsListReply: ReplySchema(HostsListData),
  InstancesListRequest,
  InstancesListReply: ReplySchema(InstancesListData),
  SlotGetRequest,
  SlotHoldRequest,
  SlotReserveRequest,
  SlotCreateRequest,
  HostDrainRequest,
  SlotViewReply: ReplySchema(SlotView),
  SlotTargetReply: ReplySchema(Type.Object({ hostId: Type.String(), backend: Backend })),
  HostDrainReply: ReplySchema(Type.Object({ hostId: Type.String(), state: Type.String() })),
  MigrateRequest,
  MigrateReply: ReplySchema(MigrateReplyData),
  DrainRequest,
  DrainReply: ReplySchema(DrainReplyData),
  MigrationGetRequest,
  MigrationReply: ReplySchema(MigrationView),
  EventHeaders,
} satisfies Record<string, TSchema>;
type SchemaName = keyof typeof NAMED_SCHEMAS;
const SCHEMAS: Record<string, TSchema> = { ...NAMED_SCHEMAS, ...eventSchemas() };

// ---------------------------------------------------------------------------------------
// Channels and operations.

type Json = Record<string, unknown>;
const schemaRef = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
const PLANNED: Json = { 'x-orangery-status': 'planned' };
const natsQueue = (queue: string): Json => ({ nats: { queue, bindingVersion: '0.1.0' } });

interface RequestReply {
  /** channel and operation id */
  id: string;
  subject: string;
  tag: 'ipam' | 'scheduler' | 'migrator' | 'agents';
  queue: string;
  /** description of the operation; the default says it is a core NATS request-reply served by `queue` */
  serving?: string;
  parameters?: Json;
  summary: string;
  description?: string;
  request: SchemaName;
  reply: SchemaName;
  errors?: readonly ErrorCode[];
  planned?: boolean;
}

const IPAM: Record<IpamKey, Pick<RequestReply, 'summary' | 'description' | 'request' | 'reply'>> = {
  poolCreate: {
    summary: 'Create an address pool.',
    description:
      "Checks run in this order: the request's shape (INVALID_REQUEST, also for a pool larger than the service " +
      'supports, at least /16), then the name (POOL_EXISTS), then overlap with any other pool (POOL_OVERLAP). ' +
      'vlan defaults to 0 (untagged), cooldownSeconds to 300.',
    request: 'PoolCreateRequest',
    reply: 'PoolReply',
  },
  poolGet: {
    summary: 'Get a pool with its usage.',
    description:
      'size: addresses that can ever be handed out (the cidr less network, broadcast, gateway and reserved); ' +
      'used: allocated or bound; quarantined: released and still within their cooldown; free = size - used - quarantined. ' +
      "v1.1 (issue 16): blocked = addresses inside swarm nodes' blocks that no task holds (bound ones count as used), " +
      'and free = size - used - quarantined - blocked.',
    request: 'PoolNameRequest',
    reply: 'PoolWithUsageReply',
  },
  poolList: {
    summary: 'List the pools with their usage, in name order.',
    description:
      'Paged (v1.1): { limit?, cursor? }; at most limit pools (default 1000, at most 10000) after cursor; ' +
      'nextCursor is present while more remain (send it as cursor for the next page). A limit that is not an integer ' +
      'in 1..10000, or a cursor this subject did not issue, is INVALID_REQUEST naming the field.',
    request: 'PoolListRequest',
    reply: 'PoolListReply',
  },
  poolDelete: {
    summary: 'Delete a pool.',
    description:
      'Succeeds when no address is allocated or bound (released ones go with the pool); POOL_IN_USE otherwise, and ' +
      "(v1.1) while a swarm node's block of the pool exists (details.blocks).",
    request: 'PoolNameRequest',
    reply: 'EmptyReply',
  },
  allocate: {
    summary: 'Allocate an address to an owner {env, app, slot}.',
    description:
      'Idempotent per owner: an owner holds at most one live address platform-wide and always gets it back. ' +
      'A released address returns to its former owner; nobody else gets it before the cooldown has passed. ' +
      'With ip: IP_OUT_OF_POOL, IP_RESERVED or IP_TAKEN when it cannot be had (IP_TAKEN with details.block { host, cidr } ' +
      "for an address inside a swarm node's block). Addresses inside blocks are never handed out, not even as affinity.",
    request: 'AllocateRequest',
    reply: 'AllocationReply',
  },
  bind: {
    summary: 'Bind an allocated address to an instance on a host.',
    description:
      'Needs an allocated or bound address (else NOT_FOUND). Binding a bound address again with a new ' +
      'backend or host is how failover and migration move it. An address a swarm task holds inside a block binds only ' +
      "with backend swarm and that block's host (else NOT_IN_BLOCK); swarm outside blocks binds as any backend.",
    request: 'BindRequest',
    reply: 'AllocationReply',
  },
  release: {
    summary: 'Release an address; the reply is the allocation, now released.',
    description:
      'Give exactly one of ip or owner. Releasing a released address returns it unchanged. An address inside a ' +
      "swarm node's block stays in its block (as orangery.ipam.block.unbind): no cooldown applies there.",
    request: 'AddressLookupRequest',
    reply: 'AllocationReply',
  },
  get: {
    summary: 'Look up an allocation by ip or by owner.',
    description: 'Give exactly one of ip or owner.',
    request: 'AddressLookupRequest',
    reply: 'AllocationReply',
  },
  allocateBatch: {
    summary: 'Allocate addresses for up to 500 owners at once (project addition, docs/ipam.md "Batch requests").',
    description:
      'Not in CONTRACT.md: a project addition that changes nothing existing. items are exactly orangery.ipam.allocate ' +
      'requests (1 to 500); data.results has one reply per item, in item order, each exactly what the single subject ' +
      'would reply. A malformed envelope (not an object, items missing, empty or longer than 500, an unknown field) is ' +
      'INVALID_REQUEST for the whole request; a malformed item is INVALID_REQUEST in its own result only, with ' +
      'details.field like items[3].owner.slot. Several items for one owner are answered as singles sent in item ' +
      'order would be (the same address, or OWNER_HAS_IP). The whole batch is one database transaction: all of its ' +
      'changes commit or none do (UNAVAILABLE or INTERNAL for the whole request), and every item is idempotent on retry. ' +
      'One ip.allocated event and audit row per address that changed, as for singles.',
    request: 'AllocateBatchRequest',
    reply: 'AllocationBatchReply',
  },
  bindBatch: {
    summary: 'Bind up to 500 allocated addresses at once (project addition, docs/ipam.md "Batch requests").',
    description:
      'Not in CONTRACT.md: a project addition that changes nothing existing. items are exactly orangery.ipam.bind ' +
      'requests (1 to 500); data.results has one reply per item, in item order, with the same rules for malformed ' +
      'envelopes and items as orangery.ipam.allocate.batch. Items for one ip apply in item order, as singles would. ' +
      'One transaction per batch; one ip.bound event and audit row per change, as for singles.',
    request: 'BindBatchRequest',
    reply: 'AllocationBatchReply',
  },
  blockReserve: {
    summary: 'Reserve a swarm node\'s block of a pool (project addition, issue 16, docs/ipam.md "Blocks").',
    description:
      'Request { pool, host, size }: size a power of two from 4 to 4096 (else INVALID_REQUEST, field size). Idempotent ' +
      'per (pool, host): a host that holds a block gets it back whatever size it asks. A new block is an aligned CIDR ' +
      'range of the pool none of whose addresses is network, broadcast, gateway, reserved, held (allocated or bound), in ' +
      'cooldown or in another block: ranges of never-used addresses first (released ones stay for their owners), lowest ' +
      'first; POOL_EXHAUSTED (details.blockSize) when no such range is left. Same concurrency guarantees as allocate: two ' +
      "hosts never get overlapping blocks, from any replica. Inside a block Docker's per-node IPAM picks task addresses; " +
      'nothing else in ipam hands them out. Writes an audit row, no event.',
    request: 'BlockReserveRequest',
    reply: 'IpBlockReply',
  },
  blockRelease: {
    summary: "Return a node's block to the pool (its node left the swarm).",
    description:
      'Request { pool, host }. POOL_IN_USE (details.bound, details.ips) while an address of the block is bound; NOT_FOUND ' +
      'when the host holds no block in the pool. The addresses go back to the pool: released ones keep their cooldown ' +
      '(counted from their release) and their former owner affinity.',
    request: 'BlockRefRequest',
    reply: 'IpBlockReply',
  },
  blockList: {
    summary: 'List blocks, by pool and/or host, in address order (an unknown pool lists none).',
    request: 'BlockListRequest',
    reply: 'BlockListReply',
  },
  blockBind: {
    summary: "Record a running swarm task's address as bound to its instance.",
    description:
      "Request { pool, ip, owner, instanceId, host }: ip must be inside host's block of pool (else NOT_IN_BLOCK). IP_TAKEN " +
      'when another owner holds it bound. When the owner holds another address inside a block (its task moved or was ' +
      'replaced) that one is released in the same transaction; an address it holds outside blocks is OWNER_HAS_IP. ' +
      'Idempotent. Reply: the allocation, bound, backend swarm, host the node. Events: ip.bound (and ip.released for ' +
      'the address it left), no ip.allocated.',
    request: 'BlockBindRequest',
    reply: 'AllocationReply',
  },
  blockUnbind: {
    summary: "A task's address is free again inside its block (the task is gone).",
    description:
      'Request { ip }: NOT_IN_BLOCK for an address outside every block; NOT_FOUND if never bound. Idempotent. The address ' +
      'stays in its block: Docker picks addresses there, so no cooldown or affinity holds inside a block. Event: ip.released.',
    request: 'BlockUnbindRequest',
    reply: 'AllocationReply',
  },
};

const OPERATORS: RequestReply[] = [
  {
    id: 'schedulerHostsList',
    subject: SUBJECTS.scheduler.hostsList,
    tag: 'scheduler',
    queue: QUEUE_GROUPS.scheduler,
    summary: 'List the hosts.',
    description:
      'Request { limit?, cursor? }. Data: { hosts: [{ id, backend, state, capacity, allocated, usage, labels }], nextCursor? }; ' +
      'state is ready, draining, unknown or lost; capacity, allocated and usage are { cpu, memoryMb, diskMb }. ' +
      'Paged (v1.1): at most limit hosts (default 1000, at most 10000) in id order after cursor; nextCursor is present ' +
      'while more remain. A limit that is not an integer in 1..10000, or a cursor this subject did not issue, is ' +
      'INVALID_REQUEST naming the field.',
    request: 'HostsListRequest',
    reply: 'HostsListReply',
    errors: ['INVALID_REQUEST'],
  },
  ...(
    [
      ['Put', 'envsPut', 'Create or replace an environment record.', 'EnvPutRequest', 'EnvReply'],
      ['Get', 'envsGet', "Get an environment's record (NOT_FOUND if none).", 'EnvNameRequest', 'EnvReply'],
      ['List', 'envsList', 'List the environment records, in name order (paged like the other lists).', 'EnvListRequest', 'EnvListReply'],
      ['Delete', 'envsDelete', "Delete an environment's record (NOT_FOUND if none); its apps then behave as before records.", 'EnvNameRequest', 'EmptyReply'],
    ] as const
  ).map(([name, key, summary, request, reply]): RequestReply => ({
    id: `schedulerEnvs${name}`,
    subject: SUBJECTS.scheduler[key],
    tag: 'scheduler',
    queue: QUEUE_GROUPS.scheduler,
    summary,
    description:
      'CONTRACT.md v1.1 "Environments". A scale request for an env with a record: backend auto chooses only among its ' +
      'backends, only hosts carrying every hostLabel are eligible, a forbidden backend or pool is scale.rejected with ' +
      'POLICY_VIOLATION (details { field, allowed }). Changing a record moves nothing running; the next scale request follows it.',
    request,
    reply,
    errors: ['INVALID_REQUEST', 'UNAVAILABLE', 'INTERNAL', ...(name === 'Get' || name === 'Delete' ? (['NOT_FOUND'] as const) : [])],
  })),
  {
    id: 'schedulerInstancesList',
    subject: SUBJECTS.scheduler.instancesList,
    tag: 'scheduler',
    queue: QUEUE_GROUPS.scheduler,
    summary: 'List the instances.',
    description:
      'Request { env?, app?, limit?, cursor? }. Data: { instances: [{ id, env, app, slot, state, backend, host, ip, mac }], ' +
      'nextCursor? }; state is placed, starting, running, stopped or failed (removed instances leave the list). ' +
      'Paged (v1.1): at most limit instances (default 1000, at most 10000) in (env, app, slot) order after cursor; ' +
      'nextCursor is present while more remain. A limit that is not an integer in 1..10000, or a cursor this subject ' +
      'did not issue, is INVALID_REQUEST naming the field. Never carries environment values.',
    request: 'InstancesListRequest',
    reply: 'InstancesListReply',
    errors: ['INVALID_REQUEST'],
  },
  ...(
    [
      ['get', 'Read a slot: where it is, its network, spec (never its environment) and hold.', 'SlotGetRequest'],
      ['hold', 'A migration takes the slot over; the scheduler leaves it alone until commit or release.', 'SlotHoldRequest'],
      ['reserve', "Place and reserve the held slot's target (never its current host nor exclude); data { hostId, backend }.", 'SlotReserveRequest'],
      ['commit', 'The migration moved the instance to its target: the record follows and the scheduler manages it again.', 'SlotHoldRequest'],
      ['release', 'The migration gave up (the old copy is back): the target is dropped and the hold cleared.', 'SlotHoldRequest'],
    ] as const
  ).map(([what, summary, request]): RequestReply => ({
    id: `schedulerSlot${upper(what)}`,
    subject: SUBJECTS.schedulerSlot[what],
    tag: 'scheduler',
    queue: QUEUE_GROUPS.scheduler,
    summary,
    description:
      'Internal, for the migrator; served by the scheduler leader only (no responders while a leader is being elected). ' +
      'Errors: NOT_FOUND, INSTANCE_CONFLICT (held by another migration, or not held), UNAVAILABLE (busy: retry), ' +
      'INSUFFICIENT_CAPACITY (reserve), INVALID_REQUEST.',
    request,
    reply: what === 'reserve' ? 'SlotTargetReply' : 'SlotViewReply',
    errors: ['INVALID_REQUEST', 'NOT_FOUND', 'INSTANCE_CONFLICT', 'UNAVAILABLE', ...(what === 'reserve' ? (['INSUFFICIENT_CAPACITY'] as const) : [])],
  })),
  {
    id: 'schedulerSlotCreate',
    subject: SUBJECTS.schedulerSlot.create,
    tag: 'scheduler',
    queue: QUEUE_GROUPS.scheduler,
    summary: "Issue 13: create the held slot's copy on its reserved target; the leader sends the agent's create itself.",
    description:
      'Internal, for the migrator; served by the scheduler leader only. Request { instanceId, by, network }: the slot ' +
      "must be held by `by` with a target reserved, and network's ip and mac must be the slot's. The leader builds " +
      "the create command from its own record (the target backend's image or template, resources, the app's " +
      'environment) and sends it to orangery.agent.<target>.instance.create, so environment values never reach the ' +
      "migrator (slot.get does not carry them). Data: the target agent's reply (AgentInstance); an agent's refusal " +
      "comes back with its own code (IP_IN_USE_ON_WIRE, IMAGE_NOT_FOUND, ...). Idempotent like the agent's create.",
    request: 'SlotCreateRequest',
    reply: 'AgentInstanceReply',
    errors: [
      'INVALID_REQUEST',
      'NOT_FOUND',
      'INSTANCE_CONFLICT',
      'IP_IN_USE_ON_WIRE',
      'IMAGE_NOT_FOUND',
      'TEMPLATE_NOT_FOUND',
      'INSUFFICIENT_CAPACITY',
      'START_FAILED',
      'UNAVAILABLE',
      'INTERNAL',
    ],
  },
  {
    id: 'schedulerHostDrain',
    subject: SUBJECTS.schedulerSlot.hostDrain,
    tag: 'scheduler',
    queue: QUEUE_GROUPS.scheduler,
    summary: 'Set a host draining (no new placements) or back; internal, for the migrator.',
    description: 'Served by the scheduler leader only. Data { hostId, state }.',
    request: 'HostDrainRequest',
    reply: 'HostDrainReply',
    errors: ['INVALID_REQUEST', 'NOT_FOUND', 'UNAVAILABLE'],
  },
  {
    id: 'migratorMigrationsGet',
    subject: SUBJECTS.migrator.migrationsGet,
    tag: 'migrator',
    queue: QUEUE_GROUPS.migrator,
    summary: 'Get a migration.',
    description:
      'Request { migrationId }. Data: { id, instanceId, from, to, state, steps, error? }; state is running, completed or ' +
      'failed; from and to are { hostId, backend }; steps lists every step run so far (hold, reserve, stop-old, ' +
      'create-new, await-running, bind, remove-old, commit; a rollback: remove-new, start-old, release) with its ' +
      'attempts and timestamps. step, drainId, createdAt and updatedAt are project additions.',
    request: 'MigrationGetRequest',
    reply: 'MigrationReply',
    errors: ['INVALID_REQUEST', 'NOT_FOUND', 'UNAVAILABLE', 'INTERNAL'],
  },
  {
    id: 'migratorMigrate',
    subject: SUBJECTS.migrator.migrate,
    tag: 'migrator',
    queue: QUEUE_GROUPS.migrator,
    summary: 'Migrate an instance to another backend or host.',
    description:
      'Request { instanceId, toBackend?: "docker" | "vmware", toHost? }. Data: { migrationId }. The slot is held and ' +
      'its target reserved before the reply, so NOT_FOUND (no such instance or host), INSUFFICIENT_CAPACITY ' +
      '(details.shortfall), INVALID_REQUEST (no artifact for toBackend, already on toHost) and INSTANCE_CONFLICT (another ' +
      'migration holds it, or it is not running) are the reply and nothing moves. Then, break before make: the old copy ' +
      'is stopped and confirmed off before the new one starts with the same IP and MAC. UNAVAILABLE: no scheduler leader ' +
      'answered within 8 s.',
    request: 'MigrateRequest',
    reply: 'MigrateReply',
    errors: ['INVALID_REQUEST', 'NOT_FOUND', 'INSUFFICIENT_CAPACITY', 'INSTANCE_CONFLICT', 'UNAVAILABLE', 'INTERNAL'],
  },
  {
    id: 'migratorDrain',
    subject: SUBJECTS.migrator.drain,
    tag: 'migrator',
    queue: QUEUE_GROUPS.migrator,
    summary: 'Drain a host: migrate every instance away.',
    description:
      'Request { hostId }. Data: { migrationIds: [...], drainId } (drainId: project addition). The host is set draining ' +
      '(no new placements) first, then one migration per instance on it is queued; those of one app run one at a time. ' +
      'host.drained when all completed. NOT_FOUND for an unknown host.',
    request: 'DrainRequest',
    reply: 'DrainReply',
    errors: ['INVALID_REQUEST', 'NOT_FOUND', 'UNAVAILABLE', 'INTERNAL'],
  },
];

function requestReplies(): RequestReply[] {
  const ipam = (Object.keys(SUBJECTS.ipam) as IpamKey[]).map((key): RequestReply => ({
    id: `ipam${upper(key)}`,
    subject: SUBJECTS.ipam[key],
    tag: 'ipam',
    queue: QUEUE_GROUPS.ipam,
    ...IPAM[key],
    errors: IPAM_ERRORS[key],
  }));
  return [...ipam, ...OPERATORS, ...agentCommands()];
}

const AGENT_COMMANDS: Record<AgentKey, Pick<RequestReply, 'summary' | 'description' | 'request' | 'reply'>> = {
  create: {
    summary: 'Create an instance on this host, and start it unless start is false.',
    description:
      'A container (docker-agent) needs image, a VM (vmware-agent) needs template; the other is INVALID_REQUEST. ' +
      'The image must be on the engine already (agents pull nothing: IMAGE_NOT_FOUND, and an instance.failed event). ' +
      'Before starting, the address is checked against the engine (another instance of ours holding it) and probed on ' +
      'the wire with ARP; if anything answers, IP_IN_USE_ON_WIRE, nothing is left behind and instance.failed is ' +
      'published. The same command again returns the instance (and starts it if it is not running); the same instance ' +
      'id with another spec (image, resources, network, environment, command) is INSTANCE_CONFLICT. cpu beyond the ' +
      "cores left after the host's reservation is INSUFFICIENT_CAPACITY.",
    request: 'CreateInstanceCommand',
    reply: 'AgentInstanceReply',
  },
  start: {
    summary: 'Start a stopped or failed instance.',
    description: 'Running already: returns it. The same duplicate-address checks as create run before the start.',
    request: 'InstanceRef',
    reply: 'AgentInstanceReply',
  },
  stop: {
    summary: "Stop an instance (the image's stop signal, SIGTERM by default, then SIGKILL after timeoutSeconds).",
    description: 'timeoutSeconds defaults to ORANGERY_STOP_TIMEOUT_SECONDS. Stopped already: returns it.',
    request: 'StopInstanceCommand',
    reply: 'AgentInstanceReply',
  },
  remove: {
    summary: 'Remove an instance with its writable layer, killing it if it runs.',
    description: 'An unknown instance is not an error: the reply has state removed.',
    request: 'InstanceRef',
    reply: 'AgentInstanceReply',
  },
  get: { summary: 'Get an instance as the engine sees it.', request: 'InstanceRef', reply: 'AgentInstanceReply' },
  list: {
    summary: 'List every instance the agent manages on this host.',
    request: 'ListInstancesCommand',
    reply: 'AgentInstanceListReply',
  },
  probe: {
    summary: 'v1.1: RFC 5227 ARP probes (sender 0.0.0.0) for up to 256 addresses on one VLAN; which ones answered.',
    description:
      "The docker-agent probes from <uplink>.<vlan> (the uplink for VLAN 0). Its own containers' addresses are reported as answered without a probe (a macvlan parent cannot see its children).",
    request: 'ProbeWireCommand',
    reply: 'ProbeWireReply',
  },
  hostGet: {
    summary: "Issue 13: the host's facts (capacity, total, reserved, labels, VLANs), as its heartbeats carry them.",
    description:
      "Only this host's agent may subscribe to orangery.agent.{hostId}.>, so the reply is bound to the host. A " +
      'host.registered event is public (any agent may publish it): the scheduler takes it as a hint only, asks this ' +
      'subject, and registers what the reply says (nothing, when no agent of that host answers, or the reply names ' +
      'another host). The vmware-agent answers for each ESXi host it serves.',
    request: 'HostGetCommand',
    reply: 'HostFactsReply',
  },
};

function agentCommands(): RequestReply[] {
  const hostId = '{hostId}';
  const queue = QUEUE_GROUPS.agent(hostId);
  return (Object.keys(SUBJECTS.agent) as AgentKey[]).map((key): RequestReply => ({
    id: `agent${upper(key)}`,
    subject: SUBJECTS.agent[key](hostId),
    tag: 'agents',
    queue,
    serving:
      `Core NATS request-reply, served by the one agent of host {hostId} (queue group ${queue}: a second agent started ` +
      'with the same host id shares the commands instead of doubling them). Every command is idempotent: the ' +
      "engine's labels are the agent's only state, so a repeated command has one effect. Commands for one instance " +
      'run one at a time. A refused command leaves the instance as it was (a refused create leaves none behind).',
    parameters: { hostId: { description: `host id, ${HOST_ID_PATTERN}` } },
    ...AGENT_COMMANDS[key],
    errors: AGENT_ERRORS[key],
  }));
}

interface Built {
  channels: Json;
  operations: Json;
}

function addRequestReply(out: Built, rr: RequestReply): void {
  const planned = rr.planned ? PLANNED : {};
  const replyId = `${rr.id}Reply`;
  out.channels[rr.id] = {
    address: rr.subject,
    title: rr.subject,
    summary: rr.summary,
    ...(rr.description ? { description: rr.description } : {}),
    ...(rr.parameters ? { parameters: rr.parameters } : {}),
    messages: {
      request: { name: rr.request, title: `${rr.subject} request`, headers: schemaRef('RequestHeaders'), payload: schemaRef(rr.request) },
    },
    ...planned,
  };
  out.channels[replyId] = {
    address: null,
    description: `The reply to ${rr.subject}: sent to the requester's inbox (the reply subject of its NATS request).`,
    messages: {
      reply: { name: rr.reply, title: `${rr.subject} reply`, payload: schemaRef(rr.reply) },
    },
    ...planned,
  };
  out.operations[rr.id] = {
    action: 'receive',
    channel: { $ref: `#/channels/${rr.id}` },
    summary: rr.summary,
    description: rr.serving ?? `Core NATS request-reply, served by queue group ${rr.queue}. A failed request changes no state.`,
    tags: [{ name: rr.tag }],
    bindings: natsQueue(rr.queue),
    messages: [{ $ref: `#/channels/${rr.id}/messages/request` }],
    reply: {
      channel: { $ref: `#/channels/${replyId}` },
      messages: [{ $ref: `#/channels/${replyId}/messages/reply` }],
    },
    ...(rr.errors ? { 'x-orangery-errors': [...rr.errors] } : {}),
    ...planned,
  };
}

function addEvents(out: Built): void {
  for (const [area, whats] of Object.entries(EVENT_KINDS)) {
    for (const what of whats) {
      const id = `evt${upper(area)}${upper(what)}`;
      const type = `${EVENT_TYPE_PREFIX}${area}.${what}`;
      const known = EVENT_SOURCES[`${area}.${what}`];
      const planned = known ? {} : PLANNED;
      const schema = eventSchemaName(area, what);
      const stream = `JetStream stream ${EVENTS_STREAM.name} (subjects ${EVENTS_STREAM.subjects.join(', ')}).`;
      out.channels[id] = {
        address: SUBJECTS.event(area, what),
        title: SUBJECTS.event(area, what),
        summary: `CloudEvent ${type}.`,
        description: known ? `${known.description ? `${known.description} ` : ''}Published by ${known.source}. ${stream}` : stream,
        messages: {
          event: {
            name: schema,
            title: type,
            contentType: 'application/cloudevents+json',
            headers: schemaRef('EventHeaders'),
            payload: schemaRef(schema),
          },
        },
        ...planned,
      };
      out.operations[id] = {
        action: 'send',
        channel: { $ref: `#/channels/${id}` },
        summary: `Publish ${type}.`,
        description:
          "Published into JetStream with the event's id as the message id (a re-published event is stored once). " +
          "The CloudEvents subject is the object's id; traceparent carries the trace of the cause.",
        tags: [{ name: 'events' }],
        messages: [{ $ref: `#/channels/${id}/messages/event` }],
        ...planned,
      };
    }
  }
}

function addHeartbeatAndScale(out: Built): void {
  out.channels['heartbeat'] = {
    address: SUBJECTS.heartbeat('{hostId}'),
    title: SUBJECTS.heartbeat('<hostId>'),
    summary: "An agent's heartbeat.",
    description:
      'Core NATS, not JetStream and not an event: nothing stores it, a missed one is simply missed. Every ' +
      'ORANGERY_HEARTBEAT_SECONDS (default 2): the host facts of host.registered plus what its instances were ' +
      'promised (allocated), what they use (usage), their count and whether the agent has fenced itself. A host ' +
      'silent for ORANGERY_LOST_AFTER_SECONDS (default 6) is lost. The agent flushes after each heartbeat; a ' +
      'successful flush is its proof of contact with NATS (self-fencing, docs/docker-agent.md).',
    parameters: { hostId: { description: `host id, ${HOST_ID_PATTERN}` } },
    messages: { heartbeat: { name: 'Heartbeat', title: 'heartbeat', payload: schemaRef('Heartbeat') } },
  };
  out.operations['heartbeat'] = {
    action: 'send',
    channel: { $ref: '#/channels/heartbeat' },
    summary: 'A host agent (docker-agent; the vmware-agent for each ESXi host of its vCenter) publishes its heartbeat.',
    tags: [{ name: 'agents' }],
    messages: [{ $ref: '#/channels/heartbeat/messages/heartbeat' }],
  };
  out.channels['scaleRequest'] = {
    address: SUBJECTS.scale('{env}', '{app}'),
    title: SUBJECTS.scale('<env>', '<app>'),
    summary: 'A scale request from an upstream system.',
    description:
      'JetStream, durable: the publisher gets an ack once the request is stored. data: { app, env, replicas, resources: ' +
      '{ cpu, memoryMb, heapMb, diskMb }, image (containers), template (VMs), backend: auto | docker | vmware, pool, ' +
      'spread: host | none }. The latest request for an app is its desired state. Each request ends in exactly one ' +
      `${EVENT_TYPE_PREFIX}scale.completed or ${EVENT_TYPE_PREFIX}scale.rejected event whose data carries requestId.`,
    parameters: {
      env: { description: `environment, ${NAME_PATTERN}` },
      app: { description: `application, ${NAME_PATTERN}` },
    },
    messages: {
      scaleRequested: {
        name: 'ScaleRequestedEvent',
        title: `${EVENT_TYPE_PREFIX}scale.requested`,
        contentType: 'application/cloudevents+json',
        payload: schemaRef('ScaleRequestedEvent'),
      },
    },
  };
  out.operations['scaleRequest'] = {
    action: 'receive',
    channel: { $ref: '#/channels/scaleRequest' },
    summary: 'The scheduler consumes scale requests.',
    tags: [{ name: 'scale' }],
    messages: [{ $ref: '#/channels/scaleRequest/messages/scaleRequested' }],
  };
}

/** The AsyncAPI 3.0.0 document as plain JSON (no TypeBox symbols, no undefined). */
export function buildAsyncApi(): Record<string, unknown> {
  const out: Built = { channels: {}, operations: {} };
  for (const rr of requestReplies()) addRequestReply(out, rr);
  addEvents(out);
  addHeartbeatAndScale(out);

  const doc = {
    asyncapi: '3.0.0',
    info: {
      title: 'Orangery',
      version: CONTRACT_VERSION,
      description:
        'Control plane for private clouds where VMs and containers share one L2 network and one IPAM.\n\n' +
        'The normative text is CONTRACT.md (contract v1, shared/design/CONTRACT.md): plain JSON on NATS, ' +
        'usable from a bare client in any language. Request-reply subjects answer ' +
        '{ "ok": true, "data": ... } or { "ok": false, "error": { "code", "message", "details" } }; ' +
        `error codes: ${ERROR_CODES.join(', ')}. ` +
        'Events are CloudEvents 1.0 JSON (structured mode). Subjects marked x-orangery-status: planned belong to ' +
        'services that do not exist yet; their payloads are not pinned down here.\n\n' +
        'Generated from the TypeBox schemas in libs/contracts (npm run docs:asyncapi); do not edit by hand.',
      tags: [
        { name: 'ipam', description: 'IP address management (orangery.ipam.*)' },
        { name: 'scheduler', description: 'operator queries of the scheduler' },
        { name: 'migrator', description: 'VM <-> container migrations' },
        { name: 'scale', description: 'scale requests from upstream systems' },
        { name: 'events', description: `CloudEvents on ${SUBJECTS.eventsAll}` },
        {
          name: 'agents',
          description: 'host agents: commands on orangery.agent.<hostId>.instance.*, heartbeats on orangery.hb.<hostId>',
        },
      ],
    },
    defaultContentType: 'application/json',
    servers: {
      local: {
        host: '127.0.0.1:4222',
        protocol: 'nats',
        description: 'Local NATS (the default ORANGERY_NATS_URL).',
      },
    },
    channels: out.channels,
    operations: out.operations,
    components: { schemas: SCHEMAS },
  };
  // Drops TypeBox's symbol keys (Kind, Optional) and anything undefined.
  return JSON.parse(JSON.stringify(doc)) as Record<string, unknown>;
}

import { Type, type Static } from '@sinclair/typebox';
import { ERROR_CODES, type ErrorCode } from './errors';
import { HOST_ID_PATTERN, INSTANCE_ID_PATTERN } from './names';
import { Backend } from './ipam';

/**
 * The migrator's operator subjects (CONTRACT.md "Operators") and the events it publishes
 * (migration.started|completed|failed, host.lost|recovered|drained). One source for
 * validation at the edge and for docs/asyncapi.yaml.
 */
const strict = { additionalProperties: false } as const;

const BackendField = Backend;
const HostIdField = Type.String({ pattern: HOST_ID_PATTERN });
/** Migration ids are `m-<uuid>`; they are also the scheduler hold's `by`. */
export const MIGRATION_ID_PATTERN = '^m-[0-9a-f-]{36}$';
const MigrationIdField = Type.String({ pattern: MIGRATION_ID_PATTERN });

export const MigrateRequest = Type.Object(
  {
    instanceId: Type.String({ pattern: INSTANCE_ID_PATTERN }),
    toBackend: Type.Optional(BackendField),
    toHost: Type.Optional(HostIdField),
  },
  strict,
);
export type MigrateRequest = Static<typeof MigrateRequest>;
export const MigrateReplyData = Type.Object({ migrationId: Type.String() });
export type MigrateReplyData = Static<typeof MigrateReplyData>;

export const DrainRequest = Type.Object({ hostId: HostIdField }, strict);
export type DrainRequest = Static<typeof DrainRequest>;
export const DrainReplyData = Type.Object({
  migrationIds: Type.Array(Type.String()),
  drainId: Type.Optional(Type.String({ description: 'project addition: the drain, named in host.drained' })),
});
export type DrainReplyData = Static<typeof DrainReplyData>;

export const MigrationGetRequest = Type.Object({ migrationId: MigrationIdField }, strict);
export type MigrationGetRequest = Static<typeof MigrationGetRequest>;

export const Placement = Type.Object({ hostId: Type.String(), backend: BackendField });
export type Placement = Static<typeof Placement>;

export const MIGRATION_STATES = ['running', 'completed', 'failed'] as const;
export type MigrationState = (typeof MIGRATION_STATES)[number];

export const MigrationStep = Type.Object({
  name: Type.String({ description: 'hold, reserve, stop-old, create-new, await-running, bind, remove-old, commit; rollback: remove-new, start-old, release' }),
  state: Type.Union([Type.Literal('running'), Type.Literal('done'), Type.Literal('failed'), Type.Literal('skipped')]),
  attempts: Type.Integer({ minimum: 0 }),
  startedAt: Type.String({ format: 'date-time' }),
  finishedAt: Type.Optional(Type.String({ format: 'date-time' })),
  error: Type.Optional(Type.String({ description: "the last attempt's error" })),
  note: Type.Optional(Type.String({ description: 'how the step ended when it is not obvious, e.g. "host silent past fenceAfter + margin"' })),
});
export type MigrationStep = Static<typeof MigrationStep>;

export const MigrationReason = Type.Object({
  code: Type.Unsafe<ErrorCode>({ type: 'string', enum: [...ERROR_CODES] }),
  message: Type.String(),
  details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});
export type MigrationReason = Static<typeof MigrationReason>;

export const MigrationView = Type.Object({
  id: Type.String(),
  instanceId: Type.String(),
  from: Type.Union([Placement, Type.Null()]),
  to: Type.Union([Placement, Type.Null()]),
  state: Type.Unsafe<MigrationState>({ type: 'string', enum: [...MIGRATION_STATES] }),
  steps: Type.Array(MigrationStep),
  error: Type.Optional(MigrationReason),
  step: Type.Optional(Type.String({ description: 'project addition: the step running now (queued: waiting for its turn in a drain)' })),
  drainId: Type.Optional(Type.String({ description: 'project addition: the drain it is part of' })),
  createdAt: Type.Optional(Type.String({ format: 'date-time', description: 'project addition' })),
  updatedAt: Type.Optional(Type.String({ format: 'date-time', description: 'project addition' })),
});
export type MigrationView = Static<typeof MigrationView>;

// ---- events -------------------------------------------------------------------------------

/** `data` of io.orangery.migration.started|completed|failed (subject: the migration id). */
export const MigrationEventData = Type.Object({
  migrationId: Type.String(),
  instanceId: Type.String(),
  from: Type.Union([Placement, Type.Null()]),
  to: Type.Union([Placement, Type.Null()]),
  reason: Type.Optional(MigrationReason),
  drainId: Type.Optional(Type.String()),
});
export type MigrationEventData = Static<typeof MigrationEventData>;

/** `data` of io.orangery.host.lost (subject: the host id). */
export const HostLostData = Type.Object({
  hostId: Type.String(),
  backend: Type.Optional(BackendField),
  lastHeartbeat: Type.String({ description: "the last heartbeat's time (the agent's clock)" }),
  lostAfterSeconds: Type.Integer(),
  /** v1.1: how long the host had been silent when it was declared lost */
  silentSeconds: Type.Optional(Type.Number()),
  /** v1.1: the instance IPs found off the wire (ARP probes from another agent on their VLAN) */
  offWire: Type.Optional(Type.Array(Type.String())),
  /** v1.1: the agent that probed them; absent when the host had no instance (or its agent confirmed them stopped) */
  probedBy: Type.Optional(Type.String()),
});
export type HostLostData = Static<typeof HostLostData>;

/** `data` of io.orangery.host.recovered (subject: the host id). */
export const HostRecoveredData = Type.Object({
  hostId: Type.String(),
  backend: Type.Optional(BackendField),
  lastHeartbeat: Type.String({ description: 'the heartbeat that ended the silence' }),
  silentSince: Type.String({ description: 'the last heartbeat before the silence' }),
});
export type HostRecoveredData = Static<typeof HostRecoveredData>;

/** `data` of io.orangery.host.drained (subject: the host id). */
export const HostDrainedData = Type.Object({
  hostId: Type.String(),
  drainId: Type.String(),
  migrationIds: Type.Array(Type.String()),
});
export type HostDrainedData = Static<typeof HostDrainedData>;

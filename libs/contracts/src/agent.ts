import { Type, type Static } from '@sinclair/typebox';
import { HOST_ID_PATTERN, INSTANCE_ID_PATTERN, MAX_SLOT, NAME_PATTERN } from './names';
import { ERROR_CODES, type ErrorCode } from './errors';
import { Backend, Ipv4, Name } from './ipam';

/**
 * Host agents' command payloads (orangery.agent.<hostId>.instance.*) and what agents
 * publish (heartbeats, host and instance events). Internal to the project but documented
 * in docs/asyncapi.yaml; the docker-agent and the vmware-agent speak the same commands so
 * the scheduler and the migrator treat both backends alike.
 */
const strict = { additionalProperties: false } as const;

export const MAC_PATTERN = '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$';

export const Resources = Type.Object(
  {
    cpu: Type.Number({ exclusiveMinimum: 0, maximum: 512, description: 'cores, fractions allowed' }),
    memoryMb: Type.Integer({ minimum: 16, maximum: 4_194_304 }),
    heapMb: Type.Optional(Type.Integer({ minimum: 0, maximum: 4_194_304 })),
    diskMb: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_073_741_824 })),
  },
  strict,
);
export type Resources = Static<typeof Resources>;

/** Minimum head room above a JVM heap: metaspace, threads, direct buffers, the JVM itself. */
export const MIN_HEADROOM_MB = 256;
export const HEADROOM_RATIO = 0.25;

/**
 * The memory an instance really takes (the container's limit): what was asked, but never
 * below heap + max(256 MiB, 25% of heap), so a JVM is not OOM-killed at its configured
 * heap size. The agents enforce it and the scheduler reserves it, so both use this one.
 */
export function memoryLimitMb(memoryMb: number, heapMb: number | undefined): number {
  if (!heapMb) return memoryMb;
  return Math.max(memoryMb, heapMb + Math.max(MIN_HEADROOM_MB, Math.ceil(heapMb * HEADROOM_RATIO)));
}

/**
 * An instance's process environment, alike for containers and swarm tasks: the caller's
 * variables first, then the platform's own (last, so a caller's cannot override them):
 * ORANGERY_INSTANCE_ID, _APP, _ENV, _SLOT, _IP (when the agent knows the address before the
 * start; a swarm task's is picked by swarm) and _HEAP_MB (for a JVM's -Xmx).
 */
export function instanceProcessEnv(
  cmd: { instanceId: string; app: string; env: string; slot: number; environment?: Record<string, string>; resources: { heapMb?: number } },
  ip?: string,
): string[] {
  return [
    ...Object.entries(cmd.environment ?? {}).map(([k, v]) => `${k}=${v}`),
    `ORANGERY_INSTANCE_ID=${cmd.instanceId}`,
    `ORANGERY_APP=${cmd.app}`,
    `ORANGERY_ENV=${cmd.env}`,
    `ORANGERY_SLOT=${cmd.slot}`,
    ...(ip !== undefined ? [`ORANGERY_IP=${ip}`] : []),
    ...(cmd.resources.heapMb ? [`ORANGERY_HEAP_MB=${cmd.resources.heapMb}`] : []),
  ];
}

export const InstanceNetwork = Type.Object(
  {
    ip: Ipv4,
    mac: Type.String({ pattern: MAC_PATTERN }),
    prefixLength: Type.Integer({ minimum: 8, maximum: 32 }),
    gateway: Ipv4,
    vlan: Type.Integer({ minimum: 0, maximum: 4094 }),
  },
  strict,
);
export type InstanceNetwork = Static<typeof InstanceNetwork>;

/** Docker's default capabilities that the docker-agent drops from every container (docs/docker-agent.md "Container hardening"). */
export const DROPPED_CAPABILITIES = ['NET_RAW', 'MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SYS_CHROOT'] as const;
export type DroppedCapability = (typeof DROPPED_CAPABILITIES)[number];
/** The most a container's `security.pidsLimit` may be: the kernel's PID_MAX_LIMIT. */
export const MAX_PIDS_LIMIT = 4_194_304;
/** The least: a JVM with a handful of threads. */
export const MIN_PIDS_LIMIT = 16;

/**
 * v1.1, containers: what an env's record relaxes of the docker-agent's secure defaults
 * (no-new-privileges, a PIDs limit of ORANGERY_PIDS_LIMIT, Docker's default capabilities
 * less DROPPED_CAPABILITIES). Absent: the defaults. The scheduler passes it from the env
 * record (issue 16); nothing but Docker's own defaults can be given back.
 */
export const ContainerSecurity = Type.Object(
  {
    /** true: without no-new-privileges (setuid binaries such as `su` or `sudo` work again) */
    allowPrivilegeEscalation: Type.Optional(Type.Boolean()),
    /** this container's PIDs limit instead of the agent's ORANGERY_PIDS_LIMIT */
    pidsLimit: Type.Optional(Type.Integer({ minimum: MIN_PIDS_LIMIT, maximum: MAX_PIDS_LIMIT })),
    /** capabilities the agent otherwise drops that this container keeps (only those: never more than Docker's defaults) */
    addCapabilities: Type.Optional(
      Type.Array(Type.Union(DROPPED_CAPABILITIES.map((c) => Type.Literal(c))), { maxItems: DROPPED_CAPABILITIES.length, uniqueItems: true }),
    ),
  },
  strict,
);
export type ContainerSecurity = Static<typeof ContainerSecurity>;

export const CreateInstanceCommand = Type.Object(
  {
    instanceId: Type.String({ pattern: INSTANCE_ID_PATTERN }),
    env: Type.String({ pattern: NAME_PATTERN }),
    app: Type.String({ pattern: NAME_PATTERN }),
    slot: Type.Integer({ minimum: 0, maximum: MAX_SLOT }),
    /** containers (docker-agent): required there */
    image: Type.Optional(Type.String({ minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9][A-Za-z0-9._/:@-]*$' })),
    /** VMs (vmware-agent): the template VM's name in vCenter; required there */
    template: Type.Optional(Type.String({ minLength: 1, maxLength: 80, pattern: '^[A-Za-z0-9][A-Za-z0-9._ -]*$' })),
    resources: Resources,
    network: InstanceNetwork,
    /** start after creating (default true); the ARP probe runs before any start */
    start: Type.Optional(Type.Boolean()),
    /** extra environment for the process, NAME=value */
    environment: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' }), Type.String({ maxLength: 4096 }))),
    command: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 64 })),
    /** v1.1, containers: relaxations of the docker-agent's secure defaults (from the env's record); absent: the defaults */
    security: Type.Optional(ContainerSecurity),
  },
  strict,
);
export type CreateInstanceCommand = Static<typeof CreateInstanceCommand>;
/**
 * v1.1 (issue 16): a create for a swarm node's host. Swarm picks a task's address inside the
 * node's ipam block, so the command names the pool instead of a network; the swarm-agent
 * binds the address the task got (`orangery.ipam.block.bind`) and answers it in the
 * instance's `ip`/`mac`, with `hostId` the node the task runs on.
 */
export const SwarmCreateInstanceCommand = Type.Object(
  {
    ...Type.Omit(CreateInstanceCommand, ['network', 'template']).properties,
    image: Type.String({ minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9][A-Za-z0-9._/:@-]*$' }),
    pool: Name,
    /** the env record's hostLabels: swarm may run the task only on nodes carrying every one (placement constraints) */
    hostLabels: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 63 }), Type.String({ maxLength: 63 }), { maxProperties: 64 })),
  },
  strict,
);
export type SwarmCreateInstanceCommand = Static<typeof SwarmCreateInstanceCommand>;
/** What a docker-agent accepts: a create with an image. */
export type ContainerCreateCommand = CreateInstanceCommand & { image: string };
/** What the vmware-agent accepts: a create with a template. */
export type VmCreateCommand = CreateInstanceCommand & { template: string };

export const InstanceRef = Type.Object({ instanceId: Type.String({ pattern: INSTANCE_ID_PATTERN }) }, strict);
export type InstanceRef = Static<typeof InstanceRef>;

export const StopInstanceCommand = Type.Object(
  {
    instanceId: Type.String({ pattern: INSTANCE_ID_PATTERN }),
    timeoutSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 600 })),
  },
  strict,
);
export type StopInstanceCommand = Static<typeof StopInstanceCommand>;

export const ListInstancesCommand = Type.Object({}, strict);

/** `orangery.agent.<hostId>.host.get` (issue 13): no fields; the reply's data is the host's HostFacts. */
export const HostGetCommand = Type.Object({}, strict);

/** At most this many addresses in one wire probe (they are probed in parallel, ~300 ms in all). */
export const MAX_PROBE_IPS = 256;

/**
 * `orangery.agent.<hostId>.wire.probe` (v1.1): the agent sends RFC 5227 ARP probes (sender
 * 0.0.0.0, so no neighbour learns anything) for each address on its interface of `vlan`
 * and says which ones answered. The scheduler asks a live agent on the VLAN before it takes
 * a silent host's instances for gone, and before a VM is started with an IP.
 */
export const ProbeWireCommand = Type.Object(
  {
    vlan: Type.Integer({ minimum: 0, maximum: 4094 }),
    ips: Type.Array(Type.String({ format: 'ipv4' }), { minItems: 1, maxItems: MAX_PROBE_IPS, uniqueItems: true }),
  },
  strict,
);
export type ProbeWireCommand = Static<typeof ProbeWireCommand>;

export const ProbeWireResult = Type.Object({
  hostId: Type.String({ pattern: HOST_ID_PATTERN }),
  vlan: Type.Integer(),
  /** the interface the probes went out of */
  iface: Type.String(),
  results: Type.Array(Type.Object({ ip: Type.String(), answered: Type.Boolean() })),
});
export type ProbeWireResult = Static<typeof ProbeWireResult>;

export const InstanceState = Type.Union([
  Type.Literal('created'),
  Type.Literal('running'),
  Type.Literal('stopped'),
  Type.Literal('failed'),
  Type.Literal('removed'),
]);
export type AgentInstanceState = Static<typeof InstanceState>;

export const AgentInstance = Type.Object({
  instanceId: Type.String(),
  env: Type.String(),
  app: Type.String(),
  slot: Type.Integer(),
  hostId: Type.String({ pattern: HOST_ID_PATTERN }),
  backend: Backend,
  containerId: Type.Optional(Type.String()),
  state: InstanceState,
  ip: Type.String(),
  mac: Type.String(),
  image: Type.Optional(Type.String({ description: 'containers' })),
  template: Type.Optional(Type.String({ description: 'VMs: the template it was cloned from' })),
  resources: Type.Optional(Resources),
  limits: Type.Optional(Type.Object({ memoryMb: Type.Integer(), cpuset: Type.String(), cpus: Type.Number(), memorySwappiness: Type.Integer() })),
  exitCode: Type.Optional(Type.Integer()),
  reason: Type.Optional(Type.String()),
});
export type AgentInstance = Static<typeof AgentInstance>;

const Amounts = Type.Object({ cpu: Type.Number(), memoryMb: Type.Integer(), diskMb: Type.Integer() });
export type Amounts = Static<typeof Amounts>;

export const HostFacts = Type.Object({
  hostId: Type.String({ pattern: HOST_ID_PATTERN }),
  backend: Backend,
  /** what instances may use: total less the host's reservations */
  capacity: Amounts,
  total: Amounts,
  reserved: Amounts,
  labels: Type.Record(Type.String(), Type.String()),
  /** VLANs this host can reach (docker: any, through <uplink>.<vlan>) */
  vlans: Type.Union([Type.Literal('any'), Type.Array(Type.Integer())]),
  /**
   * v1.1 (issue 16), swarm nodes: the swarm cluster (ORANGERY_SWARM_CLUSTER) the node belongs to.
   * Swarm moves a slot's task between the nodes of one cluster by itself, so the scheduler
   * follows a swarm instance to any host of the same cluster instead of taking it for a leftover.
   */
  cluster: Type.Optional(Type.String({ pattern: HOST_ID_PATTERN })),
});
export type HostFacts = Static<typeof HostFacts>;

/** Exactly the HostFacts fields of `f` (a heartbeat, a host.registered's data): what a host is, nothing more. */
export function hostFactsOf(f: HostFacts): HostFacts {
  return {
    hostId: f.hostId,
    backend: f.backend,
    capacity: f.capacity,
    total: f.total,
    reserved: f.reserved,
    labels: f.labels,
    vlans: f.vlans,
    ...(f.cluster !== undefined ? { cluster: f.cluster } : {}),
  };
}

export const Heartbeat = Type.Intersect([
  HostFacts,
  Type.Object({
    time: Type.String({ format: 'date-time' }),
    seq: Type.Integer(),
    allocated: Amounts,
    usage: Amounts,
    instances: Type.Integer(),
    /** the agent stopped its instances (self-fence: its instance network was isolated) */
    fenced: Type.Boolean(),
    /** v1.1, docker-agent: no isolation address answers ARP right now (fenced follows after ORANGERY_FENCE_AFTER_SECONDS) */
    isolated: Type.Optional(Type.Boolean()),
    /** v1.1, vmware-agent: vCenter's runtime.connectionState of the ESXi host */
    connectionState: Type.Optional(Type.Union([Type.Literal('connected'), Type.Literal('disconnected'), Type.Literal('notResponding')])),
    /** v1.1, vmware-agent: the ESXi host is in maintenance mode */
    maintenance: Type.Optional(Type.Boolean()),
    /** v1.1, vmware-agent: vSphere HA protects the host's cluster (HA restarts its VMs; Orangery clones no second copy) */
    haProtected: Type.Optional(Type.Boolean()),
  }),
]);
export type Heartbeat = Static<typeof Heartbeat>;

/** `data` of the list command's reply: every instance the agent manages on its host. */
export const AgentInstanceList = Type.Object({
  hostId: Type.String({ pattern: HOST_ID_PATTERN }),
  instances: Type.Array(AgentInstance),
});
export type AgentInstanceList = Static<typeof AgentInstanceList>;

// ---------------------------------------------------------------------------------------
// `data` of the events agents publish (orangery.evt.host.*, orangery.evt.instance.*).
// Like the reply envelopes they describe what is sent, and fields may be added to it, so
// none of them refuses unknown properties.

/** `io.orangery.host.registered`: at start, and again when the instance network answers after a self-fence. */
export const HostRegisteredData = Type.Composite(
  [
    HostFacts,
    Type.Object({
      engine: Type.Optional(Type.String({ description: 'the container engine and its API version; sent at start' })),
      uplink: Type.Optional(Type.String({ description: 'the interface macvlan networks hang off (ORANGERY_UPLINK); sent at start' })),
      reregistered: Type.Optional(Type.Literal(true, { description: 'present when the agent registers again after a self-fence' })),
      fencedAt: Type.Optional(Type.String({ format: 'date-time', description: 'when the self-fence happened (with reregistered)' })),
    }),
  ],
  {
    description: "The host's facts. After a self-fence the instances stay stopped: the control plane decides what runs where.",
  },
);
export type HostRegisteredData = Static<typeof HostRegisteredData>;

/** `io.orangery.host.fenced` (v1.0 only; v1.1 agents publish host.isolated): the agent lost NATS and stopped its instances. */
export const HostFencedData = Type.Object(
  {
    hostId: Type.String({ pattern: HOST_ID_PATTERN }),
    backend: Backend,
    at: Type.String({ format: 'date-time', description: 'when the agent fenced itself' }),
    stopped: Type.Array(Type.String(), { description: 'ids of the instances it stopped' }),
    stillRunning: Type.Optional(Type.Array(Type.String(), { description: 'ids of the instances whose stop failed three times' })),
  },
  { description: 'Published once NATS is reachable again: events wait in the agent (in memory) meanwhile.' },
);
export type HostFencedData = Static<typeof HostFencedData>;

/** `io.orangery.host.isolated` (v1.1): no isolation address answered for ORANGERY_FENCE_AFTER_SECONDS; the agent stopped its instances. */
export const HostIsolatedData = Type.Object(
  {
    hostId: Type.String({ pattern: HOST_ID_PATTERN }),
    backend: Backend,
    at: Type.String({ format: 'date-time', description: 'when the agent fenced itself' }),
    isolationAddresses: Type.Array(Type.String(), { description: 'the addresses it probed, none of which answered' }),
    stopped: Type.Array(Type.String(), { description: 'ids of the instances it stopped' }),
    stillRunning: Type.Optional(Type.Array(Type.String(), { description: 'ids of the instances whose stop failed three times' })),
  },
  { description: 'Published at once when NATS is reachable, else queued in the agent until it is.' },
);
export type HostIsolatedData = Static<typeof HostIsolatedData>;

/** `io.orangery.instance.orphaned` (v1.1): a copy found where no record places it, stopped and kept. */
export const InstanceOrphanedData = Type.Object(
  {
    instanceId: Type.String({ pattern: INSTANCE_ID_PATTERN }),
    host: Type.String({ pattern: HOST_ID_PATTERN }),
    backend: Backend,
    keptUntil: Type.String({ format: 'date-time', description: 'removed (a VM destroyed) after this, never before' }),
    state: Type.Optional(Type.String({ description: 'what the agent reported after the stop' })),
    reason: Type.Optional(Type.String()),
  },
  { description: 'The copy is never started again; the record places the instance elsewhere (or nowhere).' },
);
export type InstanceOrphanedData = Static<typeof InstanceOrphanedData>;

/** `io.orangery.host.unknown` (v1.1, scheduler): the agent is silent but its instances answer on the wire (or its backend owns restarts). */
export const HostUnknownData = Type.Object({
  hostId: Type.String({ pattern: HOST_ID_PATTERN }),
  backend: Backend,
  silentSeconds: Type.Number(),
  reason: Type.String({ description: 'why nothing of it is replaced' }),
  answering: Type.Optional(Type.Array(Type.String(), { description: 'instance IPs that answered ARP' })),
});
export type HostUnknownData = Static<typeof HostUnknownData>;

/** `io.orangery.fleet.failover_paused|failover_resumed` (v1.1, scheduler). */
export const FleetFailoverData = Type.Object({
  backend: Backend,
  hosts: Type.Integer({ description: "the backend's hosts" }),
  silent: Type.Integer({ description: 'how many of them are silent' }),
  silentHosts: Type.Array(Type.String(), { maxItems: 100 }),
});
export type FleetFailoverData = Static<typeof FleetFailoverData>;

/** `io.orangery.host.disconnected` (vmware-agent): vCenter lost the ESXi host. */
export const HostDisconnectedData = Type.Object(
  {
    hostId: Type.String({ pattern: HOST_ID_PATTERN }),
    backend: Backend,
    connectionState: Type.String({ description: "vCenter's runtime.connectionState: disconnected or notResponding" }),
    esxi: Type.Optional(Type.String({ description: "the host's name in vCenter" })),
  },
  {
    description:
      'v1.1: the host keeps heartbeating with its connectionState while the vmware-agent can read vCenter; host.registered with reregistered: true follows when it is connected again.',
  },
);
export type HostDisconnectedData = Static<typeof HostDisconnectedData>;

/** The fields every instance event of an agent starts with. */
const instanceEventBase = {
  instanceId: Type.String({ pattern: INSTANCE_ID_PATTERN }),
  hostId: Type.String({ pattern: HOST_ID_PATTERN }),
  backend: Backend,
};

/** `io.orangery.instance.running|stopped|failed|removed` as an agent publishes them. */
export const InstanceEventData = Type.Object(
  {
    ...instanceEventBase,
    containerId: Type.Optional(Type.String({ description: 'the engine id of the container (docker)' })),
    ip: Type.Optional(Type.String()),
    mac: Type.Optional(Type.String()),
    exitCode: Type.Optional(Type.Integer({ description: "the process's exit code (stopped, failed)" })),
    reason: Type.Optional(Type.String({ description: 'a human sentence: why it stopped or failed' })),
    code: Type.Optional(
      Type.Unsafe<ErrorCode>({
        type: 'string',
        enum: [...ERROR_CODES],
        description: 'the error code when a command was refused, e.g. IMAGE_NOT_FOUND or IP_IN_USE_ON_WIRE',
      }),
    ),
    adopted: Type.Optional(
      Type.Literal(true, {
        description: 'reported by a starting agent for what it found on the engine (then the data is the whole AgentInstance)',
      }),
    ),
  },
  { description: 'What the agent knows of the change; absent fields were not known when it happened.' },
);
export type InstanceEventData = Static<typeof InstanceEventData>;

/** `io.orangery.instance.disk_warning|disk_exceeded`: the writable layer against resources.diskMb. */
export const InstanceDiskData = Type.Object(
  {
    ...instanceEventBase,
    usedMb: Type.Integer({ minimum: 0, description: "size of the container's writable layer" }),
    quotaMb: Type.Integer({ minimum: 1, description: 'resources.diskMb of the instance' }),
    policy: Type.Union([Type.Literal('report'), Type.Literal('stop')], {
      description: 'ORANGERY_DISK_POLICY: stop means the agent stops an instance that exceeded its quota',
    }),
  },
  { description: 'warning above 80% of the quota, exceeded above 100%; published when the level changes' },
);
export type InstanceDiskData = Static<typeof InstanceDiskData>;

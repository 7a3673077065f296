/** Every NATS subject the project uses, public (CONTRACT.md) and internal (asyncapi.yaml). */
export const SUBJECTS = {
  ipam: {
    poolCreate: 'orangery.ipam.pool.create',
    poolGet: 'orangery.ipam.pool.get',
    poolList: 'orangery.ipam.pool.list',
    poolDelete: 'orangery.ipam.pool.delete',
    allocate: 'orangery.ipam.allocate',
    bind: 'orangery.ipam.bind',
    release: 'orangery.ipam.release',
    get: 'orangery.ipam.get',
    // Project additions to contract v1 (docs/ipam.md "Batch requests").
    allocateBatch: 'orangery.ipam.allocate.batch',
    bindBatch: 'orangery.ipam.bind.batch',
    // Project additions (issue 16, docs/ipam.md "Blocks"): swarm nodes' address blocks.
    blockReserve: 'orangery.ipam.block.reserve',
    blockRelease: 'orangery.ipam.block.release',
    blockList: 'orangery.ipam.block.list',
    blockBind: 'orangery.ipam.block.bind',
    blockUnbind: 'orangery.ipam.block.unbind',
  },
  scheduler: {
    hostsList: 'orangery.scheduler.hosts.list',
    instancesList: 'orangery.scheduler.instances.list',
    // CONTRACT.md v1.1 "Environments"
    envsPut: 'orangery.scheduler.envs.put',
    envsGet: 'orangery.scheduler.envs.get',
    envsList: 'orangery.scheduler.envs.list',
    envsDelete: 'orangery.scheduler.envs.delete',
  },
  /** The scheduler leader's slot API for the migrator (internal; docs/scheduler.md "Slot API"). */
  schedulerSlot: {
    get: 'orangery.scheduler.slot.get',
    hold: 'orangery.scheduler.slot.hold',
    reserve: 'orangery.scheduler.slot.reserve',
    commit: 'orangery.scheduler.slot.commit',
    release: 'orangery.scheduler.slot.release',
    hostDrain: 'orangery.scheduler.host.drain',
    /** issue 13: the leader sends the held slot's create (with its environment) to the reserved target */
    create: 'orangery.scheduler.slot.create',
  },
  migrator: {
    migrationsGet: 'orangery.migrator.migrations.get',
    migrate: 'orangery.migrator.migrate',
    drain: 'orangery.migrator.drain',
  },
  /** Commands to one host's agent (internal; docs/asyncapi.yaml). */
  agent: {
    create: (hostId: string) => `orangery.agent.${hostId}.instance.create`,
    start: (hostId: string) => `orangery.agent.${hostId}.instance.start`,
    stop: (hostId: string) => `orangery.agent.${hostId}.instance.stop`,
    remove: (hostId: string) => `orangery.agent.${hostId}.instance.remove`,
    get: (hostId: string) => `orangery.agent.${hostId}.instance.get`,
    list: (hostId: string) => `orangery.agent.${hostId}.instance.list`,
    /** v1.1: ARP probes for addresses on one VLAN (ProbeWireCommand) */
    probe: (hostId: string) => `orangery.agent.${hostId}.wire.probe`,
    /**
     * issue 13: the host's facts (HostFacts) from its own agent. Only that agent may
     * subscribe to `orangery.agent.<hostId>.>`, so its reply is bound to the host, unlike a
     * host.registered event (a public subject any agent may publish on).
     */
    hostGet: (hostId: string) => `orangery.agent.${hostId}.host.get`,
  },
  /** Every host's instance commands (the simulated fleet answers for all its hosts at once). */
  agentInstanceCommandsAll: 'orangery.agent.*.instance.*',
  scale: (env: string, app: string) => `orangery.scale.${env}.${app}`,
  scaleAll: 'orangery.scale.>',
  heartbeat: (hostId: string) => `orangery.hb.${hostId}`,
  heartbeatsAll: 'orangery.hb.*',
  event: (area: string, what: string) => `orangery.evt.${area}.${what}`,
  eventsAll: 'orangery.evt.>',
} as const;

/** Queue groups: replicas of one service share its requests. */
export const QUEUE_GROUPS = {
  ipam: 'orangery-ipam',
  scheduler: 'orangery-scheduler',
  migrator: 'orangery-migrator',
  agent: (hostId: string) => `orangery-agent-${hostId}`,
} as const;

/** The durable event stream (CONTRACT.md "Events"); every service may create it, all alike. */
export const EVENTS_STREAM = {
  name: 'ORANGERY_EVENTS',
  subjects: ['orangery.evt.>'],
  // Dashboards replay a week of history; the dedupe window covers outbox re-publishing.
  maxAgeSeconds: 7 * 24 * 3600,
  duplicateWindowSeconds: 120,
  /** default byte bound (ORANGERY_EVENTS_STREAM_MAX_MB): the oldest events go first when it is reached */
  maxBytes: 512 * 1024 * 1024,
  discard: 'old',
} as const;

/**
 * Scale requests (CONTRACT.md "Scale requests"): stored until acked by the scheduler and
 * kept a week for audit; publishers may set Nats-Msg-Id to dedupe their own retries.
 */
export const SCALE_STREAM = {
  name: 'ORANGERY_SCALE',
  subjects: ['orangery.scale.>'],
  maxAgeSeconds: 7 * 24 * 3600,
  duplicateWindowSeconds: 120,
  /**
   * default byte bound (ORANGERY_SCALE_STREAM_MAX_MB). At the bound a new request is refused
   * (the publisher's JetStream publish fails) rather than an older one dropped unseen.
   */
  maxBytes: 256 * 1024 * 1024,
  discard: 'new',
  /** the scheduler's durable consumer */
  consumer: 'orangery-scheduler',
} as const;

/** The reply inbox prefix of a host's agent: its NATS user subscribes to `<prefix>.>` only. */
export const agentInboxPrefix = (hostId: string): string => `_INBOX_${hostId}`;

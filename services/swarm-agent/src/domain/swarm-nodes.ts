import { OrangeryError, PortError, type Amounts, type Heartbeat, type HostFacts, type IpBlock } from '@orangery/contracts';
import { cidrOf } from '@orangery/netaddr';
import type { BlockIpam, DomainLog, EventSink, NodeEngine, NodeEngines, SwarmEngine, SwarmNode } from './ports';
import { configNetworkName, netReadyLabel, nodeHostId, parentInterface, swarmNetworkName } from './service-spec';

export interface SwarmNodesSettings {
  cluster: string;
  uplink: string;
  reservedCpus: number;
  reservedMemoryMb: number;
  /** addresses in each node's ipam block of a pool (ORANGERY_SWARM_BLOCK_SIZE) */
  blockSize: number;
  /** the disk each node declares (ORANGERY_SWARM_NODE_DISK_MB): swarm reports none */
  nodeDiskMb: number;
  /**
   * how long a departed node's blocks are held before they go back to ipam
   * (ORANGERY_LEFTOVER_RETENTION_HOURS, in ms): a node removed while partitioned keeps its
   * containers, and their addresses, on the wire until it reconnects
   */
  leftoverRetentionMs: number;
}

export interface SwarmNodesDeps {
  swarm: SwarmEngine;
  engines: NodeEngines;
  ipam: BlockIpam;
  events: EventSink;
  log: DomainLog;
  /** the manager engine's version, for host.registered */
  engineVersion: string;
  /** ms on any clock (only differences are used); Date.now when absent */
  now?: () => number;
}

interface KnownNode {
  node: SwarmNode;
  hostId: string;
}

const MIB = 1024 * 1024;

/**
 * The swarm's nodes as hosts, and each node's part of every pool's network:
 * - inventory: every node is a host `<cluster>-<hostname>` (host.registered when it first
 *   appears); a node gone from the swarm is forgotten and its blocks go back to ipam;
 * - heartbeats for the nodes swarm reports `ready`, none for the others (the scheduler
 *   then takes them for `unknown`: swarm, not Orangery, moves their tasks);
 * - networks (moby/moby#49921): per pool, each node gets its own ipam block, a config-only
 *   macvlan network with that block as --ip-range, and the label orangery.net.<pool>=1 that
 *   services are constrained to; the pool's swarm-scoped network is made from them. A node
 *   whose engine the agent cannot reach never gets the label, so never gets the pool's tasks.
 */
export class SwarmNodes {
  private readonly byId = new Map<string, KnownNode>();
  private readonly byHost = new Map<string, KnownNode>();
  /** pools this agent serves networks for (from the services it finds, and every create) */
  private readonly pools = new Set<string>();
  /** `${nodeId}/${pool}` prepared in this process (block, config network, label) */
  private readonly prepared = new Set<string>();
  /**
   * blocks of nodes that left, to return to ipam once gone for the retention (counted from
   * when this process first saw them gone: a restart restarts the clock), retried while
   * their addresses are bound
   */
  private readonly leftBlocks = new Map<string, { pool: string; hostId: string; goneSince: number }>();
  private readonly warnedNoEngine = new Set<string>();
  /** nodes whose engine answered with their own node id; nodes warned about a wrong or silent engine */
  private readonly verified = new Set<string>();
  private readonly warnedEngine = new Set<string>();
  private readonly seq = new Map<string, number>();
  private readonly ensuring = new Map<string, Promise<void>>();

  constructor(
    private readonly deps: SwarmNodesDeps,
    private readonly settings: SwarmNodesSettings,
  ) {}

  private now(): number {
    return this.deps.now ? this.deps.now() : Date.now();
  }

  get hostIds(): string[] {
    return [...this.byHost.keys()];
  }

  get knownPools(): string[] {
    return [...this.pools];
  }

  hostIdOf(nodeId: string | undefined): string | undefined {
    return nodeId === undefined ? undefined : this.byId.get(nodeId)?.hostId;
  }

  nodeOf(hostId: string): SwarmNode | undefined {
    return this.byHost.get(hostId)?.node;
  }

  /**
   * A fresh node list: new nodes registered, known ones updated, those gone forgotten (their
   * blocks queued for release). Returns the host ids added and removed, for the runtime.
   */
  inventory(list: readonly SwarmNode[]): { added: string[]; removed: string[] } {
    const added: string[] = [];
    const seen = new Set<string>();
    // by node id: two nodes whose names sanitise alike get distinct ids, always the same way round
    for (const node of [...list].sort((a, b) => (a.id < b.id ? -1 : 1))) {
      let hostId = this.byId.get(node.id)?.hostId ?? nodeHostId(this.settings.cluster, node.hostname);
      if (hostId === undefined) {
        this.deps.log.warn({ node: node.hostname }, 'swarm node name gives no usable host id; not served');
        continue;
      }
      const holder = this.byHost.get(hostId);
      if (holder && holder.node.id !== node.id) hostId = nodeHostId(this.settings.cluster, `${node.hostname}-${node.id.slice(0, 6)}`) ?? hostId;
      seen.add(node.id);
      // present again (a rejoin under the same hostname): its blocks are its own, never released
      for (const [key, left] of [...this.leftBlocks]) {
        if (left.hostId !== hostId) continue;
        this.leftBlocks.delete(key);
        this.deps.log.info({ hostId, pool: left.pool }, 'swarm node is back: its block is kept');
      }
      const before = this.byId.get(node.id);
      const known = { node, hostId };
      this.byId.set(node.id, known);
      this.byHost.set(hostId, known);
      if (!before) {
        added.push(hostId);
        this.deps.events.host(hostId, 'registered', {
          ...this.facts(known),
          engine: this.deps.engineVersion,
          uplink: this.settings.uplink,
          node: node.hostname,
        });
      } else if (before.node.state !== node.state) {
        this.deps.log.info({ hostId, from: before.node.state, to: node.state }, 'swarm node state changed');
      }
    }
    const removed: string[] = [];
    for (const [nodeId, known] of [...this.byId]) {
      if (seen.has(nodeId)) continue;
      this.byId.delete(nodeId);
      this.byHost.delete(known.hostId);
      removed.push(known.hostId);
      const goneSince = this.now();
      for (const pool of this.pools) {
        const key = `${known.hostId}/${pool}`;
        if (!this.leftBlocks.has(key)) this.leftBlocks.set(key, { pool, hostId: known.hostId, goneSince });
      }
      for (const key of [...this.prepared]) if (key.startsWith(`${nodeId}/`)) this.prepared.delete(key);
      this.deps.log.warn(
        { hostId: known.hostId, retentionHours: this.settings.leftoverRetentionMs / 3_600_000 },
        'swarm node left the swarm; its blocks are held for the retention (its containers may still run while it is partitioned), then go back to ipam once no task address in them is bound',
      );
    }
    return { added, removed };
  }

  /** A served node's facts (orangery.agent.<hostId>.host.get). */
  factsOf(hostId: string): HostFacts {
    const known = this.byHost.get(hostId);
    if (!known) throw new OrangeryError('NOT_FOUND', `this swarm-agent does not serve host ${hostId}`, { hostId });
    return this.facts(known);
  }

  /** One heartbeat per `ready` node; `allocated` from the orangery tasks running there. */
  heartbeats(allocatedByHost: ReadonlyMap<string, { amounts: Amounts; count: number }>, now: Date): Heartbeat[] {
    const out: Heartbeat[] = [];
    for (const known of this.byHost.values()) {
      if (known.node.state !== 'ready') continue;
      const seq = this.seq.get(known.hostId) ?? 0;
      this.seq.set(known.hostId, seq + 1);
      const a = allocatedByHost.get(known.hostId) ?? { amounts: { cpu: 0, memoryMb: 0, diskMb: 0 }, count: 0 };
      out.push({
        ...this.facts(known),
        time: now.toISOString(),
        seq,
        allocated: a.amounts,
        // swarm gives no live usage without every node's engine: what the tasks were given
        usage: a.amounts,
        instances: a.count,
        fenced: false,
      });
    }
    return out;
  }

  /**
   * The pool's network on every node that can have it, and its swarm-scoped network.
   * Throws (UNAVAILABLE, or ipam's refusal such as POOL_NOT_FOUND) when no node could be
   * made ready: a task would then have nowhere to run.
   */
  ensurePool(pool: string): Promise<void> {
    const inFlight = this.ensuring.get(pool);
    if (inFlight) return inFlight;
    const p = this.ensurePoolNow(pool).finally(() => this.ensuring.delete(pool));
    this.ensuring.set(pool, p);
    return p;
  }

  private async ensurePoolNow(pool: string): Promise<void> {
    this.pools.add(pool);
    let ready = 0;
    let lastError: unknown;
    for (const known of this.byId.values()) {
      try {
        if (await this.prepareNode(known, pool)) ready++;
      } catch (e) {
        lastError = e;
        // ipam's answer about the pool itself is the caller's answer
        if (e instanceof PortError && (e.code === 'POOL_NOT_FOUND' || e.code === 'INVALID_REQUEST')) throw e;
        this.deps.log.warn({ hostId: known.hostId, pool, err: String(e) }, 'swarm node not ready for the pool; it gets none of its tasks');
      }
    }
    if (ready === 0) {
      if (lastError instanceof PortError) throw lastError;
      throw new OrangeryError('UNAVAILABLE', `no node of swarm ${this.settings.cluster} has a network for pool ${pool} (see the swarm-agent's log)`, {
        pool,
        ...(lastError ? { cause: String(lastError) } : {}),
      });
    }
    await this.deps.swarm.ensureSwarmNetwork({
      name: swarmNetworkName(pool),
      configFrom: configNetworkName(pool),
      labels: { 'io.orangery.managed': 'true', 'io.orangery.pool': pool },
    });
  }

  /** Pools named by services found on the manager (after a restart): served like those created here. */
  adoptPools(pools: Iterable<string>): void {
    for (const p of pools) this.pools.add(p);
  }

  /**
   * The periodic pass: nodes that joined get every known pool's network, blocks of nodes
   * that left go back to ipam. Failures are logged and retried on the next pass.
   */
  async refreshNetworks(): Promise<void> {
    for (const pool of this.pools) {
      for (const known of this.byId.values()) {
        if (this.prepared.has(`${known.node.id}/${pool}`)) continue;
        try {
          await this.prepareNode(known, pool);
        } catch (e) {
          this.deps.log.warn({ hostId: known.hostId, pool, err: String(e) }, 'swarm node not ready for the pool yet; retrying');
        }
      }
    }
    for (const [key, left] of [...this.leftBlocks]) {
      // a host that is present keeps its block, whatever was queued
      if (this.byHost.has(left.hostId)) {
        this.leftBlocks.delete(key);
        continue;
      }
      if (this.now() - left.goneSince < this.settings.leftoverRetentionMs) continue;
      try {
        await this.deps.ipam.release(left.pool, left.hostId);
        this.leftBlocks.delete(key);
        this.deps.log.info({ pool: left.pool, hostId: left.hostId }, 'block of a node that left the swarm returned to ipam (retention passed)');
      } catch (e) {
        if (e instanceof PortError && e.code === 'NOT_FOUND') this.leftBlocks.delete(key);
        else this.deps.log.debug?.({ ...left, err: String(e) }, 'block of a departed node not released yet');
      }
    }
  }

  /**
   * Whether `engine` is this node's own (its swarm node id). A block's config network made on
   * another node's engine would give two nodes one range: the duplicates blocks exist to
   * prevent. A wrong ORANGERY_SWARM_NODE_ENGINES entry, a guessed template or an unreachable
   * engine gives the node no tasks (checked again on the next inventory round), never a range.
   */
  private async isThisNode(engine: NodeEngine, known: KnownNode): Promise<boolean> {
    const { node, hostId } = known;
    if (this.verified.has(node.id)) return true;
    let found: string;
    try {
      found = await engine.nodeId();
    } catch (e) {
      this.warnOnce(
        node.id,
        { hostId, node: node.hostname, err: String(e) },
        "this swarm node's engine does not answer: it gets no orangery tasks until it does",
      );
      return false;
    }
    if (found !== node.id) {
      this.warnOnce(
        node.id,
        { hostId, node: node.hostname, expected: node.id, found },
        "the engine ORANGERY_SWARM_NODE_ENGINES gives for this swarm node is another node's: no network is made there and the node gets no orangery tasks",
      );
      return false;
    }
    this.verified.add(node.id);
    this.warnedEngine.delete(node.id);
    return true;
  }

  private warnOnce(nodeId: string, fields: Record<string, unknown>, message: string): void {
    if (this.warnedEngine.has(nodeId)) return;
    this.warnedEngine.add(nodeId);
    this.deps.log.warn(fields, message);
  }

  /** true when the node is ready for the pool (block, config network, label); false when it cannot be (no engine, not ready). */
  private async prepareNode(known: KnownNode, pool: string): Promise<boolean> {
    const { node, hostId } = known;
    const key = `${node.id}/${pool}`;
    if (this.prepared.has(key)) return true;
    if (node.state !== 'ready') return false;
    const engine = this.deps.engines.forNode(node.hostname, node.id, node.addr);
    if (engine && !(await this.isThisNode(engine, known))) return false;
    if (!engine) {
      if (!this.warnedNoEngine.has(node.id)) {
        this.warnedNoEngine.add(node.id);
        this.deps.log.warn(
          { hostId, node: node.hostname },
          'no engine for this swarm node (ORANGERY_SWARM_NODE_ENGINES): its config-only networks cannot be made, so it gets no orangery tasks',
        );
      }
      return false;
    }
    // Order matters: the block first (ipam makes it this node's alone), then the network
    // whose range it is, then the label that lets tasks come: a task never lands on a node
    // whose range ipam has not given it.
    const block: IpBlock = await this.deps.ipam.reserve(pool, hostId, this.settings.blockSize);
    const result = await engine.ensureConfigNetwork({
      name: configNetworkName(pool),
      parent: parentInterface(this.settings.uplink, block.vlan),
      subnet: cidrOf(block.first, block.prefixLength),
      gateway: block.gateway,
      ipRange: block.cidr,
      labels: { 'io.orangery.managed': 'true', 'io.orangery.pool': pool, 'io.orangery.block': block.cidr },
    });
    if (result !== 'exists') this.deps.log.info({ hostId, pool, block: block.cidr, result }, 'config-only network for the pool on the node');
    if (node.labels[netReadyLabel(pool)] !== '1') {
      await this.deps.swarm.setNodeLabel(node.id, netReadyLabel(pool), '1');
      node.labels[netReadyLabel(pool)] = '1';
    }
    this.prepared.add(key);
    return true;
  }

  private facts(known: KnownNode): HostFacts {
    const { node } = known;
    const total = { cpu: Math.round((node.nanoCpus / 1e9) * 100) / 100, memoryMb: Math.floor(node.memoryBytes / MIB), diskMb: this.settings.nodeDiskMb };
    const reserved = {
      cpu: Math.min(this.settings.reservedCpus, Math.max(0, total.cpu - 1)),
      memoryMb: Math.min(this.settings.reservedMemoryMb, total.memoryMb),
      diskMb: 0,
    };
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(node.labels)) if (!k.startsWith('orangery.net.')) labels[k] = v;
    labels['cluster'] = this.settings.cluster;
    labels['node'] = node.hostname;
    labels['role'] = node.role;
    return {
      hostId: known.hostId,
      backend: 'swarm',
      capacity: { cpu: total.cpu - reserved.cpu, memoryMb: total.memoryMb - reserved.memoryMb, diskMb: total.diskMb },
      total,
      reserved,
      labels,
      vlans: 'any',
      cluster: this.settings.cluster,
    };
  }
}

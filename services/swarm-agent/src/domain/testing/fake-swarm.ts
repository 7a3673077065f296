import { OrangeryError, PortError, type Allocation, type BlockBindRequest, type IpBlock, type Owner } from '@orangery/contracts';
import { cidrOf, intToIpv4, ipv4ToInt, macForIpv4, parseCidr } from '@orangery/netaddr';
import type { BlockIpam, ConfigNetworkSpec, NodeEngine, NodeEngines, SwarmEngine, SwarmNetworkSpec, SwarmNode, SwarmService, SwarmTask } from '../ports';
import type { ServicePlan } from '../service-spec';

interface FakeService extends SwarmService {
  plan: ServicePlan;
}

interface FakeContainer {
  nodeId: string;
  network: string;
  ip: string;
  mac: string;
}

/**
 * A swarm in memory, close to what the manager does: replicated services of one task,
 * placed on a `ready`, `active` node satisfying the service's label constraints, a failed
 * task replaced by a new one, a drained node's tasks moved. Addresses come from each node's
 * config-only network range (Docker's per-node IPAM: the lowest free address in the range),
 * so two nodes with overlapping ranges would hand out one address twice, as moby#49921 does.
 */
export class FakeSwarm implements NodeEngines {
  readonly nodes: SwarmNode[] = [];
  readonly services = new Map<string, FakeService>();
  readonly taskList: SwarmTask[] = [];
  readonly swarmNetworks = new Map<string, SwarmNetworkSpec>();
  /** nodeId -> network name -> spec */
  readonly configNetworks = new Map<string, Map<string, ConfigNetworkSpec>>();
  readonly containers = new Map<string, FakeContainer>();
  readonly missingImages = new Set<string>();
  /** hostnames whose engine the agent has (others: no ORANGERY_SWARM_NODE_ENGINES entry) */
  readonly reachable = new Set<string>();
  /** hostname -> the node id its engine answers instead of its own (a misconfigured ORANGERY_SWARM_NODE_ENGINES) */
  readonly wrongEngine = new Map<string, string>();
  /** false: tasks stay pending until `settle()` */
  autoSettle = true;
  private n = 0;
  private clock = 0;

  addNode(
    hostname: string,
    opts: { cpus?: number; memoryMb?: number; labels?: Record<string, string>; engine?: boolean; role?: 'manager' | 'worker' } = {},
  ): SwarmNode {
    const node: SwarmNode = {
      id: `node${++this.n}${hostname}`,
      hostname,
      role: opts.role ?? (this.nodes.length === 0 ? 'manager' : 'worker'),
      state: 'ready',
      availability: 'active',
      nanoCpus: (opts.cpus ?? 4) * 1e9,
      memoryBytes: (opts.memoryMb ?? 8192) * 1024 * 1024,
      labels: { ...(opts.labels ?? {}) },
      version: 1,
    };
    this.nodes.push(node);
    if (opts.engine !== false) this.reachable.add(hostname);
    return node;
  }

  // ---- SwarmEngine

  async about() {
    return { version: 'fake 20.10 (API 1.41)', nodeId: this.nodes[0]?.id ?? '', isManager: true };
  }

  async nodesList(): Promise<SwarmNode[]> {
    return this.nodes.map((x) => ({ ...x, labels: { ...x.labels } }));
  }

  async setNodeLabel(nodeId: string, key: string, value: string | undefined): Promise<void> {
    const node = this.nodes.find((x) => x.id === nodeId);
    if (!node) throw new Error(`no node ${nodeId}`);
    if (value === undefined) delete node.labels[key];
    else node.labels[key] = value;
    node.version++;
  }

  async services_(): Promise<SwarmService[]> {
    return [...this.services.values()].map(({ plan: _plan, ...s }) => ({ ...s }));
  }

  async findService(instanceId: string): Promise<SwarmService | undefined> {
    const s = [...this.services.values()].find((x) => x.labels['io.orangery.instance-id'] === instanceId);
    if (!s) return undefined;
    const { plan: _plan, ...rest } = s;
    return { ...rest };
  }

  async createService(plan: ServicePlan): Promise<string> {
    if ([...this.services.values()].some((s) => s.name === plan.name)) throw new Error(`service ${plan.name} exists`);
    if (!this.swarmNetworks.has(plan.network)) throw new Error(`network ${plan.network} not found`);
    const id = `svc${++this.n}`;
    this.services.set(id, { id, name: plan.name, labels: { ...plan.labels }, replicas: plan.replicas, version: 1, plan });
    this.settleIfAuto();
    return id;
  }

  async scaleService(serviceId: string, replicas: number): Promise<void> {
    const s = this.services.get(serviceId);
    if (!s) throw new OrangeryError('NOT_FOUND', `no service ${serviceId}`);
    s.replicas = replicas;
    s.version++;
    if (replicas === 0) for (const t of this.live(serviceId)) this.shutdown(t);
    this.settleIfAuto();
  }

  async removeService(serviceId: string): Promise<void> {
    if (!this.services.delete(serviceId)) throw new OrangeryError('NOT_FOUND', `no service ${serviceId}`);
    for (const t of this.taskList.filter((x) => x.serviceId === serviceId)) {
      this.shutdown(t);
      this.taskList.splice(this.taskList.indexOf(t), 1);
    }
  }

  async tasks_(serviceId?: string): Promise<SwarmTask[]> {
    this.settleIfAuto();
    return this.taskList.filter((t) => serviceId === undefined || t.serviceId === serviceId).map((t) => ({ ...t, addresses: { ...t.addresses } }));
  }

  async ensureSwarmNetwork(spec: SwarmNetworkSpec): Promise<void> {
    if (this.swarmNetworks.has(spec.name)) return;
    const manager = this.nodes.find((x) => x.role === 'manager');
    if (!manager || !this.configNetworks.get(manager.id)?.has(spec.configFrom)) {
      throw new Error(`config network ${spec.configFrom} not found on the manager`);
    }
    this.swarmNetworks.set(spec.name, spec);
  }

  // ---- NodeEngines

  forNode(hostname: string, nodeId: string): NodeEngine | undefined {
    if (!this.reachable.has(hostname)) return undefined;
    return {
      nodeId: async () => this.wrongEngine.get(hostname) ?? nodeId,
      ensureConfigNetwork: async (spec) => {
        const nets = this.configNetworks.get(nodeId) ?? new Map<string, ConfigNetworkSpec>();
        this.configNetworks.set(nodeId, nets);
        const before = nets.get(spec.name);
        nets.set(spec.name, spec);
        if (!before) return 'created';
        return before.ipRange === spec.ipRange && before.parent === spec.parent ? 'exists' : 'replaced';
      },
      containerAddress: async (containerId, network) => {
        const c = this.containers.get(containerId);
        return c && c.nodeId === nodeId && c.network === network ? { ip: c.ip, mac: c.mac } : undefined;
      },
    };
  }

  // ---- what swarm does by itself

  /** Places and starts every task that should run, replaces failed ones. */
  settle(): void {
    for (const s of this.services.values()) {
      if (s.replicas === 0 || this.live(s.id).length > 0) continue;
      const node = this.placeFor(s);
      const t: SwarmTask = {
        id: `task${++this.n}`,
        serviceId: s.id,
        nodeId: node?.id,
        desiredState: 'running',
        state: node ? 'pending' : 'pending',
        err: node ? undefined : 'no suitable node (scheduling constraints not satisfied on any node)',
        containerId: undefined,
        updatedAt: this.tick(),
        addresses: {},
      };
      this.taskList.push(t);
      if (!node) continue;
      if (this.missingImages.has(s.plan.image)) {
        Object.assign(t, { state: 'rejected', desiredState: 'shutdown', err: `No such image: ${s.plan.image}`, updatedAt: this.tick() });
        continue;
      }
      const range = this.configNetworks.get(node.id)?.get(s.plan.network.replace('orangery-sw-', 'orangery-swcfg-'));
      const ip = range ? this.freeAddress(node.id, range.ipRange) : undefined;
      if (!ip) {
        Object.assign(t, { state: 'failed', desiredState: 'shutdown', err: 'no address left in the range', updatedAt: this.tick() });
        continue;
      }
      const containerId = `ctr${++this.n}`;
      this.containers.set(containerId, {
        nodeId: node.id,
        network: s.plan.network,
        ip,
        mac: `02:42:${ip
          .split('.')
          .map((b) => Number(b).toString(16).padStart(2, '0'))
          .join(':')}`,
      });
      Object.assign(t, { state: 'running', containerId, updatedAt: this.tick(), addresses: { [s.plan.network]: [`${ip}/24`] } });
    }
  }

  /** The slot's running task dies (exit 1): swarm replaces it. */
  kill(instanceId: string, err = 'task: non-zero exit (1)'): void {
    const s = [...this.services.values()].find((x) => x.labels['io.orangery.instance-id'] === instanceId);
    const t = s && this.live(s.id)[0];
    if (!t) throw new Error(`no running task of ${instanceId}`);
    this.shutdown(t);
    Object.assign(t, { state: 'failed', err, updatedAt: this.tick() });
    this.settleIfAuto();
  }

  drain(hostname: string): void {
    const node = this.nodes.find((x) => x.hostname === hostname)!;
    node.availability = 'drain';
    for (const t of this.taskList.filter((x) => x.nodeId === node.id && x.desiredState === 'running')) this.shutdown(t);
    this.settleIfAuto();
  }

  setState(hostname: string, state: string): void {
    this.nodes.find((x) => x.hostname === hostname)!.state = state;
  }

  leave(hostname: string): void {
    const node = this.nodes.find((x) => x.hostname === hostname)!;
    for (const t of this.taskList.filter((x) => x.nodeId === node.id && x.desiredState === 'running')) this.shutdown(t);
    this.nodes.splice(this.nodes.indexOf(node), 1);
    this.settleIfAuto();
  }

  runningAddresses(): { instanceId: string; ip: string; nodeId: string }[] {
    const out: { instanceId: string; ip: string; nodeId: string }[] = [];
    for (const t of this.taskList) {
      if (t.state !== 'running' || !t.containerId) continue;
      const c = this.containers.get(t.containerId)!;
      out.push({ instanceId: this.services.get(t.serviceId)!.labels['io.orangery.instance-id']!, ip: c.ip, nodeId: c.nodeId });
    }
    return out;
  }

  private live(serviceId: string): SwarmTask[] {
    return this.taskList.filter((t) => t.serviceId === serviceId && t.desiredState === 'running');
  }

  private shutdown(t: SwarmTask): void {
    t.desiredState = 'shutdown';
    if (t.state === 'running') t.state = 'shutdown';
    t.updatedAt = this.tick();
    if (t.containerId) this.containers.delete(t.containerId);
  }

  private placeFor(s: FakeService): SwarmNode | undefined {
    const ok = this.nodes.filter(
      (x) =>
        x.state === 'ready' &&
        x.availability === 'active' &&
        s.plan.constraints.every((c) => {
          const m = /^node\.labels\.(.+)==(.+)$/.exec(c);
          return !m || x.labels[m[1]!] === m[2];
        }),
    );
    const load = (x: SwarmNode) => this.taskList.filter((t) => t.nodeId === x.id && t.desiredState === 'running').length;
    return ok.sort((a, b) => load(a) - load(b))[0];
  }

  private freeAddress(nodeId: string, ipRange: string): string | undefined {
    const used = new Set([...this.containers.values()].filter((c) => c.nodeId === nodeId).map((c) => c.ip));
    const r = parseCidr(ipRange);
    for (let n = r.first; n <= r.last; n++) if (!used.has(intToIpv4(n))) return intToIpv4(n);
    return undefined;
  }

  private settleIfAuto(): void {
    if (this.autoSettle) this.settle();
  }

  private tick(): string {
    return new Date(Date.UTC(2026, 0, 1) + ++this.clock * 1000).toISOString();
  }
}

/** SwarmEngine view of a FakeSwarm (its own method names avoid clashing with its fields). */
export function swarmEngineOf(f: FakeSwarm): SwarmEngine {
  return {
    about: () => f.about(),
    nodes: () => f.nodesList(),
    setNodeLabel: (id, k, v) => f.setNodeLabel(id, k, v),
    services: () => f.services_(),
    findService: (id) => f.findService(id),
    createService: (p) => f.createService(p),
    scaleService: (id, r) => f.scaleService(id, r),
    removeService: (id) => f.removeService(id),
    tasks: (id) => f.tasks_(id),
    ensureSwarmNetwork: (s) => f.ensureSwarmNetwork(s),
  };
}

interface FakeAllocation {
  ip: string;
  pool: string;
  owner: Owner;
  state: 'bound' | 'released';
  instanceId: string;
  host: string;
}

/**
 * ipam's block calls in memory, with the rules of docs/asyncapi.yaml: blocks never overlap,
 * one per (pool, host), idempotent; bind only inside the host's block, IP_TAKEN for another
 * owner's bound address, the owner's previous in-block address released by its next bind.
 */
export class FakeBlockIpam implements BlockIpam {
  readonly blocks: IpBlock[] = [];
  readonly allocations = new Map<string, FakeAllocation>();
  available = true;
  calls = 0;
  /** awaited at the start of `held`: lets a test interleave something with the call in flight */
  beforeHeld: (() => Promise<void>) | undefined;

  constructor(private readonly pools: Record<string, { cidr: string; gateway: string; vlan?: number }>) {}

  async reserve(pool: string, host: string, size: number): Promise<IpBlock> {
    this.gate();
    const p = this.pools[pool];
    if (!p) throw new PortError('POOL_NOT_FOUND', `no pool ${pool}`, false);
    const had = this.blocks.find((b) => b.pool === pool && b.host === host);
    if (had) return had;
    const c = parseCidr(p.cidr);
    const prefix = 32 - Math.log2(size);
    for (let first = c.first; first + size - 1 <= c.last; first += size) {
      const last = first + size - 1;
      const gw = ipv4ToInt(p.gateway);
      if (first <= c.first || (gw >= first && gw <= last) || last >= c.last) continue;
      if (this.blocks.some((b) => b.pool === pool && ipv4ToInt(b.first) <= last && ipv4ToInt(b.last) >= first)) continue;
      const block: IpBlock = {
        pool,
        host,
        cidr: cidrOf(intToIpv4(first), prefix),
        first: intToIpv4(first),
        last: intToIpv4(last),
        size,
        prefixLength: c.prefixLength,
        gateway: p.gateway,
        vlan: p.vlan ?? 0,
        bound: 0,
        createdAt: new Date(0).toISOString(),
      };
      this.blocks.push(block);
      return block;
    }
    throw new PortError('POOL_EXHAUSTED', `no free block of ${size} in ${pool}`, false);
  }

  async release(pool: string, host: string): Promise<void> {
    this.gate();
    const i = this.blocks.findIndex((b) => b.pool === pool && b.host === host);
    if (i < 0) throw new PortError('NOT_FOUND', 'no block', false);
    const b = this.blocks[i]!;
    const bound = [...this.allocations.values()].filter((a) => a.state === 'bound' && this.inBlock(b, a.ip)).length;
    if (bound > 0) throw new PortError('POOL_IN_USE', `${bound} bound`, false, { bound });
    this.blocks.splice(i, 1);
  }

  async bind(req: BlockBindRequest): Promise<Allocation> {
    this.gate();
    const b = this.blocks.find((x) => x.pool === req.pool && x.host === req.host);
    if (!b || !this.inBlock(b, req.ip)) throw new PortError('NOT_IN_BLOCK', `${req.ip} is not in ${req.host}'s block`, false);
    const cur = this.allocations.get(req.ip);
    const same = (o: Owner) => o.env === req.owner.env && o.app === req.owner.app && o.slot === req.owner.slot;
    if (cur && cur.state === 'bound' && !same(cur.owner)) throw new PortError('IP_TAKEN', `${req.ip} is bound to another owner`, false);
    for (const a of this.allocations.values()) if (a.state === 'bound' && same(a.owner) && a.ip !== req.ip) a.state = 'released';
    this.allocations.set(req.ip, { ip: req.ip, pool: req.pool, owner: req.owner, state: 'bound', instanceId: req.instanceId, host: req.host });
    return this.allocationOf(this.allocations.get(req.ip)!);
  }

  /** every unbind asked, with the instance it named */
  readonly unbinds: { ip: string; instanceId: string | undefined }[] = [];

  async unbind(ip: string, instanceId?: string): Promise<void> {
    this.gate();
    this.unbinds.push({ ip, instanceId });
    const a = this.allocations.get(ip);
    if (a && (instanceId === undefined || a.instanceId === instanceId)) a.state = 'released';
  }

  async held(owner: Owner): Promise<Allocation | undefined> {
    this.gate();
    const hook = this.beforeHeld;
    this.beforeHeld = undefined;
    if (hook) await hook();
    const a = [...this.allocations.values()].find(
      (x) => x.state === 'bound' && x.owner.env === owner.env && x.owner.app === owner.app && x.owner.slot === owner.slot,
    );
    return a && this.allocationOf(a);
  }

  boundIps(): Map<string, string> {
    return new Map([...this.allocations.values()].filter((a) => a.state === 'bound').map((a) => [a.ip, a.instanceId]));
  }

  private inBlock(b: IpBlock, ip: string): boolean {
    const n = ipv4ToInt(ip);
    return n >= ipv4ToInt(b.first) && n <= ipv4ToInt(b.last);
  }

  private allocationOf(a: FakeAllocation): Allocation {
    return {
      ip: a.ip,
      pool: a.pool,
      prefixLength: 24,
      gateway: this.pools[a.pool]!.gateway,
      vlan: this.pools[a.pool]!.vlan ?? 0,
      mac: macForIpv4(a.ip),
      owner: a.owner,
      state: a.state,
      instanceId: a.instanceId,
      backend: 'swarm',
      host: a.host,
    } as Allocation;
  }

  private gate(): void {
    this.calls++;
    if (!this.available) throw new PortError('UNAVAILABLE', 'no service answers orangery.ipam.block.*', true);
  }
}

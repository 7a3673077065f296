import { hostFactsOf, type Amounts, type Backend, type Heartbeat, type HostFacts } from '@orangery/contracts';
import { Inventory, toMillicores, type AppRef, type HostState, type HostView } from './placement';

/** A host as the leader knows it: the agent's facts and live figures, and what we placed there. */
export interface HostEntry {
  readonly id: string;
  backend: Backend;
  facts: HostFacts;
  /** draining is set by operators (migrator); lost is derived from lastSeen */
  drain: boolean;
  lastSeen: number;
  usage: Amounts;
  agentAllocated: Amounts;
  fenced: boolean;
  /** the agent says no isolation address answers right now (docker-agent, v1.1) */
  isolated: boolean;
  /** vmware: since when (monotonic) vCenter has reported the ESXi host not connected */
  downSince: number | undefined;
  /** vmware: vSphere HA restarts this host's VMs; Orangery never clones a second copy */
  haProtected: boolean;
  /** wall-clock time of the last heartbeat (for hosts.list and events; decisions use lastSeen) */
  lastBeatWall: number;
  /** the failover judge's verdict while the host is silent; cleared by its next heartbeat */
  judged: 'unknown' | 'lost' | undefined;
  /** known only from the journal (no heartbeat since this leader started): never placed on */
  placeholder: boolean;
  /** what the scheduler's slots take there, and which apps they belong to */
  readonly placed: Map<string, { ref: AppRef; demand: Amounts }>;
  /** the sum of `placed` demands, kept with it */
  readonly own: Amounts;
}

const zero = (): Amounts => ({ cpu: 0, memoryMb: 0, diskMb: 0 });

/** How often at most live usage alone rebuilds the placement inventory. */
const USAGE_REBUILD_MS = 1_000;

/**
 * The fleet for placement: hosts from agents' heartbeats (docker-agents and the
 * vmware-agent alike: the backend is a field, so a new backend plugs in without touching
 * the core) plus the scheduler's own reservations. Keeps one placement Inventory current:
 * reservations are applied to it at once (so two decisions in a row never overcommit a
 * host), and it is rebuilt when hosts come, go or change, and at most once a second for
 * usage figures.
 */
export class HostBook {
  private readonly hosts = new Map<string, HostEntry>();
  /** drained host ids, also for hosts not heard from yet (a new leader loads them first) */
  private readonly drained = new Set<string>();
  private cached: Inventory | undefined;
  private structuralChange = true;
  private usageChange = false;
  private builtAt = 0;

  constructor(
    private readonly lostAfterMs: number,
    /** monotonic: every duration is measured on it */
    private readonly now: () => number,
    private readonly wallNow: () => number = Date.now,
  ) {}

  get size(): number {
    return this.hosts.size;
  }

  get(id: string): HostEntry | undefined {
    return this.hosts.get(id);
  }

  all(): IterableIterator<HostEntry> {
    return this.hosts.values();
  }

  /**
   * A fenced host (its agent stopped its instances on isolation) is lost: they move once the
   * agent confirms each stopped. A silent one is unknown until the failover judge finds its
   * instances off the wire (then lost). A host named only by the journal is unknown until
   * its first heartbeat: never placed on, never failed over before its silence is judged.
   */
  stateOf(h: HostEntry): HostState {
    if (h.fenced) return 'lost';
    if (this.isSilent(h)) return h.judged === 'lost' ? 'lost' : 'unknown';
    if (h.placeholder) return 'unknown';
    return h.drain ? 'draining' : 'ready';
  }

  /** Nothing can be asked of the host now (silent, judged or not, or fenced). */
  isDown(id: string): boolean {
    const h = this.hosts.get(id);
    if (!h) return true;
    const s = this.stateOf(h);
    return s === 'lost' || s === 'unknown';
  }

  /** Silent past lostAfter: no heartbeat (or, vmware, vCenter says the host is not connected). */
  isSilent(h: HostEntry): boolean {
    return this.silentForEntry(h) > this.lostAfterMs;
  }

  /** How long a host has been silent (ms): since its last heartbeat, or since it was first named. */
  silentFor(id: string): number {
    const h = this.hosts.get(id);
    return h ? this.silentForEntry(h) : Number.POSITIVE_INFINITY;
  }

  private silentForEntry(h: HostEntry): number {
    const now = this.now();
    return Math.max(0, now - h.lastSeen, h.downSince !== undefined ? now - h.downSince : 0);
  }

  /** A heartbeat (or registration facts): returns true when the host is new or came back. */
  heartbeat(hb: Heartbeat | (HostFacts & { time?: string })): boolean {
    const known = this.hosts.get(hb.hostId);
    const wasLost = known ? this.isDown(known.id) : true;
    const notConnected = 'connectionState' in hb && hb.connectionState !== undefined && hb.connectionState !== 'connected';
    // exactly the facts (a swarm node's cluster too), none of a heartbeat's live figures
    const facts: HostFacts = hostFactsOf(hb);
    if (!known) {
      this.hosts.set(hb.hostId, {
        id: hb.hostId,
        backend: hb.backend,
        facts,
        drain: this.drained.has(hb.hostId),
        lastSeen: this.now(),
        usage: 'usage' in hb ? hb.usage : zero(),
        agentAllocated: 'allocated' in hb ? hb.allocated : zero(),
        fenced: 'fenced' in hb ? hb.fenced : false,
        isolated: 'isolated' in hb ? hb.isolated === true : false,
        downSince: notConnected ? this.now() : undefined,
        haProtected: 'haProtected' in hb ? hb.haProtected === true : false,
        lastBeatWall: this.wallNow(),
        judged: undefined,
        placeholder: false,
        placed: new Map(),
        own: zero(),
      });
      this.structuralChange = true;
      return true;
    }
    if (JSON.stringify(known.facts) !== JSON.stringify(facts)) this.structuralChange = true;
    if (known.placeholder) this.structuralChange = true;
    known.placeholder = false;
    known.facts = facts;
    known.backend = hb.backend;
    known.lastSeen = this.now();
    known.lastBeatWall = this.wallNow();
    if (notConnected) known.downSince ??= this.now();
    else if ('connectionState' in hb) known.downSince = undefined;
    if (!this.isSilent(known)) known.judged = undefined;
    if ('haProtected' in hb) known.haProtected = hb.haProtected === true;
    if ('isolated' in hb) known.isolated = hb.isolated === true;
    if ('usage' in hb) {
      known.usage = hb.usage;
      known.agentAllocated = hb.allocated;
      if (known.fenced !== hb.fenced) this.structuralChange = true;
      known.fenced = hb.fenced;
      this.usageChange = true;
    }
    if (wasLost) this.structuralChange = true;
    return wasLost;
  }

  /** Notes state changes (silences, judgements) so the next inventory reflects them. */
  sweep(lastStates: Map<string, HostState>): void {
    for (const h of this.hosts.values()) {
      const s = this.stateOf(h);
      if (lastStates.get(h.id) !== s) {
        this.structuralChange = true;
        lastStates.set(h.id, s);
      }
    }
  }

  /**
   * Swarm (issue 16): whether two hosts are nodes of the same swarm cluster (or the same
   * host). Swarm moves a slot's task between the nodes of its cluster by itself, so the
   * records follow it there; a host not heard from yet (no facts) is in no cluster.
   */
  sameCluster(a: string, b: string): boolean {
    if (a === b) return true;
    const x = this.hosts.get(a);
    const y = this.hosts.get(b);
    if (!x || !y || x.placeholder || y.placeholder || x.backend !== 'swarm' || y.backend !== 'swarm') return false;
    return x.facts.cluster !== undefined && x.facts.cluster === y.facts.cluster;
  }

  /** A swarm node heard from, whose cluster is therefore known. */
  clusterKnown(id: string): boolean {
    const h = this.hosts.get(id);
    return h !== undefined && !h.placeholder && h.backend === 'swarm' && h.facts.cluster !== undefined;
  }

  /**
   * A node of `hostId`'s swarm cluster that can be asked now: `hostId` itself when it is
   * up, else another live node of its cluster (one swarm-agent answers for every node, and
   * a slot's service is cluster-wide). undefined: none.
   */
  swarmContact(hostId: string): string | undefined {
    if (!this.isDown(hostId)) return hostId;
    for (const h of this.hosts.values()) if (h.id !== hostId && !this.isDown(h.id) && this.sameCluster(hostId, h.id)) return h.id;
    return undefined;
  }

  /** The failover judge's verdict on a silent host. */
  judge(id: string, verdict: 'unknown' | 'lost'): void {
    const h = this.hosts.get(id);
    if (!h || h.judged === verdict) return;
    h.judged = verdict;
    this.structuralChange = true;
  }

  setDrain(id: string, drain: boolean): void {
    if (drain) this.drained.add(id);
    else this.drained.delete(id);
    const h = this.hosts.get(id);
    if (h && h.drain !== drain) {
      h.drain = drain;
      this.structuralChange = true;
    }
  }

  /** Records a slot on a host (a host not heard of yet gets a placeholder of `backend`: it shows as unknown). */
  reserve(hostId: string, slotId: string, ref: AppRef, demand: Amounts, backend?: Backend): void {
    const h = this.hosts.get(hostId) ?? this.placeholder(hostId, backend);
    if (h.placed.has(slotId)) return;
    h.placed.set(slotId, { ref, demand });
    this.applyToCache(h, ref, demand, +1);
  }

  unreserve(hostId: string, slotId: string): void {
    const h = this.hosts.get(hostId);
    const p = h?.placed.get(slotId);
    if (!h || !p) return;
    h.placed.delete(slotId);
    this.applyToCache(h, p.ref, p.demand, -1);
  }

  /** Changes the host's own total and the cached inventory alike (foreign load is constant between heartbeats). */
  private applyToCache(h: HostEntry, ref: AppRef, demand: Amounts, sign: 1 | -1): void {
    h.own.cpu += sign * demand.cpu;
    h.own.memoryMb += sign * demand.memoryMb;
    h.own.diskMb += sign * demand.diskMb;
    const inv = this.cached;
    const i = inv?.indexOf(h.id);
    if (!inv || i === undefined || this.structuralChange) {
      this.structuralChange = true;
      return;
    }
    inv.take(i, { cpuMilli: toMillicores(demand.cpu), memoryMb: demand.memoryMb, diskMb: demand.diskMb }, sign);
    inv.count(`${ref.env}:${ref.app}`, i, sign);
  }

  /**
   * Load on the host beyond what its agent's instances were given (processes outside
   * Orangery, containers started by hand): live usage less the agent's allocations, both
   * from the same heartbeat, so a figure that lags an instance's removal cannot inflate it.
   */
  foreign(h: HostEntry): Amounts {
    return {
      cpu: Math.max(0, h.usage.cpu - h.agentAllocated.cpu),
      memoryMb: Math.max(0, h.usage.memoryMb - h.agentAllocated.memoryMb),
      diskMb: Math.max(0, h.usage.diskMb - h.agentAllocated.diskMb),
    };
  }

  /** What the scheduler's slots take on a host. */
  allocated(h: HostEntry): Amounts {
    return { ...h.own };
  }

  /** The placement engine's view, kept current (see the class comment). */
  inventory(): Inventory {
    const stale = this.structuralChange || (this.usageChange && this.now() - this.builtAt >= USAGE_REBUILD_MS);
    if (this.cached && !stale) return this.cached;
    const views: HostView[] = [];
    for (const h of this.hosts.values()) views.push(this.viewOf(h));
    this.cached = Inventory.of(views);
    this.structuralChange = false;
    this.usageChange = false;
    this.builtAt = this.now();
    return this.cached;
  }

  private viewOf(h: HostEntry): HostView {
    // What the scheduler placed, plus load it did not place, so "idle" means idle.
    const own = this.allocated(h);
    const foreign = this.foreign(h);
    const allocated: Amounts = { cpu: own.cpu + foreign.cpu, memoryMb: own.memoryMb + foreign.memoryMb, diskMb: own.diskMb + foreign.diskMb };
    return {
      id: h.id,
      backend: h.backend,
      state: this.stateOf(h),
      capacity: h.facts.capacity,
      allocated,
      labels: h.facts.labels,
      vlans: h.facts.vlans,
      instances: [...h.placed.values()].map((p) => p.ref),
    };
  }

  /** `backend`: the one the records name (a swarm node's placeholder is never judged like a docker host's) */
  private placeholder(id: string, backend: Backend = 'docker'): HostEntry {
    const h: HostEntry = {
      id,
      backend,
      facts: { hostId: id, backend, capacity: zero(), total: zero(), reserved: zero(), labels: {}, vlans: [] },
      drain: this.drained.has(id),
      // Silent since now, not since ever: a host the journal names but whose heartbeat has
      // not arrived yet (this leader just started) gets a whole fence period to show up
      // before its instances are taken for lost.
      lastSeen: this.now(),
      usage: zero(),
      agentAllocated: zero(),
      fenced: false,
      isolated: false,
      downSince: undefined,
      haProtected: false,
      lastBeatWall: this.wallNow(),
      judged: undefined,
      placeholder: true,
      placed: new Map(),
      own: zero(),
    };
    this.hosts.set(id, h);
    this.structuralChange = true;
    return h;
  }
}

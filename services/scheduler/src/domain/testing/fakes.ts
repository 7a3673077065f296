import {
  instanceIdOf,
  type AgentInstance,
  type Backend,
  type CreateInstanceCommand,
  type ErrorCode,
  type NewEvent,
  type Owner,
  type SwarmCreateInstanceCommand,
} from '@orangery/contracts';
import { appKeyOf, type AppRecord, type SlotRecord } from '../model';
import {
  NotLeaderError,
  PortError,
  type AgentPort,
  type AllocationInfo,
  type Changes,
  type Clock,
  type CoreLog,
  type IpamPort,
  type PoolInfo,
  type SchedulerStore,
} from '../ports';

/**
 * In-memory stand-ins for the scheduler core's ports: they behave like the real services
 * (sticky ipam owners, idempotent agent commands, an atomic journal) and let a test break
 * them on purpose. Every call is logged so a test can assert what the core did outside.
 */

// ---- faults ---------------------------------------------------------------------------------

/** A fault for calls that match: an error to throw, for every match or the next `times`. */
interface Fault<C> {
  readonly match: (call: C) => boolean;
  readonly error: () => Error;
  remaining: number;
}

class Faults<C> {
  private readonly faults: Fault<C>[] = [];

  add(match: (call: C) => boolean, error: () => Error, times = Number.POSITIVE_INFINITY): void {
    this.faults.push({ match, error, remaining: times });
  }

  /** The error this call must fail with, if any (consumes one use of the fault). */
  take(call: C): Error | undefined {
    const f = this.faults.find((x) => x.remaining > 0 && x.match(call));
    if (!f) return undefined;
    f.remaining--;
    return f.error();
  }

  clear(): void {
    this.faults.length = 0;
  }
}

export const transientError = (code: ErrorCode = 'UNAVAILABLE', message = 'temporarily unavailable'): PortError => new PortError(code, message, true);
export const permanentError = (code: ErrorCode = 'START_FAILED', message = 'it does not work'): PortError => new PortError(code, message, false);
/** what the agent client throws when an agent does not answer in time (NoReplyError, kind timeout) */
export const timeoutError = (): PortError => new PortError('UNAVAILABLE', 'the agent did not answer in time', true, { kind: 'timeout' });

// ---- journal ----------------------------------------------------------------------------------

export type RequestRow = NonNullable<Changes['requests']>[number];

/**
 * The journal in memory. Commits are atomic (a failing commit changes nothing) and
 * recorded; `depose` makes every later commit throw NotLeaderError like a store whose
 * epoch was overtaken.
 */
export class InMemorySchedulerStore implements SchedulerStore {
  readonly apps = new Map<string, AppRecord>();
  readonly slots = new Map<string, SlotRecord>();
  readonly requests = new Map<string, RequestRow>();
  /** published events, in commit order (the outbox) */
  readonly events: NewEvent<unknown>[] = [];
  /** every successful commit, as given */
  readonly commits: Changes[] = [];
  /** attempted commits, successful or not */
  attempts = 0;
  private readonly faults = new Faults<Changes>();
  private deposed = false;

  /** The next `times` commits fail with `error` (a database that is away, by default). */
  failCommits(times = 1, error: () => Error = () => new Error('database connection lost')): void {
    this.faults.add(() => true, error, times);
  }

  /** Another replica took over: every commit from now on throws NotLeaderError. */
  depose(): void {
    this.deposed = true;
  }

  async load(): Promise<{ apps: AppRecord[]; slots: SlotRecord[] }> {
    await Promise.resolve();
    return { apps: [...this.apps.values()].map(clone), slots: [...this.slots.values()].map(clone) };
  }

  async commit(changes: Changes): Promise<void> {
    await Promise.resolve();
    this.attempts++;
    if (this.deposed) throw new NotLeaderError();
    const fault = this.faults.take(changes);
    if (fault) throw fault;
    const c = clone(changes);
    for (const a of c.apps ?? []) this.apps.set(appKeyOf(a), a);
    for (const s of c.slots ?? []) this.slots.set(s.id, s);
    for (const id of c.deleteSlots ?? []) this.slots.delete(id);
    for (const r of c.requests ?? []) this.requests.set(r.requestId, r);
    this.events.push(...(c.events ?? []));
    this.commits.push(c);
  }

  async requestSeen(requestId: string): Promise<boolean> {
    await Promise.resolve();
    return this.requests.has(requestId);
  }

  /** Events of `io.orangery.<area>.<what>`, e.g. eventsOf('scale', 'completed'). */
  eventsOf<T = Record<string, unknown>>(area: string, what: string): (NewEvent<unknown> & { data: T })[] {
    return this.events.filter((e) => e.area === area && e.what === what) as (NewEvent<unknown> & { data: T })[];
  }
}

// ---- ipam -------------------------------------------------------------------------------------

export interface FakeAllocation extends AllocationInfo {
  readonly pool: string;
  readonly owner: Owner;
  state: 'allocated' | 'bound' | 'released';
  instanceId?: string;
  backend?: Backend;
  host?: string;
}

export type IpamOp = 'pool' | 'allocate' | 'bind' | 'release';
export interface IpamCall {
  readonly op: IpamOp;
  /** pool name (pool, allocate), ip (bind) or owner id (allocate, release) */
  readonly pool?: string;
  readonly owner?: string;
  readonly ip?: string;
  readonly host?: string;
}

/**
 * IPAM with the contract's owner rules: an owner holds one address, gets the same one on
 * every allocate, and gets it back after a release (no cooldown competition here: nobody
 * else is handed a released address).
 */
export class FakeIpam implements IpamPort {
  readonly calls: IpamCall[] = [];
  /** by ip */
  readonly allocations = new Map<string, FakeAllocation>();
  private readonly pools = new Map<string, { vlan: number; prefix: string; next: number }>();
  private readonly faults = new Faults<IpamCall>();

  /** A /24 pool `<prefix>.0/24` whose first address handed out is .10. */
  addPool(name: string, vlan = 100, prefix = '10.0.0'): this {
    this.pools.set(name, { vlan, prefix, next: 10 });
    return this;
  }

  /** Calls matching fail with `error` (all of them, or the next `times`). */
  fail(match: Partial<IpamCall> | ((c: IpamCall) => boolean), error: () => Error, times?: number): void {
    this.faults.add(typeof match === 'function' ? match : matches(match), error, times);
  }

  clearFaults(): void {
    this.faults.clear();
  }

  async pool(name: string): Promise<PoolInfo | undefined> {
    this.check({ op: 'pool', pool: name });
    await Promise.resolve();
    const p = this.pools.get(name);
    return p ? { name, vlan: p.vlan } : undefined;
  }

  async allocate(pool: string, owner: Owner): Promise<AllocationInfo> {
    this.check({ op: 'allocate', pool, owner: instanceIdOf(owner) });
    await Promise.resolve();
    const p = this.pools.get(pool);
    if (!p) throw new PortError('POOL_NOT_FOUND', `pool '${pool}' does not exist`, false);
    const held = this.ofOwner(owner);
    if (held && held.state !== 'released') {
      if (held.pool !== pool) throw new PortError('OWNER_HAS_IP', `owner holds ${held.ip} in ${held.pool}`, false, { pool: held.pool, ip: held.ip });
      return info(held);
    }
    if (held && held.pool === pool) {
      held.state = 'allocated';
      delete held.instanceId;
      return info(held);
    }
    if (p.next > 254) throw new PortError('POOL_EXHAUSTED', `pool '${pool}' is full`, false);
    const ip = `${p.prefix}.${p.next++}`;
    const a: FakeAllocation = { ip, mac: macOf(ip), prefixLength: 24, gateway: `${p.prefix}.1`, vlan: p.vlan, pool, owner: { ...owner }, state: 'allocated' };
    this.allocations.set(ip, a);
    return info(a);
  }

  async bind(ip: string, instanceId: string, backend: Backend, host: string): Promise<void> {
    this.check({ op: 'bind', ip, owner: instanceId, host });
    await Promise.resolve();
    const a = this.allocations.get(ip);
    if (!a || a.state === 'released') throw new PortError('NOT_FOUND', `${ip} is not allocated`, false);
    Object.assign(a, { state: 'bound', instanceId, backend, host });
  }

  async release(owner: Owner): Promise<void> {
    this.check({ op: 'release', owner: instanceIdOf(owner) });
    await Promise.resolve();
    const a = this.ofOwner(owner);
    if (a) a.state = 'released';
  }

  /** The address an owner holds or last held. */
  ofOwner(owner: Owner | string): FakeAllocation | undefined {
    const id = typeof owner === 'string' ? owner : instanceIdOf(owner);
    for (const a of this.allocations.values()) if (instanceIdOf(a.owner) === id) return a;
    return undefined;
  }

  /** Addresses allocated or bound. */
  live(): FakeAllocation[] {
    return [...this.allocations.values()].filter((a) => a.state !== 'released');
  }

  private check(call: IpamCall): void {
    this.calls.push(call);
    const e = this.faults.take(call);
    if (e) throw e;
  }
}

const info = (a: FakeAllocation): AllocationInfo => ({ ip: a.ip, mac: a.mac, prefixLength: a.prefixLength, gateway: a.gateway, vlan: a.vlan });

/** Locally administered, unicast, derived from the IP like the real ipam. */
export const macOf = (ip: string): string => ['02', '00', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');

// ---- agents -------------------------------------------------------------------------------------

export type AgentOp = 'create' | 'start' | 'stop' | 'remove' | 'get' | 'list' | 'probe' | 'hostGet';
export interface AgentCall {
  readonly op: AgentOp;
  readonly hostId: string;
  readonly instanceId?: string;
}

/**
 * Host agents: the instances of each host, commands that behave like the docker-agent's
 * (create is idempotent per instance id and starts the instance; remove of a missing
 * instance succeeds), and injectable failures. A fault may `complete` the command anyway
 * (a create whose reply timed out but whose container exists).
 */
export class FakeAgents implements AgentPort {
  readonly calls: AgentCall[] = [];
  private readonly hosts = new Map<string, Map<string, AgentInstance>>();
  private readonly faults = new Faults<AgentCall>();
  private readonly completing = new Faults<AgentCall>();
  private readonly outcomes: { match: (c: AgentCall) => boolean; state: AgentInstance['state']; reason: string }[] = [];
  /** backend of the instances created on a host (docker unless said) */
  readonly backends = new Map<string, Backend>();
  /** what each host's own agent answers on host.get; a host without an entry has no agent (no responders) */
  readonly facts = new Map<string, unknown>();
  /** every create command as the agent received it, by `<hostId>/<instanceId>` (the last one) */
  readonly created = new Map<string, CreateInstanceCommand | SwarmCreateInstanceCommand>();
  /**
   * Swarm clusters: host id -> cluster. A swarm create (a pool, no network) lands on the node
   * `swarmNode` says (default the host asked) with the next address of `10.7.0.x`; get and
   * remove on any node of the cluster find the slot's task wherever it runs, like the
   * swarm-agent; list answers the tasks on that node.
   */
  readonly swarmCluster = new Map<string, string>();
  swarmNode: (hostId: string, instanceId: string) => string = (hostId) => hostId;
  private swarmNextIp = 10;
  private gate: Promise<void> | undefined;
  private openGate: (() => void) | undefined;

  /** Creates wait (after being logged) until `resume`: keeps a request in flight. */
  pause(): void {
    if (!this.gate) this.gate = new Promise((r) => (this.openGate = r));
  }

  resume(): void {
    this.openGate?.();
    this.gate = undefined;
  }

  /** Calls matching fail with `error` (all, or the next `times`); `completed`: the command takes effect anyway. */
  fail(match: Partial<AgentCall> | ((c: AgentCall) => boolean), error: () => Error, opts: { times?: number; completed?: boolean } = {}): void {
    const m = typeof match === 'function' ? match : matches(match);
    (opts.completed ? this.completing : this.faults).add(m, error, opts.times);
  }

  /** Matching creates answer with an instance in `state` (e.g. failed: the image is missing). */
  createAs(match: Partial<AgentCall>, state: AgentInstance['state'], reason: string): void {
    this.outcomes.push({ match: matches(match), state, reason });
  }

  clearFaults(): void {
    this.faults.clear();
    this.completing.clear();
    this.outcomes.length = 0;
  }

  async create(hostId: string, command: CreateInstanceCommand | SwarmCreateInstanceCommand): Promise<AgentInstance> {
    const call: AgentCall = { op: 'create', hostId, instanceId: command.instanceId };
    this.check(call);
    this.created.set(`${hostId}/${command.instanceId}`, structuredClone(command));
    await (this.gate ?? Promise.resolve());
    if (!('network' in command)) return this.createSwarm(hostId, command, call);
    const on = this.on(hostId);
    let inst = on.get(command.instanceId);
    if (!inst) {
      const outcome = this.outcomes.find((o) => o.match(call));
      inst = {
        instanceId: command.instanceId,
        env: command.env,
        app: command.app,
        slot: command.slot,
        hostId,
        backend: this.backends.get(hostId) ?? 'docker',
        state: outcome?.state ?? 'running',
        ip: command.network.ip,
        mac: command.network.mac,
        ...(command.image !== undefined ? { image: command.image } : {}),
        ...(command.template !== undefined ? { template: command.template } : {}),
        resources: command.resources,
        ...(outcome ? { reason: outcome.reason } : {}),
      };
      on.set(command.instanceId, inst);
    } else if (inst.state !== 'running' && !this.outcomes.some((o) => o.match(call))) {
      // like the docker-agent: a kept copy with the same spec is started again (after its wire probe)
      inst.state = 'running';
    }
    this.afterEffect(call);
    return { ...inst };
  }

  private createSwarm(hostId: string, command: SwarmCreateInstanceCommand, call: AgentCall): AgentInstance {
    if (!this.swarmCluster.has(hostId)) throw new PortError('INVALID_REQUEST', `${hostId} is not a swarm node`, false);
    const found = this.swarmTask(hostId, command.instanceId);
    if (found) return { ...found };
    const node = this.swarmNode(hostId, command.instanceId);
    const ip = `10.7.0.${this.swarmNextIp++}`;
    const outcome = this.outcomes.find((o) => o.match(call));
    const inst: AgentInstance = {
      instanceId: command.instanceId,
      env: command.env,
      app: command.app,
      slot: command.slot,
      hostId: node,
      backend: 'swarm',
      state: outcome?.state ?? 'running',
      ip,
      mac: macOf(ip),
      image: command.image,
      resources: command.resources,
      ...(outcome ? { reason: outcome.reason } : {}),
    };
    this.on(node).set(command.instanceId, inst);
    this.afterEffect(call);
    return { ...inst };
  }

  /** The slot's task on any node of `hostId`'s swarm cluster. */
  private swarmTask(hostId: string, instanceId: string): AgentInstance | undefined {
    const cluster = this.swarmCluster.get(hostId);
    if (cluster === undefined) return undefined;
    for (const [h, on] of this.hosts) if (this.swarmCluster.get(h) === cluster && on.has(instanceId)) return on.get(instanceId);
    return undefined;
  }

  /** Swarm moved the slot's task to `toNode` with a new address (its old task is gone). */
  moveSwarmTask(instanceId: string, toNode: string, ip: string): AgentInstance {
    for (const on of this.hosts.values()) on.delete(instanceId);
    const [env = '', app = '', slot = '0'] = instanceId.split(':');
    const inst: AgentInstance = {
      instanceId,
      env,
      app,
      slot: Number(slot),
      hostId: toNode,
      backend: 'swarm',
      state: 'running',
      ip,
      mac: macOf(ip),
      image: 'web:1.0',
    };
    this.on(toNode).set(instanceId, inst);
    return { ...inst };
  }

  async start(hostId: string, instanceId: string): Promise<AgentInstance> {
    const call: AgentCall = { op: 'start', hostId, instanceId };
    this.check(call);
    await Promise.resolve();
    const inst = this.hosts.get(hostId)?.get(instanceId);
    if (!inst) throw new PortError('NOT_FOUND', `no instance ${instanceId} on ${hostId}`, false);
    inst.state = 'running';
    return { ...inst };
  }

  /** Hosts cut off the wire (dead, or their uplink cut): their instances answer no ARP probe. */
  readonly offWire = new Set<string>();

  async stop(hostId: string, instanceId: string): Promise<AgentInstance | undefined> {
    const call: AgentCall = { op: 'stop', hostId, instanceId };
    this.check(call);
    await Promise.resolve();
    const inst = this.hosts.get(hostId)?.get(instanceId);
    if (!inst) return undefined;
    if (inst.state === 'running') inst.state = 'stopped';
    return { ...inst };
  }

  /** Like the docker-agent: an address answers while a running instance holds it on a host that is on the wire. */
  async probe(hostId: string, _vlan: number, ips: readonly string[]): Promise<Map<string, boolean>> {
    this.check({ op: 'probe', hostId });
    await Promise.resolve();
    const live = new Set<string>();
    for (const [h, on] of this.hosts) {
      if (this.offWire.has(h)) continue;
      for (const inst of on.values()) if (inst.state === 'running') live.add(inst.ip);
    }
    return new Map(ips.map((ip) => [ip, live.has(ip)]));
  }

  async remove(hostId: string, instanceId: string): Promise<void> {
    const call: AgentCall = { op: 'remove', hostId, instanceId };
    this.check(call);
    await Promise.resolve();
    const task = this.swarmTask(hostId, instanceId);
    if (task) this.hosts.get(task.hostId)?.delete(instanceId);
    this.hosts.get(hostId)?.delete(instanceId);
  }

  async get(hostId: string, instanceId: string): Promise<AgentInstance | undefined> {
    this.check({ op: 'get', hostId, instanceId });
    await Promise.resolve();
    const inst = this.swarmTask(hostId, instanceId) ?? this.hosts.get(hostId)?.get(instanceId);
    return inst ? { ...inst } : undefined;
  }

  async hostFacts(hostId: string): Promise<unknown> {
    this.check({ op: 'hostGet', hostId });
    await Promise.resolve();
    if (!this.facts.has(hostId)) throw new PortError('UNAVAILABLE', `no responders on orangery.agent.${hostId}.host.get`, true);
    return structuredClone(this.facts.get(hostId));
  }

  async list(hostId: string): Promise<AgentInstance[]> {
    this.check({ op: 'list', hostId });
    await Promise.resolve();
    return this.instancesOn(hostId);
  }

  // ---- for tests: the hosts' side --------------------------------------------------------------

  instancesOn(hostId: string): AgentInstance[] {
    return [...(this.hosts.get(hostId)?.values() ?? [])].map((i) => ({ ...i }));
  }

  /** Where an instance exists, on every host (more than one is a duplicate). */
  whereIs(instanceId: string): string[] {
    return [...this.hosts.entries()].filter(([, m]) => m.has(instanceId)).map(([h]) => h);
  }

  /** Something happened on the host by itself: the instance crashed, stopped, vanished. */
  setState(hostId: string, instanceId: string, state: AgentInstance['state'], reason?: string): void {
    const inst = this.hosts.get(hostId)?.get(instanceId);
    if (!inst) throw new Error(`no instance ${instanceId} on ${hostId}`);
    inst.state = state;
    if (reason !== undefined) inst.reason = reason;
  }

  /** An instance the records do not know (left by a crash, or started by hand). */
  plant(hostId: string, inst: Pick<AgentInstance, 'instanceId' | 'env' | 'app' | 'slot'> & Partial<AgentInstance>): void {
    this.on(hostId).set(inst.instanceId, { hostId, backend: 'docker', state: 'running', ip: '10.9.9.9', mac: macOf('10.9.9.9'), image: 'x:1', ...inst });
  }

  vanish(hostId: string, instanceId: string): void {
    this.hosts.get(hostId)?.delete(instanceId);
  }

  callsOf(op: AgentOp, hostId?: string): AgentCall[] {
    return this.calls.filter((c) => c.op === op && (hostId === undefined || c.hostId === hostId));
  }

  private on(hostId: string): Map<string, AgentInstance> {
    let m = this.hosts.get(hostId);
    if (!m) this.hosts.set(hostId, (m = new Map()));
    return m;
  }

  private check(call: AgentCall): void {
    this.calls.push(call);
    const e = this.faults.take(call);
    if (e) throw e;
  }

  private afterEffect(call: AgentCall): void {
    const e = this.completing.take(call);
    if (e) throw e;
  }
}

// ---- clock and log ----------------------------------------------------------------------------

/** A clock that moves only when told. */
export class ManualClock implements Clock {
  constructor(private t = 1_700_000_000_000) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

/** Keeps what the core logs, so a test can look at warnings when it fails. */
export class MemoryLog implements CoreLog {
  readonly lines: { level: 'info' | 'warn' | 'debug'; msg: string; fields: Record<string, unknown> }[] = [];
  info(fields: Record<string, unknown>, msg: string): void {
    this.lines.push({ level: 'info', msg, fields });
  }
  warn(fields: Record<string, unknown>, msg: string): void {
    this.lines.push({ level: 'warn', msg, fields });
  }
  debug(fields: Record<string, unknown>, msg: string): void {
    this.lines.push({ level: 'debug', msg, fields });
  }
}

// ---- helpers ----------------------------------------------------------------------------------

function matches<C extends object>(want: Partial<C>): (c: C) => boolean {
  return (c) => Object.entries(want).every(([k, v]) => (c as Record<string, unknown>)[k] === v);
}

const clone = <T>(v: T): T => structuredClone(v);

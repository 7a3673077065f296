import { randomBytes } from 'node:crypto';
import { connect } from '@nats-io/transport-node';
import { headers as newHeaders, type Msg, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import {
  instanceSpecHash,
  buildEvent,
  CreateInstanceCommand,
  decode,
  errorReply,
  HOST_ID_PATTERN,
  InstanceRef,
  isOrangeryError,
  ListInstancesCommand,
  memoryLimitMb,
  okReply,
  OrangeryError,
  parseJsonObject,
  ProbeWireCommand,
  HostGetCommand,
  hostFactsOf,
  StopInstanceCommand,
  SUBJECTS,
  SwarmCreateInstanceCommand,
  type AgentInstance,
  type Amounts,
  type ErrorCode,
  type EventEnvelope,
  type Heartbeat,
  type HostFacts,
  type Reply,
} from '@orangery/contracts';
import { ensureEventsStream, natsEndpoints } from '@orangery/messaging';
import { pino } from 'pino';

export type SimulatedCommand = 'create' | 'start' | 'stop' | 'remove' | 'get' | 'list';
export type SimulatedMutation = 'create' | 'start' | 'stop' | 'remove';

export interface InjectedFailure {
  code: ErrorCode;
  message: string;
  /** merged into the error's `details` (which always names the instanceId) */
  details?: Record<string, unknown>;
}

export interface SimulatedFleetOptions {
  /** one NATS connection for the whole fleet */
  natsUrl: string;
  /** how many hosts, e.g. 1000 */
  hosts: number;
  /** host ids are `${idPrefix}${n}`, n from 1, zero-padded to at least 4 digits: `sim-0001` */
  idPrefix?: string;
  /**
   * default docker. `swarm`: the hosts are the nodes of ONE swarm cluster (`cluster`), as a
   * swarm-agent reports them: creates are SwarmCreateInstanceCommands (a pool, no network),
   * the fleet picks the task's node (`swarmNode`) and an address from that node's range
   * (`swarmAddress`; a simulated agent calls no ipam), get/remove/stop/start find a slot's
   * task on any node of the cluster, list answers a node's own tasks, and `moveTask`
   * moves a task to another node as swarm would (new address, events from both nodes).
   */
  backend?: 'docker' | 'vmware' | 'swarm';
  /** swarm: the cluster's name, in every node's facts (default `swarm`) */
  cluster?: string;
  /** swarm: the node a create sent to `hostId` runs its task on (default that node) */
  swarmNode?: (hostId: string, instanceId: string) => string;
  /** swarm: the n-th address (n from 0) of node `index`'s range; default 198.19.<100 + index>.<10 + n> */
  swarmAddress?: (index: number, n: number) => string;
  /** per host, after reservations; default 32 cores, 128 GiB, 1 TiB */
  capacity?: Amounts;
  /** labels of the host at `index` (0-based position in hostIds), e.g. racks */
  labels?: (index: number) => Record<string, string>;
  /** default 2; each host heartbeats once per interval, the hosts spread over it */
  heartbeatSeconds?: number;
  /** delay before a command is answered (and applied); default 0: at once */
  replyDelayMs?: number | ((hostId: string, command: SimulatedCommand) => number);
  /**
   * Injected failures, consulted after the command validated and before it has any effect;
   * the command is refused with this error and changes nothing. IMAGE_NOT_FOUND and
   * IP_IN_USE_ON_WIRE on create/start also publish `instance.failed`, as the agent does.
   */
  fail?: (hostId: string, command: SimulatedMutation, instanceId: string) => InjectedFailure | undefined;
  /**
   * A host cut from NATS: no heartbeats, no replies (callers time out), its events wait.
   * Asked continuously, so a host can go silent and come back.
   */
  silent?: (hostId: string) => boolean;
  /**
   * A silent simulated host is a dead one (v1.1: off NATS and off the wire): this long
   * (default 10) after its last heartbeat its running instances are down (stopped); when it
   * is back it publishes instance.stopped per instance and host.registered (reregistered).
   * The wire (wire.probe) sees its instances as gone at once.
   */
  fenceAfterSeconds?: number;
  /**
   * Duplicate-address checks before every start (default true), as the agent does them:
   * another live instance with the IP on the same host, or a running one on any other
   * host of the fleet (which would answer the ARP probe), refuses with IP_IN_USE_ON_WIRE.
   */
  arpProbe?: boolean;
  /** JetStream publishes in flight at once (default 256); order of sending is kept */
  maxEventsInFlight?: number;
}

const DEFAULT_CAPACITY: Amounts = { cpu: 32, memoryMb: 131_072, diskMb: 1_048_576 };
/** the docker-agent's defaults: ORANGERY_RESERVED_CPUS=1, ORANGERY_RESERVED_MEMORY_MB=1024 */
const RESERVED: Amounts = { cpu: 1, memoryMb: 1024, diskMb: 0 };
const COMMANDS = new Set<string>(['create', 'start', 'stop', 'remove', 'get', 'list']);
const REFUSAL_EVENT_CODES = new Set<ErrorCode>(['IMAGE_NOT_FOUND', 'IP_IN_USE_ON_WIRE']);
/** exit codes the agent reports: a JVM ending on SIGTERM, and SIGKILL (remove, fence) */
const EXIT_SIGTERM = 143;
const EXIT_SIGKILL = 137;

interface SimInstance {
  host: SimHost;
  data: AgentInstance;
  /** what makes two creates "the same spec": the agent's spec hash (instanceSpecHash) */
  spec: string;
  /** the create command's environment: the process's, never in a reply or event (like a container's Env) */
  environment?: Record<string, string>;
}

interface QueuedEvent {
  subject: string;
  event: EventEnvelope;
}

interface SimHost {
  id: string;
  index: number;
  facts: HostFacts;
  seq: number;
  instances: Map<string, SimInstance>;
  /** the agent's fence clock starts at its last successful heartbeat */
  lastContact: number;
  fencedAt: number | undefined;
  /** events raised while the host is silent: the agent keeps them in memory until NATS is back */
  pending: QueuedEvent[];
  /** swarm: addresses of its range handed out so far */
  nextAddress: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * JetStream publishing that does not wait for each ack before sending the next: up to
 * `max` publishes in flight. Messages leave in queue order on one connection, so the
 * stream stores them in that order; a failed publish is retried with the same message id
 * (stored once), which is the only way an event can land after a later one.
 */
class EventOutbox {
  private readonly queue: QueuedEvent[] = [];
  private head = 0;
  private inFlight = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly idleWaiters: (() => void)[] = [];
  published = 0;
  failures = 0;

  constructor(
    private readonly js: JetStreamClient,
    private readonly max: number,
  ) {}

  push(e: QueuedEvent): void {
    this.queue.push(e);
    this.pump();
  }

  get pending(): number {
    return this.queue.length - this.head + this.inFlight;
  }

  private pump(): void {
    if (this.retryTimer) return;
    while (this.inFlight < this.max && this.head < this.queue.length) {
      const next = this.queue[this.head++]!;
      this.inFlight++;
      const h = newHeaders();
      h.set('Content-Type', 'application/cloudevents+json');
      if (next.event.traceparent) h.set('traceparent', next.event.traceparent);
      this.js.publish(next.subject, JSON.stringify(next.event), { msgID: next.event.id, headers: h }).then(
        () => {
          this.inFlight--;
          this.published++;
          this.settled();
        },
        () => {
          this.inFlight--;
          this.failures++;
          // Back to the front and a pause: NATS is away or JetStream is slow.
          this.queue.splice(this.head, 0, next);
          this.retryTimer ??= setTimeout(() => {
            this.retryTimer = undefined;
            this.pump();
          }, 500);
          this.settled();
        },
      );
    }
    // Keep the array from growing without bound: drop what has been handed out.
    if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }

  private settled(): void {
    this.pump();
    if (this.pending === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Resolves once everything pushed so far is acked, or after `ms` (false then). */
  async idle(ms: number): Promise<boolean> {
    if (this.pending === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      new Promise<boolean>((r) => this.idleWaiters.push(() => r(true))),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms))),
    ]);
    clearTimeout(timer);
    return done;
  }

  close(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }
}

/**
 * A fleet of simulated host agents on one NATS connection, speaking the docker-agent's
 * wire protocol (docs/docker-agent.md): registration, heartbeats, the instance commands
 * with the same validation, idempotency, errors and events. Instances are records in
 * memory; nothing runs. For scheduler tests and the end-to-end scheduler benchmark.
 *
 * Cheap by design: one wildcard subscription for every host's commands, heartbeats from a
 * few timers (each host once per interval, spread), events published without waiting for
 * each ack in turn.
 */
export class SimulatedFleet {
  readonly hostIds: readonly string[];
  private readonly hosts = new Map<string, SimHost>();
  /** every instance of the fleet by IP, for the duplicate-address checks */
  private readonly byIp = new Map<string, Set<SimInstance>>();
  private readonly counts: Record<SimulatedCommand, number> = { create: 0, start: 0, stop: 0, remove: 0, get: 0, list: 0 };
  private readonly timers: NodeJS.Timeout[] = [];
  private sub: Subscription | undefined;
  private probeSub: Subscription | undefined;
  private hostSub: Subscription | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  /** per-instance command chains, used only when replies are delayed */
  private readonly chains = new Map<string, Promise<void>>();
  private stopped = false;
  private readonly backend: 'docker' | 'vmware' | 'swarm';
  private readonly source: (hostId: string) => string;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly outbox: EventOutbox,
    private readonly opts: SimulatedFleetOptions,
  ) {
    this.backend = opts.backend ?? 'docker';
    this.source = (hostId) => `orangery/${this.backend}-agent/${hostId}`;
    const capacity = opts.capacity ?? DEFAULT_CAPACITY;
    const reserved = this.backend !== 'vmware' ? RESERVED : { cpu: 0, memoryMb: 0, diskMb: 0 };
    const total = { cpu: capacity.cpu + reserved.cpu, memoryMb: capacity.memoryMb + reserved.memoryMb, diskMb: capacity.diskMb };
    const prefix = opts.idPrefix ?? 'sim-';
    const width = Math.max(4, String(opts.hosts).length);
    const pattern = new RegExp(HOST_ID_PATTERN);
    const ids: string[] = [];
    const now = Date.now();
    for (let index = 0; index < opts.hosts; index++) {
      const id = `${prefix}${String(index + 1).padStart(width, '0')}`;
      if (!pattern.test(id)) throw new Error(`host id '${id}' does not match ${HOST_ID_PATTERN}: change idPrefix`);
      ids.push(id);
      this.hosts.set(id, {
        id,
        index,
        facts: {
          hostId: id,
          backend: this.backend,
          capacity: { ...capacity },
          total,
          reserved,
          labels: opts.labels?.(index) ?? {},
          vlans: 'any',
          ...(this.backend === 'swarm' ? { cluster: opts.cluster ?? 'swarm' } : {}),
        },
        seq: 0,
        instances: new Map(),
        lastContact: now,
        fencedAt: undefined,
        pending: [],
        nextAddress: 0,
      });
    }
    this.hostIds = ids;
  }

  static async start(opts: SimulatedFleetOptions): Promise<SimulatedFleet> {
    if (!Number.isInteger(opts.hosts) || opts.hosts < 1) throw new Error(`hosts must be a positive integer, got ${opts.hosts}`);
    const { servers, user, pass, token } = natsEndpoints(opts.natsUrl);
    const nc = await connect({
      servers,
      ...(user !== undefined ? { user, pass } : {}),
      ...(token !== undefined ? { token } : {}),
      name: 'orangery-simulated-fleet',
      noAsyncTraces: true, // no stack captured per request: the fleet must be cheap
      maxReconnectAttempts: -1,
      reconnectTimeWait: 200,
    });
    let fleet: SimulatedFleet | undefined;
    try {
      await ensureEventsStream(nc, pino({ level: 'silent' }));
      const outbox = new EventOutbox(jetstream(nc, { timeout: 10_000 }), opts.maxEventsInFlight ?? 256);
      fleet = new SimulatedFleet(nc, outbox, opts);
      await fleet.register();
      return fleet;
    } catch (e) {
      if (fleet) await fleet.stop().catch(() => undefined);
      else await nc.close().catch(() => undefined);
      throw e;
    }
  }

  /** Registration, then commands, then heartbeats: the agent's order at start. */
  private async register(): Promise<void> {
    // host.get before host.registered: the scheduler takes the event as a hint and asks
    // orangery.agent.<host>.host.get for the facts (issue 13).
    this.hostSub = this.nc.subscribe(SUBJECTS.agent.hostGet('*'), {
      callback: (err, msg) => {
        if (!err) this.onHostGet(msg);
      },
    });
    for (const host of this.hosts.values()) {
      this.emit(host, 'host', 'registered', host.id, {
        ...host.facts,
        ...(this.backend === 'docker' ? { engine: 'simulated-fleet' } : {}),
      });
    }
    if (!(await this.outbox.idle(60_000))) throw new Error('the fleet could not publish host.registered in 60 s');
    this.sub = this.nc.subscribe(SUBJECTS.agentInstanceCommandsAll, {
      callback: (err, msg) => {
        if (!err) this.onCommand(msg);
      },
    });
    this.probeSub = this.nc.subscribe(SUBJECTS.agent.probe('*'), {
      callback: (err, msg) => {
        if (!err) this.onProbe(msg);
      },
    });
    this.startHeartbeats();
    this.timers.push(setInterval(() => this.checkSilence(), 250));
  }

  /** The hosts are spread over the interval: a few timer ticks, each heartbeating a slice. */
  private startHeartbeats(): void {
    const intervalMs = (this.opts.heartbeatSeconds ?? 2) * 1000;
    const slices = Math.max(1, Math.min(this.hostIds.length, Math.round(intervalMs / 50)));
    const all = [...this.hosts.values()];
    let tick = 0;
    this.timers.push(
      setInterval(() => {
        const slice = tick++ % slices;
        for (let i = slice; i < all.length; i += slices) this.heartbeat(all[i]!);
      }, intervalMs / slices),
    );
  }

  private heartbeat(host: SimHost): void {
    if (this.isSilent(host)) return;
    const allocated = { cpu: 0, memoryMb: 0, diskMb: 0 };
    for (const { data } of host.instances.values()) {
      const r = data.resources;
      if (!r) continue;
      allocated.cpu += r.cpu;
      allocated.memoryMb += memoryLimitMb(r.memoryMb, r.heapMb);
      allocated.diskMb += r.diskMb ?? 0;
    }
    allocated.cpu = Math.round(allocated.cpu * 1000) / 1000;
    const hb: Heartbeat = {
      ...host.facts,
      time: new Date().toISOString(),
      seq: host.seq++,
      allocated,
      usage: { ...allocated },
      instances: host.instances.size,
      fenced: false,
    };
    this.nc.publish(SUBJECTS.heartbeat(host.id), JSON.stringify(hb));
    host.lastContact = Date.now();
  }

  private isSilent(host: SimHost): boolean {
    return this.opts.silent?.(host.id) ?? false;
  }

  /** What a dead (silent) host loses, and what it publishes when it is back. */
  private checkSilence(): void {
    const fenceAfterMs = (this.opts.fenceAfterSeconds ?? 10) * 1000;
    const now = Date.now();
    for (const host of this.hosts.values()) {
      if (this.isSilent(host)) {
        // a down swarm node's tasks are swarm's to move (moveTask), not stopped here
        if (host.fencedAt === undefined && now - host.lastContact >= fenceAfterMs && this.backend !== 'swarm') this.fence(host, now);
        continue;
      }
      if (host.fencedAt !== undefined) {
        const fencedAt = new Date(host.fencedAt).toISOString();
        host.fencedAt = undefined;
        host.lastContact = now;
        this.emit(host, 'host', 'registered', host.id, { ...host.facts, reregistered: true, fencedAt });
      }
      if (host.pending.length > 0) for (const e of host.pending.splice(0)) this.outbox.push(e);
    }
  }

  private fence(host: SimHost, now: number): void {
    host.fencedAt = now;
    const stopped: string[] = [];
    for (const inst of host.instances.values()) {
      if (inst.data.state !== 'running') continue;
      inst.data.state = 'stopped';
      inst.data.exitCode = EXIT_SIGKILL;
      stopped.push(inst.data.instanceId);
    }
    for (const instanceId of stopped) this.instanceEvent(host, 'stopped', instanceId, { reason: 'the host was down (simulated)' });
  }

  // ---------------------------------------------------------------------------------------
  // events

  private emit(host: SimHost, area: string, what: string, subject: string, data: Record<string, unknown>, traceparent?: string): void {
    const { natsSubject, event } = buildEvent({
      area,
      what,
      source: this.source(host.id),
      subject,
      data: area === 'host' ? { hostId: host.id, backend: this.backend, ...data } : data,
      ...(traceparent ? { traceparent } : {}),
    });
    const queued = { subject: natsSubject, event: event as EventEnvelope };
    // A host cut from NATS keeps its events until it is back, in order.
    if (this.isSilent(host) || host.pending.length > 0) host.pending.push(queued);
    else this.outbox.push(queued);
  }

  private instanceEvent(host: SimHost, what: string, instanceId: string, data: Record<string, unknown>, traceparent?: string): void {
    this.emit(host, 'instance', what, instanceId, { instanceId, hostId: host.id, backend: this.backend, ...data }, traceparent);
  }

  private lifecycle(inst: SimInstance, what: 'running' | 'stopped' | 'failed' | 'removed', extra: Record<string, unknown>, traceparent?: string): void {
    const d = inst.data;
    this.instanceEvent(
      inst.host,
      what,
      d.instanceId,
      { ...(d.containerId ? { containerId: d.containerId } : {}), ip: d.ip, mac: d.mac, ...extra },
      traceparent,
    );
  }

  // ---------------------------------------------------------------------------------------
  // commands

  private onCommand(msg: Msg): void {
    if (this.stopped) return;
    // orangery.agent.<hostId>.instance.<command>; hosts of other fleets or real agents are not ours
    const parts = msg.subject.split('.');
    const host = this.hosts.get(parts[2] ?? '');
    const command = parts[4] ?? '';
    if (!host || !COMMANDS.has(command) || this.isSilent(host)) return;
    const cmd = command as SimulatedCommand;
    this.counts[cmd]++;
    const traceparent = msg.headers?.get('traceparent') || undefined;
    const delay = typeof this.opts.replyDelayMs === 'function' ? this.opts.replyDelayMs(host.id, cmd) : (this.opts.replyDelayMs ?? 0);
    if (delay <= 0 && this.chains.size === 0) {
      this.answer(msg, this.execute(host, cmd, msg, traceparent));
      return;
    }
    // Commands for one instance apply in order of arrival, as the agent's per-instance queue does.
    const key = cmd === 'list' || cmd === 'get' ? undefined : this.instanceKey(host, msg);
    const prev = key ? this.chains.get(key) : undefined;
    const run = async () => {
      await (prev ?? Promise.resolve());
      if (delay > 0) await sleep(delay);
      if (this.stopped || this.isSilent(host)) return;
      this.answer(msg, this.execute(host, cmd, msg, traceparent));
    };
    const p = run().catch(() => undefined);
    if (key) {
      this.chains.set(key, p);
      void p.then(() => {
        if (this.chains.get(key) === p) this.chains.delete(key);
      });
    }
    this.inFlight.add(p);
    void p.then(() => this.inFlight.delete(p));
  }

  /**
   * The wire as the simulation has it: an address answers ARP while a running instance holds
   * it on a host that is not silent (a silent simulated host is a dead one: off the wire).
   */
  private onProbe(msg: Msg): void {
    const host = this.hosts.get(msg.subject.split('.')[2] ?? '');
    if (!host || this.stopped || this.isSilent(host)) return;
    let reply: Reply<unknown>;
    try {
      const cmd = decode(ProbeWireCommand, parseJsonObject(msg.data));
      const live = new Set<string>();
      for (const h of this.hosts.values()) {
        if (this.isSilent(h)) continue;
        for (const { data } of h.instances.values()) if (data.state === 'running') live.add(data.ip);
      }
      reply = okReply({ hostId: host.id, vlan: cmd.vlan, iface: `sim.${cmd.vlan}`, results: cmd.ips.map((ip) => ({ ip, answered: live.has(ip) })) });
    } catch (e) {
      reply = isOrangeryError(e) ? errorReply(e.toBody()) : errorReply({ code: 'INTERNAL', message: `simulated fleet: ${String(e)}` });
    }
    this.answer(msg, reply);
  }

  /** orangery.agent.<host>.host.get: the host's facts, as its own agent would say them (nothing while silent). */
  private onHostGet(msg: Msg): void {
    const host = this.hosts.get(msg.subject.split('.')[2] ?? '');
    if (!host || this.stopped || this.isSilent(host)) return;
    let reply: Reply<unknown>;
    try {
      decode(HostGetCommand, parseJsonObject(msg.data));
      reply = okReply(hostFactsOf(host.facts));
    } catch (e) {
      reply = isOrangeryError(e) ? errorReply(e.toBody()) : errorReply({ code: 'INTERNAL', message: `simulated fleet: ${String(e)}` });
    }
    this.answer(msg, reply);
  }

  private instanceKey(host: SimHost, msg: Msg): string | undefined {
    try {
      const id = parseJsonObject(msg.data)['instanceId'];
      return typeof id === 'string' ? `${host.id}/${id}` : undefined;
    } catch {
      return undefined;
    }
  }

  private answer(msg: Msg, reply: Reply<unknown>): void {
    if (!msg.reply) return;
    try {
      msg.respond(JSON.stringify(reply));
    } catch {
      // the connection is closing
    }
  }

  private execute(host: SimHost, command: SimulatedCommand, msg: Msg, traceparent: string | undefined): Reply<unknown> {
    try {
      const body = parseJsonObject(msg.data);
      if (this.backend === 'swarm') return this.executeSwarm(host, command, body, traceparent);
      switch (command) {
        case 'create':
          return okReply(this.create(host, decode(CreateInstanceCommand, body), traceparent));
        case 'start':
          return okReply(this.startInstance(host, decode(InstanceRef, body).instanceId, traceparent));
        case 'stop':
          return okReply(this.stopInstance(host, decode(StopInstanceCommand, body).instanceId, traceparent));
        case 'remove':
          return okReply(this.remove(host, decode(InstanceRef, body).instanceId, traceparent));
        case 'get':
          return okReply(this.require(host, decode(InstanceRef, body).instanceId).data);
        case 'list':
          decode(ListInstancesCommand, body);
          return okReply({ hostId: host.id, instances: [...host.instances.values()].map((i) => i.data) });
      }
    } catch (e) {
      if (isOrangeryError(e)) return errorReply(e.toBody());
      return errorReply({ code: 'INTERNAL', message: `simulated fleet: ${String(e)}` });
    }
  }

  // ---------------------------------------------------------------------------------------
  // swarm: one cluster, a slot's task on any of its nodes

  private executeSwarm(host: SimHost, command: SimulatedCommand, body: Record<string, unknown>, traceparent?: string): Reply<unknown> {
    switch (command) {
      case 'create':
        return okReply(this.createTask(host, decode(SwarmCreateInstanceCommand, body), traceparent));
      case 'get':
        return okReply(this.requireTask(host, decode(InstanceRef, body).instanceId).data);
      case 'list':
        decode(ListInstancesCommand, body);
        return okReply({ hostId: host.id, instances: [...host.instances.values()].map((i) => i.data) });
      case 'remove': {
        const instanceId = decode(InstanceRef, body).instanceId;
        const task = this.taskOf(instanceId);
        return okReply(this.remove(task?.host ?? host, instanceId, traceparent));
      }
      case 'stop': {
        const instanceId = decode(StopInstanceCommand, body).instanceId;
        return okReply(this.stopInstance(this.requireTask(host, instanceId).host, instanceId, traceparent));
      }
      case 'start': {
        const instanceId = decode(InstanceRef, body).instanceId;
        return okReply(this.startInstance(this.requireTask(host, instanceId).host, instanceId, traceparent));
      }
    }
  }

  /** The slot's task, on whichever node of the cluster it runs. */
  private taskOf(instanceId: string): SimInstance | undefined {
    for (const h of this.hosts.values()) {
      const inst = h.instances.get(instanceId);
      if (inst) return inst;
    }
    return undefined;
  }

  private requireTask(asked: SimHost, instanceId: string): SimInstance {
    const inst = this.taskOf(instanceId);
    if (!inst) throw new OrangeryError('NOT_FOUND', `no service for ${instanceId} in the swarm of ${asked.id}`, { instanceId });
    return inst;
  }

  /** The next address of a node's range (a simulated swarm-agent takes no block from ipam). */
  private nextAddress(node: SimHost): { ip: string; mac: string } {
    const n = node.nextAddress++;
    const ip = this.opts.swarmAddress?.(node.index, n) ?? `198.19.${100 + node.index}.${10 + n}`;
    const mac = ['02', '42', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
    return { ip, mac };
  }

  private createTask(host: SimHost, cmd: SwarmCreateInstanceCommand, traceparent?: string): AgentInstance {
    this.injected(host, 'create', cmd.instanceId, undefined, traceparent);
    // the service's spec: what the swarm-agent compares for an idempotent create
    const spec = JSON.stringify([cmd.image, cmd.resources, cmd.pool, cmd.environment ?? {}, cmd.command ?? null, cmd.security ?? null]);
    const existing = this.taskOf(cmd.instanceId);
    if (existing) {
      if (existing.spec !== spec) {
        throw new OrangeryError('INSTANCE_CONFLICT', `${cmd.instanceId} already exists in the swarm with another spec; remove it first`, {
          instanceId: cmd.instanceId,
        });
      }
      return existing.data;
    }
    const nodeId = this.opts.swarmNode?.(host.id, cmd.instanceId) ?? host.id;
    const node = this.hosts.get(nodeId);
    if (!node) throw new Error(`swarmNode named ${nodeId}, not a node of this fleet`);
    const { ip, mac } = this.nextAddress(node);
    const inst: SimInstance = {
      host: node,
      spec,
      ...(cmd.environment !== undefined ? { environment: { ...cmd.environment } } : {}),
      data: {
        instanceId: cmd.instanceId,
        env: cmd.env,
        app: cmd.app,
        slot: cmd.slot,
        hostId: node.id,
        backend: 'swarm',
        containerId: randomBytes(32).toString('hex'),
        state: 'running',
        ip,
        mac,
        image: cmd.image,
        resources: { ...cmd.resources },
      },
    };
    this.track(node, inst);
    this.lifecycle(inst, 'running', {}, traceparent);
    return inst.data;
  }

  private track(node: SimHost, inst: SimInstance): void {
    node.instances.set(inst.data.instanceId, inst);
    let sameIp = this.byIp.get(inst.data.ip);
    if (!sameIp) this.byIp.set(inst.data.ip, (sameIp = new Set()));
    sameIp.add(inst);
  }

  private untrack(inst: SimInstance): void {
    inst.host.instances.delete(inst.data.instanceId);
    const sameIp = this.byIp.get(inst.data.ip);
    sameIp?.delete(inst);
    if (sameIp?.size === 0) this.byIp.delete(inst.data.ip);
  }

  private injected(host: SimHost, command: SimulatedMutation, instanceId: string, ip: string | undefined, traceparent?: string): void {
    const f = this.opts.fail?.(host.id, command, instanceId);
    if (!f) return;
    if ((command === 'create' || command === 'start') && REFUSAL_EVENT_CODES.has(f.code)) {
      this.instanceEvent(host, 'failed', instanceId, { reason: f.message, code: f.code, ...(ip ? { ip } : {}) }, traceparent);
    }
    throw new OrangeryError(f.code, f.message, { instanceId, ...f.details });
  }

  private create(host: SimHost, cmd: CreateInstanceCommand, traceparent?: string): AgentInstance {
    this.injected(host, 'create', cmd.instanceId, cmd.network.ip, traceparent);
    const wantStart = cmd.start ?? true;
    const spec = instanceSpecHash(cmd);
    const existing = host.instances.get(cmd.instanceId);
    if (existing) {
      if (existing.spec !== spec) {
        throw new OrangeryError('INSTANCE_CONFLICT', `${cmd.instanceId} already exists on ${host.id} with another spec; remove it first`, {
          instanceId: cmd.instanceId,
          ip: existing.data.ip,
        });
      }
      if (wantStart && existing.data.state !== 'running') this.startChecked(existing, traceparent);
      return existing.data;
    }
    const capacity = host.facts.capacity.cpu;
    if (cmd.resources.cpu > capacity) {
      throw new OrangeryError('INSUFFICIENT_CAPACITY', `asks ${cmd.resources.cpu} CPUs; ${host.id} offers ${capacity} to instances`, {
        cpu: cmd.resources.cpu,
        available: capacity,
      });
    }
    this.refuseDuplicateIp(host, cmd.instanceId, cmd.network.ip, wantStart, traceparent);
    const inst: SimInstance = {
      host,
      spec,
      ...(cmd.environment !== undefined ? { environment: { ...cmd.environment } } : {}),
      data: {
        instanceId: cmd.instanceId,
        env: cmd.env,
        app: cmd.app,
        slot: cmd.slot,
        hostId: host.id,
        // AgentInstance's schema only knows docker (see the final note of the fleet's docs)
        backend: this.backend as 'docker',
        ...(this.backend === 'docker' ? { containerId: randomBytes(32).toString('hex') } : {}),
        state: wantStart ? 'running' : 'created',
        ip: cmd.network.ip,
        mac: cmd.network.mac,
        ...(cmd.image !== undefined ? { image: cmd.image } : {}),
        ...(cmd.template !== undefined ? { template: cmd.template } : {}),
        resources: { ...cmd.resources },
      },
    };
    host.instances.set(cmd.instanceId, inst);
    let sameIp = this.byIp.get(cmd.network.ip);
    if (!sameIp) this.byIp.set(cmd.network.ip, (sameIp = new Set()));
    sameIp.add(inst);
    if (wantStart) this.lifecycle(inst, 'running', {}, traceparent);
    return inst.data;
  }

  private startInstance(host: SimHost, instanceId: string, traceparent?: string): AgentInstance {
    this.injected(host, 'start', instanceId, host.instances.get(instanceId)?.data.ip, traceparent);
    const inst = this.require(host, instanceId);
    if (inst.data.state !== 'running') this.startChecked(inst, traceparent);
    return inst.data;
  }

  private startChecked(inst: SimInstance, traceparent?: string): void {
    this.refuseDuplicateIp(inst.host, inst.data.instanceId, inst.data.ip, true, traceparent);
    inst.data.state = 'running';
    delete inst.data.exitCode;
    delete inst.data.reason;
    this.lifecycle(inst, 'running', {}, traceparent);
  }

  private stopInstance(host: SimHost, instanceId: string, traceparent?: string): AgentInstance {
    this.injected(host, 'stop', instanceId, undefined, traceparent);
    const inst = this.require(host, instanceId);
    if (inst.data.state === 'running') {
      inst.data.state = 'stopped';
      inst.data.exitCode = EXIT_SIGTERM;
      this.lifecycle(inst, 'stopped', { exitCode: EXIT_SIGTERM, reason: 'stopped on request' }, traceparent);
    }
    return inst.data;
  }

  private remove(host: SimHost, instanceId: string, traceparent?: string): AgentInstance {
    this.injected(host, 'remove', instanceId, undefined, traceparent);
    const inst = host.instances.get(instanceId);
    if (!inst) {
      // Removing an unknown instance is not an error: the agent describes "no container".
      const [env = '', app = '', slot = '0'] = instanceId.split(':');
      return { instanceId, env, app, slot: Number(slot), hostId: host.id, backend: this.backend as 'docker', state: 'removed', ip: '', mac: '', image: '' };
    }
    const out: AgentInstance = { ...inst.data, state: 'removed' };
    // The engine's `die` of a removed running container is an expected stop, then `destroy`.
    if (inst.data.state === 'running') this.lifecycle(inst, 'stopped', { exitCode: EXIT_SIGKILL, reason: 'stopped on request' }, traceparent);
    host.instances.delete(instanceId);
    const sameIp = this.byIp.get(inst.data.ip);
    sameIp?.delete(inst);
    if (sameIp?.size === 0) this.byIp.delete(inst.data.ip);
    this.lifecycle(inst, 'removed', {}, traceparent);
    return out;
  }

  private require(host: SimHost, instanceId: string): SimInstance {
    const inst = host.instances.get(instanceId);
    if (!inst) throw new OrangeryError('NOT_FOUND', `no instance ${instanceId} on ${host.id}`, { instanceId });
    return inst;
  }

  /**
   * The agent's two checks before a start: its own engine (another live instance with the
   * IP on this host; always, even for start: false) and, before a start, the ARP probe,
   * which any running instance of the fleet on another host answers.
   */
  private refuseDuplicateIp(host: SimHost, instanceId: string, ip: string, starting: boolean, traceparent?: string): void {
    if (this.opts.arpProbe === false) return;
    const holders = this.byIp.get(ip);
    if (!holders) return;
    for (const other of holders) {
      if (other.host === host) {
        if (other.data.instanceId === instanceId || other.data.state === 'stopped' || other.data.state === 'failed') continue;
        const reason = `${ip} is held by ${other.data.instanceId} on this host; nothing was started`;
        this.instanceEvent(host, 'failed', instanceId, { reason, code: 'IP_IN_USE_ON_WIRE', ip }, traceparent);
        throw new OrangeryError('IP_IN_USE_ON_WIRE', reason, { ip, holder: other.data.instanceId });
      }
      if (starting && other.data.state === 'running') {
        const iface = `sim0.${ip}`;
        const reason = `${ip} answers ARP on ${iface}: another endpoint holds it; nothing was started`;
        this.instanceEvent(host, 'failed', instanceId, { reason, code: 'IP_IN_USE_ON_WIRE', ip }, traceparent);
        throw new OrangeryError('IP_IN_USE_ON_WIRE', reason, { ip, iface });
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // what tests look at

  /** What the fleet (or one host) "runs", any state; copies. */
  instances(hostId?: string): AgentInstance[] {
    const hosts = hostId === undefined ? [...this.hosts.values()] : [this.hosts.get(hostId)].filter((h) => h !== undefined);
    return hosts.flatMap((h) => [...h.instances.values()].map((i) => structuredClone(i.data)));
  }

  /** The environment the instance's copy on `hostId` was created with (tests: did the variables arrive?); undefined when none. */
  environmentOf(hostId: string, instanceId: string): Record<string, string> | undefined {
    const env = this.hosts.get(hostId)?.instances.get(instanceId)?.environment;
    return env ? { ...env } : undefined;
  }

  /**
   * swarm: swarm moves the slot's task to `toNode` (its node was drained or went down, or
   * the task failed): the old task ends (instance.removed from the old node, its address
   * free), the new one runs with the next address of `toNode`'s range (instance.running
   * from `toNode`), as the swarm-agent reports it. Returns the new task.
   */
  moveTask(instanceId: string, toNode: string): AgentInstance {
    if (this.backend !== 'swarm') throw new Error('moveTask: not a swarm fleet');
    const old = this.taskOf(instanceId);
    const node = this.hosts.get(toNode);
    if (!old || !node) throw new Error(`moveTask: no task ${instanceId}, or no node ${toNode}`);
    this.untrack(old);
    this.lifecycle(old, 'removed', { reason: `task moved to ${toNode} by swarm` });
    const { ip, mac } = this.nextAddress(node);
    const inst: SimInstance = {
      ...old,
      host: node,
      data: { ...old.data, hostId: node.id, ip, mac, state: 'running', containerId: randomBytes(32).toString('hex') },
    };
    this.track(node, inst);
    this.lifecycle(inst, 'running', {});
    return structuredClone(inst.data);
  }

  /** Commands received per kind (those of silent hosts are not counted). */
  commandCounts(): Record<string, number> {
    return { ...this.counts };
  }

  /** Events still waiting for their JetStream ack (or for a silent host to come back). */
  pendingEvents(): number {
    let n = this.outbox.pending;
    for (const h of this.hosts.values()) n += h.pending.length;
    return n;
  }

  /**
   * The process of every running copy of the instance dies (exit 1): state `failed` and
   * `instance.failed`, like the agent after its restarts ran out (the fleet does not
   * restart anything). Throws when no copy is running.
   */
  failInstance(instanceId: string, reason?: string): void {
    let failed = 0;
    for (const host of this.hosts.values()) {
      const inst = host.instances.get(instanceId);
      if (!inst || inst.data.state !== 'running') continue;
      inst.data.state = 'failed';
      inst.data.exitCode = 1;
      if (reason !== undefined) inst.data.reason = reason;
      this.lifecycle(inst, 'failed', { exitCode: 1, ...(reason !== undefined ? { reason } : {}) });
      failed++;
    }
    if (failed === 0) throw new Error(`failInstance: no running copy of ${instanceId} in the fleet`);
  }

  /** Stops answering and heartbeating, publishes the queued events (up to 5 s), closes NATS. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.sub?.unsubscribe();
    this.probeSub?.unsubscribe();
    this.hostSub?.unsubscribe();
    await Promise.allSettled([...this.inFlight]);
    await this.outbox.idle(5_000);
    this.outbox.close();
    await this.nc.close().catch(() => undefined);
  }
}

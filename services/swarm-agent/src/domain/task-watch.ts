import { memoryLimitMb, PortError, type AgentInstanceState, type Amounts } from '@orangery/contracts';
import { isStrictIpv4 } from '@orangery/netaddr';
import type { BlockIpam, DomainLog, EventSink, NodeEngines, SwarmEngine, SwarmService, SwarmTask } from './ports';
import { LABEL, resourcesOf, swarmNetworkName } from './service-spec';
import type { SwarmNodes } from './swarm-nodes';

/** One slot's swarm service and the task that stands for it now. */
export interface Observed {
  instanceId: string;
  env: string;
  app: string;
  slot: number;
  pool: string;
  service: SwarmService;
  /** the task swarm wants running (else the latest one) */
  task: SwarmTask | undefined;
  /** the node host id of that task */
  hostId: string | undefined;
  state: AgentInstanceState;
  /** its task runs but its address cannot be read yet (node engine down): its binding is left as it is */
  addressUnknown: boolean;
  ip: string | undefined;
  mac: string | undefined;
  reason: string | undefined;
}

const FAILED_TASK_STATES = new Set(['failed', 'rejected']);

/** Docker's own MAC for an address it assigns without one given (02:42 + the IPv4 bytes). */
export function dockerMacForIp(ip: string): string {
  return ['02', '42', ...ip.split('.').map((b) => Number(b).toString(16).padStart(2, '0'))].join(':');
}

/** The task that stands for the slot: the one swarm wants running, the newest first; else the newest. */
export function currentTask(tasks: readonly SwarmTask[]): SwarmTask | undefined {
  const newestFirst = [...tasks].sort((a, b) => (a.updatedAt < b.updatedAt ? 1 : a.updatedAt > b.updatedAt ? -1 : 0));
  return newestFirst.find((t) => t.desiredState === 'running') ?? newestFirst[0];
}

export function stateOf(service: SwarmService, task: SwarmTask | undefined, hasAddress: boolean): AgentInstanceState {
  if (service.replicas === 0) return 'stopped';
  if (!task) return 'created';
  if (task.state === 'running') return hasAddress ? 'running' : 'created';
  if (FAILED_TASK_STATES.has(task.state)) return 'failed';
  return 'created';
}

export interface TaskWatchDeps {
  swarm: SwarmEngine;
  engines: NodeEngines;
  ipam: BlockIpam;
  nodes: SwarmNodes;
  events: EventSink;
  log: DomainLog;
}

/**
 * Keeps ipam true to what swarm runs, and tells the control plane (instance.* events with
 * the node's host id). Each pass reads the manager's services and tasks (level-triggered:
 * a missed pass loses nothing):
 * - a task running with an address: `block.bind` (ipam moves the owner's binding from the
 *   address its previous task held, in one transaction);
 * - an instance with no running task (stopped, failed, moving, removed): `block.unbind` of
 *   the address it held;
 * - ipam unreachable: the binding waits and is tried again on the next pass. Nothing is
 *   ever stopped or removed because ipam or NATS are away.
 */
export class TaskWatch {
  private view = new Map<string, Observed>();
  private started = false;
  /** instance id -> the address ipam has confirmed bound to it (by this process) */
  private readonly bound = new Map<string, { ip: string; hostId: string }>();
  /** instances whose leftover binding (from before this process) was checked */
  private readonly staleChecked = new Set<string>();
  private readonly failedReported = new Set<string>();
  private readonly addressOfTask = new Map<string, { ip: string; mac: string }>();
  /** instances removed through a command: their removed event is the command's */
  private readonly removedByCommand = new Set<string>();
  /** what the last events said of each instance (the diff's base; commands do not touch it) */
  private reported = new Map<string, Observed>();
  private passing: Promise<void> | undefined;
  /** one ipam change at a time per instance (a command's and the pass's) */
  private readonly locks = new Map<string, Promise<unknown>>();
  /** instances a command bound or unbound since the running pass read the swarm: the pass leaves them to the next one */
  private readonly touched = new Set<string>();

  constructor(private readonly deps: TaskWatchDeps) {}

  get instances(): Observed[] {
    return [...this.view.values()];
  }

  find(instanceId: string): Observed | undefined {
    return this.view.get(instanceId);
  }

  /** What runs on each node, for the heartbeats: the memory limit (heap rule), CPUs and disk of its running tasks. */
  allocatedByHost(): Map<string, { amounts: Amounts; count: number }> {
    const out = new Map<string, { amounts: Amounts; count: number }>();
    for (const o of this.view.values()) {
      if (!o.hostId || o.state !== 'running') continue;
      const r = resourcesOf(o.service.labels);
      const a = out.get(o.hostId) ?? { amounts: { cpu: 0, memoryMb: 0, diskMb: 0 }, count: 0 };
      a.amounts.cpu = Math.round((a.amounts.cpu + r.cpu) * 1000) / 1000;
      a.amounts.memoryMb += memoryLimitMb(r.memoryMb, r.heapMb);
      a.amounts.diskMb += r.diskMb ?? 0;
      a.count++;
      out.set(o.hostId, a);
    }
    return out;
  }

  /** One pass (a pass in flight is joined, never run twice at once). */
  pass(): Promise<void> {
    if (this.passing) return this.passing;
    this.passing = this.passNow().finally(() => (this.passing = undefined));
    return this.passing;
  }

  /** Reads one service's state now (a command's view), updating the watch's own. */
  async observeService(instanceId: string): Promise<Observed | undefined> {
    const service = await this.deps.swarm.findService(instanceId);
    if (!service) return undefined;
    const tasks = await this.deps.swarm.tasks(service.id);
    const o = await this.observe(service, tasks);
    if (o) this.view.set(instanceId, o);
    return o;
  }

  /** A command reported this task's failure itself: the watch does not report it again. */
  failureReported(taskId: string): void {
    this.failedReported.add(taskId);
  }

  /** Binds a running instance's address now (a create's reply carries it bound); the next pass retries on failure. */
  async bindNow(o: Observed): Promise<boolean> {
    return this.locked(o.instanceId, async () => {
      this.touched.add(o.instanceId);
      const held = this.bound.get(o.instanceId);
      if (held && held.ip === o.ip && held.hostId === o.hostId) return true;
      return this.bind(o);
    });
  }

  /** A command removed the instance: unbind its address now; the command publishes instance.removed. */
  async removedNow(instanceId: string, ip: string | undefined): Promise<void> {
    return this.locked(instanceId, () => this.removedNowLocked(instanceId, ip));
  }

  private async removedNowLocked(instanceId: string, ip: string | undefined): Promise<void> {
    this.touched.add(instanceId);
    this.removedByCommand.add(instanceId);
    this.view.delete(instanceId);
    const held = this.bound.get(instanceId)?.ip ?? ip;
    if (held === undefined) return;
    try {
      await this.deps.ipam.unbind(held, instanceId);
      this.bound.delete(instanceId);
    } catch (e) {
      // the next pass sees no service and unbinds it again
      this.bound.set(instanceId, { ip: held, hostId: this.bound.get(instanceId)?.hostId ?? '' });
      this.deps.log.warn({ instanceId, ip: held, err: String(e) }, 'unbind after remove failed; retried on the next pass');
    }
  }

  /** Every orangery service and its current task, read now. */
  private async observeAll(): Promise<{ next: Map<string, Observed>; tasks: SwarmTask[]; tasksOf: Map<string, SwarmTask[]> }> {
    const [services, tasks] = await Promise.all([this.deps.swarm.services(), this.deps.swarm.tasks()]);
    const tasksOf = new Map<string, SwarmTask[]>();
    for (const t of tasks) {
      const list = tasksOf.get(t.serviceId);
      if (list) list.push(t);
      else tasksOf.set(t.serviceId, [t]);
    }
    const next = new Map<string, Observed>();
    for (const s of services) {
      const o = await this.observe(s, tasksOf.get(s.id) ?? []);
      if (o) next.set(o.instanceId, o);
    }
    return { next, tasks, tasksOf };
  }

  private async passNow(): Promise<void> {
    // before the read: what a command changes from now on is newer than this pass's view
    this.touched.clear();
    const { next, tasks, tasksOf } = await this.observeAll();
    this.deps.nodes.adoptPools(new Set([...next.values()].map((o) => o.pool)));
    const first = !this.started;
    this.started = true;
    this.report(next, tasksOf, first);
    this.reported = next;
    this.view = new Map(next);
    for (const id of this.removedByCommand) if (!next.has(id)) this.removedByCommand.delete(id);
    await this.reconcileBindings(next);
    // forget addresses of tasks swarm no longer lists
    const live = new Set(tasks.map((t) => t.id));
    for (const id of this.addressOfTask.keys()) if (!live.has(id)) this.addressOfTask.delete(id);
    // swarm keeps a bounded task history: a task it no longer lists is never reported again
    for (const id of this.failedReported) if (!live.has(id)) this.failedReported.delete(id);
  }

  private async observe(service: SwarmService, tasks: readonly SwarmTask[]): Promise<Observed | undefined> {
    const l = service.labels;
    const instanceId = l[LABEL.instanceId];
    const pool = l[LABEL.pool];
    if (!instanceId || !pool) return undefined;
    const task = currentTask(tasks);
    const hostId = this.deps.nodes.hostIdOf(task?.nodeId);
    const address = task && task.state === 'running' && service.replicas > 0 ? await this.addressOf(task, pool) : undefined;
    const state = stateOf(service, task, address !== undefined);
    return {
      addressUnknown: state === 'created' && task?.state === 'running' && service.replicas > 0,
      instanceId,
      env: l[LABEL.env] ?? '',
      app: l[LABEL.app] ?? '',
      slot: Number(l[LABEL.slot] ?? 0),
      pool,
      service,
      task,
      hostId,
      state,
      ip: address?.ip,
      mac: address?.mac,
      reason: state === 'failed' ? (task?.err ?? `task ${task?.state}`) : undefined,
    };
  }

  /**
   * A running task's address on its pool's network: from the container on its node (the
   * address and MAC Docker gave it there), else from the manager's record of the task.
   */
  private async addressOf(task: SwarmTask, pool: string): Promise<{ ip: string; mac: string } | undefined> {
    const cached = this.addressOfTask.get(task.id);
    if (cached) return cached;
    const network = swarmNetworkName(pool);
    let found: { ip: string; mac: string } | undefined;
    const node = task.nodeId ? this.deps.nodes.nodeOf(this.deps.nodes.hostIdOf(task.nodeId) ?? '') : undefined;
    const engine = node && task.containerId ? this.deps.engines.forNode(node.hostname, node.id, node.addr) : undefined;
    if (engine && task.containerId) {
      try {
        found = await engine.containerAddress(task.containerId, network);
      } catch (e) {
        this.deps.log.debug?.({ task: task.id, err: String(e) }, "node engine did not say the task's address");
      }
    }
    if (!found) {
      const ip = task.addresses[network]?.[0]?.split('/')[0];
      if (ip && isStrictIpv4(ip)) found = { ip, mac: dockerMacForIp(ip) };
    }
    if (found) this.addressOfTask.set(task.id, found);
    return found;
  }

  /** instance.* events for what changed since the last pass. */
  private report(next: ReadonlyMap<string, Observed>, tasksOf: ReadonlyMap<string, SwarmTask[]>, first: boolean): void {
    const ev = this.deps.events;
    for (const o of next.values()) {
      const prev = this.reported.get(o.instanceId);
      for (const t of tasksOf.get(o.service.id) ?? []) {
        if (!FAILED_TASK_STATES.has(t.state) || this.failedReported.has(t.id)) continue;
        this.failedReported.add(t.id);
        // failures from before this process are history, not news
        if (first) continue;
        const host = this.deps.nodes.hostIdOf(t.nodeId) ?? o.hostId ?? prev?.hostId;
        if (host) ev.instance(host, 'failed', o.instanceId, { reason: t.err ?? `task ${t.state}`, taskId: t.id, ...(prev?.ip ? { ip: prev.ip } : {}) });
      }
      if (!o.hostId) continue;
      if (o.state === 'running' && (prev?.state !== 'running' || prev.task?.id !== o.task?.id || prev.ip !== o.ip)) {
        ev.instance(o.hostId, 'running', o.instanceId, {
          ip: o.ip,
          mac: o.mac,
          containerId: o.task?.containerId,
          taskId: o.task?.id,
          ...(first ? { adopted: true } : {}),
        });
      } else if (o.state === 'stopped' && prev && prev.state !== 'stopped') {
        ev.instance(o.hostId, 'stopped', o.instanceId, { reason: 'the service was scaled to 0' });
      }
    }
    for (const prev of this.reported.values()) {
      if (next.has(prev.instanceId) || this.removedByCommand.has(prev.instanceId) || !prev.hostId) continue;
      ev.instance(prev.hostId, 'removed', prev.instanceId, { reason: 'the swarm service is gone', ...(prev.ip ? { ip: prev.ip } : {}) });
    }
  }

  private async reconcileBindings(next: ReadonlyMap<string, Observed>): Promise<void> {
    // Unbinds first: an address a gone task held may be the one a new task got.
    for (const [instanceId] of [...this.bound]) {
      await this.locked(instanceId, async () => {
        const held = this.bound.get(instanceId);
        const o = next.get(instanceId);
        // a command changed it after this pass's read, or its bind below moves the owner
        if (!held || this.touched.has(instanceId) || (o && o.state === 'running' && o.ip !== undefined)) return;
        // running, address not readable yet (its node's engine is down): neither unbind nor bind
        if (o?.addressUnknown) return;
        try {
          await this.deps.ipam.unbind(held.ip, instanceId);
          this.bound.delete(instanceId);
        } catch (e) {
          this.deps.log.warn({ instanceId, ip: held.ip, err: String(e) }, 'unbind failed; retried on the next pass');
        }
      });
    }
    for (const o of next.values()) {
      await this.locked(o.instanceId, async () => {
        if (this.touched.has(o.instanceId) || o.addressUnknown) return;
        if (o.state === 'running') {
          const held = this.bound.get(o.instanceId);
          if (held && held.ip === o.ip && held.hostId === o.hostId) return;
          await this.bind(o);
        } else if (!this.bound.has(o.instanceId) && !this.staleChecked.has(o.instanceId)) {
          await this.dropLeftoverBinding(o);
        }
      });
    }
  }

  private locked<T>(instanceId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(instanceId) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    this.locks.set(instanceId, next);
    void next
      .finally(() => {
        if (this.locks.get(instanceId) === next) this.locks.delete(instanceId);
      })
      .catch(() => undefined);
    return next;
  }

  /**
   * An instance with no running task may still hold a binding from before this process: return
   * it, only when it is on one of this agent's nodes (another cluster's binding is not ours).
   */
  private async dropLeftoverBinding(o: Observed): Promise<void> {
    try {
      const held = await this.deps.ipam.held({ env: o.env, app: o.app, slot: o.slot });
      if (held && held.state === 'bound' && held.backend === 'swarm' && held.host !== undefined && this.deps.nodes.nodeOf(held.host) !== undefined) {
        await this.deps.ipam.unbind(held.ip, held.instanceId ?? o.instanceId);
        this.deps.log.info({ instanceId: o.instanceId, ip: held.ip }, 'unbound the address of a task that is no longer running');
      }
      this.staleChecked.add(o.instanceId);
    } catch (e) {
      this.deps.log.debug?.({ instanceId: o.instanceId, err: String(e) }, 'leftover binding not checked yet');
    }
  }

  private async bind(o: Observed): Promise<boolean> {
    if (o.state !== 'running' || !o.ip || !o.hostId) return false;
    const req = { pool: o.pool, ip: o.ip, owner: { env: o.env, app: o.app, slot: o.slot }, instanceId: o.instanceId, host: o.hostId };
    try {
      await this.deps.ipam.bind(req);
    } catch (e) {
      if (!(e instanceof PortError) || e.code !== 'IP_TAKEN') {
        this.deps.log.warn({ instanceId: o.instanceId, ip: o.ip, err: String(e) }, 'block.bind failed; retried on the next pass');
        return false;
      }
      // Docker gave the address of a task that is gone to a new one before this agent
      // unbound it: the old binding is stale unless a running task of ours still has it.
      let holder: Observed | undefined;
      try {
        holder = [...(await this.observeAll()).next.values()].find((x) => x.instanceId !== o.instanceId && x.state === 'running' && x.ip === o.ip);
      } catch (e) {
        this.deps.log.warn(
          { instanceId: o.instanceId, ip: o.ip, err: String(e) },
          'block.bind: IP_TAKEN and the swarm cannot be read; retried on the next pass',
        );
        return false;
      }
      if (holder) {
        this.deps.log.error(
          { instanceId: o.instanceId, ip: o.ip, holder: holder.instanceId },
          'two running tasks report one address: left as they are, the binding stays with the first',
        );
        return false;
      }
      try {
        await this.deps.ipam.unbind(o.ip);
        await this.deps.ipam.bind(req);
      } catch (e2) {
        this.deps.log.warn({ instanceId: o.instanceId, ip: o.ip, err: String(e2) }, 'block.bind after a stale binding failed; retried on the next pass');
        return false;
      }
    }
    for (const [id, held] of this.bound) if (id !== o.instanceId && held.ip === o.ip) this.bound.delete(id);
    this.bound.set(o.instanceId, { ip: o.ip, hostId: o.hostId });
    return true;
  }
}

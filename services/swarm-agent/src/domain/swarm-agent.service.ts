import { OrangeryError, type AgentInstance, type AgentInstanceList, type StopInstanceCommand, type SwarmCreateInstanceCommand } from '@orangery/contracts';
import type { DomainLog, EventSink, SwarmEngine } from './ports';
import { hostLabelConstraints, LABEL, planService, resourcesOf, swarmSpecHash } from './service-spec';
import type { SwarmNodes } from './swarm-nodes';
import type { Observed, TaskWatch } from './task-watch';

export interface SwarmAgentSettings {
  cluster: string;
  pidsLimit: number;
  /** how long a create or start waits for the task to run (ORANGERY_SWARM_START_TIMEOUT_SECONDS) */
  startTimeoutMs: number;
  /** how long a stop or remove waits for the task to be gone */
  stopTimeoutMs: number;
  /** how often a wait looks at the task again */
  pollMs: number;
}

export interface SwarmAgentDeps {
  swarm: SwarmEngine;
  nodes: SwarmNodes;
  watch: TaskWatch;
  events: EventSink;
  log: DomainLog;
  sleep: (ms: number) => Promise<void>;
  /** ms on any clock: only differences are used */
  now: () => number;
}

/** Task errors that mean the image is missing on the node (agents pull nothing). */
const NO_IMAGE = /no such image|pull access denied|manifest unknown|repository does not exist/i;

/**
 * The instance commands of every node of the swarm (orangery.agent.<node host>.instance.*).
 * One swarm service per slot, never pinned to a node: swarm runs it where it wants among
 * the nodes that have the pool's network, and moves it when a node fails or drains. So
 * commands act on the instance wherever it is, whichever node's subject they came on, and
 * the reply's hostId says where it runs now.
 */
export class SwarmAgentService {
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(
    private readonly deps: SwarmAgentDeps,
    private readonly settings: SwarmAgentSettings,
  ) {}

  create(hostId: string, cmd: SwarmCreateInstanceCommand): Promise<AgentInstance> {
    return this.serialize(cmd.instanceId, async () => {
      this.requireNode(hostId);
      // refused before anything is looked up or made (INVALID_REQUEST field hostLabels)
      hostLabelConstraints(cmd.hostLabels, this.settings.cluster);
      const wantStart = cmd.start ?? true;
      const existing = await this.deps.swarm.findService(cmd.instanceId);
      if (existing) {
        if (existing.labels[LABEL.specHash] !== swarmSpecHash(cmd)) {
          throw new OrangeryError(
            'INSTANCE_CONFLICT',
            `${cmd.instanceId} already exists in swarm ${this.settings.cluster} with another spec; remove it first`,
            {
              instanceId: cmd.instanceId,
            },
          );
        }
        if (wantStart && existing.replicas === 0) await this.deps.swarm.scaleService(existing.id, 1);
      } else {
        // The pool's network on the nodes first: the service's placement needs its label.
        await this.deps.nodes.ensurePool(cmd.pool);
        const plan = planService(cmd, { pidsLimit: this.settings.pidsLimit, cluster: this.settings.cluster });
        await this.deps.swarm.createService(plan);
        this.deps.log.info({ instanceId: cmd.instanceId, service: plan.name, pool: cmd.pool }, 'swarm service created');
      }
      if (!wantStart) return this.describe(await this.mustObserve(cmd.instanceId), hostId);
      return this.waitRunning(cmd.instanceId, hostId, existing === undefined);
    });
  }

  start(hostId: string, instanceId: string): Promise<AgentInstance> {
    return this.serialize(instanceId, async () => {
      const o = await this.mustObserve(instanceId);
      if (o.service.replicas === 0) await this.deps.swarm.scaleService(o.service.id, 1);
      return this.waitRunning(instanceId, hostId, false);
    });
  }

  /** Scales the service to 0: its task stops, its address is unbound (a start may get another one). */
  stop(hostId: string, cmd: StopInstanceCommand): Promise<AgentInstance> {
    return this.serialize(cmd.instanceId, async () => {
      let o = await this.mustObserve(cmd.instanceId);
      if (o.service.replicas !== 0) await this.deps.swarm.scaleService(o.service.id, 0);
      const deadline = this.deps.now() + (cmd.timeoutSeconds !== undefined ? cmd.timeoutSeconds * 1000 + 5_000 : this.settings.stopTimeoutMs);
      while ((o = await this.mustObserve(cmd.instanceId)).task?.state === 'running' && this.deps.now() < deadline) await this.deps.sleep(this.settings.pollMs);
      await this.deps.watch.pass().catch((e) => this.deps.log.warn({ err: String(e) }, 'watch pass after stop failed'));
      return this.describe(o, hostId);
    });
  }

  /** Removes the service, waits (bounded) until its task is gone, then unbinds its address. */
  remove(hostId: string, instanceId: string): Promise<AgentInstance> {
    return this.serialize(instanceId, async () => {
      const o = await this.mustObserve(instanceId);
      const before = this.describe(o, hostId);
      await this.deps.swarm.removeService(o.service.id);
      const deadline = this.deps.now() + this.settings.stopTimeoutMs;
      // The address goes back only once no container holds it on the wire.
      while ((await this.deps.swarm.tasks(o.service.id)).some((t) => t.state === 'running') && this.deps.now() < deadline) {
        await this.deps.sleep(this.settings.pollMs);
      }
      await this.deps.watch.removedNow(instanceId, o.ip);
      this.deps.events.instance(before.hostId, 'removed', instanceId, { ...(o.ip ? { ip: o.ip } : {}), reason: 'removed on request' });
      return { ...before, state: 'removed' };
    });
  }

  async get(hostId: string, instanceId: string): Promise<AgentInstance> {
    return this.describe(await this.mustObserve(instanceId), hostId);
  }

  /** The instances whose task is (or last was) on this node. */
  list(hostId: string): AgentInstanceList {
    this.requireNode(hostId);
    return { hostId, instances: this.deps.watch.instances.filter((o) => o.hostId === hostId).map((o) => this.describe(o, hostId)) };
  }

  private async waitRunning(instanceId: string, hostId: string, createdNow: boolean): Promise<AgentInstance> {
    const deadline = this.deps.now() + this.settings.startTimeoutMs;
    let o = await this.mustObserve(instanceId);
    for (;;) {
      if (o.state === 'running') {
        await this.deps.watch.bindNow(o);
        return this.describe(o, hostId);
      }
      const err = o.task?.err;
      if (err && NO_IMAGE.test(err)) {
        const reason = `image ${o.service.labels[LABEL.image] ?? ''} is not on swarm node ${o.hostId ?? '?'} (agents pull nothing): ${err}`;
        if (createdNow) await this.undoCreate(o);
        if (o.task) this.deps.watch.failureReported(o.task.id);
        this.deps.events.instance(o.hostId ?? hostId, 'failed', instanceId, { reason, code: 'IMAGE_NOT_FOUND' });
        throw new OrangeryError('IMAGE_NOT_FOUND', reason, { image: o.service.labels[LABEL.image] });
      }
      if (this.deps.now() >= deadline) {
        const reason = `the task of ${instanceId} did not run within ${Math.round(this.settings.startTimeoutMs / 1000)} s (last state ${o.task?.state ?? 'none'}${err ? `: ${err}` : ''})`;
        if (createdNow) await this.undoCreate(o);
        throw new OrangeryError('START_FAILED', reason, { instanceId, taskState: o.task?.state ?? null });
      }
      await this.deps.sleep(this.settings.pollMs);
      // Through the watch's pass (joined when one is running): many creates waiting at once
      // cost the manager one listing per pass, not one each.
      await this.deps.watch.pass().catch((e) => this.deps.log.warn({ err: String(e) }, 'task pass failed'));
      o = this.deps.watch.find(instanceId) ?? (await this.mustObserve(instanceId));
    }
  }

  /** A create that did not come up leaves nothing behind: nothing is half-done. */
  private async undoCreate(o: Observed): Promise<void> {
    try {
      await this.deps.swarm.removeService(o.service.id);
      await this.deps.watch.removedNow(o.instanceId, o.ip);
    } catch (e) {
      this.deps.log.warn({ instanceId: o.instanceId, err: String(e) }, 'could not remove the service of a failed create');
    }
  }

  private async mustObserve(instanceId: string): Promise<Observed> {
    const o = await this.deps.watch.observeService(instanceId);
    if (!o) throw new OrangeryError('NOT_FOUND', `no instance ${instanceId} in swarm ${this.settings.cluster}`, { instanceId });
    return o;
  }

  private requireNode(hostId: string): void {
    if (!this.deps.nodes.nodeOf(hostId)) throw new OrangeryError('NOT_FOUND', `this swarm-agent does not serve host ${hostId}`, { hostId });
  }

  private describe(o: Observed, askedHost: string): AgentInstance {
    return {
      instanceId: o.instanceId,
      env: o.env,
      app: o.app,
      slot: o.slot,
      hostId: o.hostId ?? askedHost,
      backend: 'swarm',
      ...(o.task?.containerId ? { containerId: o.task.containerId } : {}),
      state: o.state,
      ip: o.ip ?? '',
      mac: o.mac ?? '',
      image: o.service.labels[LABEL.image],
      resources: resourcesOf(o.service.labels),
      ...(o.reason ? { reason: o.reason } : {}),
    };
  }

  /** One command at a time per instance, in arrival order. */
  private serialize<T>(instanceId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(instanceId) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    this.chains.set(instanceId, next);
    void next
      .finally(() => {
        if (this.chains.get(instanceId) === next) this.chains.delete(instanceId);
      })
      .catch(() => undefined);
    return next;
  }
}

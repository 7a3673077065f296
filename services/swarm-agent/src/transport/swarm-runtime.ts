import { Inject, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  decode,
  HostGetCommand,
  hostFactsOf,
  InstanceRef,
  ListInstancesCommand,
  QUEUE_GROUPS,
  StopInstanceCommand,
  SUBJECTS,
  SwarmCreateInstanceCommand,
} from '@orangery/contracts';
import { ensureEventsStream, Responder, type Route } from '@orangery/messaging';
import { CONFIG, LOGGER, NATS, PeriodicTasks } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { SwarmAgentConfig } from '../config';
import type { SwarmEngine } from '../domain/ports';
import type { SwarmAgentService } from '../domain/swarm-agent.service';
import type { SwarmNodes } from '../domain/swarm-nodes';
import type { TaskWatch } from '../domain/task-watch';
import type { EventQueue } from '../adapters/event-queue';
import { EVENTS, SWARM, SWARM_AGENT, SWARM_NODES, TASK_WATCH } from '../tokens';

/** One node's subjects: every command acts on the instance wherever swarm runs it. */
export function agentRoutes(hostId: string, agent: SwarmAgentService, nodes: Pick<SwarmNodes, 'factsOf'>): Route[] {
  const s = SUBJECTS.agent;
  return [
    { subject: s.create(hostId), handler: (b) => agent.create(hostId, decode(SwarmCreateInstanceCommand, b)) },
    { subject: s.start(hostId), handler: (b) => agent.start(hostId, decode(InstanceRef, b).instanceId) },
    { subject: s.stop(hostId), handler: (b) => agent.stop(hostId, decode(StopInstanceCommand, b)) },
    { subject: s.remove(hostId), handler: (b) => agent.remove(hostId, decode(InstanceRef, b).instanceId) },
    { subject: s.get(hostId), handler: (b) => agent.get(hostId, decode(InstanceRef, b).instanceId) },
    { subject: s.list(hostId), handler: async (b) => (decode(ListInstancesCommand, b), agent.list(hostId)) },
    { subject: s.hostGet(hostId), handler: async (b) => (decode(HostGetCommand, b), hostFactsOf(nodes.factsOf(hostId))) },
  ];
}

/** The manager's last full answer is recent enough to heartbeat on: within 3 watch periods and 2 heartbeats (at least 3 s). */
export function managerFresh(ageMs: number, config: Pick<SwarmAgentConfig, 'watchMs' | 'heartbeatSeconds'>): boolean {
  return ageMs <= Math.max(3_000, 3 * config.watchMs, 2 * config.heartbeatSeconds * 1000);
}

/**
 * Timers and publishing only: the node inventory (each node's subjects served while it is
 * in the swarm), the networks pass, heartbeats, and the task watch. Decisions are the domain's.
 */
export class SwarmRuntime implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly responders = new Map<string, Responder>();
  private readonly periodic = new PeriodicTasks((err) => this.logger.warn({ err: String(err) }, 'periodic task failed'));
  /** when the manager last answered a full read (the task watch); heartbeats vouch for no older view */
  private managerAnsweredAt = performance.now();
  private silentLogged = false;

  constructor(
    @Inject(CONFIG) private readonly config: SwarmAgentConfig,
    @Inject(NATS) private readonly nc: NatsConnection,
    @Inject(SWARM) private readonly swarm: SwarmEngine,
    @Inject(SWARM_AGENT) private readonly agent: SwarmAgentService,
    @Inject(SWARM_NODES) private readonly nodes: SwarmNodes,
    @Inject(TASK_WATCH) private readonly watch: TaskWatch,
    @Inject(EVENTS) private readonly events: EventQueue,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    await ensureEventsStream(this.nc, this.logger);
    await this.refreshInventory();
    // the first pass adopts what runs (instance.running with adopted: true) and learns the pools
    await this.watch.pass().catch((err) => this.logger.warn({ err: String(err) }, 'first task pass failed; retried'));
    await this.nodes.refreshNetworks().catch((err) => this.logger.warn({ err: String(err) }, 'networks pass failed; retried'));
    this.periodic.every(this.config.heartbeatSeconds * 1000, async () => this.publishHeartbeats());
    this.periodic.every(this.config.watchMs, async () => {
      await this.watch.pass();
      this.managerAnsweredAt = performance.now();
    });
    this.periodic.every(this.config.inventorySeconds * 1000, async () => {
      await this.refreshInventory();
      await this.nodes.refreshNetworks();
    });
    this.logger.info({ cluster: this.config.cluster, hosts: this.nodes.hostIds, pools: this.nodes.knownPools }, 'swarm nodes registered');
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.periodic.stop();
    await Promise.all([...this.responders.values()].map((r) => r.drain()));
    await this.events.flush(3_000);
  }

  private async refreshInventory(): Promise<void> {
    const { added, removed } = this.nodes.inventory(await this.swarm.nodes());
    for (const hostId of added) {
      const responder = new Responder(this.nc, QUEUE_GROUPS.agent(hostId), this.logger);
      responder.serve(agentRoutes(hostId, this.agent, this.nodes));
      this.responders.set(hostId, responder);
    }
    for (const hostId of removed) {
      const responder = this.responders.get(hostId);
      this.responders.delete(hostId);
      await responder?.drain();
    }
  }

  private publishHeartbeats(): void {
    // Heartbeats vouch for what the manager says now: while it does not answer, none go out
    // (the scheduler sees the nodes silent: unknown, nothing moves; swarm owns restarts).
    if (!managerFresh(performance.now() - this.managerAnsweredAt, this.config)) {
      if (!this.silentLogged)
        this.logger.warn({ manager: this.config.manager }, 'the swarm manager does not answer; heartbeats stop until it does (no task is touched)');
      this.silentLogged = true;
      return;
    }
    if (this.silentLogged) this.logger.info({}, 'the swarm manager answers again; heartbeats resume');
    this.silentLogged = false;
    try {
      for (const hb of this.nodes.heartbeats(this.watch.allocatedByHost(), new Date())) this.nc.publish(SUBJECTS.heartbeat(hb.hostId), JSON.stringify(hb));
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'heartbeats not sent');
    }
  }
}

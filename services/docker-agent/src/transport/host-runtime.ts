import { Inject, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  CreateInstanceCommand,
  invalidRequest,
  type ContainerCreateCommand,
  decode,
  HostGetCommand,
  type HostFacts,
  hostFactsOf,
  InstanceRef,
  ListInstancesCommand,
  ProbeWireCommand,
  QUEUE_GROUPS,
  StopInstanceCommand,
  SUBJECTS,
} from '@orangery/contracts';
import { ensureEventsStream, Responder, type Route } from '@orangery/messaging';
import { CONFIG, LOGGER, NATS, PeriodicTasks } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { AgentConfig } from '../config';
import type { AgentService } from '../domain/agent.service';
import type { HostMonitor } from '../domain/host-monitor';
import type { InstanceEvents } from '../domain/instance-events';
import type { Engine, EngineFacts } from '../domain/ports';
import type { WireProbeService } from '../domain/wire-probe';
import type { EventQueue } from '../adapters/event-queue';
import type { HostShim } from '../adapters/host-network';
import { AGENT_SERVICE, ENGINE, ENGINE_FACTS, EVENTS, HOST_MONITOR, HOST_ROUTES, INSTANCE_EVENTS, WIRE_PROBE } from '../tokens';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function agentRoutes(hostId: string, agent: AgentService, wire: Pick<WireProbeService, 'probeWire'>, facts: () => HostFacts): Route[] {
  const s = SUBJECTS.agent;
  return [
    { subject: s.create(hostId), handler: (b) => agent.create(containerCommand(decode(CreateInstanceCommand, b))) },
    { subject: s.start(hostId), handler: (b) => agent.start(decode(InstanceRef, b).instanceId) },
    { subject: s.stop(hostId), handler: (b) => agent.stop(decode(StopInstanceCommand, b)) },
    { subject: s.remove(hostId), handler: (b) => agent.remove(decode(InstanceRef, b).instanceId) },
    { subject: s.get(hostId), handler: (b) => agent.get(decode(InstanceRef, b).instanceId) },
    { subject: s.list(hostId), handler: async (b) => (decode(ListInstancesCommand, b), agent.list()) },
    { subject: s.probe(hostId), handler: async (b) => wire.probeWire(decode(ProbeWireCommand, b)) },
    { subject: s.hostGet(hostId), handler: async (b) => (decode(HostGetCommand, b), hostFactsOf(facts())) },
  ];
}

/**
 * What the agent does on its own once NATS is there: adoption and registration at start,
 * then timers and publishing only: the heartbeat and usage measurement (HostMonitor), the
 * disk watcher (HostMonitor), and the engine's event stream fed to InstanceEvents. Every
 * decision is the domain's. The self-fence does not run here: it runs from before the
 * first NATS connection (see AgentModule) and never depends on NATS.
 */
export class HostRuntime implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private responder: Responder | undefined;
  private readonly periodic = new PeriodicTasks((err) => this.logger.warn({ err: String(err) }, 'periodic task failed'));
  private readonly following = new AbortController();

  constructor(
    @Inject(CONFIG) private readonly config: AgentConfig,
    @Inject(NATS) private readonly nc: NatsConnection,
    @Inject(ENGINE) private readonly engine: Engine,
    @Inject(AGENT_SERVICE) private readonly agent: AgentService,
    @Inject(EVENTS) private readonly events: EventQueue,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(ENGINE_FACTS) private readonly engineFacts: EngineFacts,
    @Inject(HOST_MONITOR) private readonly monitor: HostMonitor,
    @Inject(INSTANCE_EVENTS) private readonly instanceEvents: InstanceEvents,
    @Inject(HOST_ROUTES) private readonly shim: HostShim | null,
    @Inject(WIRE_PROBE) private readonly wire: WireProbeService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    const engineFacts = this.engineFacts;
    if (this.config.reservedCpus >= engineFacts.cpus) {
      this.logger.warn(
        { cpus: engineFacts.cpus, reserved: this.config.reservedCpus },
        'ORANGERY_RESERVED_CPUS leaves no core for instances; reserving all but one',
      );
    }
    const facts = this.monitor.facts;
    await ensureEventsStream(this.nc, this.logger);
    // Adoption starts nothing: what is stopped stays stopped (the control plane decides).
    const adopted = await this.agent.adopt();
    this.instanceEvents.adopted(adopted.running);
    this.logger.info({ instances: adopted.instances, running: adopted.running.length }, 'adopted the instances on the engine');
    this.responder = new Responder(this.nc, QUEUE_GROUPS.agent(this.config.hostId), this.logger);
    this.responder.serve(agentRoutes(this.config.hostId, this.agent, this.wire, () => this.monitor.facts));
    // After the routes: the scheduler takes host.registered as a hint only and asks
    // orangery.agent.<host>.host.get for the facts, which must find a responder by then.
    this.events.host('registered', { ...facts, engine: engineFacts.version, uplink: this.config.uplink });
    this.monitor.refreshUsage();
    // The heartbeat never waits for the engine: it sends the latest measurement, and the
    // next measurement is started beside it (engine calls with timeouts).
    this.periodic.every(this.config.heartbeatSeconds * 1000, async () => {
      this.publishHeartbeat();
      this.monitor.refreshUsage();
    });
    this.periodic.every(this.config.diskCheckSeconds * 1000, () => this.monitor.checkDisks());
    void this.followEngineEvents();
    this.logger.info({ hostId: this.config.hostId, capacity: facts.capacity, uplink: this.config.uplink }, 'host registered');
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.instanceEvents.stop();
    this.periodic.stop();
    this.following.abort();
    await this.responder?.drain();
    await this.events.flush(3_000);
    await this.shim?.remove();
  }

  private publishHeartbeat(): void {
    // A buffered publish: while NATS is away the client queues or drops it, nothing waits.
    try {
      this.nc.publish(SUBJECTS.heartbeat(this.config.hostId), JSON.stringify(this.monitor.heartbeat()));
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'heartbeat not sent');
    }
  }

  /** Follows the engine's stream for as long as the agent runs, again a second after it breaks. */
  private async followEngineEvents(): Promise<void> {
    const signal = this.following.signal;
    while (!signal.aborted) {
      try {
        this.instanceEvents.resubscribed();
        for await (const e of this.engine.events(signal)) this.instanceEvents.on(e);
      } catch (err) {
        this.logger.debug({ err: String(err) }, 'engine events unavailable');
      }
      if (!signal.aborted) await sleep(1_000);
    }
  }
}

/** The command schema serves both backends: a container needs an image (a template is for VMs). */
function containerCommand(cmd: CreateInstanceCommand): ContainerCreateCommand {
  if (cmd.image === undefined) throw invalidRequest('image', 'is required: a container is made from an image');
  if (cmd.template !== undefined) throw invalidRequest('template', 'is for VMs: a docker-agent makes containers from an image');
  return cmd as ContainerCreateCommand;
}

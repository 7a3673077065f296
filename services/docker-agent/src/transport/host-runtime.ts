import { Inject, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  CreateInstanceCommand,
  invalidRequest,
  type ContainerCreateCommand,
  decode,
  InstanceRef,
  ListInstancesCommand,
  ProbeWireCommand,
  QUEUE_GROUPS,
  StopInstanceCommand,
  SUBJECTS,
  type HostFacts,
} from '@orangery/contracts';
import { ensureEventsStream, Responder, type Route } from '@orangery/messaging';
import { CONFIG, LOGGER, NATS, PeriodicTasks } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { AgentConfig } from '../config';
import type { AgentService } from '../domain/agent.service';
import { diskLevel, LABEL, parentInterface } from '../domain/container-spec';
import { heartbeatOf, hostFactsOf, type UsageMeter } from '../domain/host-report';
import type { SelfFence } from '../domain/self-fence';
import type { WireProbeService } from '../domain/wire-probe';
import { HostShim } from '../adapters/host-network';
import type { Engine, EngineFacts } from '../domain/ports';
import type { DockerEngine } from '../adapters/docker-engine';
import type { EventQueue } from '../adapters/event-queue';
import { AGENT_SERVICE, ENGINE, ENGINE_FACTS, EVENTS, SELF_FENCE, USAGE_METER, WIRE_PROBE } from '../tokens';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function agentRoutes(hostId: string, agent: AgentService, wire: Pick<WireProbeService, 'probeWire'>): Route[] {
  const s = SUBJECTS.agent;
  return [
    { subject: s.create(hostId), handler: (b) => agent.create(containerCommand(decode(CreateInstanceCommand, b))) },
    { subject: s.start(hostId), handler: (b) => agent.start(decode(InstanceRef, b).instanceId) },
    { subject: s.stop(hostId), handler: (b) => agent.stop(decode(StopInstanceCommand, b)) },
    { subject: s.remove(hostId), handler: (b) => agent.remove(decode(InstanceRef, b).instanceId) },
    { subject: s.get(hostId), handler: (b) => agent.get(decode(InstanceRef, b).instanceId) },
    { subject: s.list(hostId), handler: async (b) => (decode(ListInstancesCommand, b), agent.list()) },
    { subject: s.probe(hostId), handler: async (b) => wire.probeWire(decode(ProbeWireCommand, b)) },
  ];
}

/**
 * What the agent does on its own once NATS is there: adoption and registration at start,
 * heartbeats, the disk watcher and engine events. Timers and publishing only; decisions
 * live in the domain (AgentService, UsageMeter, diskLevel). The self-fence does not run
 * here: it runs from before the first NATS connection (see AgentModule) and never
 * depends on NATS.
 */
export class HostRuntime implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private responder: Responder | undefined;
  private facts: HostFacts | undefined;
  private readonly periodic = new PeriodicTasks((err) => this.logger.warn({ err: String(err) }, 'periodic task failed'));
  private stopping = false;
  private seq = 0;
  private diskUsedMb = 0;
  private usageRefresh: Promise<void> | undefined;
  private readonly diskLevels = new Map<string, string>();
  private eventsAbort: (() => void) | undefined;
  private readonly shim: HostShim | undefined;

  constructor(
    @Inject(CONFIG) private readonly config: AgentConfig,
    @Inject(NATS) private readonly nc: NatsConnection,
    @Inject(ENGINE) private readonly engine: Engine & Pick<DockerEngine, 'docker'>,
    @Inject(AGENT_SERVICE) private readonly agent: AgentService,
    @Inject(EVENTS) private readonly events: EventQueue,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(ENGINE_FACTS) private readonly engineFacts: EngineFacts,
    @Inject(SELF_FENCE) private readonly selfFence: SelfFence,
    @Inject(USAGE_METER) private readonly usage: UsageMeter,
    @Inject(WIRE_PROBE) private readonly wire: WireProbeService,
  ) {
    this.shim = config.hostShimIp ? new HostShim(config.hostShimIp) : undefined;
  }

  /** Host shim routes follow the containers: one /32 per running local instance. */
  private shimRoute(labels: Record<string, string>, up: boolean): void {
    if (!this.shim || !labels[LABEL.ip]) return;
    const parent = parentInterface(this.config.uplink, Number(labels[LABEL.vlan] ?? 0));
    const ip = labels[LABEL.ip];
    (up ? this.shim.routeTo(parent, ip) : this.shim.unroute(parent, ip)).catch((err: unknown) =>
      this.logger.warn({ err: String(err), ip }, 'host shim route failed'),
    );
  }

  async onApplicationBootstrap(): Promise<void> {
    const engineFacts = this.engineFacts;
    if (this.config.reservedCpus >= engineFacts.cpus) {
      this.logger.warn({ cpus: engineFacts.cpus, reserved: this.config.reservedCpus }, 'ORANGERY_RESERVED_CPUS leaves no core for instances; reserving all but one');
    }
    this.facts = hostFactsOf(this.config, engineFacts);
    await ensureEventsStream(this.nc, this.logger);
    // Adoption starts nothing: what is stopped stays stopped (the control plane decides).
    const adopted = await this.agent.adopt();
    for (const c of adopted.running) this.shimRoute(c.labels, true);
    this.logger.info({ instances: adopted.instances, running: adopted.running.length }, 'adopted the instances on the engine');
    this.events.host('registered', { ...this.facts, engine: engineFacts.version, uplink: this.config.uplink });
    this.responder = new Responder(this.nc, QUEUE_GROUPS.agent(this.config.hostId), this.logger);
    this.responder.serve(agentRoutes(this.config.hostId, this.agent, this.wire));
    this.refreshUsage();
    // The heartbeat never waits for the engine: it sends the latest measurement, and the
    // next measurement is started beside it (engine calls with timeouts).
    this.periodic.every(this.config.heartbeatSeconds * 1000, async () => {
      this.heartbeat();
      this.refreshUsage();
    });
    this.periodic.every(this.config.diskCheckSeconds * 1000, () => this.checkDisks());
    void this.followEngineEvents();
    this.logger.info({ hostId: this.config.hostId, capacity: this.facts.capacity, uplink: this.config.uplink }, 'host registered');
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    this.periodic.stop();
    this.eventsAbort?.();
    await this.responder?.drain();
    await this.events.flush(3_000);
    await this.shim?.remove();
  }

  private heartbeat(): void {
    if (!this.facts) return;
    const hb = heartbeatOf(this.facts, this.seq++, this.usage.latest, { fenced: this.selfFence.fenced, isolated: this.selfFence.isolated }, new Date());
    // A buffered publish: while NATS is away the client queues or drops it, nothing waits.
    try {
      this.nc.publish(SUBJECTS.heartbeat(this.config.hostId), JSON.stringify(hb));
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'heartbeat not sent');
    }
  }

  private refreshUsage(): void {
    if (this.usageRefresh) return;
    this.usageRefresh = this.usage
      .refresh(this.diskUsedMb)
      .catch((err: unknown) => this.logger.debug({ err: String(err) }, 'usage not measured; the heartbeat keeps the last figures'))
      .finally(() => (this.usageRefresh = undefined));
  }

  /** overlayfs has no per-container quota: measure the writable layer and act on it. */
  private async checkDisks(): Promise<void> {
    const all = await this.engine.listManaged(true);
    let used = 0;
    for (const c of all) {
      used += c.sizeRw ?? 0;
      const instanceId = c.labels[LABEL.instanceId] ?? c.id;
      const quota = c.labels[LABEL.diskMb] ? Number(c.labels[LABEL.diskMb]) : undefined;
      const level = c.engineState === 'running' ? diskLevel(c.sizeRw ?? 0, quota) : 'ok';
      const before = this.diskLevels.get(instanceId) ?? 'ok';
      this.diskLevels.set(instanceId, level);
      if (level === before || level === 'ok') continue;
      const data = { usedMb: Math.round((c.sizeRw ?? 0) / (1024 * 1024)), quotaMb: quota, policy: this.config.diskPolicy };
      if (level === 'warning') {
        this.events.instance({ what: 'disk_warning', instanceId, data });
      } else {
        this.events.instance({ what: 'disk_exceeded', instanceId, data });
        this.logger.warn({ instanceId, ...data }, 'disk quota exceeded');
        if (this.config.diskPolicy === 'stop') await this.agent.stop({ instanceId }).catch(() => undefined);
      }
    }
    this.diskUsedMb = Math.round(used / (1024 * 1024));
  }

  /** Engine events of our containers become instance events (exits, OOM kills, removals). */
  private async followEngineEvents(): Promise<void> {
    while (!this.stopping) {
      try {
        const stream = (await this.engine.docker.getEvents({
          filters: JSON.stringify({ type: ['container'], label: [`${LABEL.managed}=true`], event: ['start', 'die', 'oom', 'destroy'] }),
        })) as NodeJS.ReadableStream & { destroy?: () => void };
        this.eventsAbort = () => stream.destroy?.();
        const oom = new Set<string>();
        let buf = '';
        await new Promise<void>((resolve) => {
          stream.on('data', (chunk: Buffer) => {
            buf += chunk.toString();
            let nl: number;
            while ((nl = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, nl).trim();
              buf = buf.slice(nl + 1);
              if (line) this.onEngineEvent(JSON.parse(line) as EngineEvent, oom);
            }
          });
          stream.on('end', resolve);
          stream.on('error', resolve);
          stream.on('close', resolve);
        });
      } catch (err) {
        this.logger.debug({ err: String(err) }, 'engine events unavailable');
      }
      if (!this.stopping) await sleep(1_000);
    }
  }

  private onEngineEvent(e: EngineEvent, oom: Set<string>): void {
    const labels = e.Actor?.Attributes ?? {};
    const instanceId = labels[LABEL.instanceId];
    if (!instanceId || !e.id) return;
    const base = { containerId: e.id, ip: labels[LABEL.ip], mac: labels[LABEL.mac] };
    switch (e.Action) {
      case 'start':
        this.shimRoute(labels, true);
        this.events.instance({ what: 'running', instanceId, data: base });
        break;
      case 'oom':
        oom.add(e.id);
        break;
      case 'die': {
        this.shimRoute(labels, false);
        const exitCode = Number(labels['exitCode'] ?? -1);
        const expected = this.agent.expectedStops.delete(e.id);
        if (expected) {
          this.events.instance({ what: 'stopped', instanceId, data: { ...base, exitCode, reason: 'stopped on request' } });
          break;
        }
        const oomKilled = oom.delete(e.id);
        if (exitCode === 0 && !oomKilled) {
          this.events.instance({ what: 'stopped', instanceId, data: { ...base, exitCode, reason: 'exited by itself' } });
          break;
        }
        this.events.instance({ what: 'failed', instanceId, data: { ...base, exitCode, ...(oomKilled ? { reason: 'killed by the kernel: out of memory' } : {}) } });
        // A successful restart shows up as the engine's next `start` (instance.running).
        void this.agent
          .restartAfterFailure(e.id, instanceId, () => this.agent.fenced || this.stopping)
          .catch((err: unknown) => this.logger.warn({ instanceId, err: String(err) }, 'restart after failure failed'));
        break;
      }
      case 'destroy':
        this.events.instance({ what: 'removed', instanceId, data: base });
        break;
    }
  }
}

interface EngineEvent {
  id?: string;
  Action?: string;
  Actor?: { Attributes?: Record<string, string> };
}

/** The command schema serves both backends: a container needs an image (a template is for VMs). */
function containerCommand(cmd: CreateInstanceCommand): ContainerCreateCommand {
  if (cmd.image === undefined) throw invalidRequest('image', 'is required: a container is made from an image');
  if (cmd.template !== undefined) throw invalidRequest('template', 'is for VMs: a docker-agent makes containers from an image');
  return cmd as ContainerCreateCommand;
}

import { Inject, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { agentInboxPrefix } from '@orangery/contracts';
import { CONFIG, LOGGER, NATS, natsWithReadiness, readiness } from '@orangery/service-kit';
import { countBy, scrapedGauge, type Logger } from '@orangery/telemetry';
import type { AgentConfig } from './config';
import { AgentService } from './domain/agent.service';
import { parentInterface } from './domain/container-spec';
import { HostMonitor } from './domain/host-monitor';
import { hostFactsOf, UsageMeter } from './domain/host-report';
import { InstanceEvents } from './domain/instance-events';
import type { EngineFacts, MonotonicClock } from './domain/ports';
import { SelfFence } from './domain/self-fence';
import { WireProbeService } from './domain/wire-probe';
import { DockerEngine, waitForEngineFacts } from './adapters/docker-engine';
import { ArpingProbe } from './adapters/arp-probe';
import { GratuitousArp, HostShim, SysfsLinkState } from './adapters/host-network';
import { EventQueue } from './adapters/event-queue';
import { HostRuntime } from './transport/host-runtime';
import { IsolationWatch } from './transport/isolation-watch';
import { AGENT_SERVICE, ENGINE, ENGINE_FACTS, EVENTS, HOST_MONITOR, HOST_ROUTES, INSTANCE_EVENTS, SELF_FENCE, USAGE_METER, WIRE_PROBE } from './tokens';

/** Engine calls on the heartbeat, fence and probe paths give up after this. */
const ENGINE_TIMEOUT_MS = 2_000;
/** How often the self-fence samples the wire. */
const ISOLATION_CHECK_MS = 1_000;
/** wire.probe: probes in flight at once. */
const WIRE_PROBE_CONCURRENCY = 32;
const ISOLATION_WATCH = Symbol('ISOLATION_WATCH');

class Connections implements OnApplicationShutdown {
  constructor(@Inject(NATS) private readonly nc: NatsConnection) {}

  async onApplicationShutdown(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
  }
}

@Module({})
export class AgentModule {
  static forRoot(config: AgentConfig, logger: Logger): DynamicModule {
    const garp = new GratuitousArp((msg, fields) => logger.warn(fields, msg));
    const engine = new DockerEngine(config.dockerHost, (pid, ip) => garp.announce(pid, ip));
    const probe = new ArpingProbe({ windowMs: config.arpProbeMs });
    const link = new SysfsLinkState();
    // performance.now: a wall-clock step (NTP, an operator) must neither fence nor delay a fence.
    const clock: MonotonicClock = { now: () => performance.now() };
    return {
      module: AgentModule,
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
        {
          provide: ENGINE,
          useFactory: () => {
            readiness.set('engine', () => engine.facts().then(() => undefined));
            return engine;
          },
        },
        // Before NATS: the self-fence may have events to queue before the first connection.
        { provide: EVENTS, useFactory: () => new EventQueue(config.hostId, logger) },
        {
          provide: ENGINE_FACTS,
          useFactory: () => waitForEngineFacts(engine, logger, config.dockerHost),
        },
        {
          provide: AGENT_SERVICE,
          inject: [EVENTS, ENGINE_FACTS],
          // Reservations apply to the CPUs the engine reports; one core always stays usable.
          useFactory: (events: EventQueue, facts: EngineFacts) => {
            const agent = new AgentService(engine, probe, events, {
              hostId: config.hostId,
              uplink: config.uplink,
              reservedCpus: Math.min(config.reservedCpus, facts.cpus - 1),
              totalCpus: facts.cpus,
              restartMaxRetries: config.restartMaxRetries,
              stopTimeoutSeconds: config.stopTimeoutSeconds,
              pidsLimit: config.pidsLimit,
              engineTimeoutMs: ENGINE_TIMEOUT_MS,
            });
            scrapedGauge('orangery_agent_instances', "Instances on this agent's host, by state", ['state'], async () =>
              countBy((await agent.list()).instances.map((i) => i.state)).map(([state, value]) => ({ labels: { state }, value })),
            );
            return agent;
          },
        },
        {
          provide: SELF_FENCE,
          inject: [AGENT_SERVICE, EVENTS, ENGINE_FACTS],
          useFactory: (agent: AgentService, events: EventQueue, facts: EngineFacts) =>
            new SelfFence(
              {
                agent,
                engine,
                probe,
                link,
                events,
                clock,
                wallTime: () => new Date(),
                log: logger,
                onRecovered: (fencedAt) =>
                  events.host('registered', { ...hostFactsOf(config, facts), engine: facts.version, uplink: config.uplink, reregistered: true, fencedAt }),
              },
              {
                uplink: config.uplink,
                fenceAfterMs: config.fenceAfterSeconds * 1000,
                checkIntervalMs: ISOLATION_CHECK_MS,
                engineTimeoutMs: ENGINE_TIMEOUT_MS,
                probeTimeoutMs: config.arpProbeMs + 1_500,
                addresses: config.isolationAddresses?.map((a) => ({ ip: a.ip, iface: parentInterface(config.uplink, a.vlan) })),
                stopGraceSeconds: 2,
              },
            ),
        },
        {
          provide: ISOLATION_WATCH,
          inject: [SELF_FENCE],
          useFactory: (selfFence: SelfFence) => new IsolationWatch(selfFence, logger, ISOLATION_CHECK_MS),
        },
        {
          provide: NATS,
          inject: [ISOLATION_WATCH, EVENTS],
          useFactory: async (watch: IsolationWatch, events: EventQueue) => {
            // The self-fence runs from here on, whether NATS is reachable or not: an agent
            // restarted on an isolated network fences without ever connecting, and one cut
            // from NATS alone keeps its instances running.
            watch.start();
            const nc = await natsWithReadiness(config.natsUrl, `docker-agent-${config.hostId}`, logger, agentInboxPrefix(config.hostId));
            events.attach(nc);
            return nc;
          },
        },
        { provide: USAGE_METER, useFactory: () => new UsageMeter(engine, clock, ENGINE_TIMEOUT_MS, config.usageSeconds * 1000) },
        {
          provide: HOST_MONITOR,
          inject: [AGENT_SERVICE, USAGE_METER, SELF_FENCE, EVENTS, ENGINE_FACTS],
          useFactory: (agent: AgentService, usage: UsageMeter, fence: SelfFence, events: EventQueue, facts: EngineFacts) =>
            new HostMonitor({ engine, agent, usage, fence, events, wallTime: () => new Date(), log: logger }, hostFactsOf(config, facts), {
              diskPolicy: config.diskPolicy,
            }),
        },
        // Routes from the host to its own instances, when ORANGERY_HOST_SHIM_IP asks for them.
        { provide: HOST_ROUTES, useValue: config.hostShimIp ? new HostShim(config.hostShimIp) : null },
        {
          provide: INSTANCE_EVENTS,
          inject: [AGENT_SERVICE, EVENTS, HOST_ROUTES],
          useFactory: (agent: AgentService, events: EventQueue, routes: HostShim | null) =>
            new InstanceEvents({ agent, events, routes: routes ?? undefined, log: logger }, { uplink: config.uplink }),
        },
        {
          provide: WIRE_PROBE,
          useFactory: () =>
            new WireProbeService(engine, probe, link, {
              hostId: config.hostId,
              uplink: config.uplink,
              concurrency: WIRE_PROBE_CONCURRENCY,
              engineTimeoutMs: ENGINE_TIMEOUT_MS,
            }),
        },
        Connections,
        HostRuntime,
      ],
    };
  }
}

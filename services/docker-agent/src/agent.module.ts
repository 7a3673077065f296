import { Inject, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { agentInboxPrefix } from '@orangery/contracts';
import { connectNats, EventPublisher } from '@orangery/messaging';
import { CONFIG, LOGGER, NATS, replicaId } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { AgentConfig } from './config';
import { AgentService } from './domain/agent.service';
import { DockerEngine, waitForEngineFacts } from './adapters/docker-engine';
import type { EngineFacts } from './domain/ports';
import { ArpingProbe, GratuitousArp } from './adapters/host-network';
import { EventQueue } from './adapters/event-queue';
import { HostRuntime } from './transport/host-runtime';
import { AGENT_SERVICE, ENGINE, ENGINE_FACTS, EVENTS } from './tokens';

class Connections implements OnApplicationShutdown {
  constructor(@Inject(NATS) private readonly nc: NatsConnection) {}

  async onApplicationShutdown(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
  }
}

/** Stops every running managed container: no contact with NATS since the agent started. */
async function fenceBeforeContact(engine: DockerEngine, logger: Logger): Promise<void> {
  try {
    const running = (await engine.listManaged()).filter((c) => c.engineState === 'running');
    logger.error({ instances: running.length }, 'no contact with NATS since start: self-fencing, stopping every instance');
    await Promise.all(running.map((c) => engine.stop(c.id, 2).catch(() => undefined)));
  } catch (err) {
    logger.error({ err: String(err) }, 'self-fence before first contact failed');
  }
}

@Module({})
export class AgentModule {
  static forRoot(config: AgentConfig, logger: Logger): DynamicModule {
    const garp = new GratuitousArp((msg, fields) => logger.warn(fields, msg));
    const engine = new DockerEngine(config.dockerHost, (pid, ip) => garp.announce(pid, ip));
    return {
      module: AgentModule,
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
        { provide: ENGINE, useValue: engine },
        {
          provide: NATS,
          useFactory: async () => {
            // An agent restarted during a partition must fence too: if NATS stays out of
            // reach for fenceAfter from the start, what runs on the engine is stopped.
            const fence = setTimeout(() => void fenceBeforeContact(engine, logger), config.fenceAfterSeconds * 1000);
            try {
              return await connectNats({
                servers: config.natsUrl,
                name: replicaId(`docker-agent-${config.hostId}`),
                logger,
                inboxPrefix: agentInboxPrefix(config.hostId),
              });
            } finally {
              clearTimeout(fence);
            }
          },
        },
        {
          provide: EVENTS,
          inject: [NATS],
          useFactory: (nc: NatsConnection) => new EventQueue(new EventPublisher(nc), config.hostId, logger),
        },
        {
          provide: ENGINE_FACTS,
          useFactory: () => waitForEngineFacts(engine, logger, config.dockerHost),
        },
        {
          provide: AGENT_SERVICE,
          inject: [EVENTS, ENGINE_FACTS],
          // Reservations apply to the CPUs the engine reports; one core always stays usable.
          useFactory: (events: EventQueue, facts: EngineFacts) =>
            new AgentService(engine, new ArpingProbe(config.arpProbeSeconds), events, {
              hostId: config.hostId,
              uplink: config.uplink,
              reservedCpus: Math.min(config.reservedCpus, facts.cpus - 1),
              totalCpus: facts.cpus,
              restartMaxRetries: config.restartMaxRetries,
              stopTimeoutSeconds: config.stopTimeoutSeconds,
            }),
        },
        Connections,
        HostRuntime,
      ],
    };
  }
}

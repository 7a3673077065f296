import { Inject, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { agentInboxPrefix } from '@orangery/contracts';
import { connectNats, EventPublisher } from '@orangery/messaging';
import { CONFIG, LOGGER, NATS, replicaId } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { AgentConfig } from './config';
import { AgentService } from './domain/agent.service';
import { DockerEngine } from './adapters/docker-engine';
import { ArpingProbe } from './adapters/host-network';
import { EventQueue } from './adapters/event-queue';
import { HostRuntime } from './transport/host-runtime';
import { AGENT_SERVICE, ENGINE, EVENTS } from './tokens';

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
    const engine = new DockerEngine(config.dockerHost);
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
          provide: AGENT_SERVICE,
          inject: [EVENTS],
          useFactory: async (events: EventQueue) => {
            // The CPU count comes from the engine; reservations apply to what it reports.
            let totalCpus = 0;
            for (let delay = 250; totalCpus === 0; delay = Math.min(delay * 2, 5_000)) {
              totalCpus = await engine.facts().then((f) => f.cpus, () => 0);
              if (totalCpus === 0) {
                logger.warn({ dockerHost: config.dockerHost }, 'container engine not reachable yet; retrying');
                await new Promise((r) => setTimeout(r, delay));
              }
            }
            return new AgentService(engine, new ArpingProbe(config.arpProbeSeconds), events, {
              hostId: config.hostId,
              uplink: config.uplink,
              reservedCpus: Math.min(config.reservedCpus, totalCpus - 1),
              totalCpus,
              restartMaxRetries: config.restartMaxRetries,
              stopTimeoutSeconds: config.stopTimeoutSeconds,
            });
          },
        },
        Connections,
        HostRuntime,
      ],
    };
  }
}

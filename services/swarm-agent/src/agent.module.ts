import { Inject, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { agentInboxPrefix } from '@orangery/contracts';
import { EventPublisher } from '@orangery/messaging';
import { CONFIG, LOGGER, NATS, natsWithReadiness, readiness } from '@orangery/service-kit';
import { countBy, scrapedGauge, type Logger } from '@orangery/telemetry';
import type { SwarmAgentConfig } from './config';
import type { BlockIpam, NodeEngines, SwarmEngine } from './domain/ports';
import { SwarmAgentService } from './domain/swarm-agent.service';
import { SwarmNodes } from './domain/swarm-nodes';
import { TaskWatch } from './domain/task-watch';
import { EventQueue } from './adapters/event-queue';
import { NatsBlockIpam } from './adapters/nats-block-ipam';
import { SwarmRuntime } from './transport/swarm-runtime';
import { EVENTS, IPAM_BLOCKS, NODE_ENGINES, SWARM, SWARM_AGENT, SWARM_NODES, TASK_WATCH } from './tokens';

class Connections implements OnApplicationShutdown {
  constructor(@Inject(NATS) private readonly nc: NatsConnection) {}

  async onApplicationShutdown(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

@Module({})
export class SwarmAgentModule {
  /** `swarm` answered main's preflight (a manager of a swarm); `engines` reaches the nodes' own engines. */
  static forRoot(config: SwarmAgentConfig, logger: Logger, swarm: SwarmEngine, engines: NodeEngines, engineVersion: string): DynamicModule {
    return {
      module: SwarmAgentModule,
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
        {
          provide: SWARM,
          useFactory: () => {
            readiness.set('swarm-manager', () => swarm.about().then(() => undefined));
            return swarm;
          },
        },
        { provide: NODE_ENGINES, useValue: engines },
        {
          provide: NATS,
          useFactory: () =>
            natsWithReadiness(
              config.natsUrl,
              `swarm-agent-${config.cluster}`,
              logger,
              config.agentId !== undefined ? agentInboxPrefix(config.agentId) : undefined,
            ),
        },
        { provide: EVENTS, inject: [NATS], useFactory: (nc: NatsConnection) => new EventQueue(new EventPublisher(nc), logger) },
        { provide: IPAM_BLOCKS, inject: [NATS], useFactory: (nc: NatsConnection) => new NatsBlockIpam(nc) },
        {
          provide: SWARM_NODES,
          inject: [IPAM_BLOCKS, EVENTS],
          useFactory: (ipam: BlockIpam, events: EventQueue) =>
            new SwarmNodes(
              { swarm, engines, ipam, events, log: logger, engineVersion, now: () => performance.now() },
              {
                cluster: config.cluster,
                uplink: config.uplink,
                reservedCpus: config.reservedCpus,
                reservedMemoryMb: config.reservedMemoryMb,
                blockSize: config.blockSize,
                nodeDiskMb: config.nodeDiskMb,
                leftoverRetentionMs: config.leftoverRetentionHours * 3_600_000,
              },
            ),
        },
        {
          provide: TASK_WATCH,
          inject: [IPAM_BLOCKS, SWARM_NODES, EVENTS],
          useFactory: (ipam: BlockIpam, nodes: SwarmNodes, events: EventQueue) => {
            const watch = new TaskWatch({ swarm, engines, ipam, nodes, events, log: logger });
            scrapedGauge('orangery_agent_instances', "Instances (swarm services) of this agent's cluster, by state", ['state'], async () =>
              countBy(watch.instances.map((o) => o.state)).map(([state, value]) => ({ labels: { state }, value })),
            );
            return watch;
          },
        },
        {
          provide: SWARM_AGENT,
          inject: [SWARM_NODES, TASK_WATCH, EVENTS],
          useFactory: (nodes: SwarmNodes, watch: TaskWatch, events: EventQueue) =>
            new SwarmAgentService(
              { swarm, nodes, watch, events, log: logger, sleep, now: () => performance.now() },
              {
                cluster: config.cluster,
                pidsLimit: config.pidsLimit,
                startTimeoutMs: config.startTimeoutSeconds * 1000,
                stopTimeoutMs: config.stopTimeoutSeconds * 1000,
                pollMs: 250,
              },
            ),
        },
        Connections,
        SwarmRuntime,
      ],
    };
  }
}

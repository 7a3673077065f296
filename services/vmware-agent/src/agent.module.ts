import { Inject, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { agentInboxPrefix } from '@orangery/contracts';
import { EventPublisher } from '@orangery/messaging';
import { CONFIG, LOGGER, NATS, natsWithReadiness, readiness } from '@orangery/service-kit';
import { countBy, scrapedGauge, type Logger } from '@orangery/telemetry';
import type { VmwareAgentConfig } from './config';
import { EsxiHosts } from './domain/esxi-hosts';
import { HeartbeatSource, heartbeatReadTimeoutMs } from './domain/heartbeats';
import { VcenterChanges } from './domain/vcenter-changes';
import { VmwareAgentService } from './domain/vmware-agent.service';
import { ChangeWatcher } from './adapters/change-watcher';
import { EventQueue } from './adapters/event-queue';
import type { VsphereVcenter } from './adapters/vsphere-vcenter';
import { VmwareRuntime } from './transport/vmware-runtime';
import { AGENT_SERVICE, CHANGE_WATCHER, ESXI_HOSTS, EVENTS, VCENTER, VCENTER_CHANGES } from './tokens';

class Connections implements OnApplicationShutdown {
  constructor(@Inject(NATS) private readonly nc: NatsConnection) {}

  async onApplicationShutdown(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
  }
}

@Module({})
export class VmwareAgentModule {
  /** `vcenter` is connected and logged in already (main's preflight: a wrong password exits 2 there). */
  static forRoot(config: VmwareAgentConfig, logger: Logger, vcenter: VsphereVcenter): DynamicModule {
    return {
      module: VmwareAgentModule,
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
        { provide: VCENTER, useValue: vcenter },
        {
          provide: NATS,
          useFactory: () => {
            readiness.set('vcenter', () => vcenter.client.currentTime().then(() => undefined));
            return natsWithReadiness(config.natsUrl, 'vmware-agent', logger, config.agentId !== undefined ? agentInboxPrefix(config.agentId) : undefined);
          },
        },
        {
          provide: EVENTS,
          inject: [NATS],
          useFactory: (nc: NatsConnection) => new EventQueue(new EventPublisher(nc), logger),
        },
        {
          provide: AGENT_SERVICE,
          inject: [EVENTS],
          useFactory: (events: EventQueue) => {
            const agent = new VmwareAgentService(vcenter, events, {
              extraConfig: config.extraConfig,
              guestIpTimeoutMs: config.guestIpTimeoutSeconds * 1000,
              stopTimeoutSeconds: config.stopTimeoutSeconds,
              tasksPerHost: config.tasksPerHost,
              queuePerHost: config.queuePerHost,
              unavailableRetryMs: config.retrySeconds * 1000,
            });
            scrapedGauge('orangery_agent_instances', "Instances (VMs) on this agent's ESXi hosts, by state", ['state'], () =>
              countBy(agent.instanceStates() ?? []).map(([state, value]) => ({ labels: { state }, value })),
            );
            return agent;
          },
        },
        {
          provide: ESXI_HOSTS,
          inject: [AGENT_SERVICE, EVENTS],
          useFactory: (agent: VmwareAgentService, events: EventQueue) =>
            new EsxiHosts(
              {
                agent,
                heartbeats: new HeartbeatSource(vcenter, agent, {
                  reservedCpus: config.reservedCpus,
                  reservedMemoryMb: config.reservedMemoryMb,
                  readTimeoutMs: heartbeatReadTimeoutMs(config),
                }),
                events,
                engine: vcenter.about,
                vcenter: vcenter.client.url.host,
                now: () => performance.now(),
                log: logger,
              },
              { reservedCpus: config.reservedCpus, reservedMemoryMb: config.reservedMemoryMb },
            ),
        },
        {
          provide: VCENTER_CHANGES,
          inject: [AGENT_SERVICE, ESXI_HOSTS, EVENTS],
          useFactory: (agent: VmwareAgentService, hosts: EsxiHosts, events: EventQueue) =>
            new VcenterChanges({ agent, hosts, events, now: () => performance.now(), log: logger }),
        },
        {
          provide: CHANGE_WATCHER,
          inject: [VCENTER_CHANGES],
          useFactory: (changes: VcenterChanges) => new ChangeWatcher(vcenter.client, vcenter.watchRoots, changes),
        },
        Connections,
        VmwareRuntime,
      ],
    };
  }
}

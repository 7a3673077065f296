import { Inject, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  CreateInstanceCommand,
  decode,
  HostGetCommand,
  InstanceRef,
  invalidRequest,
  ListInstancesCommand,
  QUEUE_GROUPS,
  StopInstanceCommand,
  SUBJECTS,
  type VmCreateCommand,
} from '@orangery/contracts';
import { ensureEventsStream, Responder, type Route } from '@orangery/messaging';
import { CONFIG, LOGGER, NATS, PeriodicTasks } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { VmwareAgentConfig } from '../config';
import type { EsxiHosts } from '../domain/esxi-hosts';
import type { VcenterChanges } from '../domain/vcenter-changes';
import type { VmwareAgentService } from '../domain/vmware-agent.service';
import type { ChangeWatcher } from '../adapters/change-watcher';
import type { EventQueue } from '../adapters/event-queue';
import type { VsphereVcenter } from '../adapters/vsphere-vcenter';
import { AGENT_SERVICE, CHANGE_WATCHER, ESXI_HOSTS, EVENTS, VCENTER, VCENTER_CHANGES } from '../tokens';

/** The command schema serves both backends: a VM needs a template (an image is for containers). */
export function vmCommand(cmd: CreateInstanceCommand): VmCreateCommand {
  if (cmd.template === undefined) throw invalidRequest('template', 'is required: a VM is cloned from a template');
  if (cmd.image !== undefined) throw invalidRequest('image', 'is for containers: the vmware-agent clones VMs from a template');
  return cmd as VmCreateCommand;
}

export function agentRoutes(hostId: string, agent: VmwareAgentService, hosts: Pick<EsxiHosts, 'factsOf'>): Route[] {
  const s = SUBJECTS.agent;
  return [
    { subject: s.create(hostId), handler: (b) => agent.create(hostId, vmCommand(decode(CreateInstanceCommand, b))) },
    { subject: s.start(hostId), handler: (b) => agent.start(hostId, decode(InstanceRef, b).instanceId) },
    { subject: s.stop(hostId), handler: (b) => agent.stop(hostId, decode(StopInstanceCommand, b)) },
    { subject: s.remove(hostId), handler: (b) => agent.remove(hostId, decode(InstanceRef, b).instanceId) },
    { subject: s.get(hostId), handler: (b) => agent.get(hostId, decode(InstanceRef, b).instanceId) },
    { subject: s.list(hostId), handler: async (b) => (decode(ListInstancesCommand, b), agent.list(hostId)) },
    { subject: s.hostGet(hostId), handler: async (b) => (decode(HostGetCommand, b), hosts.factsOf(hostId)) },
  ];
}

/**
 * Everything the agent does on its own, as timers and publishing: the inventory refresh
 * (EsxiHosts decides which hosts there are; each gets its command subscriptions, one queue
 * group per host), heartbeats (EsxiHosts builds them), adoption at start, and vCenter's
 * change stream (ChangeWatcher) fed to VcenterChanges. Decisions live in the domain.
 */
export class VmwareRuntime implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly responders = new Map<string, Responder>();
  private readonly periodic = new PeriodicTasks((err) => this.logger.warn({ err: String(err) }, 'periodic task failed'));

  constructor(
    @Inject(CONFIG) private readonly config: VmwareAgentConfig,
    @Inject(NATS) private readonly nc: NatsConnection,
    @Inject(VCENTER) private readonly vc: VsphereVcenter,
    @Inject(AGENT_SERVICE) private readonly agent: VmwareAgentService,
    @Inject(ESXI_HOSTS) private readonly hosts: EsxiHosts,
    @Inject(VCENTER_CHANGES) private readonly changes: VcenterChanges,
    @Inject(CHANGE_WATCHER) private readonly watcher: ChangeWatcher,
    @Inject(EVENTS) private readonly events: EventQueue,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    await ensureEventsStream(this.nc, this.logger);
    await this.refreshInventory();
    const adopted = await this.changes.adopt();
    this.logger.info(adopted, 'adopted the VMs in vCenter');
    this.periodic.every(this.config.heartbeatSeconds * 1000, () => this.publishHeartbeats());
    this.periodic.every(this.config.inventorySeconds * 1000, () => this.refreshInventory());
    void this.watcher.run();
    this.logger.info({ vcenter: this.vc.about, datacenter: this.vc.datacenterName, hosts: this.hosts.ids }, 'ESXi hosts registered');
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.watcher.stop();
    this.periodic.stop();
    await Promise.all([...this.responders.values()].map((r) => r.drain()));
    await this.events.flush(3_000);
    await this.vc.logout().catch(() => undefined);
  }

  /** ESXi hosts come and go with vCenter's inventory: each is served while it is there. */
  private async refreshInventory(): Promise<void> {
    const { added, removed } = this.hosts.inventory(await this.vc.hosts());
    for (const hostId of added) {
      const responder = new Responder(this.nc, QUEUE_GROUPS.agent(hostId), this.logger);
      responder.serve(agentRoutes(hostId, this.agent, this.hosts));
      this.responders.set(hostId, responder);
    }
    for (const hostId of removed) {
      const responder = this.responders.get(hostId);
      this.responders.delete(hostId);
      this.logger.warn({ hostId }, 'ESXi host left the inventory; no longer serving it');
      await responder?.drain();
    }
  }

  private async publishHeartbeats(): Promise<void> {
    for (const hb of await this.hosts.heartbeats()) this.nc.publish(SUBJECTS.heartbeat(hb.hostId), JSON.stringify(hb));
  }
}

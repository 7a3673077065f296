import { Inject, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  CreateInstanceCommand,
  decode,
  InstanceRef,
  invalidRequest,
  ListInstancesCommand,
  QUEUE_GROUPS,
  StopInstanceCommand,
  SUBJECTS,
  type Heartbeat,
  type HostFacts,
  type VmCreateCommand,
} from '@orangery/contracts';
import { ensureEventsStream, Responder, type Route } from '@orangery/messaging';
import { CONFIG, LOGGER, NATS, PeriodicTasks } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { VmwareAgentConfig } from '../config';
import { managed, type VmwareAgentService } from '../domain/vmware-agent.service';
import type { EsxiHost, Vm } from '../domain/ports';
import { hostIdFromName, labelsOf } from '../domain/vm-spec';
import { ChangeWatcher, type VmChange } from '../adapters/change-watcher';
import type { EventQueue } from '../adapters/event-queue';
import type { VsphereVcenter } from '../adapters/vsphere-vcenter';
import { AGENT_SERVICE, EVENTS, VCENTER } from '../tokens';

/** The command schema serves both backends: a VM needs a template (an image is for containers). */
export function vmCommand(cmd: CreateInstanceCommand): VmCreateCommand {
  if (cmd.template === undefined) throw invalidRequest('template', 'is required: a VM is cloned from a template');
  if (cmd.image !== undefined) throw invalidRequest('image', 'is for containers: the vmware-agent clones VMs from a template');
  return cmd as VmCreateCommand;
}

export function agentRoutes(hostId: string, agent: VmwareAgentService): Route[] {
  const s = SUBJECTS.agent;
  return [
    { subject: s.create(hostId), handler: (b) => agent.create(hostId, vmCommand(decode(CreateInstanceCommand, b))) },
    { subject: s.start(hostId), handler: (b) => agent.start(hostId, decode(InstanceRef, b).instanceId) },
    { subject: s.stop(hostId), handler: (b) => agent.stop(hostId, decode(StopInstanceCommand, b)) },
    { subject: s.remove(hostId), handler: (b) => agent.remove(hostId, decode(InstanceRef, b).instanceId) },
    { subject: s.get(hostId), handler: (b) => agent.get(hostId, decode(InstanceRef, b).instanceId) },
    { subject: s.list(hostId), handler: async (b) => (decode(ListInstancesCommand, b), agent.list(hostId)) },
  ];
}

interface KnownVm {
  instanceId: string;
  hostId: string;
  ip: string;
  mac: string;
  powerState: string;
}

/** Heartbeats keep going from the last VM list this long while vCenter does not answer. */
const STALE_AFTER_MS = 30_000;

/**
 * Everything the agent does on its own: the ESXi hosts' registration, heartbeats and
 * command subscriptions (one queue group per host), adoption at start, and vCenter's
 * changes (WaitForUpdatesEx) as instance and host events. Wiring only; decisions live in
 * the domain (VmwareAgentService, vm-spec).
 */
export class VmwareRuntime implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly hosts = new Map<string, EsxiHost>();
  private readonly hostIdOfRef = new Map<string, string>();
  private readonly responders = new Map<string, Responder>();
  private readonly known = new Map<string, KnownVm>();
  private readonly seq = new Map<string, number>();
  private lastVms: { vms: Vm[]; at: number } | undefined;
  private readonly periodic = new PeriodicTasks((err) => this.logger.warn({ err: String(err) }, 'periodic task failed'));
  private watcher: ChangeWatcher | undefined;
  private lastWatchError = 0;

  constructor(
    @Inject(CONFIG) private readonly config: VmwareAgentConfig,
    @Inject(NATS) private readonly nc: NatsConnection,
    @Inject(VCENTER) private readonly vc: VsphereVcenter,
    @Inject(AGENT_SERVICE) private readonly agent: VmwareAgentService,
    @Inject(EVENTS) private readonly events: EventQueue,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    await ensureEventsStream(this.nc, this.logger);
    await this.refreshInventory();
    await this.adopt();
    this.periodic.every(this.config.heartbeatSeconds * 1000, () => this.heartbeat());
    this.periodic.every(this.config.inventorySeconds * 1000, () => this.refreshInventory());
    this.watcher = new ChangeWatcher(this.vc.client, this.vc.watchRoots, {
      resync: (vms, hosts) => this.onResync(vms, hosts),
      vm: (c) => this.onVmChange(c),
      host: (ref, state) => this.onHostState(ref, state),
      error: (err) => {
        this.agent.index.invalidate();
        if (Date.now() - this.lastWatchError > 10_000) this.logger.warn({ err: String(err) }, 'vCenter change tracking interrupted; retrying');
        this.lastWatchError = Date.now();
      },
    });
    void this.watcher.run();
    this.logger.info({ vcenter: this.vc.about, datacenter: this.vc.datacenterName, hosts: [...this.hosts.keys()] }, 'ESXi hosts registered');
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.watcher?.stop();
    this.periodic.stop();
    await Promise.all([...this.responders.values()].map((r) => r.drain()));
    await this.events.flush(3_000);
    await this.vc.logout().catch(() => undefined);
  }

  private facts(h: EsxiHost): HostFacts {
    const reserved = { cpu: Math.min(this.config.reservedCpus, h.cpuCores), memoryMb: Math.min(this.config.reservedMemoryMb, h.memoryMb), diskMb: 0 };
    const labels: Record<string, string> = { esxi: h.name, datacenter: h.datacenter };
    if (h.cluster) labels['cluster'] = h.cluster;
    return {
      hostId: hostIdFromName(h.name),
      backend: 'vmware',
      total: { cpu: h.cpuCores, memoryMb: h.memoryMb, diskMb: h.diskMb },
      reserved,
      capacity: { cpu: h.cpuCores - reserved.cpu, memoryMb: h.memoryMb - reserved.memoryMb, diskMb: h.diskMb },
      labels,
      vlans: h.vlans,
    };
  }

  /** ESXi hosts come and go with vCenter's inventory: each gets its subjects and its registration. */
  private async refreshInventory(): Promise<void> {
    const hosts = await this.vc.hosts();
    const seen = new Set<string>();
    for (const h of hosts) {
      const hostId = hostIdFromName(h.name);
      seen.add(hostId);
      const before = this.hosts.get(hostId);
      this.hosts.set(hostId, h);
      this.hostIdOfRef.set(h.ref, hostId);
      if (!before) {
        this.events.host(hostId, 'registered', { ...this.facts(h), engine: this.vc.about, esxi: h.name, connectionState: h.connectionState });
        const responder = new Responder(this.nc, QUEUE_GROUPS.agent(hostId), this.logger);
        responder.serve(agentRoutes(hostId, this.agent));
        this.responders.set(hostId, responder);
      } else if (before.connectionState !== h.connectionState) {
        this.onHostState(h.ref, h.connectionState, before.connectionState);
      }
    }
    for (const [hostId, responder] of this.responders) {
      if (seen.has(hostId)) continue;
      this.logger.warn({ hostId }, 'ESXi host left the inventory; no longer serving it');
      this.responders.delete(hostId);
      this.hosts.delete(hostId);
      await responder.drain();
    }
    this.agent.setHosts(this.hosts);
  }

  /** Restart safety: report what is there, change nothing. */
  private async adopt(): Promise<void> {
    const vms = await this.vc.vms();
    this.lastVms = { vms, at: Date.now() };
    const mine = managed(vms);
    for (const vm of mine) {
      this.known.set(vm.ref, { instanceId: vm.labels.instanceId, hostId: vm.labels.hostId, ip: vm.labels.ip, mac: vm.labels.mac, powerState: vm.powerState });
      const d = this.agent.describe(vm);
      this.events.instance({ what: d.state === 'running' ? 'running' : 'stopped', hostId: d.hostId, instanceId: d.instanceId, data: { ...d, adopted: true } });
    }
    this.logger.info({ instances: mine.length, running: mine.filter((v) => v.powerState === 'poweredOn').length }, 'adopted the VMs in vCenter');
  }

  private async heartbeat(): Promise<void> {
    try {
      // from the change stream when in sync: a listing would wait for every power-on in flight
      this.lastVms = { vms: await this.agent.snapshot(), at: Date.now() };
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'VM list for the heartbeat failed');
    }
    // No word from vCenter for a while: stop vouching for its hosts (the scheduler marks them lost).
    if (!this.lastVms || Date.now() - this.lastVms.at > STALE_AFTER_MS) return;
    for (const [hostId, h] of this.hosts) {
      if (h.connectionState !== 'connected') continue;
      const { amounts, count } = this.agent.allocated(this.lastVms.vms, hostId);
      const seq = this.seq.get(hostId) ?? 0;
      this.seq.set(hostId, seq + 1);
      const hb: Heartbeat = {
        ...this.facts(h),
        time: new Date().toISOString(),
        seq,
        allocated: amounts,
        usage: {
          cpu: h.mhzPerCore > 0 ? Math.round((h.usedMhz / h.mhzPerCore) * 100) / 100 : 0,
          memoryMb: h.usedMemoryMb,
          diskMb: Math.max(0, h.diskMb - h.diskFreeMb),
        },
        instances: count,
        fenced: false,
      };
      this.nc.publish(SUBJECTS.heartbeat(hostId), JSON.stringify(hb));
    }
  }

  // ------------------------------------------------------------ vCenter's changes

  private onResync(vms: VmChange[], hosts: { ref: string; connectionState: string }[]): void {
    for (const h of hosts) this.onHostState(h.ref, h.connectionState);
    this.agent.index.reset(
      vms.map((v) => ({
        ref: v.ref,
        name: v.name ?? v.ref,
        powerState: (v.powerState ?? 'poweredOff') as Vm['powerState'],
        template: v.template ?? false,
        guestIp: v.guestIp,
        extraConfig: v.extraConfig ?? {},
      })),
    );
    const present = new Set<string>();
    for (const v of vms) {
      present.add(v.ref);
      this.onVmChange({ ...v, kind: this.known.has(v.ref) ? 'modify' : 'enter' }, true);
    }
    // Gone while nobody watched (vCenter restarted, session lost): removed.
    for (const ref of [...this.known.keys()]) if (!present.has(ref)) this.onVmChange({ ref, kind: 'leave' });
  }

  private onVmChange(c: VmChange, resync = false): void {
    if (c.kind === 'leave') this.agent.index.remove(c.ref);
    else if (!resync) {
      const { ref, kind: _kind, powerState, ...rest } = c;
      this.agent.index.patch(ref, { ...rest, ...(powerState ? { powerState: powerState as Vm['powerState'] } : {}) });
    }
    const before = this.known.get(c.ref);
    if (c.kind === 'leave') {
      if (!before) return;
      this.known.delete(c.ref);
      this.agent.expectedStops.delete(c.ref);
      this.events.instance({ what: 'removed', hostId: before.hostId, instanceId: before.instanceId, data: { vmId: c.ref, ip: before.ip, mac: before.mac } });
      return;
    }
    const labels = c.extraConfig ? labelsOf(c.extraConfig) : undefined;
    let now: KnownVm | undefined = before;
    if (labels) now = { instanceId: labels.instanceId, hostId: labels.hostId, ip: labels.ip, mac: labels.mac, powerState: before?.powerState ?? 'poweredOff' };
    if (!now) return; // not one of ours
    const powerState = c.powerState ?? now.powerState;
    const changed = powerState !== (before?.powerState ?? 'poweredOff');
    this.known.set(c.ref, { ...now, powerState });
    if (!changed) return;
    const data = { vmId: c.ref, ip: now.ip, mac: now.mac };
    if (powerState === 'poweredOn') {
      this.events.instance({ what: 'running', hostId: now.hostId, instanceId: now.instanceId, data });
    } else {
      const requested = this.agent.expectedStops.delete(c.ref);
      this.events.instance({
        what: 'stopped',
        hostId: now.hostId,
        instanceId: now.instanceId,
        data: { ...data, reason: requested ? 'stopped on request' : `${powerState} in vCenter` },
      });
    }
  }

  private onHostState(ref: string, state: string, previous?: string): void {
    const hostId = this.hostIdOfRef.get(ref);
    const h = hostId ? this.hosts.get(hostId) : undefined;
    if (!hostId || !h) return;
    const was = previous ?? h.connectionState;
    if (was === state) return;
    h.connectionState = state;
    this.agent.setHosts(this.hosts);
    if (state === 'connected') {
      this.logger.info({ hostId }, 'ESXi host connected again');
      this.events.host(hostId, 'registered', { ...this.facts(h), engine: this.vc.about, esxi: h.name, connectionState: state, reregistered: true });
    } else {
      this.logger.warn({ hostId, connectionState: state }, 'ESXi host no longer connected to vCenter; heartbeats stop');
      this.events.host(hostId, 'disconnected', { connectionState: state, esxi: h.name });
    }
  }
}

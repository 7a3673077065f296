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
  type VmCreateCommand,
} from '@orangery/contracts';
import { ensureEventsStream, Responder, type Route } from '@orangery/messaging';
import { CONFIG, LOGGER, NATS, PeriodicTasks } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { VmwareAgentConfig } from '../config';
import type { VmwareAgentService } from '../domain/vmware-agent.service';
import { HeartbeatSource, hostFacts } from '../domain/heartbeats';
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

/**
 * The budget of one heartbeat round's vCenter reads: the heartbeat interval, but at least
 * 2 s (a busy vCenter is not a dead one) and never more than one call's timeout.
 */
export function heartbeatReadTimeoutMs(config: Pick<VmwareAgentConfig, 'heartbeatSeconds' | 'callTimeoutSeconds'>): number {
  return Math.min(config.callTimeoutSeconds * 1000, Math.max(2_000, config.heartbeatSeconds * 1000));
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
  private readonly heartbeats: HeartbeatSource;
  /** since when vCenter has not answered a heartbeat round (undefined: it answers) */
  private vcenterSilentSince: number | undefined;
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
  ) {
    this.heartbeats = new HeartbeatSource(vc, agent, {
      reservedCpus: config.reservedCpus,
      reservedMemoryMb: config.reservedMemoryMb,
      readTimeoutMs: heartbeatReadTimeoutMs(config),
    });
  }

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

  private facts(h: EsxiHost) {
    return hostFacts(h, this.config);
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

  /** Restart safety: report what is there, change nothing (the domain's adopt powers nothing on or off). */
  private async adopt(): Promise<void> {
    const mine = await this.agent.adopt();
    for (const vm of mine) {
      this.known.set(vm.ref, { instanceId: vm.labels.instanceId, hostId: vm.labels.hostId, ip: vm.labels.ip, mac: vm.labels.mac, powerState: vm.powerState });
    }
    this.logger.info({ instances: mine.length, running: mine.filter((v) => v.powerState === 'poweredOn').length }, 'adopted the VMs in vCenter');
  }

  /**
   * Heartbeats vouch for what vCenter says now: when it does not answer within the round's
   * budget, none go out (the scheduler sees the hosts silent: unknown, nothing moves).
   */
  private async heartbeat(): Promise<void> {
    const round = await this.heartbeats.round(this.hosts);
    if (!round) {
      if (this.vcenterSilentSince === undefined) {
        this.vcenterSilentSince = Date.now();
        this.logger.warn({ vcenter: this.vc.client.url.host }, 'vCenter did not answer the heartbeat read in time; heartbeats stop until it does (the VMs are not touched)');
      }
      return;
    }
    if (this.vcenterSilentSince !== undefined) {
      this.logger.info({ silentMs: Date.now() - this.vcenterSilentSince }, 'vCenter answers again; heartbeats resume');
      this.vcenterSilentSince = undefined;
    }
    for (const st of round.states) {
      const hostId = this.hostIdOfRef.get(st.ref);
      const h = hostId ? this.hosts.get(hostId) : undefined;
      if (!h) continue;
      h.inMaintenanceMode = st.inMaintenanceMode;
      h.haProtected = st.haProtected;
      this.onHostState(st.ref, st.connectionState);
    }
    for (const hb of round.heartbeats) this.nc.publish(SUBJECTS.heartbeat(hb.hostId), JSON.stringify(hb));
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
      this.logger.warn({ hostId, connectionState: state }, 'ESXi host no longer connected to vCenter; its heartbeats say so');
      this.events.host(hostId, 'disconnected', { connectionState: state, esxi: h.name });
    }
  }
}

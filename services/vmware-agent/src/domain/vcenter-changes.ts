import { context } from '@opentelemetry/api';
import type { ChangeHandlers, DomainLog, EventSink, HostConnection, Vm, VmChange } from './ports';
import type { EsxiHosts } from './esxi-hosts';
import { labelsOf } from './vm-spec';
import type { VmwareAgentService } from './vmware-agent.service';

/** What the agent remembers of one of its VMs, to tell a change from a repeat. */
interface KnownVm {
  instanceId: string;
  hostId: string;
  ip: string;
  mac: string;
  powerState: string;
}

/** A break of the change stream is logged after this long without one (while broken it fails every second). */
const WATCH_ERROR_LOG_MS = 10_000;

/**
 * What vCenter's changes mean: the VM index kept current (creates read it), instance
 * events for our VMs (running on a power-on, stopped on a power-off, `stopped on request`
 * when the agent asked for it, removed when a VM leaves), hosts' connection states handed
 * to EsxiHosts. A resync is a full picture: a VM missing from it left while nobody watched.
 */
export class VcenterChanges implements ChangeHandlers {
  private readonly known = new Map<string, KnownVm>();
  private lastWatchError: number | undefined;

  constructor(
    private readonly deps: {
      agent: Pick<VmwareAgentService, 'index' | 'expectedStops' | 'adopt'> & Partial<Pick<VmwareAgentService, 'takePowerOnTrace'>>;
      hosts: Pick<EsxiHosts, 'connection'>;
      events: EventSink;
      /** ms on any clock: only differences are used */
      now: () => number;
      log: DomainLog;
    },
  ) {}

  /** Restart safety: report what is there, change nothing (the domain's adopt powers nothing on or off). */
  async adopt(): Promise<{ instances: number; running: number }> {
    const mine = await this.deps.agent.adopt();
    for (const vm of mine) {
      this.known.set(vm.ref, { instanceId: vm.labels.instanceId, hostId: vm.labels.hostId, ip: vm.labels.ip, mac: vm.labels.mac, powerState: vm.powerState });
    }
    return { instances: mine.length, running: mine.filter((v) => v.powerState === 'poweredOn').length };
  }

  resync(vms: VmChange[], hosts: HostConnection[]): void {
    for (const h of hosts) this.deps.hosts.connection(h.ref, h.connectionState);
    this.deps.agent.index.reset(
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
      this.changed({ ...v, kind: this.known.has(v.ref) ? 'modify' : 'enter' }, true);
    }
    // Gone while nobody watched (vCenter restarted, session lost): removed.
    for (const ref of [...this.known.keys()]) if (!present.has(ref)) this.changed({ ref, kind: 'leave' });
  }

  vm(change: VmChange): void {
    this.changed(change);
  }

  host(ref: string, connectionState: string): void {
    this.deps.hosts.connection(ref, connectionState);
  }

  /** The stream broke: the index is not trusted until the next resync. */
  error(err: unknown): void {
    this.deps.agent.index.invalidate();
    const now = this.deps.now();
    if (this.lastWatchError === undefined || now - this.lastWatchError > WATCH_ERROR_LOG_MS) {
      this.deps.log.warn({ err: String(err) }, 'vCenter change tracking interrupted; retrying');
    }
    this.lastWatchError = now;
  }

  /** `resync`: the index was reset with the whole picture already, only the events are left. */
  private changed(c: VmChange, resync = false): void {
    if (c.kind === 'leave') this.deps.agent.index.remove(c.ref);
    else if (!resync) {
      const { ref, kind: _kind, powerState, ...rest } = c;
      this.deps.agent.index.patch(ref, { ...rest, ...(powerState ? { powerState: powerState as Vm['powerState'] } : {}) });
    }
    const before = this.known.get(c.ref);
    if (c.kind === 'leave') {
      if (!before) return;
      this.known.delete(c.ref);
      this.deps.agent.expectedStops.delete(c.ref);
      this.deps.events.instance({
        what: 'removed',
        hostId: before.hostId,
        instanceId: before.instanceId,
        data: { vmId: c.ref, ip: before.ip, mac: before.mac },
      });
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
      // in the trace of the command that powered it on (create/start), when one did
      const ctx = this.deps.agent.takePowerOnTrace?.(c.ref) ?? context.active();
      const on = now;
      context.with(ctx, () => this.deps.events.instance({ what: 'running', hostId: on.hostId, instanceId: on.instanceId, data }));
      return;
    }
    const requested = this.deps.agent.expectedStops.delete(c.ref);
    this.deps.events.instance({
      what: 'stopped',
      hostId: now.hostId,
      instanceId: now.instanceId,
      data: { ...data, reason: requested ? 'stopped on request' : `${powerState} in vCenter` },
    });
  }
}

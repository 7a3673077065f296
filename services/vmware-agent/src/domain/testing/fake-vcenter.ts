import { OrangeryError } from '@orangery/contracts';
import type { EsxiHost, EsxiHostState, EventSink, InstanceEvent, Vcenter, Vm, VmPlan } from '../ports';

export function esxiHost(name: string, over: Partial<EsxiHost> = {}): EsxiHost {
  return {
    ref: `host-${name}`,
    name,
    cluster: 'cluster-a',
    datacenter: 'dc-lab',
    connectionState: 'connected',
    inMaintenanceMode: false,
    haProtected: false,
    cpuCores: 8,
    mhzPerCore: 2000,
    usedMhz: 1000,
    memoryMb: 32_768,
    usedMemoryMb: 4096,
    diskMb: 1_000_000,
    diskFreeMb: 900_000,
    vlans: [0, 100],
    ...over,
  };
}

/**
 * An in-memory vCenter: templates, port groups per host, VMs with extraConfig, power and a
 * guest that reports its customized IP once powered on (like vcsim). Failures are injected
 * per method (`failNext`), every call is recorded, and `freeze()` makes every call hang
 * (a SIGSTOPped vcsim) until `thaw()`, or fail as the adapter's timeout would when the
 * call has one.
 */
export class FakeVcenter implements Vcenter {
  readonly vmsByRef = new Map<string, Vm & { hostRef: string; customizedIp?: string; plan?: VmPlan }>();
  readonly templates = new Map<string, string>([['centos7-jdk8', 'vm-t1']]);
  /** host ref -> vlan -> port group */
  readonly portGroups = new Map<string, Map<number, string>>();
  readonly calls: string[] = [];
  /** Power changes and destroys asked of vCenter, in order (`powerOn vm-100`). */
  readonly powerChanges: string[] = [];
  /** the guest reports its IP this many `vm()` reads after the power-on (0: at once; -1: never) */
  guestIpAfterReads = 0;
  /** the guest ignores ShutdownGuest (no tools behaviour beyond "accepted") */
  guestIgnoresShutdown = false;
  private readonly failures = new Map<string, OrangeryError>();
  private frozen: { thawed: Promise<void>; thaw: () => void } | undefined;
  private nextRef = 100;
  private readonly readsSincePowerOn = new Map<string, number>();

  constructor(readonly hostList: EsxiHost[] = [esxiHost('esx01.lab.local'), esxiHost('esx02.lab.local')]) {
    for (const h of hostList)
      this.portGroups.set(
        h.ref,
        new Map([
          [0, 'vlan0'],
          [100, 'pg-vlan100'],
        ]),
      );
  }

  failNext(method: keyof Vcenter, err: OrangeryError): void {
    this.failures.set(method, err);
  }

  freeze(): void {
    if (this.frozen) return;
    let thaw!: () => void;
    const thawed = new Promise<void>((r) => (thaw = r));
    this.frozen = { thawed, thaw };
  }

  thaw(): void {
    this.frozen?.thaw();
    this.frozen = undefined;
  }

  private async enter(method: keyof Vcenter, ref?: string, timeoutMs?: number): Promise<void> {
    this.calls.push(method);
    if (ref) this.powerChanges.push(`${method} ${ref}`);
    if (this.frozen) {
      const { thawed } = this.frozen;
      if (timeoutMs === undefined) await thawed;
      else {
        let timer: NodeJS.Timeout | undefined;
        const late = await Promise.race([thawed.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs)))]);
        clearTimeout(timer);
        if (late)
          throw new OrangeryError('UNAVAILABLE', `${method}: no answer from vCenter within ${timeoutMs} ms`, {
            vcenter: 'fake',
            cause: 'timeout',
            retryable: true,
          });
      }
    }
    const f = this.failures.get(method);
    if (f) {
      this.failures.delete(method);
      throw f;
    }
  }

  /** A VM that is not Orangery's, e.g. one that holds an address by hand. */
  addForeignVm(name: string, guestIp: string): void {
    const ref = `vm-${this.nextRef++}`;
    this.vmsByRef.set(ref, { ref, name, powerState: 'poweredOn', template: false, guestIp, extraConfig: {}, hostRef: this.hostList[0]!.ref });
  }

  async hosts(): Promise<EsxiHost[]> {
    await this.enter('hosts');
    return this.hostList.map((h) => ({ ...h }));
  }

  async hostStates(timeoutMs: number): Promise<EsxiHostState[]> {
    await this.enter('hostStates', undefined, timeoutMs);
    return this.hostList.map((h) => ({ ref: h.ref, connectionState: h.connectionState, inMaintenanceMode: h.inMaintenanceMode, haProtected: h.haProtected }));
  }

  async vms(timeoutMs?: number): Promise<Vm[]> {
    await this.enter('vms', undefined, timeoutMs);
    return [...this.vmsByRef.values()].map((v) => this.view(v));
  }

  /** the `fields` of every vm() read, in order */
  readonly vmReads: ('all' | 'power')[] = [];

  async vm(ref: string, fields: 'all' | 'power' = 'all'): Promise<Vm | undefined> {
    this.vmReads.push(fields);
    await this.enter('vm');
    const v = this.vmsByRef.get(ref);
    if (!v) return undefined;
    if (v.powerState === 'poweredOn') this.readsSincePowerOn.set(ref, (this.readsSincePowerOn.get(ref) ?? 0) + 1);
    const view = this.view(v);
    // as the adapter: a power read carries no extraConfig
    return fields === 'power' ? { ...view, extraConfig: {} } : view;
  }

  private view(v: Vm & { customizedIp?: string }): Vm {
    const reads = this.readsSincePowerOn.get(v.ref) ?? 0;
    const reports = v.powerState === 'poweredOn' && this.guestIpAfterReads >= 0 && reads > this.guestIpAfterReads - 1;
    return {
      ref: v.ref,
      name: v.name,
      powerState: v.powerState,
      template: v.template,
      guestIp: v.guestIp ?? (reports ? v.customizedIp : undefined),
      extraConfig: { ...v.extraConfig },
    };
  }

  async findTemplate(name: string): Promise<string | undefined> {
    await this.enter('findTemplate');
    return this.templates.get(name);
  }

  async portGroupFor(hostRef: string, vlan: number): Promise<string | undefined> {
    await this.enter('portGroupFor');
    return this.portGroups.get(hostRef)?.get(vlan);
  }

  async clone(templateRef: string, hostRef: string, portGroup: string, plan: VmPlan): Promise<string> {
    await this.enter('clone');
    if (![...this.templates.values()].includes(templateRef)) throw new OrangeryError('INTERNAL', `no template ${templateRef}`);
    if (!portGroup) throw new OrangeryError('INTERNAL', 'no port group');
    const ref = `vm-${this.nextRef++}`;
    this.vmsByRef.set(ref, {
      ref,
      name: plan.name,
      powerState: 'poweredOff',
      template: false,
      guestIp: undefined,
      extraConfig: { ...plan.extraConfig },
      hostRef,
      customizedIp: plan.customization.ip,
      plan,
    });
    return ref;
  }

  async powerOn(ref: string): Promise<void> {
    await this.enter('powerOn', ref);
    const v = this.must(ref);
    if (v.powerState === 'poweredOn') throw new OrangeryError('INTERNAL', 'InvalidPowerState');
    v.powerState = 'poweredOn';
    this.readsSincePowerOn.set(ref, 0);
  }

  async powerOff(ref: string): Promise<void> {
    await this.enter('powerOff', ref);
    const v = this.must(ref);
    v.powerState = 'poweredOff';
  }

  async shutdownGuest(ref: string): Promise<boolean> {
    await this.enter('shutdownGuest', ref);
    const v = this.must(ref);
    if (!this.guestIgnoresShutdown) v.powerState = 'poweredOff';
    return true;
  }

  async destroy(ref: string): Promise<void> {
    await this.enter('destroy', ref);
    const v = this.must(ref);
    if (v.powerState !== 'poweredOff') throw new OrangeryError('INTERNAL', 'InvalidPowerState');
    this.vmsByRef.delete(ref);
  }

  private must(ref: string) {
    const v = this.vmsByRef.get(ref);
    if (!v) throw new OrangeryError('INTERNAL', `ManagedObjectNotFound ${ref}`);
    return v;
  }
}

export class RecordingEvents implements EventSink {
  readonly instances: InstanceEvent[] = [];
  readonly hosts: { hostId: string; what: string; data: Record<string, unknown> }[] = [];
  instance(e: InstanceEvent): void {
    this.instances.push(e);
  }
  host(hostId: string, what: string, data: Record<string, unknown>): void {
    this.hosts.push({ hostId, what, data });
  }
}

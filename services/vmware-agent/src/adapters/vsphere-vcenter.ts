import { OrangeryError } from '@orangery/contracts';
import {
  asArray,
  asBoolean,
  asMoRef,
  asNumber,
  asString,
  extraConfigOf,
  MoRef,
  pick,
  VsphereClient,
  VsphereFault,
  VsphereLoginError,
  VsphereTimeoutError,
  VsphereTransportError,
  type DatacenterInfo,
  type NetworkInfo,
  type NicDevice,
  type VsphereLogger,
} from '@orangery/vsphere';
import type { EsxiHost, EsxiHostState, Vcenter, Vm, VmPlan } from '../domain/ports';

export interface VcenterSettings {
  url: string;
  user: string;
  password: string;
  insecure: boolean;
  /** datacenter name; empty: the only one */
  datacenter: string;
  /** VM folder for the platform's VMs, relative to the datacenter's VM folder (created if missing) */
  folder: string;
  callTimeoutMs: number;
  taskTimeoutMs: number;
  customization: 'after-clone' | 'clone-spec';
}

/** vCenter faults that mean "not enough room": the caller may place elsewhere. */
const CAPACITY_FAULTS = new Set([
  'InsufficientResourcesFault',
  'InsufficientCpuResourcesFault',
  'InsufficientMemoryResourcesFault',
  'InsufficientHostCapacityFault',
  'InsufficientHostCpuCapacityFault',
  'InsufficientHostMemoryCapacityFault',
  'InsufficientStorageSpace',
  'InsufficientDisks',
  'NotEnoughCpus',
  'NoDiskSpace',
  'OutOfBounds',
]);

const VM_PROPS = ['name', 'runtime.powerState', 'config.template', 'config.extraConfig', 'guest.ipAddress'];
/** What the poll of a starting VM needs (no extraConfig: kilobytes of XML per read, 10 reads a second per VM). */
const POWER_PROPS = ['name', 'runtime.powerState', 'config.template', 'guest.ipAddress'];

/**
 * The Vcenter port on libs/vsphere: one session for the agent (the client logs in again by
 * itself when vCenter forgets it), inventory refs cached and refreshed when vCenter says
 * they are gone. Every failure leaves here as an OrangeryError naming the cause.
 */
export class VsphereVcenter implements Vcenter {
  private dc: DatacenterInfo | undefined;
  private folderRef: MoRef | undefined;
  private networks: NetworkInfo[] = [];
  private hostNetworks = new Map<string, Set<string>>();
  private hostParents = new Map<string, MoRef>();
  private readonly pools = new Map<string, MoRef>();
  private readonly nics = new Map<string, NicDevice>();
  private templates = new Map<string, string>();

  private constructor(
    readonly client: VsphereClient,
    private readonly settings: VcenterSettings,
  ) {}

  /** Logs in and finds the datacenter and the folder; throws with a one-line reason. */
  static async connect(settings: VcenterSettings, logger?: VsphereLogger): Promise<VsphereVcenter> {
    const client = await VsphereClient.connect({
      url: settings.url,
      username: settings.user,
      password: settings.password,
      insecure: settings.insecure,
      callTimeoutMs: settings.callTimeoutMs,
      logger,
    });
    const vc = new VsphereVcenter(client, settings);
    try {
      await vc.resolvePlacement();
    } catch (e) {
      client.close();
      throw e;
    }
    return vc;
  }

  get about(): string {
    const a = this.client.serviceContent.about;
    return `${a.fullName || a.name} (API ${a.apiVersion})`;
  }

  get datacenterName(): string {
    return this.dc?.name ?? '';
  }

  /** The datacenter and the platform's VM folder (created when missing). */
  private async resolvePlacement(): Promise<void> {
    const dcs = await this.client.inventory.datacenters();
    const want = this.settings.datacenter;
    const dc = want ? dcs.find((d) => d.name === want) : dcs.length === 1 ? dcs[0] : undefined;
    if (!dc) {
      throw new Error(
        want
          ? `vCenter has no datacenter '${want}' (it has: ${dcs.map((d) => d.name).join(', ') || 'none'})`
          : `vCenter has ${dcs.length} datacenters (${dcs.map((d) => d.name).join(', ')}); set ORANGERY_VCENTER_DATACENTER`,
      );
    }
    if (!dc.vmFolder || !dc.hostFolder) throw new Error(`datacenter ${dc.name} has no VM or host folder`);
    this.dc = dc;
    let parent = dc.vmFolder;
    const parts = this.settings.folder.split('/').filter(Boolean);
    for (let i = 0; i < parts.length; i++) {
      const found = await this.client.vms.findByInventoryPath(`/${dc.name}/vm/${parts.slice(0, i + 1).join('/')}`);
      const made = found ?? asMoRef(await this.client.callValue('CreateFolder', parent, { name: parts[i]! }));
      if (!made) throw new Error(`could not create the VM folder ${parts.slice(0, i + 1).join('/')} in ${dc.name}`);
      parent = made;
    }
    this.folderRef = parent;
  }

  private async guard<T>(what: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (e) {
      throw this.mapError(what, e);
    }
  }

  private mapError(what: string, e: unknown): OrangeryError {
    if (e instanceof OrangeryError) return e;
    const where = `vCenter ${this.client.url.host}`;
    if (e instanceof VsphereTransportError) {
      return new OrangeryError('UNAVAILABLE', `${what}: ${e.message}`, { vcenter: where, cause: e.code, retryable: true });
    }
    if (e instanceof VsphereTimeoutError) {
      return new OrangeryError('UNAVAILABLE', `${what}: ${e.message}`, { vcenter: where, cause: 'timeout', retryable: true });
    }
    if (e instanceof VsphereLoginError) {
      return new OrangeryError('UNAVAILABLE', `${what}: ${where} refused the agent's login again (password changed?)`, {
        vcenter: where,
        cause: 'InvalidLogin',
        retryable: true,
      });
    }
    if (e instanceof VsphereFault) {
      if (e.faultName === 'NotAuthenticated') {
        return new OrangeryError('UNAVAILABLE', `${what}: the vCenter session was lost`, { vcenter: where, cause: e.faultName, retryable: true });
      }
      if (e.faultName === 'ManagedObjectNotFound') {
        // vCenter's inventory changed under us (or vCenter restarted): look everything up again
        this.forget();
        return new OrangeryError('UNAVAILABLE', `${what}: ${e.message}; the inventory changed, retry`, { vcenter: where, cause: e.faultName, retryable: true });
      }
      if (CAPACITY_FAULTS.has(e.faultName)) {
        return new OrangeryError('INSUFFICIENT_CAPACITY', `${what}: ${e.message}`, { vcenter: where, fault: e.faultName });
      }
      return new OrangeryError('INTERNAL', `${what}: ${e.message}`, { vcenter: where, fault: e.faultName });
    }
    return new OrangeryError('INTERNAL', `${what}: ${e instanceof Error ? e.message : String(e)}`, { vcenter: where });
  }

  private forget(): void {
    this.pools.clear();
    this.nics.clear();
    this.templates.clear();
    this.hostNetworks.clear();
  }

  async hosts(): Promise<EsxiHost[]> {
    return this.guard('reading the ESXi hosts', async () => {
      const dc = this.dc!;
      const [rows, clusters, datastores, networks] = await Promise.all([
        this.client.listObjects(
          'HostSystem',
          ['name', 'parent', 'network', 'datastore', 'summary.hardware', 'summary.quickStats', 'runtime.connectionState', 'runtime.inMaintenanceMode'],
          dc.hostFolder,
        ),
        this.client.listObjects('ClusterComputeResource', ['name', 'configuration.dasConfig.enabled'], dc.hostFolder),
        this.client.listObjects('Datastore', ['summary'], dc.datastoreFolder ?? dc.hostFolder),
        this.client.inventory.networks(),
      ]);
      this.networks = networks;
      const clusterName = new Map(clusters.map((c) => [c.obj.value, asString(c.props.name)]));
      const haOn = new Set(clusters.filter((c) => asBoolean(c.props['configuration.dasConfig.enabled']) === true).map((c) => c.obj.value));
      const ds = new Map(
        datastores.map((d) => [d.obj.value, { cap: Number(pick(d.props.summary, 'capacity') ?? 0), free: Number(pick(d.props.summary, 'freeSpace') ?? 0) }]),
      );
      const vlanOf = new Map(networks.map((n) => [n.ref.value, n]));
      const MB = 1024 * 1024;
      return rows.map(({ obj, props: p }) => {
        const nets = asArray(p.network)
          .map((r) => asMoRef(r)?.value)
          .filter((v): v is string => v !== undefined);
        this.hostNetworks.set(obj.value, new Set(nets));
        const parent = asMoRef(p.parent);
        if (parent) this.hostParents.set(obj.value, parent);
        const vlans = [...new Set(nets.map((n) => vlanOf.get(n)?.vlanId).filter((v): v is number => v !== undefined))].sort((a, b) => a - b);
        const mounted = asArray(p.datastore).map((r) => ds.get(asMoRef(r)?.value ?? ''));
        const cores = asNumber(pick(p['summary.hardware'], 'numCpuCores')) ?? 0;
        const mhz = asNumber(pick(p['summary.hardware'], 'cpuMhz')) ?? 0;
        return {
          ref: obj.value,
          name: asString(p.name) ?? obj.value,
          cluster: parent ? clusterName.get(parent.value) : undefined,
          datacenter: dc.name,
          connectionState: asString(p['runtime.connectionState']) ?? 'unknown',
          inMaintenanceMode: asBoolean(p['runtime.inMaintenanceMode']) ?? false,
          haProtected: parent !== undefined && haOn.has(parent.value),
          cpuCores: cores,
          mhzPerCore: mhz,
          usedMhz: asNumber(pick(p['summary.quickStats'], 'overallCpuUsage')) ?? 0,
          memoryMb: Math.floor((asNumber(pick(p['summary.hardware'], 'memorySize')) ?? 0) / MB),
          usedMemoryMb: asNumber(pick(p['summary.quickStats'], 'overallMemoryUsage')) ?? 0,
          diskMb: Math.floor(mounted.reduce((s, d) => s + (d?.cap ?? 0), 0) / MB),
          diskFreeMb: Math.floor(mounted.reduce((s, d) => s + (d?.free ?? 0), 0) / MB),
          vlans,
        };
      });
    });
  }

  async hostStates(timeoutMs: number): Promise<EsxiHostState[]> {
    return this.guard("reading the ESXi hosts' states", async () =>
      (await this.client.inventory.hostStates(this.dc!.hostFolder, { timeoutMs })).map((h) => ({
        ref: h.ref.value,
        connectionState: h.connectionState,
        inMaintenanceMode: h.inMaintenanceMode,
        haProtected: h.haEnabled,
      })),
    );
  }

  async vms(timeoutMs?: number): Promise<Vm[]> {
    return this.guard('listing the VMs', async () =>
      (await this.client.listObjects('VirtualMachine', VM_PROPS, this.dc!.vmFolder, { timeoutMs })).map(({ obj, props }) => vmOf(obj, props)),
    );
  }

  async vm(ref: string, fields: 'all' | 'power' = 'all'): Promise<Vm | undefined> {
    return this.guard(`reading VM ${ref}`, async () => {
      const obj = new MoRef('VirtualMachine', ref);
      const pathSet = fields === 'power' ? POWER_PROPS : VM_PROPS;
      const [found] = await this.client.retrieve([{ propSet: [{ type: 'VirtualMachine', pathSet }], objectSet: [{ obj }] }]).catch((e: unknown) => {
        if (e instanceof VsphereFault && e.faultName === 'ManagedObjectNotFound') return [];
        throw e;
      });
      return found ? vmOf(obj, found.props) : undefined;
    });
  }

  async findTemplate(name: string): Promise<string | undefined> {
    const cached = this.templates.get(name);
    if (cached) return cached;
    return this.guard(`looking up template ${name}`, async () => {
      const all = await this.client.listObjects('VirtualMachine', ['name', 'config.template'], this.dc!.vmFolder);
      this.templates = new Map(all.filter((o) => asBoolean(o.props['config.template']) === true).map((o) => [asString(o.props.name) ?? '', o.obj.value]));
      return this.templates.get(name);
    });
  }

  async portGroupFor(hostRef: string, vlan: number): Promise<string | undefined> {
    return this.guard(`looking up the port group of VLAN ${vlan}`, async () => {
      if (!this.hostNetworks.has(hostRef) || this.networks.length === 0) await this.hosts();
      const reach = this.hostNetworks.get(hostRef) ?? new Set<string>();
      // distributed port groups first: they exist on every host of the switch alike
      const candidates = this.networks
        .filter((n) => n.vlanId === vlan && !n.trunk && reach.has(n.ref.value))
        .sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === 'dvportgroup' ? -1 : 1));
      return candidates[0]?.name;
    });
  }

  async clone(templateRef: string, hostRef: string, portGroup: string, plan: VmPlan): Promise<string> {
    return this.guard(`cloning ${plan.name} from ${plan.template}`, async () => {
      const template = new MoRef('VirtualMachine', templateRef);
      const host = new MoRef('HostSystem', hostRef);
      const network = this.networks.find((n) => n.name === portGroup);
      if (!network) throw new OrangeryError('UNAVAILABLE', `port group ${portGroup} vanished from vCenter; retry`, { portGroup, retryable: true });
      const vm = await this.client.vms.clone(template, {
        name: plan.name,
        folder: this.folderRef!,
        pool: await this.poolOf(host),
        host,
        numCPUs: plan.numCpus,
        memoryMB: plan.memoryMb,
        extraConfig: plan.extraConfig,
        nic: { network, macAddress: plan.mac, device: await this.nicOf(template) },
        customization: plan.customization,
        customizationMode: this.settings.customization,
        timeoutMs: this.settings.taskTimeoutMs,
      });
      return vm.value;
    });
  }

  private async poolOf(host: MoRef): Promise<MoRef> {
    const cached = this.pools.get(host.value);
    if (cached) return cached;
    const pool = await this.client.inventory.resourcePoolOfHost(host);
    if (!pool) throw new OrangeryError('INTERNAL', `ESXi host ${host.value} has no resource pool`, { host: host.value });
    this.pools.set(host.value, pool);
    return pool;
  }

  private async nicOf(template: MoRef): Promise<NicDevice> {
    const cached = this.nics.get(template.value);
    if (cached) return cached;
    const [nic] = (await this.client.vms.get(template)).nics;
    if (!nic) throw new OrangeryError('INVALID_REQUEST', `template ${template.value} has no network adapter`, { field: 'template' });
    this.nics.set(template.value, nic);
    return nic;
  }

  async powerOn(ref: string): Promise<void> {
    await this.guard(`powering on VM ${ref}`, () => this.client.vms.powerOn(new MoRef('VirtualMachine', ref), { timeoutMs: this.settings.taskTimeoutMs }));
  }

  async powerOff(ref: string): Promise<void> {
    await this.guard(`powering off VM ${ref}`, async () => {
      try {
        await this.client.vms.powerOff(new MoRef('VirtualMachine', ref), { timeoutMs: this.settings.taskTimeoutMs });
      } catch (e) {
        // already off: what was asked for
        if (e instanceof VsphereFault && e.faultName === 'InvalidPowerState') return;
        throw e;
      }
    });
  }

  async shutdownGuest(ref: string): Promise<boolean> {
    return this.guard(`shutting down the guest of VM ${ref}`, async () => {
      try {
        await this.client.vms.shutdownGuest(new MoRef('VirtualMachine', ref));
        return true;
      } catch (e) {
        if (e instanceof VsphereFault && !(e instanceof VsphereLoginError) && e.faultName !== 'NotAuthenticated') return false;
        throw e;
      }
    });
  }

  async destroy(ref: string): Promise<void> {
    await this.guard(`destroying VM ${ref}`, async () => {
      try {
        await this.client.vms.destroy(new MoRef('VirtualMachine', ref), { timeoutMs: this.settings.taskTimeoutMs });
      } catch (e) {
        if (e instanceof VsphereFault && e.faultName === 'ManagedObjectNotFound') return;
        throw e;
      }
    });
  }

  // ------------------------------------------------------------ change tracking

  /** Folders whose views the change tracker watches: the datacenter's VMs and hosts. */
  get watchRoots(): { vms: MoRef; hosts: MoRef } {
    return { vms: this.dc!.vmFolder!, hosts: this.dc!.hostFolder! };
  }

  async logout(): Promise<void> {
    await this.client.logout();
  }
}

function vmOf(obj: MoRef, p: Record<string, unknown>): Vm {
  return {
    ref: obj.value,
    name: asString(p.name as never) ?? obj.value,
    powerState: (asString(p['runtime.powerState'] as never) ?? 'poweredOff') as Vm['powerState'],
    template: asBoolean(p['config.template'] as never) ?? false,
    guestIp: asString(p['guest.ipAddress'] as never) || undefined,
    extraConfig: extraConfigOf(p['config.extraConfig'] as never),
  };
}

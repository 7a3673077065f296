// Virtual machines: find, read, clone (placement, CPU/memory, extraConfig, NIC port group
// and manual MAC, guest customization with a fixed IP), power, guest shutdown, destroy.
import type { VsphereClient, WaitTaskOptions } from './client';
import { VsphereFault } from './errors';
import type { NetworkInfo } from './inventory';
import {
  asArray,
  asBoolean,
  asMoRef,
  asNumber,
  asObject,
  asString,
  pick,
  type MoRef,
  type SoapObject,
  type SoapValue,
  type VimObject,
  type VimValue,
} from './xml';

export type PowerState = 'poweredOn' | 'poweredOff' | 'suspended';

export interface NicDevice {
  key: number;
  /** e.g. VirtualVmxnet3, VirtualE1000. */
  type: string;
  macAddress?: string;
  addressType?: string;
  /** Port group key (distributed) or network name (standard). */
  network?: string;
  /** The decoded device, to edit it. */
  raw: VimObject;
}

export interface VmInfo {
  ref: MoRef;
  name: string;
  powerState: PowerState;
  template: boolean;
  host?: MoRef;
  /** guest.ipAddress: what the guest (tools) reports; undefined until it does. */
  ipAddress?: string;
  guestNet: { network?: string; macAddress?: string; ipAddresses: string[] }[];
  extraConfig: Record<string, string>;
  numCpu?: number;
  memoryMb?: number;
  annotation?: string;
  instanceUuid?: string;
  nics: NicDevice[];
}

export interface CustomizationInput {
  hostName: string;
  /** Required by Linux guest customization on a real vCenter (default `localdomain`). */
  domain?: string;
  timeZone?: string;
  ip: string;
  subnetMask: string;
  gateway?: string;
  dnsServers?: readonly string[];
  dnsSuffixes?: readonly string[];
  /** Pins the adapter mapping to this MAC. */
  macAddress?: string;
}

export interface NicChange {
  network: Pick<NetworkInfo, 'ref' | 'name' | 'kind' | 'portgroupKey' | 'switchUuid'>;
  /** Manual MAC (addressType manual); keeps the generated one when undefined. */
  macAddress?: string;
  /** Which NIC (default: the first of the source VM). */
  device?: NicDevice;
}

export interface ConfigChange {
  numCPUs?: number;
  memoryMB?: number;
  annotation?: string;
  extraConfig?: Readonly<Record<string, string>>;
  nic?: NicChange;
}

export interface CloneOptions extends ConfigChange, WaitTaskOptions {
  name: string;
  /** VM folder for the clone. */
  folder: MoRef;
  /** Resource pool: required when cloning a template. */
  pool?: MoRef;
  host?: MoRef;
  datastore?: MoRef;
  customization?: CustomizationInput;
  /**
   * `clone-spec` (default) sends the customization inside the clone spec, as vCenter does
   * it; `after-clone` runs CustomizeVM_Task on the new VM (vcsim 0.24 ignores the clone
   * spec's customization, and applies a CustomizeVM_Task at the next power-on).
   */
  customizationMode?: 'clone-spec' | 'after-clone';
  /** Power on after the clone (an explicit PowerOnVM_Task, not the clone spec's flag). */
  powerOn?: boolean;
}

const ETHERNET = /^Virtual(E1000e?|Vmxnet[23]?|Vmxnet3Vrdma|PCNet32|SriovEthernetCard|EthernetCard)$/;
// VirtualDevice then VirtualEthernetCard fields, in WSDL order (element order matters).
const NIC_FIELDS = ['key', 'deviceInfo', 'backing', 'connectable', 'controllerKey', 'unitNumber', 'addressType', 'macAddress', 'wakeOnLanEnabled'] as const;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

const VM_PROPS = [
  'name',
  'runtime.powerState',
  'runtime.host',
  'config.template',
  'config.extraConfig',
  'config.hardware.device',
  'config.annotation',
  'config.instanceUuid',
  'summary.config.numCpu',
  'summary.config.memorySizeMB',
  'guest.ipAddress',
  'guest.net',
];

export class VmApi {
  constructor(private readonly client: VsphereClient) {}

  /** A VM or template by its name (names are unique per folder, usually per vCenter). */
  async findByName(name: string): Promise<MoRef | undefined> {
    const all = await this.client.listObjects('VirtualMachine', ['name']);
    return all.find((o) => o.props.name === name)?.obj;
  }

  /** Any entity by inventory path, e.g. `/dc-lab/vm/templates/centos7-jdk8` (SearchIndex). */
  async findByInventoryPath(path: string): Promise<MoRef | undefined> {
    return asMoRef(await this.client.callValue('FindByInventoryPath', this.client.serviceContent.searchIndex, { inventoryPath: path }));
  }

  /** All VMs (templates too) with name, power state and extraConfig, in one round trip. */
  async list(): Promise<Pick<VmInfo, 'ref' | 'name' | 'powerState' | 'template' | 'extraConfig'>[]> {
    const rows = await this.client.listObjects('VirtualMachine', ['name', 'runtime.powerState', 'config.template', 'config.extraConfig']);
    return rows.map(({ obj, props: p }) => ({
      ref: obj,
      name: asString(p.name) ?? obj.value,
      powerState: (asString(p['runtime.powerState']) ?? 'poweredOff') as PowerState,
      template: asBoolean(p['config.template']) ?? false,
      extraConfig: extraConfigOf(p['config.extraConfig']),
    }));
  }

  async get(vm: MoRef): Promise<VmInfo> {
    const p = await this.client.retrieveOne(vm, VM_PROPS);
    return {
      ref: vm,
      name: asString(p.name) ?? vm.value,
      powerState: (asString(p['runtime.powerState']) ?? 'poweredOff') as PowerState,
      template: asBoolean(p['config.template']) ?? false,
      host: asMoRef(p['runtime.host']),
      ipAddress: asString(p['guest.ipAddress']) || undefined,
      guestNet: asArray(p['guest.net']).map((n) => ({
        network: asString(pick(n, 'network')),
        macAddress: asString(pick(n, 'macAddress')),
        ipAddresses: asArray(pick(n, 'ipAddress'))
          .map(asString)
          .filter((s): s is string => !!s),
      })),
      extraConfig: extraConfigOf(p['config.extraConfig']),
      numCpu: asNumber(p['summary.config.numCpu']),
      memoryMb: asNumber(p['summary.config.memorySizeMB']),
      annotation: asString(p['config.annotation']),
      instanceUuid: asString(p['config.instanceUuid']),
      nics: nicsOf(p['config.hardware.device']),
    };
  }

  async powerState(vm: MoRef): Promise<PowerState> {
    return (asString((await this.client.retrieveOne(vm, ['runtime.powerState']))['runtime.powerState']) ?? 'poweredOff') as PowerState;
  }

  /** CloneVM_Task, then (when asked) CPU/memory the server did not apply, customization and power-on. */
  async clone(source: MoRef, opts: CloneOptions): Promise<MoRef> {
    if (!opts.name) throw new Error('clone: name is required');
    let nicDevice = opts.nic?.device;
    if (opts.nic && !nicDevice) {
      [nicDevice] = (await this.get(source)).nics;
      if (!nicDevice) throw new VsphereFault('NoNic', `clone: ${source.value} has no network adapter to put on ${opts.nic.network.name}`, 'CloneVM_Task');
    }
    const config = configSpec(opts, nicDevice);
    const customization = opts.customization ? customizationSpec(opts.customization) : undefined;
    const mode = opts.customizationMode ?? 'clone-spec';
    const spec: SoapObject = {
      location: { datastore: opts.datastore, pool: opts.pool, host: opts.host },
      template: false,
      config,
      customization: mode === 'clone-spec' ? customization : undefined,
      powerOn: false,
    };
    const result = await this.client.runTask('CloneVM_Task', source, { folder: opts.folder, name: opts.name, spec }, opts);
    const vm = asMoRef(result);
    if (!vm) throw new VsphereFault('InvalidResponse', `CloneVM_Task of ${opts.name} returned no VM`, 'CloneVM_Task');

    // vcsim copies CPU and memory from the source whatever the spec says; a real vCenter
    // honours the spec, so this reconfigure only runs where it is needed.
    if (opts.numCPUs !== undefined || opts.memoryMB !== undefined) {
      const now = await this.client.retrieveOne(vm, ['summary.config.numCpu', 'summary.config.memorySizeMB']);
      const cpuOff = opts.numCPUs !== undefined && asNumber(now['summary.config.numCpu']) !== opts.numCPUs;
      const memOff = opts.memoryMB !== undefined && asNumber(now['summary.config.memorySizeMB']) !== opts.memoryMB;
      if (cpuOff || memOff) await this.reconfigure(vm, { numCPUs: opts.numCPUs, memoryMB: opts.memoryMB }, opts);
    }
    if (customization && mode === 'after-clone') await this.client.runTask('CustomizeVM_Task', vm, { spec: customization }, opts);
    if (opts.powerOn) await this.powerOn(vm, opts);
    return vm;
  }

  async reconfigure(vm: MoRef, change: ConfigChange, opts: WaitTaskOptions = {}): Promise<void> {
    let nic = change.nic?.device;
    if (change.nic && !nic) [nic] = (await this.get(vm)).nics;
    await this.client.runTask('ReconfigVM_Task', vm, { spec: configSpec(change, nic) }, opts);
  }

  /** CustomizeVM_Task (the VM must be powered off; applied at the next power-on). */
  async customize(vm: MoRef, c: CustomizationInput, opts: WaitTaskOptions = {}): Promise<void> {
    await this.client.runTask('CustomizeVM_Task', vm, { spec: customizationSpec(c) }, opts);
  }

  async powerOn(vm: MoRef, opts: WaitTaskOptions = {}): Promise<void> {
    await this.client.runTask('PowerOnVM_Task', vm, {}, opts);
  }

  /** Hard power-off (PowerOffVM_Task). */
  async powerOff(vm: MoRef, opts: WaitTaskOptions = {}): Promise<void> {
    await this.client.runTask('PowerOffVM_Task', vm, {}, opts);
  }

  /** Asks the guest OS to shut down (needs VMware Tools); returns at once, poll powerState. */
  async shutdownGuest(vm: MoRef): Promise<void> {
    await this.client.call('ShutdownGuest', vm);
  }

  /** Destroy_Task: the VM must be powered off; its files go too. */
  async destroy(vm: MoRef, opts: WaitTaskOptions = {}): Promise<void> {
    await this.client.runTask('Destroy_Task', vm, {}, opts);
  }
}

// ---------------------------------------------------------------- specs

export function extraConfigOf(v: VimValue | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const o of asArray(v)) {
    const key = asString(pick(o, 'key'));
    if (key !== undefined) out[key] = asString(pick(o, 'value')) ?? '';
  }
  return out;
}

export function nicsOf(devices: VimValue | undefined): NicDevice[] {
  const out: NicDevice[] = [];
  for (const d of asArray(devices)) {
    const o = asObject(d);
    if (!o || !ETHERNET.test(o.$type ?? '')) continue;
    const backing = asObject(o.backing);
    out.push({
      key: asNumber(o.key) ?? 0,
      type: o.$type ?? 'VirtualEthernetCard',
      macAddress: asString(o.macAddress),
      addressType: asString(o.addressType),
      network: asString(pick(backing, 'port.portgroupKey')) ?? asString(backing?.deviceName),
      raw: o,
    });
  }
  return out;
}

function backingOf(net: NicChange['network']): SoapObject {
  if (net.kind === 'dvportgroup') {
    if (!net.switchUuid || !net.portgroupKey) throw new Error(`port group ${net.name}: switchUuid and portgroupKey are required`);
    return { $type: 'VirtualEthernetCardDistributedVirtualPortBackingInfo', port: { switchUuid: net.switchUuid, portgroupKey: net.portgroupKey } };
  }
  if (net.kind === 'opaque') throw new Error(`network ${net.name}: opaque (NSX) networks are not supported`);
  return { $type: 'VirtualEthernetCardNetworkBackingInfo', deviceName: net.name, network: net.ref };
}

function nicEdit(device: NicDevice, change: NicChange): SoapObject {
  if (change.macAddress !== undefined && !MAC.test(change.macAddress)) throw new Error(`invalid MAC address ${JSON.stringify(change.macAddress)}`);
  const patched: Record<string, SoapValue> = {
    ...(device.raw as Record<string, SoapValue>),
    // vcsim 0.24 dereferences deviceInfo on an edit: always send one.
    deviceInfo: (device.raw.deviceInfo as SoapValue) ?? { label: `Network adapter ${device.key}`, summary: change.network.name },
    backing: backingOf(change.network),
    ...(change.macAddress !== undefined ? { addressType: 'manual', macAddress: change.macAddress.toLowerCase() } : {}),
  };
  const out: Record<string, SoapValue> = { $type: device.type };
  for (const f of NIC_FIELDS) if (patched[f] !== undefined) out[f] = patched[f];
  return out as SoapObject;
}

function configSpec(c: ConfigChange, nic: NicDevice | undefined): SoapObject {
  for (const [k, v] of [
    ['numCPUs', c.numCPUs],
    ['memoryMB', c.memoryMB],
  ] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v <= 0)) throw new Error(`${k} must be a positive integer, got ${v}`);
  }
  // VirtualMachineConfigSpec fields in WSDL order.
  return {
    annotation: c.annotation,
    numCPUs: c.numCPUs,
    memoryMB: c.memoryMB,
    deviceChange: c.nic && nic ? [{ operation: 'edit', device: nicEdit(nic, c.nic) }] : undefined,
    extraConfig: c.extraConfig ? Object.entries(c.extraConfig).map(([key, value]) => ({ key, value: { $type: 'xsd:string', $value: value } })) : undefined,
  };
}

function checkIpv4(what: string, ip: string): void {
  const m = IPV4.exec(ip);
  if (!m || m.slice(1).some((o) => Number(o) > 255)) throw new Error(`customization ${what}: invalid IPv4 address ${JSON.stringify(ip)}`);
}

/** CustomizationSpec: Linux guest, fixed IP on the first NIC. Fields in WSDL order. */
export function customizationSpec(c: CustomizationInput): SoapObject {
  if (!/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(c.hostName))
    throw new Error(`customization hostName ${JSON.stringify(c.hostName)}: letters, digits, hyphens, at most 63`);
  checkIpv4('ip', c.ip);
  checkIpv4('subnetMask', c.subnetMask);
  if (c.gateway) checkIpv4('gateway', c.gateway);
  for (const d of c.dnsServers ?? []) checkIpv4('dnsServers', d);
  if (c.macAddress !== undefined && !MAC.test(c.macAddress)) throw new Error(`customization macAddress ${JSON.stringify(c.macAddress)} is not a MAC`);
  return {
    identity: {
      $type: 'CustomizationLinuxPrep',
      hostName: { $type: 'CustomizationFixedName', name: c.hostName },
      domain: c.domain ?? 'localdomain',
      timeZone: c.timeZone,
      hwClockUTC: true,
    },
    globalIPSettings: { dnsSuffixList: c.dnsSuffixes, dnsServerList: c.dnsServers },
    nicSettingMap: [
      {
        macAddress: c.macAddress?.toLowerCase(),
        adapter: {
          ip: { $type: 'CustomizationFixedIp', ipAddress: c.ip },
          subnetMask: c.subnetMask,
          gateway: c.gateway ? [c.gateway] : undefined,
        },
      },
    ],
  };
}

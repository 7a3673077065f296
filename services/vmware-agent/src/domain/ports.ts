import type { AgentInstanceState } from '@orangery/contracts';

/** An ESXi host as vCenter shows it (adapter: libs/vsphere; fakes in unit tests). */
export interface EsxiHost {
  /** vCenter's managed object id (e.g. host-21) */
  ref: string;
  /** vCenter's name for it, e.g. esx01.lab.local */
  name: string;
  cluster: string | undefined;
  datacenter: string;
  connectionState: string;
  inMaintenanceMode: boolean;
  /** vSphere HA is on for the host's cluster: HA, not Orangery, restarts its VMs */
  haProtected: boolean;
  cpuCores: number;
  mhzPerCore: number;
  usedMhz: number;
  memoryMb: number;
  usedMemoryMb: number;
  /** the datastores the host mounts */
  diskMb: number;
  diskFreeMb: number;
  /** VLAN ids of the port groups the host reaches */
  vlans: number[];
}

export type PowerState = 'poweredOn' | 'poweredOff' | 'suspended';

/** What vCenter says of an ESXi host right now (read for every heartbeat). */
export interface EsxiHostState {
  ref: string;
  /** vCenter's runtime.connectionState: connected, disconnected or notResponding */
  connectionState: string;
  inMaintenanceMode: boolean;
  haProtected: boolean;
}

/** A VM (or template) in the datacenter, with the keys of its extraConfig. */
export interface Vm {
  ref: string;
  name: string;
  powerState: PowerState;
  template: boolean;
  /** what the guest reports (guest.ipAddress), when it does */
  guestIp: string | undefined;
  extraConfig: Record<string, string>;
}

/** Everything a clone needs, decided by planVm (pure) from the command. */
export interface VmPlan {
  name: string;
  template: string;
  numCpus: number;
  memoryMb: number;
  vlan: number;
  mac: string;
  extraConfig: Record<string, string>;
  customization: { hostName: string; ip: string; subnetMask: string; gateway: string };
}

/**
 * What the agent needs from vCenter. Implementations throw OrangeryError only:
 * UNAVAILABLE (vCenter unreachable, session lost, timeout; retryable),
 * INSUFFICIENT_CAPACITY (vCenter's resource faults), INTERNAL (any other fault).
 */
export interface Vcenter {
  /** ESXi hosts of the datacenter, with capacity, live usage and VLANs. */
  hosts(): Promise<EsxiHost[]>;
  /**
   * Every ESXi host's connection state, maintenance mode and HA protection, cheaply (the
   * heartbeat's read): UNAVAILABLE when vCenter has not answered within `timeoutMs`.
   */
  hostStates(timeoutMs: number): Promise<EsxiHostState[]>;
  /** Every VM of the datacenter (templates too), in one round trip; within `timeoutMs` when given. */
  vms(timeoutMs?: number): Promise<Vm[]>;
  /**
   * One VM. `fields: 'power'` reads only its name, template flag, power state and guest IP
   * (the poll while a VM starts: a few hundred bytes where the extraConfig is kilobytes);
   * its `extraConfig` is then empty and must not be taken for the VM's labels.
   */
  vm(ref: string, fields?: 'all' | 'power'): Promise<Vm | undefined>;
  /** The template's ref, or undefined when there is no template of that name. */
  findTemplate(name: string): Promise<string | undefined>;
  /** The name of a port group with this VLAN that the host reaches, if any. */
  portGroupFor(hostRef: string, vlan: number): Promise<string | undefined>;
  /** Clones (not powered on); the new VM's ref. */
  clone(templateRef: string, hostRef: string, portGroup: string, plan: VmPlan): Promise<string>;
  powerOn(ref: string): Promise<void>;
  powerOff(ref: string): Promise<void>;
  /** Asks the guest to shut down; false when it cannot (no tools): the caller powers off. */
  shutdownGuest(ref: string): Promise<boolean>;
  destroy(ref: string): Promise<void>;
}

/** A VM as vCenter's change stream (WaitForUpdatesEx) reports it: only what changed is set. */
export interface VmChange {
  ref: string;
  kind: 'enter' | 'modify' | 'leave';
  name?: string;
  template?: boolean;
  powerState?: string;
  /** present (maybe undefined) when the guest's IP changed */
  guestIp?: string | undefined;
  extraConfig?: Record<string, string>;
}

export interface HostConnection {
  ref: string;
  connectionState: string;
}

/** What vCenter's change stream tells, in order (adapters/change-watcher.ts calls it). */
export interface ChangeHandlers {
  /** A full picture follows (first update set of a new filter): what is not in it is gone. */
  resync(vms: VmChange[], hosts: HostConnection[]): void;
  vm(change: VmChange): void;
  host(ref: string, connectionState: string): void;
  /** the stream broke; the watcher makes it again */
  error(err: unknown): void;
}

export interface DomainLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}

export interface InstanceEvent {
  what: 'running' | 'stopped' | 'failed' | 'removed';
  hostId: string;
  instanceId: string;
  data: Record<string, unknown>;
}

export interface EventSink {
  instance(e: InstanceEvent): void;
  host(hostId: string, what: string, data: Record<string, unknown>): void;
}

export function stateOfVm(vm: Pick<Vm, 'powerState'> | undefined): AgentInstanceState {
  if (!vm) return 'removed';
  return vm.powerState === 'poweredOn' ? 'running' : 'stopped';
}

// Inventory reads: datacenters, ESXi hosts (capacity and live usage), clusters, datastores,
// and networks with their VLAN ids (distributed port groups and standard port groups).
import { viewSpec, type VsphereClient } from './client';
import { VsphereFault } from './errors';
import { asArray, asBoolean, asMoRef, asNumber, asObject, asString, pick, type MoRef, type VimValue } from './xml';

export interface DatacenterInfo {
  ref: MoRef;
  name: string;
  vmFolder?: MoRef;
  hostFolder?: MoRef;
  datastoreFolder?: MoRef;
  networkFolder?: MoRef;
}

export interface HostInfo {
  ref: MoRef;
  name: string;
  /** The cluster (ClusterComputeResource) or standalone ComputeResource. */
  parent?: MoRef;
  connectionState: string;
  powerState: string;
  inMaintenanceMode: boolean;
  overallStatus: string;
  vendor?: string;
  model?: string;
  cpu: { packages: number; cores: number; threads: number; mhzPerCore: number; totalMhz: number; usedMhz: number };
  memory: { totalMb: number; usedMb: number };
  uptimeSeconds?: number;
}

/** What vCenter says of an ESXi host right now: cheap enough to read every heartbeat. */
export interface HostState {
  ref: MoRef;
  name: string;
  /** `connected`, `disconnected` or `notResponding` (vCenter's HostSystemConnectionState) */
  connectionState: string;
  inMaintenanceMode: boolean;
  /** The cluster (ClusterComputeResource) or standalone ComputeResource. */
  parent?: MoRef;
  /** vSphere HA is on for the host's cluster (`configuration.dasConfig.enabled`); false for standalone hosts */
  haEnabled: boolean;
}

export interface ClusterInfo {
  ref: MoRef;
  name: string;
  hosts: MoRef[];
  resourcePool?: MoRef;
  numHosts: number;
  numEffectiveHosts: number;
  totalCpuMhz: number;
  totalMemoryMb: number;
}

export interface DatastoreInfo {
  ref: MoRef;
  name: string;
  type: string;
  capacityMb: number;
  freeMb: number;
  accessible: boolean;
  url?: string;
}

/** A network a NIC can be put on. */
export interface NetworkInfo {
  ref: MoRef;
  name: string;
  /** `dvportgroup`: distributed port group; `network`: a standard (host vSwitch) port group. */
  kind: 'dvportgroup' | 'network' | 'opaque';
  /** 0 = untagged; undefined for trunks or when unknown. */
  vlanId?: number;
  trunk?: boolean;
  /** dvportgroup only: what a NIC backing needs. */
  portgroupKey?: string;
  switchUuid?: string;
}

const MB = 1024 * 1024;
const num = (v: VimValue | undefined) => asNumber(v) ?? 0;

export class InventoryApi {
  /** hostStates' container view, kept for the session it was made in */
  #stateView: { root: string; generation: number; view: MoRef } | undefined;

  constructor(private readonly client: VsphereClient) {}

  /**
   * Every ESXi host below `root` (default: the root folder) with its connection state,
   * maintenance mode and its cluster's HA setting, in one RetrievePropertiesEx: the
   * container view is made once per session and kept, so a call that times out (a frozen
   * vCenter) leaves nothing behind on vCenter, and the next one costs one round trip.
   * `timeoutMs` bounds the whole read.
   */
  async hostStates(root?: MoRef, opts: { timeoutMs?: number } = {}): Promise<HostState[]> {
    const deadline = opts.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs;
    const left = () => (deadline === undefined ? undefined : Math.max(1, deadline - Date.now()));
    const from = root ?? this.client.serviceContent.rootFolder;
    const paths = {
      HostSystem: ['name', 'parent', 'runtime.connectionState', 'runtime.inMaintenanceMode'],
      ClusterComputeResource: ['configuration.dasConfig.enabled'],
    };
    let rows;
    for (let attempt = 0; ; attempt++) {
      const view = await this.#viewFor(from, left());
      try {
        rows = await this.client.retrieve([viewSpec(view, paths)], { timeoutMs: left() });
        break;
      } catch (e) {
        // The view died with its session (vCenter restarted, session expired): make it again, once.
        if (attempt > 0 || !(e instanceof VsphereFault) || e.faultName !== 'ManagedObjectNotFound') throw e;
        this.#stateView = undefined;
      }
    }
    const haOn = new Set(
      rows.filter((r) => r.obj.type === 'ClusterComputeResource' && asBoolean(r.props['configuration.dasConfig.enabled']) === true).map((r) => r.obj.value),
    );
    return rows
      .filter((r) => r.obj.type === 'HostSystem')
      .map(({ obj, props: p }) => {
        const parent = asMoRef(p.parent);
        return {
          ref: obj,
          name: asString(p.name) ?? obj.value,
          connectionState: asString(p['runtime.connectionState']) ?? 'unknown',
          inMaintenanceMode: asBoolean(p['runtime.inMaintenanceMode']) ?? false,
          parent,
          haEnabled: parent !== undefined && haOn.has(parent.value),
        };
      });
  }

  async #viewFor(root: MoRef, timeoutMs: number | undefined): Promise<MoRef> {
    const generation = this.client.sessionGeneration;
    const kept = this.#stateView;
    if (kept && kept.root === root.value && kept.generation === generation) return kept.view;
    const view = await this.client.containerView(root, ['HostSystem', 'ClusterComputeResource'], timeoutMs);
    this.#stateView = { root: root.value, generation, view };
    return view;
  }

  async datacenters(): Promise<DatacenterInfo[]> {
    const rows = await this.client.listObjects('Datacenter', ['name', 'vmFolder', 'hostFolder', 'datastoreFolder', 'networkFolder']);
    return rows.map(({ obj, props: p }) => ({
      ref: obj,
      name: asString(p.name) ?? obj.value,
      vmFolder: asMoRef(p.vmFolder),
      hostFolder: asMoRef(p.hostFolder),
      datastoreFolder: asMoRef(p.datastoreFolder),
      networkFolder: asMoRef(p.networkFolder),
    }));
  }

  async hosts(): Promise<HostInfo[]> {
    const rows = await this.client.listObjects('HostSystem', [
      'name',
      'parent',
      'summary.hardware',
      'summary.quickStats',
      'runtime.connectionState',
      'runtime.powerState',
      'runtime.inMaintenanceMode',
      'summary.overallStatus',
    ]);
    return rows.map(({ obj, props: p }) => {
      const hw = p['summary.hardware'];
      const qs = p['summary.quickStats'];
      const cores = num(pick(hw, 'numCpuCores'));
      const mhz = num(pick(hw, 'cpuMhz'));
      return {
        ref: obj,
        name: asString(p.name) ?? obj.value,
        parent: asMoRef(p.parent),
        connectionState: asString(p['runtime.connectionState']) ?? 'unknown',
        powerState: asString(p['runtime.powerState']) ?? 'unknown',
        inMaintenanceMode: asBoolean(p['runtime.inMaintenanceMode']) ?? false,
        overallStatus: asString(p['summary.overallStatus']) ?? 'gray',
        vendor: asString(pick(hw, 'vendor')),
        model: asString(pick(hw, 'model')),
        cpu: {
          packages: num(pick(hw, 'numCpuPkgs')),
          cores,
          threads: num(pick(hw, 'numCpuThreads')),
          mhzPerCore: mhz,
          totalMhz: cores * mhz,
          usedMhz: num(pick(qs, 'overallCpuUsage')),
        },
        memory: { totalMb: Math.floor(num(pick(hw, 'memorySize')) / MB), usedMb: num(pick(qs, 'overallMemoryUsage')) },
        uptimeSeconds: asNumber(pick(qs, 'uptime')),
      };
    });
  }

  async clusters(): Promise<ClusterInfo[]> {
    const rows = await this.client.listObjects('ClusterComputeResource', ['name', 'host', 'resourcePool', 'summary']);
    return rows.map(({ obj, props: p }) => ({
      ref: obj,
      name: asString(p.name) ?? obj.value,
      hosts: asArray(p.host)
        .map(asMoRef)
        .filter((r): r is MoRef => r !== undefined),
      resourcePool: asMoRef(p.resourcePool),
      numHosts: num(pick(p.summary, 'numHosts')),
      numEffectiveHosts: num(pick(p.summary, 'numEffectiveHosts')),
      totalCpuMhz: num(pick(p.summary, 'totalCpu')),
      totalMemoryMb: Math.floor(num(pick(p.summary, 'totalMemory')) / MB),
    }));
  }

  /** The root resource pool of a host's cluster (or standalone compute resource). */
  async resourcePoolOfHost(host: MoRef): Promise<MoRef | undefined> {
    const parent = asMoRef((await this.client.retrieveOne(host, ['parent'])).parent);
    if (!parent) return undefined;
    return asMoRef((await this.client.retrieveOne(parent, ['resourcePool'])).resourcePool);
  }

  async datastores(): Promise<DatastoreInfo[]> {
    const rows = await this.client.listObjects('Datastore', ['name', 'summary']);
    return rows.map(({ obj, props: p }) => ({
      ref: obj,
      name: asString(p.name) ?? obj.value,
      type: asString(pick(p.summary, 'type')) ?? '',
      capacityMb: Math.floor(num(pick(p.summary, 'capacity')) / MB),
      freeMb: Math.floor(num(pick(p.summary, 'freeSpace')) / MB),
      accessible: asBoolean(pick(p.summary, 'accessible')) ?? false,
      url: asString(pick(p.summary, 'url')),
    }));
  }

  /**
   * Networks with VLAN ids: distributed port groups (VLAN from their default port config;
   * uplink port groups left out) and standard port groups (VLAN from the hosts' vSwitch
   * port group specs).
   */
  async networks(): Promise<NetworkInfo[]> {
    const [all, dvpgs, switches, hosts] = await Promise.all([
      this.client.listObjects('Network', ['name']),
      this.client.listObjects('DistributedVirtualPortgroup', [
        'name',
        'config.key',
        'config.distributedVirtualSwitch',
        'config.defaultPortConfig',
        'config.uplink',
        'tag',
      ]),
      this.client.listObjects('DistributedVirtualSwitch', ['uuid', 'config.uplinkPortgroup']),
      this.client.listObjects('HostSystem', ['config.network.portgroup']),
    ]);
    const uuidOf = new Map(switches.map((s) => [s.obj.value, asString(s.props.uuid)]));
    const uplinks = new Set(switches.flatMap((s) => asArray(s.props['config.uplinkPortgroup']).map((r) => asMoRef(r)?.value)));
    const standardVlan = new Map<string, number>();
    for (const h of hosts) {
      for (const pg of asArray(h.props['config.network.portgroup'])) {
        const name = asString(pick(pg, 'spec.name'));
        const vlan = asNumber(pick(pg, 'spec.vlanId'));
        if (name !== undefined && vlan !== undefined) standardVlan.set(name, vlan);
      }
    }
    const out: NetworkInfo[] = [];
    const dvpgRefs = new Set<string>();
    for (const { obj, props: p } of dvpgs) {
      dvpgRefs.add(obj.value);
      const tags = asArray(p.tag).map((t) => asString(pick(t, 'key')));
      // Uplink port groups carry no VMs: vCenter tags them; vcsim only names them so.
      if (
        asBoolean(p['config.uplink']) === true ||
        uplinks.has(obj.value) ||
        tags.includes('SYSTEM/DVS.UPLINKPG') ||
        /-DVUplinks-\d+$/.test(asString(p.name) ?? '')
      )
        continue;
      const vlan = asObject(pick(p['config.defaultPortConfig'], 'vlan'));
      const vlanType = vlan?.$type ?? '';
      const dvs = asMoRef(p['config.distributedVirtualSwitch']);
      out.push({
        ref: obj,
        name: asString(p.name) ?? obj.value,
        kind: 'dvportgroup',
        vlanId: vlanType.includes('Trunk') ? undefined : (asNumber(vlan?.vlanId) ?? asNumber(vlan?.pvlanId) ?? 0),
        trunk: vlanType.includes('Trunk') || undefined,
        portgroupKey: asString(p['config.key']) ?? obj.value,
        switchUuid: dvs ? uuidOf.get(dvs.value) : undefined,
      });
    }
    for (const { obj, props: p } of all) {
      if (dvpgRefs.has(obj.value) || obj.type === 'DistributedVirtualPortgroup') continue;
      const name = asString(p.name) ?? obj.value;
      out.push({ ref: obj, name, kind: obj.type === 'OpaqueNetwork' ? 'opaque' : 'network', vlanId: standardVlan.get(name) });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }
}

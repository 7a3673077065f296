import Docker from 'dockerode';
import { OrangeryError } from '@orangery/contracts';
import type { NodeEnginesConfig } from '../config';
import type { ConfigNetworkSpec, NodeEngine, NodeEngines, SwarmEngine, SwarmNetworkSpec, SwarmNode, SwarmService, SwarmTask } from '../domain/ports';
import { LABEL, type ServicePlan } from '../domain/service-spec';

/** unix:///path or tcp://host:port -> dockerode options (every call bounded by `timeoutMs`). */
export function dockerOptions(url: string, timeoutMs: number): Docker.DockerOptions {
  if (url.startsWith('unix://')) return { socketPath: url.slice('unix://'.length), timeout: timeoutMs };
  const u = new URL(url.replace(/^tcp:/, 'http:'));
  return { host: u.hostname, port: Number(u.port || 2375), protocol: 'http', timeout: timeoutMs };
}

const statusCode = (e: unknown): number | undefined => (e as { statusCode?: number }).statusCode;
const managedFilter = JSON.stringify({ label: [`${LABEL.managed}=true`] });

/* eslint-disable @typescript-eslint/no-explicit-any -- the Engine API's swarm objects are typed loosely by @types/dockerode */

/**
 * The manager's engine through dockerode (Engine API 1.41: Debian's dockerd 20.10). What the
 * service spec can say on 1.41 is in planService; the rest is in docs/swarm-agent.md.
 */
export class DockerSwarmEngine implements SwarmEngine {
  readonly docker: Docker;

  constructor(url: string, timeoutMs = 10_000) {
    this.docker = new Docker(dockerOptions(url, timeoutMs));
  }

  async about(): Promise<{ version: string; nodeId: string; isManager: boolean; hostname: string; addr: string }> {
    const [info, version] = await Promise.all([this.docker.info(), this.docker.version()]);
    const swarm = (info as any).Swarm ?? {};
    return {
      version: `${version.Version} (API ${version.ApiVersion})`,
      nodeId: String(swarm.NodeID ?? ''),
      isManager: swarm.ControlAvailable === true,
      hostname: String((info as any).Name ?? ''),
      addr: String(swarm.NodeAddr ?? ''),
    };
  }

  async nodes(): Promise<SwarmNode[]> {
    const list = (await this.docker.listNodes()) as any[];
    return list.map((n) => ({
      id: String(n.ID),
      hostname: String(n.Description?.Hostname ?? n.ID),
      role: n.Spec?.Role === 'manager' ? 'manager' : 'worker',
      state: String(n.Status?.State ?? 'unknown'),
      availability: String(n.Spec?.Availability ?? 'active'),
      nanoCpus: Number(n.Description?.Resources?.NanoCPUs ?? 0),
      memoryBytes: Number(n.Description?.Resources?.MemoryBytes ?? 0),
      labels: { ...(n.Spec?.Labels ?? {}) },
      version: Number(n.Version?.Index ?? 0),
      addr: n.Status?.Addr ? String(n.Status.Addr) : undefined,
    }));
  }

  /** Read-modify-write of the node's spec at its version; a concurrent update (409/500 "out of sequence") is retried. */
  async setNodeLabel(nodeId: string, key: string, value: string | undefined): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const node = this.docker.getNode(nodeId);
      const n = (await node.inspect()) as any;
      const labels = { ...(n.Spec?.Labels ?? {}) };
      if (value === undefined) delete labels[key];
      else labels[key] = value;
      try {
        await node.update({ version: n.Version.Index, ...n.Spec, Labels: labels });
        return;
      } catch (e) {
        if (attempt >= 3 || !/out of sequence|update out of/i.test(String((e as Error).message))) throw e;
      }
    }
  }

  async services(): Promise<SwarmService[]> {
    const list = (await this.docker.listServices({ filters: managedFilter })) as any[];
    return list.map(serviceOf);
  }

  async findService(instanceId: string): Promise<SwarmService | undefined> {
    const list = (await this.docker.listServices({
      filters: JSON.stringify({ label: [`${LABEL.managed}=true`, `${LABEL.instanceId}=${instanceId}`] }),
    })) as any[];
    return list[0] ? serviceOf(list[0]) : undefined;
  }

  async createService(plan: ServicePlan): Promise<string> {
    try {
      const r = (await this.docker.createService({
        Name: plan.name,
        Labels: plan.labels,
        TaskTemplate: {
          ContainerSpec: {
            Image: plan.image,
            Hostname: plan.hostname,
            Labels: plan.labels,
            Env: plan.env,
            ...(plan.command ? { Args: plan.command } : {}),
            // API 1.41: capabilities yes, no-new-privileges no (docs/swarm-agent.md)
            CapabilityDrop: plan.capDrop,
          },
          Resources: {
            // Limits only: the scheduler does the accounting (reservations would make swarm
            // refuse a move that the scheduler's own capacity view allows).
            Limits: { NanoCPUs: plan.nanoCpus, MemoryBytes: plan.memoryBytes, Pids: plan.pidsLimit },
          },
          RestartPolicy: { Condition: 'any', Delay: 1_000_000_000, MaxAttempts: 0 },
          Placement: { Constraints: plan.constraints },
          Networks: [{ Target: plan.network }],
          LogDriver: { Name: 'json-file', Options: { 'max-size': '10m', 'max-file': '3' } },
        },
        Mode: { Replicated: { Replicas: plan.replicas } },
        // dnsrr: no virtual IP, so swarm takes no address of the pool for the service itself
        EndpointSpec: { Mode: 'dnsrr' },
      } as any)) as any;
      return String(r.id ?? r.ID);
    } catch (e) {
      if (statusCode(e) === 409) {
        const existing = await this.findService(plan.labels[LABEL.instanceId]!);
        if (existing) return existing.id;
      }
      throw e;
    }
  }

  async scaleService(serviceId: string, replicas: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const s = this.docker.getService(serviceId);
      const info = (await s.inspect()) as any;
      const spec = { ...info.Spec, Mode: { Replicated: { Replicas: replicas } } };
      try {
        await s.update({ version: info.Version.Index, ...spec });
        return;
      } catch (e) {
        if (statusCode(e) === 404) throw new OrangeryError('NOT_FOUND', `swarm service ${serviceId} is gone`, { serviceId });
        if (attempt >= 3 || !/out of sequence|update out of/i.test(String((e as Error).message))) throw e;
      }
    }
  }

  async removeService(serviceId: string): Promise<void> {
    try {
      await this.docker.getService(serviceId).remove();
    } catch (e) {
      if (statusCode(e) !== 404) throw e;
    }
  }

  async tasks(serviceId?: string): Promise<SwarmTask[]> {
    const filters = serviceId ? JSON.stringify({ service: [serviceId] }) : undefined;
    let list: any[];
    try {
      list = (await this.docker.listTasks(filters ? { filters } : {})) as any[];
    } catch (e) {
      // a filter naming a service that is gone is a 404: it has no tasks
      if (serviceId && statusCode(e) === 404) return [];
      throw e;
    }
    // without a service: every task of the swarm (the caller keeps those of its services)
    return list
      .filter((t) => !serviceId || t.ServiceID === serviceId)
      .map((t) => {
        const addresses: Record<string, string[]> = {};
        for (const a of (t.NetworksAttachments ?? []) as any[]) {
          const name = a.Network?.Spec?.Name;
          if (name) addresses[name] = [...(a.Addresses ?? [])];
        }
        return {
          id: String(t.ID),
          serviceId: String(t.ServiceID),
          nodeId: t.NodeID ? String(t.NodeID) : undefined,
          desiredState: String(t.DesiredState ?? ''),
          state: String(t.Status?.State ?? ''),
          err: t.Status?.Err ? String(t.Status.Err) : undefined,
          containerId: t.Status?.ContainerStatus?.ContainerID ? String(t.Status.ContainerStatus.ContainerID) : undefined,
          updatedAt: String(t.Status?.Timestamp ?? t.UpdatedAt ?? ''),
          addresses,
        };
      });
  }

  async ensureSwarmNetwork(spec: SwarmNetworkSpec): Promise<void> {
    try {
      await this.docker.getNetwork(spec.name).inspect();
      return;
    } catch (e) {
      if (statusCode(e) !== 404) throw e;
    }
    try {
      await this.docker.createNetwork({
        Name: spec.name,
        Driver: 'macvlan',
        Scope: 'swarm',
        ConfigFrom: { Network: spec.configFrom },
        CheckDuplicate: true,
        // no Labels, Options or IPAM: the daemon refuses any with --config-from (403 "user
        // specified configurations are not supported if the network depends on a configuration network")
      } as any);
    } catch (e) {
      // another replica (or an earlier call) made it meanwhile
      await this.docker
        .getNetwork(spec.name)
        .inspect()
        .catch(() => {
          throw e;
        });
    }
  }
}

function serviceOf(s: any): SwarmService {
  return {
    id: String(s.ID),
    name: String(s.Spec?.Name ?? ''),
    labels: { ...(s.Spec?.Labels ?? {}) },
    replicas: Number(s.Spec?.Mode?.Replicated?.Replicas ?? 0),
    version: Number(s.Version?.Index ?? 0),
  };
}

/** One node's own engine: config-only networks and its containers' addresses. */
export class DockerNodeEngine implements NodeEngine {
  readonly docker: Docker;

  constructor(url: string, timeoutMs = 10_000) {
    this.docker = new Docker(dockerOptions(url, timeoutMs));
  }

  async nodeId(): Promise<string> {
    return String(((await this.docker.info()) as any).Swarm?.NodeID ?? '');
  }

  async ensureConfigNetwork(spec: ConfigNetworkSpec): Promise<'created' | 'replaced' | 'exists'> {
    let replaced = false;
    try {
      const n = (await this.docker.getNetwork(spec.name).inspect()) as any;
      const cfg = n.IPAM?.Config?.[0] ?? {};
      if (cfg.IPRange === spec.ipRange && cfg.Subnet === spec.subnet && n.Options?.parent === spec.parent) return 'exists';
      // another block than ipam's (a wiped ipam, an earlier agent): the range must be ipam's
      await this.docker.getNetwork(spec.name).remove();
      replaced = true;
    } catch (e) {
      if (statusCode(e) !== 404) throw e;
    }
    await this.docker.createNetwork({
      Name: spec.name,
      Driver: 'macvlan',
      ConfigOnly: true,
      CheckDuplicate: true,
      Options: { parent: spec.parent, macvlan_mode: 'bridge' },
      IPAM: { Driver: 'default', Config: [{ Subnet: spec.subnet, Gateway: spec.gateway, IPRange: spec.ipRange }] },
      Labels: spec.labels,
    } as any);
    return replaced ? 'replaced' : 'created';
  }

  async containerAddress(containerId: string, network: string): Promise<{ ip: string; mac: string } | undefined> {
    try {
      const c = (await this.docker.getContainer(containerId).inspect()) as any;
      const n = c.NetworkSettings?.Networks?.[network];
      if (!n?.IPAddress) return undefined;
      return { ip: String(n.IPAddress), mac: String(n.MacAddress ?? '') };
    } catch (e) {
      if (statusCode(e) === 404) return undefined;
      throw e;
    }
  }
}

/**
 * ORANGERY_SWARM_NODE_ENGINES, with the manager's own node reached through ORANGERY_SWARM_MANAGER.
 * Unset, the template is derived from ORANGERY_SWARM_MANAGER when that names the manager node
 * by its hostname (`unix:///run/engines/<hostname>.sock`) or its swarm address
 * (`tcp://<addr>:2375`): the same URL with `{hostname}` / `{addr}` in their place. Whatever
 * the source, SwarmNodes checks that an engine is the node it is meant to be (its swarm node
 * id) before making a block's network there, so a wrong guess or a wrong entry gives that
 * node no tasks, never another node's range.
 */
export class ConfiguredNodeEngines implements NodeEngines {
  private readonly cache = new Map<string, DockerNodeEngine>();
  private managerNodeId: string | undefined;
  private derived: string | undefined;

  /** the template derived from ORANGERY_SWARM_MANAGER (no ORANGERY_SWARM_NODE_ENGINES), if any */
  get derivedTemplate(): string | undefined {
    return this.derived;
  }

  constructor(
    private readonly config: NodeEnginesConfig,
    private readonly managerUrl: string,
  ) {}

  /** The manager's node; with no ORANGERY_SWARM_NODE_ENGINES, derives the template (undefined when it cannot). */
  setManagerNode(nodeId: string, hostname = '', addr = ''): string | undefined {
    this.managerNodeId = nodeId;
    if (this.config.kind === 'none') this.derived = deriveEngineTemplate(this.managerUrl, hostname, addr);
    return this.derived;
  }

  forNode(hostname: string, nodeId: string, addr?: string): NodeEngine | undefined {
    const url = nodeId === this.managerNodeId ? this.managerUrl : this.urlOf(hostname, addr);
    if (!url) return undefined;
    let e = this.cache.get(url);
    if (!e) {
      e = new DockerNodeEngine(url);
      this.cache.set(url, e);
    }
    return e;
  }

  private urlOf(hostname: string, addr: string | undefined): string | undefined {
    const template = this.config.kind === 'template' ? this.config.template : this.derived;
    if (template !== undefined) {
      if (template.includes('{addr}') && !addr) return undefined;
      return template.replaceAll('{hostname}', hostname).replaceAll('{addr}', addr ?? '');
    }
    if (this.config.kind === 'pairs') return this.config.byHostname[hostname];
    return undefined;
  }
}

/**
 * ORANGERY_SWARM_MANAGER with the manager node's hostname (as a whole path or host part) or
 * its swarm address replaced by `{hostname}` / `{addr}`; undefined when it names neither.
 */
export function deriveEngineTemplate(managerUrl: string, hostname: string, addr: string): string | undefined {
  const at = (needle: string): RegExp => new RegExp(`(?<=[/.:_-])${needle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?=[/.:_-]|$)`, 'g');
  if (hostname.length >= 2 && at(hostname).test(managerUrl)) return managerUrl.replace(at(hostname), '{hostname}');
  if (addr && at(addr).test(managerUrl)) return managerUrl.replace(at(addr), '{addr}');
  return undefined;
}

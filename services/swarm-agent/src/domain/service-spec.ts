import { createHash } from 'node:crypto';
import {
  DROPPED_CAPABILITIES,
  HOST_ID_PATTERN,
  instanceProcessEnv,
  memoryLimitMb,
  OrangeryError,
  specHashOf,
  type SwarmCreateInstanceCommand,
} from '@orangery/contracts';

/** Labels on every orangery swarm service: the manager's services are the only truth of what runs. */
export const LABEL = {
  managed: 'io.orangery.managed',
  instanceId: 'io.orangery.instance-id',
  env: 'io.orangery.env',
  app: 'io.orangery.app',
  slot: 'io.orangery.slot',
  pool: 'io.orangery.pool',
  cpu: 'io.orangery.cpu',
  memoryMb: 'io.orangery.memory-mb',
  heapMb: 'io.orangery.heap-mb',
  diskMb: 'io.orangery.disk-mb',
  image: 'io.orangery.image',
  specHash: 'io.orangery.spec-hash',
} as const;

/** The node label that says a node has its config-only network (and ipam block) for a pool. */
export const netReadyLabel = (pool: string): string => `orangery.net.${pool}`;

/** A pool's config-only network on every node, and the swarm-scoped network made from them. */
export const configNetworkName = (pool: string): string => `orangery-swcfg-${pool}`;
export const swarmNetworkName = (pool: string): string => `orangery-sw-${pool}`;

/** The interface a VLAN's macvlan network hangs off: the uplink itself when untagged. */
export function parentInterface(uplink: string, vlan: number): string {
  const name = vlan === 0 ? uplink : `${uplink}.${vlan}`;
  if (name.length > 15) throw new Error(`interface name '${name}' is longer than the kernel's 15 characters`);
  return name;
}

const HOST_ID = new RegExp(HOST_ID_PATTERN);

/**
 * A node's host id: `<cluster>-<node hostname>`, lower-cased, anything but [a-z0-9-] as '-',
 * cut to the host id pattern's 63 characters. Undefined when nothing usable is left.
 */
export function nodeHostId(cluster: string, hostname: string): string | undefined {
  const raw = `${cluster}-${hostname}`
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-+/g, '-')
    .slice(0, 63)
    .replace(/-+$/, '');
  return HOST_ID.test(raw) ? raw : undefined;
}

/** Swarm service names: at most 63 characters of [a-zA-Z0-9-]; readable, unique per instance id. */
export function serviceName(instanceId: string): string {
  const readable = `orangery-${instanceId.replace(/:/g, '-')}`;
  if (readable.length <= 63) return readable;
  const hash = createHash('sha256').update(instanceId).digest('hex').slice(0, 10);
  return `${readable.slice(0, 52).replace(/-+$/, '')}-${hash}`;
}

/** What defines a swarm instance: a create for an existing instance id with another hash is INSTANCE_CONFLICT. */
export function swarmSpecHash(cmd: SwarmCreateInstanceCommand): string {
  const parts: unknown[] = [
    cmd.image,
    cmd.resources.cpu,
    cmd.resources.memoryMb,
    cmd.resources.heapMb ?? null,
    cmd.resources.diskMb ?? null,
    cmd.pool,
    cmd.environment ?? {},
    cmd.command ?? null,
    cmd.security ?? null,
  ];
  // only when given: services created before hostLabels existed keep their hash
  if (cmd.hostLabels && Object.keys(cmd.hostLabels).length > 0) parts.push({ hostLabels: cmd.hostLabels });
  return specHashOf(parts);
}

const LABEL_KEY = /^[A-Za-z0-9._/-]+$/;
/** printable ASCII without the constraint syntax's `=`, `!` and `,`, no space at either end */
const LABEL_VALUE = /^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$/;
const CONSTRAINT_SYNTAX = /[=!,]/;

/**
 * The env's hostLabels as swarm placement constraints: a task may run only on a node carrying
 * every one. The labels a swarm host reports (HostFacts.labels) are its node labels plus
 * `node` (its hostname), `role` (manager/worker) and `cluster` (this agent's): those map to
 * `node.hostname==`, `node.role==`, and the cluster to nothing when it is this one's.
 * Keys and values are checked so that no constraint syntax can be injected: INVALID_REQUEST.
 */
export function hostLabelConstraints(hostLabels: Record<string, string> | undefined, cluster: string): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(hostLabels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (!LABEL_KEY.test(k) || typeof v !== 'string' || !LABEL_VALUE.test(v) || CONSTRAINT_SYNTAX.test(v)) {
      throw new OrangeryError('INVALID_REQUEST', `hostLabels ${JSON.stringify(k)}=${JSON.stringify(v)} cannot be a swarm placement constraint`, {
        field: 'hostLabels',
        key: k,
      });
    }
    if (k === 'node') out.push(`node.hostname==${v}`);
    else if (k === 'role') out.push(`node.role==${v}`);
    else if (k === 'cluster') {
      if (v !== cluster) {
        throw new OrangeryError('INVALID_REQUEST', `hostLabels cluster=${v}: this swarm-agent serves cluster ${cluster}`, { field: 'hostLabels', key: k });
      }
    } else out.push(`node.labels.${k}==${v}`);
  }
  return out;
}

/**
 * Everything a swarm service needs, decided from the command alone (pure). What the
 * docker-agent sets and swarm's service API (1.41) cannot: memory swappiness, a cpuset, a
 * MAC address, no-new-privileges (ContainerSpec.Privileges has it from API 1.46 only);
 * docs/swarm-agent.md "Resources and hardening".
 */
export interface ServicePlan {
  name: string;
  image: string;
  hostname: string;
  labels: Record<string, string>;
  env: string[];
  command: string[] | undefined;
  /** the pool's swarm-scoped network */
  network: string;
  /** placement: only nodes with the pool's config-only network (and the env's hostLabels) */
  constraints: string[];
  memoryBytes: number;
  memoryMb: number;
  nanoCpus: number;
  pidsLimit: number;
  capDrop: string[];
  /** true: the command asked for no-new-privileges, which swarm (API 1.41) cannot set per service */
  noNewPrivileges: boolean;
  replicas: number;
}

export function planService(cmd: SwarmCreateInstanceCommand, settings: { pidsLimit: number; cluster: string }): ServicePlan {
  const memoryMb = memoryLimitMb(cmd.resources.memoryMb, cmd.resources.heapMb);
  const labels: Record<string, string> = {
    [LABEL.managed]: 'true',
    [LABEL.instanceId]: cmd.instanceId,
    [LABEL.env]: cmd.env,
    [LABEL.app]: cmd.app,
    [LABEL.slot]: String(cmd.slot),
    [LABEL.pool]: cmd.pool,
    [LABEL.cpu]: String(cmd.resources.cpu),
    [LABEL.memoryMb]: String(cmd.resources.memoryMb),
    [LABEL.image]: cmd.image,
    [LABEL.specHash]: swarmSpecHash(cmd),
  };
  if (cmd.resources.heapMb !== undefined) labels[LABEL.heapMb] = String(cmd.resources.heapMb);
  if (cmd.resources.diskMb !== undefined) labels[LABEL.diskMb] = String(cmd.resources.diskMb);
  // No ORANGERY_IP: swarm picks the address when the task starts (see the task's network).
  const env = instanceProcessEnv(cmd);
  const keep = new Set<string>(cmd.security?.addCapabilities ?? []);
  return {
    name: serviceName(cmd.instanceId),
    image: cmd.image,
    hostname: `${cmd.app}-${cmd.slot}`.slice(0, 63),
    labels,
    env,
    command: cmd.command,
    network: swarmNetworkName(cmd.pool),
    constraints: [`node.labels.${netReadyLabel(cmd.pool)}==1`, ...hostLabelConstraints(cmd.hostLabels, settings.cluster)],
    memoryMb,
    memoryBytes: memoryMb * 1024 * 1024,
    nanoCpus: Math.round(cmd.resources.cpu * 1e9),
    pidsLimit: cmd.security?.pidsLimit ?? settings.pidsLimit,
    capDrop: DROPPED_CAPABILITIES.filter((c) => !keep.has(c)),
    noNewPrivileges: cmd.security?.allowPrivilegeEscalation !== true,
    replicas: cmd.start === false ? 0 : 1,
  };
}

/** The resources a service's labels say it was created with (for allocated and the AgentInstance). */
export function resourcesOf(labels: Record<string, string>): { cpu: number; memoryMb: number; heapMb?: number; diskMb?: number } {
  const heap = labels[LABEL.heapMb];
  const disk = labels[LABEL.diskMb];
  return {
    cpu: Number(labels[LABEL.cpu] ?? 0),
    memoryMb: Number(labels[LABEL.memoryMb] ?? 0),
    ...(heap !== undefined ? { heapMb: Number(heap) } : {}),
    ...(disk !== undefined ? { diskMb: Number(disk) } : {}),
  };
}

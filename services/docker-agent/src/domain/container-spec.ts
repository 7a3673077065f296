import {
  DROPPED_CAPABILITIES,
  instanceProcessEnv,
  instanceSpecHash,
  memoryLimitMb,
  type ContainerCreateCommand,
  type InstanceNetwork,
} from '@orangery/contracts';

/** Labels that make the engine the only truth about what runs on a host. */
export const LABEL = {
  managed: 'io.orangery.managed',
  instanceId: 'io.orangery.instance-id',
  env: 'io.orangery.env',
  app: 'io.orangery.app',
  slot: 'io.orangery.slot',
  ip: 'io.orangery.ip',
  mac: 'io.orangery.mac',
  vlan: 'io.orangery.vlan',
  cpu: 'io.orangery.cpu',
  memoryMb: 'io.orangery.memory-mb',
  heapMb: 'io.orangery.heap-mb',
  diskMb: 'io.orangery.disk-mb',
  specHash: 'io.orangery.spec-hash',
} as const;

// The memory limit rule lives in the contracts: the scheduler reserves what the agent enforces.
export { HEADROOM_RATIO, MIN_HEADROOM_MB, memoryLimitMb } from '@orangery/contracts';

/** Cores instances may use: all but the first `reserved` ones, which stay with the host. */
export function allowedCpuset(totalCpus: number, reservedCpus: number): string {
  if (reservedCpus >= totalCpus) throw new Error(`reserving ${reservedCpus} of ${totalCpus} CPUs leaves none for instances`);
  const first = reservedCpus;
  const last = totalCpus - 1;
  return first === last ? String(first) : `${first}-${last}`;
}

/** The interface a VLAN's macvlan network hangs off: the uplink itself when untagged. */
export function parentInterface(uplink: string, vlan: number): string {
  const name = vlan === 0 ? uplink : `${uplink}.${vlan}`;
  if (name.length > 15) throw new Error(`interface name '${name}' is longer than the kernel's 15 characters`);
  return name;
}

/** One docker network per (VLAN, subnet): several pools may share a VLAN. */
export function networkName(net: Pick<InstanceNetwork, 'vlan' | 'ip' | 'prefixLength'>, subnet: string): string {
  return `orangery-v${net.vlan}-${subnet.replace('/', '_')}`;
}

/** A create with another spec hash than the instance's is a conflict (the hash lives in the contracts). */
export const specHash = instanceSpecHash;

/** ORANGERY_PIDS_LIMIT's default: room for a JVM's threads (GC, JIT, pools), not for a fork bomb. */
export const DEFAULT_PIDS_LIMIT = 4096;

export interface HostLimits {
  totalCpus: number;
  reservedCpus: number;
  /** ORANGERY_PIDS_LIMIT (default DEFAULT_PIDS_LIMIT) */
  pidsLimit?: number;
}

/** How the container is confined (HostConfig SecurityOpt, PidsLimit, CapDrop). */
export interface ContainerSecurityPlan {
  noNewPrivileges: boolean;
  pidsLimit: number;
  /** Docker's default capabilities that the container does not get */
  capDrop: string[];
}

/**
 * The secure defaults (no-new-privileges, the agent's PIDs limit, DROPPED_CAPABILITIES
 * dropped), less what the command's `security` relaxes (from the env's record).
 */
export function planSecurity(cmd: Pick<ContainerCreateCommand, 'security'>, defaultPidsLimit: number): ContainerSecurityPlan {
  const keep = new Set<string>(cmd.security?.addCapabilities ?? []);
  return {
    noNewPrivileges: cmd.security?.allowPrivilegeEscalation !== true,
    pidsLimit: cmd.security?.pidsLimit ?? defaultPidsLimit,
    capDrop: DROPPED_CAPABILITIES.filter((c) => !keep.has(c)),
  };
}

export interface ContainerPlan {
  name: string;
  image: string;
  hostname: string;
  labels: Record<string, string>;
  env: string[];
  cmd: string[] | undefined;
  macAddress: string;
  ip: string;
  memoryBytes: number;
  memoryMb: number;
  cpusetCpus: string;
  nanoCpus: number;
  cpuShares: number;
  security: ContainerSecurityPlan;
}

/** Container name: readable and unique per instance (docker names allow [a-zA-Z0-9_.-]). */
export const containerName = (instanceId: string): string => `orangery-${instanceId.replace(/:/g, '-')}`;

/**
 * Everything the engine needs to run the instance, decided from the command and the
 * host's limits alone (pure, unit-tested).
 */
export function planContainer(cmd: ContainerCreateCommand, host: HostLimits): ContainerPlan {
  const memoryMb = memoryLimitMb(cmd.resources.memoryMb, cmd.resources.heapMb);
  const usable = host.totalCpus - host.reservedCpus;
  const cpus = Math.min(cmd.resources.cpu, usable);
  const labels: Record<string, string> = {
    [LABEL.managed]: 'true',
    [LABEL.instanceId]: cmd.instanceId,
    [LABEL.env]: cmd.env,
    [LABEL.app]: cmd.app,
    [LABEL.slot]: String(cmd.slot),
    [LABEL.ip]: cmd.network.ip,
    [LABEL.mac]: cmd.network.mac,
    [LABEL.vlan]: String(cmd.network.vlan),
    [LABEL.cpu]: String(cmd.resources.cpu),
    [LABEL.memoryMb]: String(cmd.resources.memoryMb),
    [LABEL.specHash]: specHash(cmd),
  };
  if (cmd.resources.heapMb !== undefined) labels[LABEL.heapMb] = String(cmd.resources.heapMb);
  if (cmd.resources.diskMb !== undefined) labels[LABEL.diskMb] = String(cmd.resources.diskMb);
  const env = instanceProcessEnv(cmd, cmd.network.ip);
  return {
    name: containerName(cmd.instanceId),
    image: cmd.image,
    hostname: `${cmd.app}-${cmd.slot}`.slice(0, 63),
    labels,
    env,
    cmd: cmd.command,
    macAddress: cmd.network.mac,
    ip: cmd.network.ip,
    memoryMb,
    memoryBytes: memoryMb * 1024 * 1024,
    cpusetCpus: allowedCpuset(host.totalCpus, host.reservedCpus),
    nanoCpus: Math.round(cpus * 1e9),
    cpuShares: Math.max(2, Math.round(cmd.resources.cpu * 1024)),
    security: planSecurity(cmd, host.pidsLimit ?? DEFAULT_PIDS_LIMIT),
  };
}

export type DiskLevel = 'ok' | 'warning' | 'exceeded';

/** Over 80% of the quota is a warning, over 100% is exceeded; no quota, no check. */
export function diskLevel(usedBytes: number, quotaMb: number | undefined): DiskLevel {
  if (!quotaMb) return 'ok';
  const ratio = usedBytes / (quotaMb * 1024 * 1024);
  return ratio > 1 ? 'exceeded' : ratio > 0.8 ? 'warning' : 'ok';
}

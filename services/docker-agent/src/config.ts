import { hostname } from 'node:os';
import { HOST_ID_PATTERN, MAX_PIDS_LIMIT, MIN_PIDS_LIMIT } from '@orangery/contracts';
import { boolFrom, ConfigError, intFrom, labelsFrom, natsUrlFrom, oneOf, type Env } from '@orangery/service-kit';
import { isStrictIpv4 } from '@orangery/netaddr';
import { defaultRouteInterfaces, interfaceExists } from './adapters/host-network';
import { DEFAULT_PIDS_LIMIT, parentInterface } from './domain/container-spec';

export interface AgentConfig {
  natsUrl: string;
  hostId: string;
  dockerHost: string;
  uplink: string;
  reservedCpus: number;
  reservedMemoryMb: number;
  heartbeatSeconds: number;
  fenceAfterSeconds: number;
  labels: Record<string, string>;
  allowDefaultRouteUplink: boolean;
  diskCheckSeconds: number;
  /** ORANGERY_USAGE_SECONDS: how often the containers' CPU and memory are read for the heartbeat */
  usageSeconds: number;
  diskPolicy: 'report' | 'stop';
  restartMaxRetries: number;
  stopTimeoutSeconds: number;
  /** the duplicate-address probe's window (ms): 3 ARP probes spread over it */
  arpProbeMs: number;
  /** ORANGERY_ISOLATION_ADDRESSES; undefined: the gateways of the engine's managed networks */
  isolationAddresses: { ip: string; vlan: number }[] | undefined;
  /** optional: the host's own address on the instance networks (host shim) */
  hostShimIp: string | undefined;
  /** ORANGERY_PIDS_LIMIT: every container's PIDs limit unless its command's `security` says otherwise */
  pidsLimit: number;
}

export function loadAgentConfig(env: Env): AgentConfig {
  const hostId = (env['ORANGERY_HOST_ID']?.trim() || hostname()).toLowerCase();
  if (!new RegExp(HOST_ID_PATTERN).test(hostId)) {
    throw new ConfigError(`ORANGERY_HOST_ID '${hostId}' must match ${HOST_ID_PATTERN}`);
  }
  const uplink = env['ORANGERY_UPLINK']?.trim() ?? '';
  if (uplink === '') throw new ConfigError('ORANGERY_UPLINK is required: the host interface that macvlan networks hang off');
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(uplink)) throw new ConfigError(`ORANGERY_UPLINK '${uplink}' is not an interface name`);
  const dockerHost = env['DOCKER_HOST']?.trim() || 'unix:///var/run/docker.sock';
  if (!/^(unix:\/\/\/|tcp:\/\/)/.test(dockerHost)) throw new ConfigError(`DOCKER_HOST '${dockerHost}' must be unix:///path or tcp://host:port`);
  const heartbeatSeconds = intFrom(env, 'ORANGERY_HEARTBEAT_SECONDS', 2, 1, 60);
  const fenceAfterSeconds = intFrom(env, 'ORANGERY_FENCE_AFTER_SECONDS', 10, 2, 3600);
  if (fenceAfterSeconds <= heartbeatSeconds) {
    throw new ConfigError(`ORANGERY_FENCE_AFTER_SECONDS (${fenceAfterSeconds}) must be longer than ORANGERY_HEARTBEAT_SECONDS (${heartbeatSeconds})`);
  }
  return {
    natsUrl: natsUrlFrom(env),
    hostId,
    dockerHost,
    uplink,
    reservedCpus: intFrom(env, 'ORANGERY_RESERVED_CPUS', 1, 0, 1024),
    reservedMemoryMb: intFrom(env, 'ORANGERY_RESERVED_MEMORY_MB', 1024, 0, 4_194_304),
    heartbeatSeconds,
    fenceAfterSeconds,
    labels: labelsFrom(env, 'ORANGERY_HOST_LABELS'),
    allowDefaultRouteUplink: boolFrom(env, 'ORANGERY_ALLOW_DEFAULT_ROUTE_UPLINK', false),
    diskCheckSeconds: intFrom(env, 'ORANGERY_DISK_CHECK_SECONDS', 15, 1, 3600),
    usageSeconds: intFrom(env, 'ORANGERY_USAGE_SECONDS', 30, 1, 3600),
    diskPolicy: oneOf(env, 'ORANGERY_DISK_POLICY', 'report', ['report', 'stop'] as const),
    restartMaxRetries: intFrom(env, 'ORANGERY_RESTART_MAX_RETRIES', 3, 0, 100),
    stopTimeoutSeconds: intFrom(env, 'ORANGERY_STOP_TIMEOUT_SECONDS', 10, 0, 600),
    arpProbeMs: arpProbeMsFrom(env),
    isolationAddresses: isolationAddressesFrom(env, uplink),
    hostShimIp: shimIpFrom(env),
    pidsLimit: intFrom(env, 'ORANGERY_PIDS_LIMIT', DEFAULT_PIDS_LIMIT, MIN_PIDS_LIMIT, MAX_PIDS_LIMIT),
  };
}

/**
 * Three ARP probes spread over ORANGERY_ARP_PROBE_MS (300: 100 ms apart, so one lost frame
 * cannot hide a live holder of the address). ORANGERY_ARP_PROBE_SECONDS, the knob of the
 * whole-second arping probe before v1.1, is still accepted when the _MS one is not set.
 */
function arpProbeMsFrom(env: Env): number {
  if (env['ORANGERY_ARP_PROBE_MS']?.trim()) return intFrom(env, 'ORANGERY_ARP_PROBE_MS', 300, 100, 10_000);
  if (env['ORANGERY_ARP_PROBE_SECONDS']?.trim()) return intFrom(env, 'ORANGERY_ARP_PROBE_SECONDS', 2, 1, 10) * 1000;
  return 300;
}

/** `ip` or `ip@vlan`, comma separated: probed on the uplink, or on `<uplink>.<vlan>`. */
function isolationAddressesFrom(env: Env, uplink: string): { ip: string; vlan: number }[] | undefined {
  const raw = env['ORANGERY_ISOLATION_ADDRESSES']?.trim();
  if (!raw) return undefined;
  const out: { ip: string; vlan: number }[] = [];
  for (const item of raw.split(',').map((x) => x.trim())) {
    const m = /^([0-9.]+)(?:@(\d{1,4}))?$/.exec(item);
    const vlan = m?.[2] === undefined ? 0 : Number(m[2]);
    if (!m || !isStrictIpv4(m[1]!) || vlan > 4094) {
      throw new ConfigError(
        `ORANGERY_ISOLATION_ADDRESSES: '${item}' is not an IPv4 address (optionally @vlan, 0..4094); expected e.g. 10.0.0.1,10.0.100.1@100`,
      );
    }
    try {
      parentInterface(uplink, vlan);
    } catch (e) {
      throw new ConfigError(`ORANGERY_ISOLATION_ADDRESSES: '${item}': ${(e as Error).message}`);
    }
    if (!out.some((a) => a.ip === m[1] && a.vlan === vlan)) out.push({ ip: m[1]!, vlan });
  }
  return out;
}

function shimIpFrom(env: Env): string | undefined {
  const raw = env['ORANGERY_HOST_SHIM_IP']?.trim();
  if (!raw) return undefined;
  if (!isStrictIpv4(raw)) throw new ConfigError(`ORANGERY_HOST_SHIM_IP '${raw}' is not an IPv4 address`);
  return raw;
}

/** The uplink must exist, and must not be the interface that carries the default route. */
export async function checkUplink(config: AgentConfig): Promise<void> {
  if (!(await interfaceExists(config.uplink))) throw new ConfigError(`ORANGERY_UPLINK '${config.uplink}' does not exist on this host`);
  const defaults = await defaultRouteInterfaces();
  if (defaults.includes(config.uplink) && !config.allowDefaultRouteUplink) {
    throw new ConfigError(
      `ORANGERY_UPLINK '${config.uplink}' holds the default route; hanging containers off it needs ORANGERY_ALLOW_DEFAULT_ROUTE_UPLINK=true`,
    );
  }
}

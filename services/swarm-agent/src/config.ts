import { HOST_ID_PATTERN, MAX_BLOCK_SIZE, MAX_PIDS_LIMIT, MIN_PIDS_LIMIT } from '@orangery/contracts';
import { ConfigError, intFrom, natsUrlFrom, type Env } from '@orangery/service-kit';

export interface SwarmAgentConfig {
  natsUrl: string;
  /** ORANGERY_HOST_ID when set: the agent's NATS user name (its reply inbox `_INBOX_<id>`, docs/security.md) */
  agentId: string | undefined;
  /** ORANGERY_SWARM_MANAGER: the manager's engine */
  manager: string;
  /** ORANGERY_SWARM_CLUSTER: nodes are hosts `<cluster>-<hostname>` */
  cluster: string;
  /** ORANGERY_SWARM_UPLINK: the interface, same name on every node, macvlan networks hang off */
  uplink: string;
  /** ORANGERY_SWARM_NODE_ENGINES: how to reach each node's own engine (config-only networks are node-local) */
  nodeEngines: NodeEnginesConfig;
  /** ORANGERY_SWARM_BLOCK_SIZE: addresses in each node's ipam block of a pool */
  blockSize: number;
  reservedCpus: number;
  reservedMemoryMb: number;
  /** ORANGERY_SWARM_NODE_DISK_MB: the disk every node declares (swarm reports none) */
  nodeDiskMb: number;
  heartbeatSeconds: number;
  pidsLimit: number;
  /**
   * ORANGERY_SWARM_START_TIMEOUT_SECONDS (25): how long a create/start waits for the task to
   * run; keep it below the scheduler's ORANGERY_AGENT_TIMEOUT_SECONDS (30), else the scheduler
   * gives up and places the slot again while this agent still waits for the first service
   */
  startTimeoutSeconds: number;
  stopTimeoutSeconds: number;
  /** ORANGERY_LEFTOVER_RETENTION_HOURS (24, 0 allowed): a departed node's blocks are held this long before they go back to ipam */
  leftoverRetentionHours: number;
  /** how often the manager's tasks are read (ms) */
  watchMs: number;
  /** how often the node list is read and networks checked (s) */
  inventorySeconds: number;
}

/** `template`: one URL with `{hostname}`; `pairs`: hostname=URL entries. */
export type NodeEnginesConfig = { kind: 'none' } | { kind: 'template'; template: string } | { kind: 'pairs'; byHostname: Record<string, string> };

const ENGINE_URL = /^(unix:\/\/\/|tcp:\/\/)/;

function engineUrl(name: string, raw: string): string {
  const url = raw.trim();
  if (!ENGINE_URL.test(url)) throw new ConfigError(`${name} '${url}' must be unix:///path or tcp://host:port`);
  return url;
}

/**
 * ORANGERY_SWARM_NODE_ENGINES: either a template such as `unix:///run/olab/{hostname}.sock`,
 * `tcp://{hostname}:2375` or `tcp://{addr}:2375` (the node's swarm address), or
 * `hostname=url` pairs, comma separated. Empty: derived from ORANGERY_SWARM_MANAGER when that
 * names the manager node by hostname or address (ConfiguredNodeEngines), else only the
 * manager's node can get the pools' networks.
 */
export function nodeEnginesFrom(env: Env): NodeEnginesConfig {
  const name = 'ORANGERY_SWARM_NODE_ENGINES';
  const raw = env[name]?.trim();
  if (!raw) return { kind: 'none' };
  if ((raw.includes('{hostname}') || raw.includes('{addr}')) && !raw.includes('=')) return { kind: 'template', template: engineUrl(name, raw) };
  const byHostname: Record<string, string> = {};
  for (const item of raw
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    const at = item.indexOf('=');
    if (at <= 0) throw new ConfigError(`${name}: '${item}' is not hostname=url (or give one URL template with {hostname})`);
    byHostname[item.slice(0, at).trim()] = engineUrl(name, item.slice(at + 1));
  }
  return { kind: 'pairs', byHostname };
}

export function loadSwarmAgentConfig(env: Env): SwarmAgentConfig {
  const managerRaw = env['ORANGERY_SWARM_MANAGER']?.trim();
  if (!managerRaw) throw new ConfigError("ORANGERY_SWARM_MANAGER is required: a swarm manager's engine (unix:///path or tcp://host:port)");
  const cluster = env['ORANGERY_SWARM_CLUSTER']?.trim() || 'swarm';
  if (!new RegExp(HOST_ID_PATTERN).test(cluster) || cluster.length > 40) {
    throw new ConfigError(`ORANGERY_SWARM_CLUSTER '${cluster}' must match ${HOST_ID_PATTERN} and leave room for node names (at most 40 characters)`);
  }
  const uplink = env['ORANGERY_SWARM_UPLINK']?.trim() || 'eth0';
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(uplink)) throw new ConfigError(`ORANGERY_SWARM_UPLINK '${uplink}' is not an interface name`);
  const blockSize = intFrom(env, 'ORANGERY_SWARM_BLOCK_SIZE', 64, 4, MAX_BLOCK_SIZE);
  if ((blockSize & (blockSize - 1)) !== 0) throw new ConfigError(`ORANGERY_SWARM_BLOCK_SIZE must be a power of two, got ${blockSize}`);
  const agentId = env['ORANGERY_HOST_ID']?.trim().toLowerCase() || undefined;
  if (agentId !== undefined && !new RegExp(HOST_ID_PATTERN).test(agentId)) throw new ConfigError(`ORANGERY_HOST_ID '${agentId}' must match ${HOST_ID_PATTERN}`);
  return {
    natsUrl: natsUrlFrom(env),
    agentId,
    manager: engineUrl('ORANGERY_SWARM_MANAGER', managerRaw),
    cluster,
    uplink,
    nodeEngines: nodeEnginesFrom(env),
    blockSize,
    reservedCpus: intFrom(env, 'ORANGERY_RESERVED_CPUS', 1, 0, 1024),
    reservedMemoryMb: intFrom(env, 'ORANGERY_RESERVED_MEMORY_MB', 1024, 0, 4_194_304),
    nodeDiskMb: intFrom(env, 'ORANGERY_SWARM_NODE_DISK_MB', 102_400, 0, 1_073_741_824),
    heartbeatSeconds: intFrom(env, 'ORANGERY_HEARTBEAT_SECONDS', 2, 1, 60),
    pidsLimit: intFrom(env, 'ORANGERY_PIDS_LIMIT', 4096, MIN_PIDS_LIMIT, MAX_PIDS_LIMIT),
    startTimeoutSeconds: intFrom(env, 'ORANGERY_SWARM_START_TIMEOUT_SECONDS', 25, 1, 3600),
    stopTimeoutSeconds: intFrom(env, 'ORANGERY_STOP_TIMEOUT_SECONDS', 10, 0, 600) + 20,
    leftoverRetentionHours: intFrom(env, 'ORANGERY_LEFTOVER_RETENTION_HOURS', 24, 0, 87_600),
    watchMs: intFrom(env, 'ORANGERY_SWARM_WATCH_MS', 1000, 200, 60_000),
    inventorySeconds: intFrom(env, 'ORANGERY_SWARM_INVENTORY_SECONDS', 5, 1, 3600),
  };
}

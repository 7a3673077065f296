import { HOST_ID_PATTERN } from '@orangery/contracts';
import { ConfigError, intFrom, boolFrom, natsUrlFrom, oneOf, type Env } from '@orangery/service-kit';
import { extraConfigProblem } from './domain/vm-spec';

export interface VmwareAgentConfig {
  natsUrl: string;
  vcenterUrl: string;
  vcenterUser: string;
  /** never logged */
  vcenterPassword: string;
  vcenterInsecure: boolean;
  datacenter: string;
  folder: string;
  extraConfig: Record<string, string>;
  heartbeatSeconds: number;
  tasksPerHost: number;
  queuePerHost: number;
  callTimeoutSeconds: number;
  taskTimeoutSeconds: number;
  guestIpTimeoutSeconds: number;
  stopTimeoutSeconds: number;
  inventorySeconds: number;
  retrySeconds: number;
  reservedCpus: number;
  reservedMemoryMb: number;
  customization: 'after-clone' | 'clone-spec';
  /**
   * ORANGERY_HOST_ID, when set: the agent's own NATS identity (docs/security.md), which
   * gives it the reply inbox prefix `_INBOX_<id>` its NATS user may subscribe to. Unset,
   * the default `_INBOX` prefix (an open bus).
   */
  agentId: string | undefined;
}

export function loadVmwareAgentConfig(env: Env): VmwareAgentConfig {
  const url = env['ORANGERY_VCENTER_URL']?.trim() ?? '';
  if (url === '') throw new ConfigError('ORANGERY_VCENTER_URL is required: the vCenter SDK endpoint, e.g. https://vcenter.example/sdk');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`ORANGERY_VCENTER_URL '${url}' is not a URL`);
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')
    throw new ConfigError(`ORANGERY_VCENTER_URL must be https:// (or http:// for simulators), got '${parsed.protocol}'`);
  if (parsed.username || parsed.password)
    throw new ConfigError('ORANGERY_VCENTER_URL must not hold credentials: use ORANGERY_VCENTER_USER and ORANGERY_VCENTER_PASSWORD');
  const user = env['ORANGERY_VCENTER_USER']?.trim() ?? '';
  if (user === '') throw new ConfigError('ORANGERY_VCENTER_USER is required');
  const password = env['ORANGERY_VCENTER_PASSWORD'] ?? '';
  if (password === '') throw new ConfigError('ORANGERY_VCENTER_PASSWORD is required');
  const folder = env['ORANGERY_VCENTER_FOLDER']?.trim() || 'orangery';
  if (!/^[A-Za-z0-9 ._-]+(\/[A-Za-z0-9 ._-]+)*$/.test(folder)) throw new ConfigError(`ORANGERY_VCENTER_FOLDER '${folder}' must be folder names separated by /`);
  const heartbeatSeconds = intFrom(env, 'ORANGERY_HEARTBEAT_SECONDS', 2, 1, 60);
  const agentId = env['ORANGERY_HOST_ID']?.trim().toLowerCase() || undefined;
  if (agentId !== undefined && !new RegExp(HOST_ID_PATTERN).test(agentId)) throw new ConfigError(`ORANGERY_HOST_ID '${agentId}' must match ${HOST_ID_PATTERN}`);
  return {
    agentId,
    natsUrl: natsUrlFrom(env),
    vcenterUrl: url,
    vcenterUser: user,
    vcenterPassword: password,
    vcenterInsecure: boolFrom(env, 'ORANGERY_VCENTER_INSECURE', false),
    datacenter: env['ORANGERY_VCENTER_DATACENTER']?.trim() ?? '',
    folder,
    extraConfig: extraConfigFrom(env),
    heartbeatSeconds,
    tasksPerHost: intFrom(env, 'ORANGERY_VCENTER_TASKS_PER_HOST', 4, 1, 64),
    queuePerHost: intFrom(env, 'ORANGERY_VCENTER_QUEUE_PER_HOST', 64, 0, 10_000),
    callTimeoutSeconds: intFrom(env, 'ORANGERY_VCENTER_CALL_TIMEOUT_SECONDS', 60, 1, 3600),
    taskTimeoutSeconds: intFrom(env, 'ORANGERY_VCENTER_TASK_TIMEOUT_SECONDS', 600, 1, 86_400),
    guestIpTimeoutSeconds: intFrom(env, 'ORANGERY_VCENTER_GUEST_IP_TIMEOUT_SECONDS', 20, 0, 3600),
    stopTimeoutSeconds: intFrom(env, 'ORANGERY_STOP_TIMEOUT_SECONDS', 30, 0, 600),
    inventorySeconds: intFrom(env, 'ORANGERY_VCENTER_INVENTORY_SECONDS', 30, 1, 3600),
    // below the scheduler's 30 s command timeout, with room for the work itself
    retrySeconds: intFrom(env, 'ORANGERY_VCENTER_RETRY_SECONDS', 15, 0, 3600),
    reservedCpus: intFrom(env, 'ORANGERY_VCENTER_RESERVED_CPUS', 0, 0, 1024),
    reservedMemoryMb: intFrom(env, 'ORANGERY_VCENTER_RESERVED_MEMORY_MB', 0, 0, 4_194_304),
    customization: oneOf(env, 'ORANGERY_VCENTER_CUSTOMIZATION', 'after-clone', ['after-clone', 'clone-spec'] as const),
  };
}

function extraConfigFrom(env: Env): Record<string, string> {
  const raw = env['ORANGERY_VCENTER_EXTRA_CONFIG']?.trim();
  if (!raw) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError('ORANGERY_VCENTER_EXTRA_CONFIG must be a JSON object of VMX keys to string values');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new ConfigError('ORANGERY_VCENTER_EXTRA_CONFIG must be a JSON object of VMX keys to string values');
  const problem = extraConfigProblem(parsed as Record<string, unknown>);
  if (problem) throw new ConfigError(`ORANGERY_VCENTER_EXTRA_CONFIG: ${problem}`);
  return parsed as Record<string, string>;
}

import { ConfigError, dbFrom, intFrom, natsUrlFrom, oneOf, type Env } from '@orangery/service-kit';
import type { DbConfig } from '@orangery/persistence';
import type { Backend } from '@orangery/contracts';
import type { PlacementPolicy } from './domain/placement';

export interface SchedulerConfig {
  natsUrl: string;
  db: DbConfig;
  dbPoolSize: number;
  /** requests waiting for a database connection at most (ORANGERY_DB_QUEUE_LIMIT); beyond, UNAVAILABLE at once */
  dbQueueLimit: number;
  /** outbox rows kept this long once published (ORANGERY_OUTBOX_RETENTION_HOURS; 0 keeps them forever) */
  outboxRetentionSeconds: number;
  lostAfterSeconds: number;
  fenceAfterSeconds: number;
  fenceMarginSeconds: number;
  leftoverRetentionHours: number;
  policy: PlacementPolicy;
  startAttempts: number;
  failedGraceSeconds: number;
  reconcileSeconds: number;
  antiEntropySeconds: number;
  agentTimeoutSeconds: number;
  concurrency: number;
  envBackends: Record<string, Backend[]>;
  /** the leader lease (docs/scheduler.md "Leadership"): a dead or cut-off leader is replaced within about this plus a second */
  leaderLeaseSeconds: number;
}

/**
 * `prod=vmware,docker;test=swarm`: the only backends each env's instances may use. A seed
 * since issue 16: at start the scheduler creates a record `{ name, backends }` for each
 * listed env without one (docs/scheduler.md "Environments"); an env's record rules it.
 */
export function parseEnvBackends(text: string | undefined): Record<string, Backend[]> {
  const out: Record<string, Backend[]> = {};
  if (!text || text.trim() === '') return out;
  for (const part of text.split(';')) {
    if (part.trim() === '') continue;
    const [env, list] = part.split('=');
    const name = env?.trim() ?? '';
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(name) || list === undefined) {
      throw new ConfigError(`ORANGERY_ENV_BACKENDS: '${part}' is not <env>=<backend>[,<backend>]`);
    }
    const backends = list.split(',').map((b) => b.trim());
    for (const b of backends) {
      if (b !== 'docker' && b !== 'vmware' && b !== 'swarm') {
        throw new ConfigError(`ORANGERY_ENV_BACKENDS: unknown backend '${b}' for env '${name}' (docker, vmware or swarm)`);
      }
    }
    out[name] = backends as Backend[];
  }
  return out;
}

export function loadSchedulerConfig(env: Env): SchedulerConfig {
  const heartbeat = intFrom(env, 'ORANGERY_HEARTBEAT_SECONDS', 2, 1, 60);
  const lostAfterSeconds = intFrom(env, 'ORANGERY_LOST_AFTER_SECONDS', 6, 1, 3600);
  if (lostAfterSeconds <= heartbeat) {
    throw new ConfigError(`ORANGERY_LOST_AFTER_SECONDS (${lostAfterSeconds}) must be longer than ORANGERY_HEARTBEAT_SECONDS (${heartbeat})`);
  }
  return {
    natsUrl: natsUrlFrom(env),
    db: dbFrom(env),
    dbPoolSize: intFrom(env, 'ORANGERY_DB_POOL_SIZE', 8, 2, 200),
    dbQueueLimit: intFrom(env, 'ORANGERY_DB_QUEUE_LIMIT', 1000, 1, 100_000),
    outboxRetentionSeconds: intFrom(env, 'ORANGERY_OUTBOX_RETENTION_HOURS', 168, 0, 24 * 3650) * 3600,
    lostAfterSeconds,
    fenceAfterSeconds: intFrom(env, 'ORANGERY_FENCE_AFTER_SECONDS', 10, 2, 3600),
    fenceMarginSeconds: intFrom(env, 'ORANGERY_FENCE_MARGIN_SECONDS', 5, 0, 3600),
    leftoverRetentionHours: intFrom(env, 'ORANGERY_LEFTOVER_RETENTION_HOURS', 24, 0, 24 * 365),
    policy: oneOf(env, 'ORANGERY_PLACEMENT_POLICY', 'least-loaded', ['least-loaded', 'binpack'] as const),
    startAttempts: intFrom(env, 'ORANGERY_START_ATTEMPTS', 3, 1, 100),
    failedGraceSeconds: intFrom(env, 'ORANGERY_FAILED_GRACE_SECONDS', 15, 0, 3600),
    reconcileSeconds: intFrom(env, 'ORANGERY_RECONCILE_SECONDS', 5, 1, 3600),
    antiEntropySeconds: intFrom(env, 'ORANGERY_ANTI_ENTROPY_SECONDS', 30, 1, 86400),
    agentTimeoutSeconds: intFrom(env, 'ORANGERY_AGENT_TIMEOUT_SECONDS', 30, 1, 600),
    concurrency: intFrom(env, 'ORANGERY_SCHEDULER_CONCURRENCY', 256, 1, 10_000),
    envBackends: parseEnvBackends(env['ORANGERY_ENV_BACKENDS']),
    leaderLeaseSeconds: intFrom(env, 'ORANGERY_LEADER_LEASE_SECONDS', 3, 2, 60),
  };
}

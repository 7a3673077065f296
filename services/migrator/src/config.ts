import { ConfigError, dbFrom, intFrom, natsUrlFrom, type Env } from '@orangery/service-kit';
import type { DbConfig } from '@orangery/persistence';

export interface MigratorConfig {
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
  leaseSeconds: number;
  agentTimeoutSeconds: number;
  createAttempts: number;
  runningTimeoutSeconds: number;
  stepGiveUpSeconds: number;
  concurrency: number;
}

export function loadMigratorConfig(env: Env): MigratorConfig {
  const heartbeat = intFrom(env, 'ORANGERY_HEARTBEAT_SECONDS', 2, 1, 60);
  const lostAfterSeconds = intFrom(env, 'ORANGERY_LOST_AFTER_SECONDS', 6, 1, 3600);
  if (lostAfterSeconds <= heartbeat) {
    throw new ConfigError(`ORANGERY_LOST_AFTER_SECONDS (${lostAfterSeconds}) must be longer than ORANGERY_HEARTBEAT_SECONDS (${heartbeat})`);
  }
  const leaseSeconds = intFrom(env, 'ORANGERY_MIGRATION_LEASE_SECONDS', 15, 3, 3600);
  return {
    natsUrl: natsUrlFrom(env),
    db: dbFrom(env),
    dbPoolSize: intFrom(env, 'ORANGERY_DB_POOL_SIZE', 4, 2, 200),
    dbQueueLimit: intFrom(env, 'ORANGERY_DB_QUEUE_LIMIT', 1000, 1, 100_000),
    outboxRetentionSeconds: intFrom(env, 'ORANGERY_OUTBOX_RETENTION_HOURS', 168, 0, 24 * 3650) * 3600,
    lostAfterSeconds,
    fenceAfterSeconds: intFrom(env, 'ORANGERY_FENCE_AFTER_SECONDS', 10, 2, 3600),
    fenceMarginSeconds: intFrom(env, 'ORANGERY_FENCE_MARGIN_SECONDS', 5, 0, 3600),
    leaseSeconds,
    agentTimeoutSeconds: intFrom(env, 'ORANGERY_AGENT_TIMEOUT_SECONDS', 30, 1, 600),
    createAttempts: intFrom(env, 'ORANGERY_MIGRATION_CREATE_ATTEMPTS', 3, 1, 100),
    runningTimeoutSeconds: intFrom(env, 'ORANGERY_MIGRATION_RUNNING_TIMEOUT_SECONDS', 120, 1, 3600),
    stepGiveUpSeconds: intFrom(env, 'ORANGERY_MIGRATION_STEP_GIVE_UP_SECONDS', 120, 1, 86400),
    concurrency: intFrom(env, 'ORANGERY_MIGRATOR_CONCURRENCY', 16, 1, 1000),
  };
}

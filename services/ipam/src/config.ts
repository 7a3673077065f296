import { dbFrom, intFrom, natsUrlFrom, type Env } from '@orangery/service-kit';
import type { DbConfig } from '@orangery/persistence';
import { DEFAULT_GROUP_LIMITS } from './domain/group-commit';

export interface IpamConfig {
  natsUrl: string;
  db: DbConfig;
  /** database connections per replica */
  dbPoolSize: number;
  /** requests waiting for a database connection at most (ORANGERY_DB_QUEUE_LIMIT); beyond, UNAVAILABLE at once */
  dbQueueLimit: number;
  /** audit rows (the outbox) kept this long once published (ORANGERY_IPAM_AUDIT_RETENTION_DAYS; 0 keeps them forever) */
  outboxRetentionSeconds: number;
  /** addresses all pools may hold together (ORANGERY_IPAM_MAX_ADDRESSES) */
  maxAddresses: number;
  /** group commit: singles per transaction at most (ORANGERY_IPAM_GROUP_MAX; 1 turns grouping off) */
  groupMax: number;
  /** group commit: transactions of one kind (allocate, bind, release) running at once per replica (ORANGERY_IPAM_GROUP_IN_FLIGHT) */
  groupInFlight: number;
}

export function loadIpamConfig(env: Env): IpamConfig {
  return {
    natsUrl: natsUrlFrom(env),
    db: dbFrom(env),
    dbPoolSize: intFrom(env, 'ORANGERY_DB_POOL_SIZE', 24, 1, 500),
    dbQueueLimit: intFrom(env, 'ORANGERY_DB_QUEUE_LIMIT', 1000, 1, 100_000),
    maxAddresses: intFrom(env, 'ORANGERY_IPAM_MAX_ADDRESSES', 16 * 65_536, 1, 256 * 65_536),
    groupMax: intFrom(env, 'ORANGERY_IPAM_GROUP_MAX', DEFAULT_GROUP_LIMITS.maxSize, 1, 500),
    groupInFlight: intFrom(env, 'ORANGERY_IPAM_GROUP_IN_FLIGHT', DEFAULT_GROUP_LIMITS.maxInFlight, 1, 64),
    outboxRetentionSeconds: intFrom(env, 'ORANGERY_IPAM_AUDIT_RETENTION_DAYS', 365, 0, 36_500) * 86_400,
  };
}

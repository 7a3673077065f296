import { dbFrom, intFrom, natsUrlFrom, type Env } from '@orangery/service-kit';
import type { DbConfig } from '@orangery/persistence';

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
}

export function loadIpamConfig(env: Env): IpamConfig {
  return {
    natsUrl: natsUrlFrom(env),
    db: dbFrom(env),
    dbPoolSize: intFrom(env, 'ORANGERY_DB_POOL_SIZE', 24, 1, 500),
    dbQueueLimit: intFrom(env, 'ORANGERY_DB_QUEUE_LIMIT', 1000, 1, 100_000),
    maxAddresses: intFrom(env, 'ORANGERY_IPAM_MAX_ADDRESSES', 16 * 65_536, 1, 256 * 65_536),
    outboxRetentionSeconds: intFrom(env, 'ORANGERY_IPAM_AUDIT_RETENTION_DAYS', 365, 0, 36_500) * 86_400,
  };
}

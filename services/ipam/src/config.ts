import { dbFrom, intFrom, natsUrlFrom, type Env } from '@orangery/service-kit';
import type { DbConfig } from '@orangery/persistence';

export interface IpamConfig {
  natsUrl: string;
  db: DbConfig;
  /** database connections per replica */
  dbPoolSize: number;
}

export function loadIpamConfig(env: Env): IpamConfig {
  return {
    natsUrl: natsUrlFrom(env),
    db: dbFrom(env),
    dbPoolSize: intFrom(env, 'ORANGERY_DB_POOL_SIZE', 24, 1, 500),
  };
}

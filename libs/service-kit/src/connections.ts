import { Inject, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import type { DataSource } from 'typeorm';
import type { SqlPool } from '@orangery/persistence';
import { DATA_SOURCE, NATS } from './bootstrap';

/** The lean SQL pool of a service that has one (persistence's SqlPool). */
export const SQL_POOL = Symbol('SQL_POOL');

/**
 * Closes a database service's connections last, after its handlers have drained (Nest
 * calls onApplicationShutdown after every beforeApplicationShutdown): NATS drained, the SQL
 * pool ended, the TypeORM data source destroyed. Each may already be gone; errors are moot.
 */
export class DatabaseServiceConnections implements OnApplicationShutdown {
  constructor(
    @Inject(NATS) private readonly nc: NatsConnection,
    @Inject(DATA_SOURCE) private readonly ds: DataSource,
    @Inject(SQL_POOL) private readonly sql: SqlPool,
  ) {}

  async onApplicationShutdown(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
    await this.sql.end().catch(() => undefined);
    if (this.ds.isInitialized) await this.ds.destroy().catch(() => undefined);
  }
}

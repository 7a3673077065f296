import type { Provider } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import type { MigrationInterface } from 'typeorm';
import { connectNats, EventPublisher, natsProblem } from '@orangery/messaging';
import { openMigratedDataSource, OutboxRelay, SqlPool, type DbConfig, type OutboxTables } from '@orangery/persistence';
import type { Logger } from '@orangery/telemetry';
import { CONFIG, DATA_SOURCE, LOGGER, NATS, replicaId } from './bootstrap';
import { DatabaseServiceConnections, SQL_POOL } from './connections';
import { readiness } from './observe';

export interface DatabaseServiceSetup<C extends { natsUrl: string; db: DbConfig; dbPoolSize: number; dbQueueLimit?: number }> {
  /** the service's name: its NATS client name, its migrations table prefix, its log lines */
  service: string;
  config: C;
  logger: Logger;
  migrations: (new () => MigrationInterface)[];
  /** the service's OUTBOX token, the tables of its transactional outbox and how long published rows are kept (0: forever) */
  outbox: { token: symbol; tables: OutboxTables; retentionSeconds: number };
}

/**
 * The providers every service with a database wires alike (ipam, scheduler, migrator):
 * CONFIG, LOGGER, NATS, DATA_SOURCE (its migrations run before anything else touches the
 * tables), SQL_POOL, the outbox relay under the service's token, and the connections closed
 * last on shutdown. The service adds its store, domain and transport on top.
 */
export function databaseServiceProviders<C extends { natsUrl: string; db: DbConfig; dbPoolSize: number; dbQueueLimit?: number }>(
  s: DatabaseServiceSetup<C>,
): Provider[] {
  const { service, config, logger } = s;
  return [
    { provide: CONFIG, useValue: config },
    { provide: LOGGER, useValue: logger },
    { provide: NATS, useFactory: () => natsWithReadiness(config.natsUrl, service, logger) },
    {
      provide: DATA_SOURCE,
      useFactory: async () => {
        readiness.expect('database', 'connecting and running migrations');
        // migrations only; requests and the outbox use SQL_POOL
        return openMigratedDataSource({ db: config.db, service, migrations: s.migrations, poolSize: 2 }, logger);
      },
    },
    // after the migrations have run
    {
      provide: SQL_POOL,
      inject: [DATA_SOURCE],
      useFactory: () => {
        const sql = new SqlPool(
          config.db,
          config.dbPoolSize,
          (from, to, reason) =>
            logger.warn({ from: `${from.host}:${from.port}`, to: `${to.host}:${to.port}`, reason }, 'database host failed; moving to the next one'),
          config.dbQueueLimit,
        );
        readiness.set('database', () => sql.ping().then(() => undefined));
        return sql;
      },
    },
    {
      provide: s.outbox.token,
      inject: [SQL_POOL, NATS],
      useFactory: (sql: SqlPool, nc: NatsConnection) =>
        new OutboxRelay(sql, new EventPublisher(nc), logger, s.outbox.tables, { service, retentionSeconds: s.outbox.retentionSeconds }),
    },
    DatabaseServiceConnections,
  ];
}

/** connectNats, with the connection's state in /readyz (`nats`). Agents use it too. */
export async function natsWithReadiness(servers: string, service: string, logger: Logger, inboxPrefix?: string): Promise<NatsConnection> {
  readiness.expect('nats', 'connecting');
  const nc = await connectNats({ servers, name: replicaId(service), logger, ...(inboxPrefix ? { inboxPrefix } : {}) });
  readiness.set('nats', () => natsProblem(nc));
  return nc;
}

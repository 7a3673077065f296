import { Module, type DynamicModule } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { connectNats, EventPublisher } from '@orangery/messaging';
import { createDataSource, initializeDatabase, OutboxRelay, SqlPool } from '@orangery/persistence';
import { CONFIG, DATA_SOURCE, DatabaseServiceConnections, LOGGER, NATS, replicaId, SQL_POOL } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { MigratorConfig } from './config';
import { MysqlMigrationStore } from './adapters/mysql-migration-store';
import { MigratorInitial1733100000000 } from './adapters/migrations/1733100000000-migrator-initial';
import { MigratorRuntime } from './transport/migrator.runtime';
import { OUTBOX, STORE } from './tokens';

@Module({})
export class MigratorModule {
  static forRoot(config: MigratorConfig, logger: Logger): DynamicModule {
    return {
      module: MigratorModule,
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
        { provide: NATS, useFactory: () => connectNats({ servers: config.natsUrl, name: replicaId('migrator'), logger }) },
        {
          provide: DATA_SOURCE,
          useFactory: async () => {
            const ds = createDataSource({ db: config.db, service: 'migrator', migrations: [MigratorInitial1733100000000], poolSize: 2 });
            await initializeDatabase(ds, 'migrator', logger);
            return ds;
          },
        },
        { provide: SQL_POOL, inject: [DATA_SOURCE], useFactory: () => new SqlPool(config.db, config.dbPoolSize) },
        {
          provide: OUTBOX,
          inject: [SQL_POOL, NATS],
          useFactory: (sql: SqlPool, nc: NatsConnection) =>
            new OutboxRelay(sql, new EventPublisher(nc), logger, { events: 'mig_outbox', cursor: 'mig_outbox_cursor' }),
        },
        {
          provide: STORE,
          inject: [SQL_POOL, OUTBOX],
          useFactory: (sql: SqlPool, outbox: OutboxRelay) =>
            new MysqlMigrationStore(sql, outbox, `orangery/migrator/${replicaId('migrator')}`, config.leaseSeconds),
        },
        DatabaseServiceConnections,
        MigratorRuntime,
      ],
    };
  }
}

import { Module, type DynamicModule } from '@nestjs/common';
import type { OutboxRelay, SqlPool } from '@orangery/persistence';
import { databaseServiceProviders, replicaId, SQL_POOL } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { MigratorConfig } from './config';
import { MysqlMigrationStore } from './adapters/mysql-migration-store';
import { MigratorInitial1733100000000 } from './adapters/migrations/1733100000000-migrator-initial';
import { MigratorRuntime } from './transport/migrator.runtime';
import { OUTBOX, STORE } from './tokens';
import { MigratorOutboxSent1764700000000 } from './adapters/migrations/1764700000000-migrator-outbox-sent';

@Module({})
export class MigratorModule {
  static forRoot(config: MigratorConfig, logger: Logger): DynamicModule {
    return {
      module: MigratorModule,
      providers: [
        ...databaseServiceProviders({
          service: 'migrator',
          config,
          logger,
          migrations: [MigratorInitial1733100000000, MigratorOutboxSent1764700000000],
          outbox: { token: OUTBOX, tables: { events: 'mig_outbox', cursor: 'mig_outbox_cursor' }, retentionSeconds: config.outboxRetentionSeconds },
        }),
        {
          provide: STORE,
          inject: [SQL_POOL, OUTBOX],
          useFactory: (sql: SqlPool, outbox: OutboxRelay) =>
            new MysqlMigrationStore(sql, outbox, `orangery/migrator/${replicaId('migrator')}`, config.leaseSeconds),
        },
        MigratorRuntime,
      ],
    };
  }
}

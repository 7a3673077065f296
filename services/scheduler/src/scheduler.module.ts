import { Module, type DynamicModule } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { connectNats, EventPublisher } from '@orangery/messaging';
import { createDataSource, initializeDatabase, OutboxRelay, SqlPool } from '@orangery/persistence';
import { CONFIG, DATA_SOURCE, DatabaseServiceConnections, LOGGER, NATS, replicaId, SQL_POOL } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { SchedulerConfig } from './config';
import { MysqlSchedulerStore } from './adapters/mysql-scheduler-store';
import { SchedulerInitial1732700000000 } from './adapters/migrations/1732700000000-scheduler-initial';
import { SchedulerHostVerdict1733400000000 } from './adapters/migrations/1733400000000-scheduler-host-verdict';
import { SchedulerRuntime } from './transport/scheduler.runtime';
import { OUTBOX, STORE } from './tokens';

@Module({})
export class SchedulerModule {
  static forRoot(config: SchedulerConfig, logger: Logger): DynamicModule {
    return {
      module: SchedulerModule,
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
        { provide: NATS, useFactory: () => connectNats({ servers: config.natsUrl, name: replicaId('scheduler'), logger }) },
        {
          provide: DATA_SOURCE,
          useFactory: async () => {
            const ds = createDataSource({ db: config.db, service: 'scheduler', migrations: [SchedulerInitial1732700000000, SchedulerHostVerdict1733400000000], poolSize: 2 });
            await initializeDatabase(ds, 'scheduler', logger);
            return ds;
          },
        },
        { provide: SQL_POOL, inject: [DATA_SOURCE], useFactory: () => new SqlPool(config.db, config.dbPoolSize) },
        {
          provide: OUTBOX,
          inject: [SQL_POOL, NATS],
          useFactory: (sql: SqlPool, nc: NatsConnection) =>
            new OutboxRelay(sql, new EventPublisher(nc), logger, { events: 'sched_outbox', cursor: 'sched_outbox_cursor' }),
        },
        {
          provide: STORE,
          inject: [SQL_POOL, OUTBOX],
          useFactory: (sql: SqlPool, outbox: OutboxRelay) => new MysqlSchedulerStore(sql, outbox, `orangery/scheduler/${replicaId('scheduler')}`, logger),
        },
        DatabaseServiceConnections,
        SchedulerRuntime,
      ],
    };
  }
}

import { Module, type DynamicModule } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { connectNats, EventPublisher } from '@orangery/messaging';
import { createDataSource, initializeDatabase, OutboxRelay, SqlPool } from '@orangery/persistence';
import { CONFIG, DATA_SOURCE, DatabaseServiceConnections, LOGGER, NATS, replicaId, SQL_POOL } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { IpamConfig } from './config';
import { IpamService } from './domain/ipam.service';
import { systemClock } from './domain/ports';
import { MysqlIpamStore } from './adapters/mysql-ipam-store';
import { IpamInitial1732500000000 } from './adapters/migrations/1732500000000-ipam-initial';
import { IpamOutboxCursor1732600000000 } from './adapters/migrations/1732600000000-ipam-outbox-cursor';
import { IpamHandler } from './transport/ipam.handler';
import { IPAM_SERVICE, IPAM_STORE, OUTBOX } from './tokens';

@Module({})
export class IpamModule {
  static forRoot(config: IpamConfig, logger: Logger): DynamicModule {
    return {
      module: IpamModule,
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
        {
          provide: NATS,
          useFactory: () => connectNats({ servers: config.natsUrl, name: replicaId('ipam'), logger }),
        },
        {
          provide: DATA_SOURCE,
          useFactory: async () => {
            const ds = createDataSource({
              db: config.db,
              service: 'ipam',
              migrations: [IpamInitial1732500000000, IpamOutboxCursor1732600000000],
              // migrations only; requests and the outbox use SQL_POOL
              poolSize: 2,
            });
            await initializeDatabase(ds, 'ipam', logger);
            return ds;
          },
        },
        {
          provide: SQL_POOL,
          inject: [DATA_SOURCE], // after the migrations have run
          useFactory: () => new SqlPool(config.db, config.dbPoolSize),
        },
        {
          provide: OUTBOX,
          inject: [SQL_POOL, NATS],
          useFactory: (sql: SqlPool, nc: NatsConnection) => new OutboxRelay(sql, new EventPublisher(nc), logger, { events: 'ipam_audit', cursor: 'ipam_outbox_cursor' }),
        },
        {
          provide: IPAM_STORE,
          inject: [SQL_POOL, OUTBOX],
          useFactory: (sql: SqlPool, outbox: OutboxRelay) => new MysqlIpamStore(sql, outbox, replicaId('ipam')),
        },
        {
          provide: IPAM_SERVICE,
          inject: [IPAM_STORE],
          useFactory: (store: MysqlIpamStore) => new IpamService(store, systemClock),
        },
        DatabaseServiceConnections,
        IpamHandler,
      ],
    };
  }
}

import { Module, type DynamicModule } from '@nestjs/common';
import type { OutboxRelay, SqlPool } from '@orangery/persistence';
import { databaseServiceProviders, replicaId, SQL_POOL } from '@orangery/service-kit';
import { scrapedGauge, type Logger } from '@orangery/telemetry';
import type { IpamConfig } from './config';
import { IpamService } from './domain/ipam.service';
import { systemClock } from './domain/ports';
import { MysqlIpamStore } from './adapters/mysql-ipam-store';
import { IpamInitial1732500000000 } from './adapters/migrations/1732500000000-ipam-initial';
import { IpamOutboxCursor1732600000000 } from './adapters/migrations/1732600000000-ipam-outbox-cursor';
import { IpamHandler } from './transport/ipam.handler';
import { IP_BLOCKS, IPAM_SERVICE, IPAM_STORE, OUTBOX } from './tokens';
import { IpamOutboxSent1764700000000 } from './adapters/migrations/1764700000000-ipam-outbox-sent';
import { IpamBlocks1764800000000 } from './adapters/migrations/1764800000000-ipam-blocks';
import { IpBlocks } from './domain/blocks';

@Module({})
export class IpamModule {
  static forRoot(config: IpamConfig, logger: Logger): DynamicModule {
    return {
      module: IpamModule,
      providers: [
        ...databaseServiceProviders({
          service: 'ipam',
          config,
          logger,
          migrations: [IpamInitial1732500000000, IpamOutboxCursor1732600000000, IpamOutboxSent1764700000000, IpamBlocks1764800000000],
          outbox: { token: OUTBOX, tables: { events: 'ipam_audit', cursor: 'ipam_outbox_cursor' }, retentionSeconds: config.outboxRetentionSeconds },
        }),
        {
          provide: IPAM_STORE,
          inject: [SQL_POOL, OUTBOX],
          useFactory: (sql: SqlPool, outbox: OutboxRelay) => {
            const store = new MysqlIpamStore(sql, outbox, replicaId('ipam'));
            scrapedGauge(
              'orangery_ipam_addresses',
              "Addresses of each pool by state: used (allocated or bound), quarantined (released, cooling down), blocked (in swarm nodes' blocks, no task), free",
              ['pool', 'state'],
              async () =>
                (await store.addressCounts(Date.now())).flatMap((c) =>
                  (['used', 'quarantined', 'blocked', 'free'] as const).map((state) => ({ labels: { pool: c.pool, state }, value: c[state] })),
                ),
            );
            return store;
          },
        },
        {
          provide: IPAM_SERVICE,
          inject: [IPAM_STORE],
          useFactory: (store: MysqlIpamStore) => new IpamService(store, systemClock, config.maxAddresses),
        },
        {
          provide: IP_BLOCKS,
          inject: [IPAM_STORE],
          useFactory: (store: MysqlIpamStore) => new IpBlocks(store, systemClock),
        },
        IpamHandler,
      ],
    };
  }
}

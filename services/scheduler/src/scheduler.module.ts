import { Module, type DynamicModule } from '@nestjs/common';
import type { OutboxRelay, SqlPool } from '@orangery/persistence';
import { databaseServiceProviders, replicaId, SQL_POOL } from '@orangery/service-kit';
import { scrapedGauge, type Logger } from '@orangery/telemetry';
import type { SchedulerConfig } from './config';
import { MysqlSchedulerStore } from './adapters/mysql-scheduler-store';
import { SchedulerInitial1732700000000 } from './adapters/migrations/1732700000000-scheduler-initial';
import { SchedulerHostVerdict1733400000000 } from './adapters/migrations/1733400000000-scheduler-host-verdict';
import { SchedulerRequestIdNoPad1764600000000 } from './adapters/migrations/1764600000000-scheduler-request-id-nopad';
import { SchedulerLeaderLease1764700000000 } from './adapters/migrations/1764700000000-scheduler-leader-lease';
import { SchedulerRuntime } from './transport/scheduler.runtime';
import { ENVS, OUTBOX, STORE } from './tokens';
import { SchedulerOutboxSent1764700000000 } from './adapters/migrations/1764700000000-scheduler-outbox-sent';
import { SchedulerEnvs1764800000000 } from './adapters/migrations/1764800000000-scheduler-envs';
import { MysqlEnvStore } from './adapters/mysql-env-store';

@Module({})
export class SchedulerModule {
  static forRoot(config: SchedulerConfig, logger: Logger): DynamicModule {
    return {
      module: SchedulerModule,
      providers: [
        ...databaseServiceProviders({
          service: 'scheduler',
          config,
          logger,
          migrations: [
            SchedulerInitial1732700000000,
            SchedulerHostVerdict1733400000000,
            SchedulerRequestIdNoPad1764600000000,
            SchedulerLeaderLease1764700000000,
            SchedulerOutboxSent1764700000000,
            SchedulerEnvs1764800000000,
          ],
          outbox: { token: OUTBOX, tables: { events: 'sched_outbox', cursor: 'sched_outbox_cursor' }, retentionSeconds: config.outboxRetentionSeconds },
        }),
        {
          provide: STORE,
          inject: [SQL_POOL, OUTBOX],
          useFactory: (sql: SqlPool, outbox: OutboxRelay) => {
            const store = new MysqlSchedulerStore(sql, outbox, `orangery/scheduler/${replicaId('scheduler')}`, logger);
            fleetGauges(store, config.lostAfterSeconds * 1000);
            return store;
          },
        },
        { provide: ENVS, inject: [SQL_POOL], useFactory: (sql: SqlPool) => new MysqlEnvStore(sql) },
        SchedulerRuntime,
      ],
    };
  }
}

/** orangery_hosts and orangery_instances (CONTRACT.md "Health and metrics") and the scale backlog, from the tables every replica reads. */
function fleetGauges(store: MysqlSchedulerStore, lostAfterMs: number): void {
  // One database read per scrape serves both gauges: the first reads, the second reuses it.
  let last: { at: number; counts: Promise<Awaited<ReturnType<MysqlSchedulerStore['fleetCounts']>>> } | undefined;
  const counts = () => {
    if (!last || performance.now() - last.at > 1_000) last = { at: performance.now(), counts: store.fleetCounts(lostAfterMs) };
    return last.counts;
  };
  scrapedGauge('orangery_hosts', 'Hosts by backend and state (ready, draining, unknown, lost)', ['backend', 'state'], async () =>
    (await counts()).hosts.map((c) => ({ labels: { backend: c.backend, state: c.state }, value: c.count })),
  );
  scrapedGauge('orangery_instances', 'Instances by backend and state', ['backend', 'state'], async () =>
    (await counts()).instances.map((c) => ({ labels: { backend: c.backend, state: c.state }, value: c.count })),
  );
  scrapedGauge('orangery_scale_requests_pending', 'Apps whose accepted scale request has not completed (nor been rejected) yet', [], async () => [
    { labels: {}, value: (await counts()).pendingRequests },
  ]);
  scrapedGauge('orangery_scale_request_oldest_pending_seconds', 'How long the oldest accepted, not yet completed scale request has waited', [], async () => [
    { labels: {}, value: (await counts()).oldestPendingSeconds },
  ]);
}

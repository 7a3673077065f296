import { Inject, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { decode, DrainRequest, MigrateRequest, MigrationGetRequest, QUEUE_GROUPS, SUBJECTS } from '@orangery/contracts';
import { ensureEventsStream, Responder, type Route } from '@orangery/messaging';
import type { OutboxRelay } from '@orangery/persistence';
import { CONFIG, LOGGER, NATS, replicaId } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { MigratorConfig } from '../config';
import { HostWatch } from '../adapters/host-watch';
import type { MysqlMigrationStore } from '../adapters/mysql-migration-store';
import { NatsAgents, NatsIpam, NatsScheduler } from '../adapters/nats-ports';
import { MigrationService } from '../domain/migration.service';
import { systemClock } from '../domain/ports';
import { MigrationSaga } from '../domain/saga';
import { MigrationWorker } from '../domain/worker';
import { OUTBOX, STORE } from '../tokens';

const SCAN_EVERY_MS = 1_000;
/** how long a request waits for a scheduler leader before it answers UNAVAILABLE */
const REQUEST_RETRY_MS = 8_000;
/** on SIGTERM, how long sagas get to finish their current attempt */
const STOP_WAIT_MS = 10_000;

/**
 * Wires the migrator to NATS. Every replica answers the operators' requests, follows the
 * heartbeats (host.lost / host.recovered) and runs migrations: those it accepted, and those
 * whose lease ran out (claimed every second). No leader: the per-migration lease decides.
 */
export class MigratorRuntime implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly replica = replicaId('migrator');
  private readonly source = `orangery/migrator/${this.replica}`;
  private responder: Responder | undefined;
  private watch: HostWatch | undefined;
  private worker: MigrationWorker | undefined;
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    @Inject(NATS) private readonly nc: NatsConnection,
    @Inject(CONFIG) private readonly config: MigratorConfig,
    @Inject(STORE) private readonly store: MysqlMigrationStore,
    @Inject(OUTBOX) private readonly outbox: OutboxRelay,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    const c = this.config;
    await ensureEventsStream(this.nc, this.logger);
    this.outbox.start();
    this.watch = new HostWatch(this.nc, this.logger);
    this.watch.start();
    const scheduler = new NatsScheduler(this.nc, c.agentTimeoutSeconds * 1000);
    const saga = new MigrationSaga(
      {
        scheduler,
        agents: new NatsAgents(this.nc, { commandMs: c.agentTimeoutSeconds * 1000 }),
        ipam: new NatsIpam(this.nc),
        store: this.store,
        liveness: this.watch,
        clock: systemClock,
        log: this.logger,
      },
      {
        source: this.source,
        fenceDeadlineMs: (c.fenceAfterSeconds + c.fenceMarginSeconds) * 1000,
        createAttempts: c.createAttempts,
        runningTimeoutMs: c.runningTimeoutSeconds * 1000,
        stepGiveUpMs: c.stepGiveUpSeconds * 1000,
        retryBaseMs: 250,
        retryMaxMs: 5_000,
      },
    );
    const worker = new MigrationWorker({ store: this.store, clock: systemClock, log: this.logger }, saga, this.replica, {
      concurrency: c.concurrency,
      source: this.source,
    });
    this.worker = worker;
    const service = new MigrationService(
      { scheduler, store: this.store, clock: systemClock, log: this.logger, saga },
      this.replica,
      { source: this.source, requestRetryMs: REQUEST_RETRY_MS },
      (m) => worker.adopt(m),
      () => void worker.scan(),
    );
    this.responder = new Responder(this.nc, QUEUE_GROUPS.migrator, this.logger);
    this.responder.serve(this.routes(service));
    this.logger.info({ queue: QUEUE_GROUPS.migrator }, 'serving orangery.migrator.*');
    // Renew well inside the lease, so a busy event loop or a slow database does not lose it.
    const renewMs = Math.max(500, (c.leaseSeconds * 1000) / 3);
    this.timers.push(
      setInterval(() => void worker.scan(), SCAN_EVERY_MS),
      setInterval(() => void worker.renew(), renewMs),
      setInterval(() => void worker.finishDrains(), SCAN_EVERY_MS),
    );
    void worker.scan();
  }

  private routes(service: MigrationService): Route[] {
    return [
      { subject: SUBJECTS.migrator.migrate, handler: (b) => service.migrate(decode(MigrateRequest, b)) },
      { subject: SUBJECTS.migrator.drain, handler: (b) => service.drain(decode(DrainRequest, b).hostId) },
      { subject: SUBJECTS.migrator.migrationsGet, handler: (b) => service.get(decode(MigrationGetRequest, b).migrationId) },
    ];
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.responder?.drain();
    for (const t of this.timers) clearInterval(t);
    this.watch?.stop();
    await this.worker?.stop(STOP_WAIT_MS);
    await this.outbox.stop();
  }
}

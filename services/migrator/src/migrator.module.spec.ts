import { describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/nats-core';
import { compileWithFakes, DATA_SOURCE, NATS, SQL_POOL } from '@orangery/service-kit';
import { createLogger } from '@orangery/telemetry';
import { loadMigratorConfig } from './config';
import { MigratorModule } from './migrator.module';
import { InMemoryMigrationStore, ManualClock } from './domain/testing/fakes';
import { MigratorRuntime } from './transport/migrator.runtime';
import { OUTBOX, STORE } from './tokens';

const config = loadMigratorConfig({ ORANGERY_NATS_URL: 'nats://nowhere:4222', ORANGERY_DB_URL: 'mysql://u:p@nowhere:3306/mig' });

describe('MigratorModule wiring', () => {
  it('builds the runtime on the store, outbox and connection it is given, with nothing connected', async () => {
    const nc = {} as NatsConnection;
    const outbox = {};
    const store = new InMemoryMigrationStore(new ManualClock());
    const ctx = await compileWithFakes(MigratorModule.forRoot(config, createLogger('migrator-test')), [
      { provide: NATS, useValue: nc },
      { provide: DATA_SOURCE, useValue: {} },
      { provide: SQL_POOL, useValue: {} },
      { provide: OUTBOX, useValue: outbox },
      { provide: STORE, useValue: store },
    ]);
    expect(ctx.get(MigratorRuntime)).toMatchObject({ nc, store, outbox, config });
    await ctx.close();
  });
});

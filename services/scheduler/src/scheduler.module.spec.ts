import { describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/nats-core';
import { compileWithFakes, DATA_SOURCE, NATS, SQL_POOL } from '@orangery/service-kit';
import { createLogger } from '@orangery/telemetry';
import { loadSchedulerConfig } from './config';
import { SchedulerModule } from './scheduler.module';
import { InMemorySchedulerStore } from './domain/testing/fakes';
import { SchedulerRuntime } from './transport/scheduler.runtime';
import { OUTBOX, STORE } from './tokens';

const config = loadSchedulerConfig({ ORANGERY_NATS_URL: 'nats://nowhere:4222', ORANGERY_DB_URL: 'mysql://u:p@nowhere:3306/sched' });

describe('SchedulerModule wiring', () => {
  it('builds the runtime on the store, outbox and connection it is given, with nothing connected', async () => {
    const nc = {} as NatsConnection;
    const outbox = {};
    const store = new InMemorySchedulerStore();
    const ctx = await compileWithFakes(SchedulerModule.forRoot(config, createLogger('scheduler-test')), [
      { provide: NATS, useValue: nc },
      { provide: DATA_SOURCE, useValue: {} },
      { provide: SQL_POOL, useValue: {} },
      { provide: OUTBOX, useValue: outbox },
      { provide: STORE, useValue: store },
    ]);
    expect(ctx.get(SchedulerRuntime)).toMatchObject({ nc, store, outbox, config });
    await ctx.close();
  });
});

describe('scheduler config', () => {
  const base = { ORANGERY_NATS_URL: 'nats://nowhere:4222', ORANGERY_DB_URL: 'mysql://u:p@nowhere:3306/sched' };
  it('the leader lease: 3 s by default, 2 to 60 s, anything else is refused naming the variable', () => {
    expect(config.leaderLeaseSeconds).toBe(3);
    expect(loadSchedulerConfig({ ...base, ORANGERY_LEADER_LEASE_SECONDS: '10' }).leaderLeaseSeconds).toBe(10);
    for (const bad of ['1', '61', '2.5', 'soon']) {
      expect(() => loadSchedulerConfig({ ...base, ORANGERY_LEADER_LEASE_SECONDS: bad })).toThrow(/ORANGERY_LEADER_LEASE_SECONDS/);
    }
  });
});

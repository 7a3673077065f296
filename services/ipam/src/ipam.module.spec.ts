import { describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/nats-core';
import { compileWithFakes, DATA_SOURCE, NATS, SQL_POOL } from '@orangery/service-kit';
import { createLogger } from '@orangery/telemetry';
import { loadIpamConfig } from './config';
import { IpamModule } from './ipam.module';
import { IpamService } from './domain/ipam.service';
import { InMemoryIpamStore } from './domain/testing/in-memory-store';
import { IpamHandler } from './transport/ipam.handler';
import { IPAM_SERVICE, IPAM_STORE, OUTBOX } from './tokens';

const config = loadIpamConfig({ ORANGERY_NATS_URL: 'nats://nowhere:4222', ORANGERY_DB_URL: 'mysql://u:p@nowhere:3306/ipam' });

describe('IpamModule wiring', () => {
  it('builds the handler on the ipam service over the store it is given, with nothing connected', async () => {
    const nc = {} as NatsConnection;
    const outbox = { start: () => undefined };
    const store = new InMemoryIpamStore();
    const ctx = await compileWithFakes(IpamModule.forRoot(config, createLogger('ipam-test')), [
      { provide: NATS, useValue: nc },
      { provide: DATA_SOURCE, useValue: {} },
      { provide: SQL_POOL, useValue: {} },
      { provide: OUTBOX, useValue: outbox },
      { provide: IPAM_STORE, useValue: store },
    ]);
    const service = ctx.get<IpamService>(IPAM_SERVICE);
    expect(service).toBeInstanceOf(IpamService);
    const handler = ctx.get(IpamHandler) as unknown as { nc: unknown; ipam: unknown; outbox: unknown };
    expect(handler).toMatchObject({ nc, ipam: service, outbox });
    await service.createPool({ name: 'p', cidr: '10.9.0.0/24', gateway: '10.9.0.1', vlan: 9 });
    expect((await service.getPool('p')).name).toBe('p'); // served from the store it was given
    await ctx.close();
  });
});

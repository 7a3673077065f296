import { describe, expect, it } from 'vitest';
import { errors, type NatsConnection } from '@nats-io/nats-core';
import { PortError, SUBJECTS, type Reply } from '@orangery/contracts';
import { IpamBlocksClient } from './ipam-blocks-client';

/** A connection that answers each subject from `replies` and records what was asked. */
function fakeNats(replies: Record<string, Reply<unknown>>) {
  const asked: { subject: string; body: unknown }[] = [];
  const nc = {
    async request(subject: string, data: string) {
      asked.push({ subject, body: JSON.parse(data) });
      const r = replies[subject];
      if (r === undefined) throw new errors.NoRespondersError(subject);
      return { string: () => JSON.stringify(r) };
    },
  } as unknown as NatsConnection;
  return { nc, asked };
}

const block = { pool: 'p', host: 'sw-a', cidr: '198.18.0.4/30', first: '198.18.0.4', last: '198.18.0.7', size: 4 };

describe('IpamBlocksClient', () => {
  it('sends each call on its subject with the request as given, and returns the data', async () => {
    const { nc, asked } = fakeNats({
      [SUBJECTS.ipam.blockReserve]: { ok: true, data: block },
      [SUBJECTS.ipam.blockList]: { ok: true, data: { blocks: [block] } },
      [SUBJECTS.ipam.blockBind]: { ok: true, data: { ip: '198.18.0.5', state: 'bound' } },
    });
    const blocks = new IpamBlocksClient(nc);
    expect(await blocks.reserve({ pool: 'p', host: 'sw-a', size: 4 })).toEqual(block);
    expect(await blocks.list({ host: 'sw-a' })).toEqual([block]);
    const o = { env: 'test', app: 'web', slot: 0 };
    expect(await blocks.bind({ pool: 'p', ip: '198.18.0.5', owner: o, instanceId: 'test:web:0', host: 'sw-a' })).toMatchObject({ state: 'bound' });
    expect(asked).toEqual([
      { subject: 'orangery.ipam.block.reserve', body: { pool: 'p', host: 'sw-a', size: 4 } },
      { subject: 'orangery.ipam.block.list', body: { host: 'sw-a' } },
      { subject: 'orangery.ipam.block.bind', body: { pool: 'p', ip: '198.18.0.5', owner: o, instanceId: 'test:web:0', host: 'sw-a' } },
    ]);
  });

  it('unbind sends the instance id only when given', async () => {
    const { nc, asked } = fakeNats({ [SUBJECTS.ipam.blockUnbind]: { ok: true, data: { ip: '198.18.0.5', state: 'released' } } });
    const blocks = new IpamBlocksClient(nc);
    expect(await blocks.unbind('198.18.0.5', 'test:web:0')).toMatchObject({ state: 'released' });
    await blocks.unbind('198.18.0.5');
    expect(asked).toEqual([
      { subject: 'orangery.ipam.block.unbind', body: { ip: '198.18.0.5', instanceId: 'test:web:0' } },
      { subject: 'orangery.ipam.block.unbind', body: { ip: '198.18.0.5' } },
    ]);
  });

  it('NOT_FOUND on release and unbind is nothing to give back; other refusals are PortErrors with their code', async () => {
    const notFound: Reply<never> = { ok: false, error: { code: 'NOT_FOUND', message: 'none' } };
    const { nc } = fakeNats({
      [SUBJECTS.ipam.blockRelease]: notFound,
      [SUBJECTS.ipam.blockUnbind]: notFound,
      [SUBJECTS.ipam.blockBind]: { ok: false, error: { code: 'NOT_IN_BLOCK', message: 'outside', details: { block: '198.18.0.4/30' } } },
    });
    const blocks = new IpamBlocksClient(nc);
    expect(await blocks.release({ pool: 'p', host: 'sw-a' })).toBeUndefined();
    expect(await blocks.unbind('198.18.0.5')).toBeUndefined();
    const refused = await blocks
      .bind({ pool: 'p', ip: '198.18.0.9', owner: { env: 'test', app: 'web', slot: 0 }, instanceId: 'x', host: 'sw-a' })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PortError);
    expect(refused).toMatchObject({ code: 'NOT_IN_BLOCK', details: { block: '198.18.0.4/30' } });
    await expect(blocks.list()).rejects.toMatchObject({ code: 'UNAVAILABLE', retryable: true });
  });
});

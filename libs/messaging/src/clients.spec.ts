import { describe, expect, it } from 'vitest';
import { errors, type NatsConnection } from '@nats-io/nats-core';
import { PortError, SUBJECTS, type Reply } from '@orangery/contracts';
import { AgentClient, IpamClient, SchedulerClient } from './clients';

/** A connection that answers each subject from `replies` and records what was asked, with which timeout. */
function fakeNats(replies: Record<string, Reply<unknown> | Error>) {
  const asked: { subject: string; body: unknown; timeout: number }[] = [];
  const nc = {
    async request(subject: string, data: string, opts: { timeout: number }) {
      asked.push({ subject, body: JSON.parse(data), timeout: opts.timeout });
      const r = replies[subject];
      if (r === undefined) throw new errors.NoRespondersError(subject);
      if (r instanceof Error) throw r;
      return { string: () => JSON.stringify(r) };
    },
  } as unknown as NatsConnection;
  return { nc, asked };
}

const notFound: Reply<never> = { ok: false, error: { code: 'NOT_FOUND', message: 'none' } };

describe('contract clients', () => {
  it('an agent command waits the command timeout, a query the query timeout', async () => {
    const { nc, asked } = fakeNats({
      [SUBJECTS.agent.remove('h1')]: { ok: true, data: {} },
      [SUBJECTS.agent.get('h1')]: notFound,
      [SUBJECTS.agent.probe('h1')]: { ok: true, data: { hostId: 'h1', vlan: 10, iface: 'eth0.10', results: [{ ip: '10.0.0.5', answered: true }] } },
    });
    const agents = new AgentClient(nc, { commandMs: 30_000, queryMs: 10_000 });
    await agents.remove('h1', 'prod:web:0');
    expect(await agents.get('h1', 'prod:web:0')).toBeUndefined();
    expect(await agents.probe('h1', 10, ['10.0.0.5'])).toEqual(new Map([['10.0.0.5', true]]));
    expect(asked.map((a) => a.timeout)).toEqual([30_000, 10_000, 10_000]);
  });

  it('a refusal is a PortError, retryable as its code says; no responders is a retryable UNAVAILABLE', async () => {
    const { nc } = fakeNats({
      [SUBJECTS.agent.create('h1')]: { ok: false, error: { code: 'IMAGE_NOT_FOUND', message: 'no image' } },
      [SUBJECTS.agent.start('h1')]: { ok: false, error: { code: 'INTERNAL', message: 'bug', details: { traceId: 't' } } },
    });
    const agents = new AgentClient(nc);
    await expect(agents.create('h1', {} as never)).rejects.toMatchObject({ code: 'IMAGE_NOT_FOUND', retryable: false });
    await expect(agents.start('h1', 'x')).rejects.toMatchObject({ code: 'INTERNAL', retryable: true, details: { traceId: 't' } });
    const away = await agents.list('h2').catch((e: unknown) => e);
    expect(away).toBeInstanceOf(PortError);
    expect(away).toMatchObject({ code: 'UNAVAILABLE', retryable: true, details: { kind: 'no-responders' } });
  });

  it('ipam: an absent pool or allocation is undefined, a release of nothing succeeds', async () => {
    const { nc } = fakeNats({
      [SUBJECTS.ipam.poolGet]: { ok: false, error: { code: 'POOL_NOT_FOUND', message: 'no pool' } },
      [SUBJECTS.ipam.get]: notFound,
      [SUBJECTS.ipam.release]: notFound,
    });
    const ipam = new IpamClient(nc);
    expect(await ipam.poolGet('p')).toBeUndefined();
    expect(await ipam.get({ env: 'prod', app: 'web', slot: 0 })).toBeUndefined();
    await expect(ipam.release({ env: 'prod', app: 'web', slot: 0 })).resolves.toBeUndefined();
  });

  it('scheduler: slot API requests carry who holds the slot', async () => {
    const { nc, asked } = fakeNats({
      [SUBJECTS.schedulerSlot.reserve]: { ok: true, data: { hostId: 'h2', backend: 'docker', extra: 1 } },
      [SUBJECTS.schedulerSlot.get]: notFound,
    });
    const scheduler = new SchedulerClient(nc);
    expect(await scheduler.reserve('prod:web:0', 'm-1', { exclude: ['h1'] })).toEqual({ hostId: 'h2', backend: 'docker' });
    expect(await scheduler.slotGet('prod:web:9')).toBeUndefined();
    expect(asked[0]).toMatchObject({ subject: SUBJECTS.schedulerSlot.reserve, body: { instanceId: 'prod:web:0', by: 'm-1', exclude: ['h1'] } });
  });
});

describe('list clients read every page', () => {
  /** A lister of `n` hosts that pages by `limit` with the index as its cursor, recording each request. */
  function pagedNats(n: number, limit: number) {
    const asked: Record<string, unknown>[] = [];
    const nc = {
      async request(subject: string, data: string) {
        const body = JSON.parse(data) as { cursor?: string; env?: string };
        asked.push(body);
        const from = body.cursor === undefined ? 0 : Number(body.cursor);
        const ids = Array.from({ length: Math.max(0, Math.min(limit, n - from)) }, (_, i) => `h${from + i}`);
        const next = from + limit < n ? { nextCursor: String(from + limit) } : {};
        const data2 =
          subject === SUBJECTS.scheduler.hostsList
            ? { hosts: ids.map((id) => ({ id })), ...next }
            : subject === SUBJECTS.scheduler.instancesList
              ? { instances: ids.map((id) => ({ id })), ...next }
              : { pools: ids.map((name) => ({ name })), ...next };
        return { string: () => JSON.stringify({ ok: true, data: data2 }) };
      },
    } as unknown as NatsConnection;
    return { nc, asked };
  }

  it('hostsAll follows nextCursor until a page has none, each host once in order', async () => {
    const { nc, asked } = pagedNats(2_500, 1_000);
    const hosts = await new SchedulerClient(nc).hostsAll();
    expect(hosts.map((h) => h.id)).toEqual(Array.from({ length: 2_500 }, (_, i) => `h${i}`));
    expect(asked).toEqual([{}, { cursor: '1000' }, { cursor: '2000' }]);
  });

  it('instancesAll keeps its filter on every page; poolsAll its limit', async () => {
    const a = pagedNats(5, 2);
    expect(await new SchedulerClient(a.nc).instancesAll({ env: 'prod' })).toHaveLength(5);
    expect(a.asked).toEqual([{ env: 'prod' }, { env: 'prod', cursor: '2' }, { env: 'prod', cursor: '4' }]);
    const b = pagedNats(3, 2);
    expect((await new IpamClient(b.nc).poolsAll(2)).map((p) => p.name)).toEqual(['h0', 'h1', 'h2']);
    expect(b.asked).toEqual([{ limit: 2 }, { limit: 2, cursor: '2' }]);
  });

  it('an empty list is one request', async () => {
    const { nc, asked } = pagedNats(0, 1_000);
    expect(await new SchedulerClient(nc).hostsAll()).toEqual([]);
    expect(asked).toHaveLength(1);
  });

  it('stops on a lister that answers the same cursor again', async () => {
    const nc = {
      async request() {
        return { string: () => JSON.stringify({ ok: true, data: { hosts: [], nextCursor: 'same' } }) };
      },
    } as unknown as NatsConnection;
    await expect(new SchedulerClient(nc).hostsAll()).rejects.toThrow(/cursor/);
  });
});

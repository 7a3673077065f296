import { describe, expect, it } from 'vitest';
import { MAX_BATCH_ITEMS, OrangeryError, SUBJECTS } from '@orangery/contracts';
import type { RequestContext } from '@orangery/messaging';
import { IpamService } from '../domain/ipam.service';
import { FakeClock, InMemoryIpamStore } from '../domain/testing/in-memory-store';
import { ipamRoutes } from './ipam.handler';

// The batch subjects' decoding, on the routes the responder serves, over the in-memory store.

async function routes() {
  const store = new InMemoryIpamStore();
  const ipam = new IpamService(store, new FakeClock());
  await ipam.createPool({ name: 'net', cidr: '198.18.0.0/28', gateway: '198.18.0.1' });
  const bySubject = new Map(ipamRoutes(ipam).map((r) => [r.subject, r.handler]));
  const ctx: RequestContext = { subject: '', headers: undefined, actor: undefined };
  const call = (subject: string, body: unknown) => bySubject.get(subject)!(body as Record<string, unknown>, ctx);
  return { store, call };
}

const item = (slot: unknown) => ({ pool: 'net', owner: { env: 'test', app: 'web', slot } });

async function refusal(p: Promise<unknown>): Promise<OrangeryError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(OrangeryError);
  return e as OrangeryError;
}

describe('orangery.ipam.allocate.batch decoding', () => {
  it.each([
    ['items missing', {}, 'items'],
    ['items empty', { items: [] }, 'items'],
    ['items not an array', { items: item(0) }, 'items'],
    [`more than ${MAX_BATCH_ITEMS} items`, { items: Array.from({ length: MAX_BATCH_ITEMS + 1 }, (_, i) => item(i)) }, 'items'],
    ['an unknown field', { items: [item(0)], color: 'red' }, 'color'],
  ])('refuses the whole request with INVALID_REQUEST when %s, changing nothing', async (_label, body, field) => {
    const { store, call } = await routes();
    const before = store.snapshot();
    const e = await refusal(call(SUBJECTS.ipam.allocateBatch, body));
    expect(e.code).toBe('INVALID_REQUEST');
    expect(e.details).toMatchObject({ field });
    expect(store.snapshot()).toEqual(before);
  });

  it('answers a malformed item alone, naming it by index, and serves the others', async () => {
    const { store, call } = await routes();
    const body = { items: [item(0), item(1), 'nope', item('3'), { ...item(4), color: 1 }, item(5)] };
    const { results } = (await call(SUBJECTS.ipam.allocateBatch, body)) as { results: { ok: boolean; error?: { code: string; details: unknown } }[] };
    expect(results.map((r) => r.ok)).toEqual([true, true, false, false, false, true]);
    expect(results[2]!.error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'items[2]', path: '/items/2' } });
    expect(results[3]!.error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'items[3].owner.slot', path: '/items/3/owner/slot' } });
    expect(results[4]!.error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'items[4].color' } });
    expect(store.events).toHaveLength(3);
  });

  it("takes an item's valid traceparent for its event and answers a malformed one alone", async () => {
    const { store, call } = await routes();
    const traceparent = `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`;
    const body = {
      items: [
        { ...item(0), traceparent },
        { ...item(1), traceparent: 'not-a-trace' },
      ],
    };
    const { results } = (await call(SUBJECTS.ipam.allocateBatch, body)) as { results: { ok: boolean; error?: { code: string; details: unknown } }[] };
    expect(results.map((r) => r.ok)).toEqual([true, false]);
    expect(results[1]!.error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'items[1].traceparent' } });
    expect(store.events.map((e) => e.event.traceparent)).toEqual([traceparent]);
  });

  it('serves a batch of only malformed items without a transaction', async () => {
    const { store, call } = await routes();
    const before = store.transactions;
    const { results } = (await call(SUBJECTS.ipam.allocateBatch, { items: [item(-1)] })) as { results: { ok: boolean }[] };
    expect(results).toMatchObject([{ ok: false, error: { code: 'INVALID_REQUEST' } }]);
    expect(store.transactions).toBe(before);
  });
});

describe('orangery.ipam.bind.batch decoding', () => {
  it('answers a malformed bind item alone', async () => {
    const { call } = await routes();
    const {
      results: [a],
    } = (await call(SUBJECTS.ipam.allocateBatch, { items: [item(0)] })) as { results: { data: { ip: string } }[] };
    const good = { ip: a!.data.ip, instanceId: 'test:web:0', backend: 'docker', host: 'h1' };
    const { results } = (await call(SUBJECTS.ipam.bindBatch, { items: [{ ...good, backend: 'kvm' }, good] })) as {
      results: { ok: boolean; error?: unknown; data?: unknown }[];
    };
    expect(results[0]).toMatchObject({ ok: false, error: { code: 'INVALID_REQUEST', details: { field: 'items[0].backend' } } });
    expect(results[1]).toMatchObject({ ok: true, data: { state: 'bound', host: 'h1' } });
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Responder } from '@orangery/messaging';
import { createLogger } from '@orangery/telemetry';
import { HarnessDir, NatsServer } from '@orangery/testing';

// The Responder's in-flight cap on a real nats-server, as a bare NATS client sees it: beyond
// the cap a request is answered at once with a retryable UNAVAILABLE, not queued.
const dir = new HarnessDir('responder-bounds');
let nats: NatsServer;
let server: NatsConnection;
let caller: NatsConnection;

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  server = await connect({ servers: nats.url });
  caller = await connect({ servers: nats.url });
});

afterAll(async () => {
  await caller?.close();
  await server?.close();
  await nats?.stop();
  await dir.cleanup();
});

describe('Responder in-flight cap', () => {
  it('answers the request beyond the cap with UNAVAILABLE (retryable) while the others are still being handled', async () => {
    const gates: (() => void)[] = [];
    const responder = new Responder(server, 'q-bounds', createLogger('responder-bounds-test'), { maxInFlight: 2 });
    responder.serve([{ subject: 't.bounds.slow', handler: () => new Promise((res) => gates.push(() => res({ done: true }))) }]);
    await server.flush();
    const ask = () =>
      caller
        .request('t.bounds.slow', JSON.stringify({}), { timeout: 10_000 })
        .then((m) => m.json<{ ok: boolean; error?: { code: string; details: unknown } }>());
    const held = [ask(), ask()];
    // both are in the handler before the third is sent
    for (let i = 0; i < 100 && gates.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(gates).toHaveLength(2);
    const refused = await ask();
    expect(refused).toEqual({
      ok: false,
      error: { code: 'UNAVAILABLE', message: expect.stringContaining('in flight'), details: { retryable: true, limit: 2 } },
    });
    for (const g of gates.splice(0)) g();
    expect(await Promise.all(held)).toEqual([
      { ok: true, data: { done: true } },
      { ok: true, data: { done: true } },
    ]);
    // room again
    const again = ask();
    for (let i = 0; i < 100 && gates.length < 1; i++) await new Promise((r) => setTimeout(r, 20));
    gates.shift()!();
    expect(await again).toEqual({ ok: true, data: { done: true } });
    await responder.drain();
  });
});

import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { NatsGateway } from '../adapters/nats-gateway';
import { serveEvents, type SseOptions } from './sse';

/** A gateway whose event stream never ends: `size`-byte events, counted as they are pulled. */
function endlessGateway(size: number) {
  const state = { pulled: 0, closed: false, after: undefined as number | undefined };
  const gateway = {
    lastEventSeq: async () => 0,
    events: async (after: number | undefined) => {
      state.after = after;
      const payload = JSON.stringify({ pad: 'x'.repeat(size) });
      async function* messages() {
        for (let seq = (after ?? 0) + 1; !state.closed; seq++) {
          state.pulled++;
          yield { seq, string: () => payload };
          await new Promise((r) => setImmediate(r));
        }
      }
      return {
        messages: messages(),
        close: async () => {
          state.closed = true;
        },
      };
    },
  };
  return { gateway: gateway as unknown as NatsGateway, state };
}

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = undefined;
});

async function serve(gateway: NatsGateway, opts: Partial<SseOptions>): Promise<{ port: number; ended: Promise<void> }> {
  let endedResolve!: () => void;
  const ended = new Promise<void>((r) => (endedResolve = r));
  server = createServer((req, res) => {
    void serveEvents(
      req,
      res,
      gateway,
      { afterSeq: 0, history: 0, follow: true, pingMs: 60_000, slowClientMs: 300, ...opts },
      pino({ level: 'silent' }),
    ).finally(endedResolve);
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return { port: (server!.address() as AddressInfo).port, ended };
}

describe('SSE streams', () => {
  it('disconnects a client that does not read, after pulling a bounded number of events', async () => {
    const { gateway, state } = endlessGateway(16 * 1024);
    const { port, ended } = await serve(gateway, {});
    const socket = connect(port, '127.0.0.1');
    socket.pause(); // never reads: the kernel buffers fill, then the server's
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.write('GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n');
    await ended;
    expect(state.closed).toBe(true);
    // socket buffers (a few MB at most on loopback) + the 256 KiB high-water mark: bounded, not endless
    expect(state.pulled).toBeLessThan(2_000);
    socket.resume();
    await closed;
  });

  it('writes id and data lines, resumes after the given sequence, and stops the consumer when the client leaves', async () => {
    const { gateway, state } = endlessGateway(10);
    const { port, ended } = await serve(gateway, { afterSeq: 41 });
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString()));
    socket.write('GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (text.includes('id: 44\n')) {
          clearInterval(t);
          resolve();
        }
      }, 5);
    });
    expect(state.after).toBe(41);
    expect(text).toContain('Content-Type: text/event-stream');
    expect(text).toMatch(/\r\n\r\n[0-9a-f]+\r\nretry: 3000\n\n/);
    expect(text).toContain(`id: 42\ndata: {"pad":"xxxxxxxxxx"}\n\n`);
    socket.destroy();
    await ended;
    expect(state.closed).toBe(true);
  });
});

import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BlackholeProxy } from './blackhole-proxy';

/** A server that records what each connection sent and whether it was closed. */
async function recordingServer(): Promise<{ server: Server; port: number; got: () => string; closed: () => boolean; reply: (s: string) => void }> {
  let received = '';
  let closed = false;
  let peer: Socket | undefined;
  const server = createServer((s) => {
    peer = s;
    s.on('data', (d) => (received += d.toString()));
    s.on('close', () => (closed = true));
  });
  const port = await new Promise<number>((r) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      r(typeof a === 'object' && a ? a.port : 0);
    }),
  );
  return { server, port, got: () => received, closed: () => closed, reply: (s) => peer?.write(s) };
}

const tick = (ms = 50) => new Promise((r) => setTimeout(r, ms));
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe('BlackholeProxy', () => {
  it('forwards both ways; blackholed, nothing passes and nobody sees a close; healed, the held bytes arrive in order', async () => {
    const srv = await recordingServer();
    const proxy = await BlackholeProxy.start({ host: '127.0.0.1', port: srv.port });
    cleanups.push(
      () => proxy.close(),
      () => void srv.server.close(),
    );
    const client = createConnection({ host: '127.0.0.1', port: proxy.port });
    let fromServer = '';
    let clientClosed = false;
    client.on('data', (d) => (fromServer += d.toString()));
    client.on('close', () => (clientClosed = true));
    cleanups.push(() => void client.destroy());
    await new Promise((r) => client.once('connect', r));

    client.write('hello ');
    await tick();
    expect(srv.got()).toBe('hello ');
    srv.reply('hi ');
    await tick();
    expect(fromServer).toBe('hi ');

    proxy.blackhole();
    client.write('one ');
    client.write('two ');
    srv.reply('late ');
    await tick(200);
    expect(srv.got()).toBe('hello ');
    expect(fromServer).toBe('hi ');
    expect(proxy.heldToTarget).toBe(8);
    expect(srv.closed()).toBe(false);
    expect(clientClosed).toBe(false);

    proxy.heal();
    await tick();
    expect(srv.got()).toBe('hello one two ');
    expect(fromServer).toBe('hi late ');
  });

  it('a client that closes while blackholed: its close reaches the server only after the heal, behind its bytes', async () => {
    const srv = await recordingServer();
    const proxy = await BlackholeProxy.start({ host: '127.0.0.1', port: srv.port });
    cleanups.push(
      () => proxy.close(),
      () => void srv.server.close(),
    );
    const client = createConnection({ host: '127.0.0.1', port: proxy.port });
    await new Promise((r) => client.once('connect', r));
    await tick();
    proxy.blackhole();
    client.end('bye');
    await tick(200);
    expect(srv.got()).toBe('');
    expect(srv.closed()).toBe(false);
    proxy.heal();
    await tick(100);
    expect(srv.got()).toBe('bye');
    expect(srv.closed()).toBe(true);
  });
});

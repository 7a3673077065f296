import { createConnection, createServer, type Server, type Socket } from 'node:net';

interface Pair {
  client: Socket;
  upstream: Socket | undefined;
  /** bytes held while blackholed, in order, per direction */
  toUpstream: Buffer[];
  toClient: Buffer[];
}

/**
 * A userspace TCP proxy that can blackhole its connections: stop forwarding bytes in both
 * directions while keeping both sockets open (no FIN, no RST). Neither end notices
 * anything: to the server the client is alive and idle, to the client the server is slow,
 * as when a host loses power or is partitioned. Held bytes are delivered on `heal()`, in
 * order (TCP retransmitting once the partition is over), so a write sent into the
 * blackhole reaches the server late, after whatever happened meanwhile.
 */
export class BlackholeProxy {
  private readonly pairs = new Set<Pair>();
  private holes = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {
    server.on('connection', (client) => this.accept(client));
  }

  static async start(target: { host: string; port: number }): Promise<BlackholeProxy> {
    const server = createServer({ pauseOnConnect: false });
    const port = await new Promise<number>((res, rej) => {
      server.once('error', rej);
      server.listen(0, '127.0.0.1', () => {
        const a = server.address();
        res(typeof a === 'object' && a ? a.port : 0);
      });
    });
    return new BlackholeProxy(server, port, target);
  }

  /** `url` with its host and port replaced by this proxy's. */
  rewrite(url: string): string {
    const u = new URL(url);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString().replace(/\/$/, '');
  }

  get blackholed(): boolean {
    return this.holes;
  }

  get connections(): number {
    return this.pairs.size;
  }

  /** From now on nothing passes, either way, on any connection (new ones are accepted and held too). */
  blackhole(): void {
    this.holes = true;
  }

  /** Bytes held so far toward the target (what the blackholed client sent into the hole). */
  get heldToTarget(): number {
    let n = 0;
    for (const p of this.pairs) for (const d of p.toUpstream) n += d.length;
    return n;
  }

  /**
   * Delivers what was held and forwards again. A side that closed meanwhile has its close
   * passed on after its bytes, as TCP would.
   */
  heal(): void {
    this.holes = false;
    for (const p of [...this.pairs]) {
      if (!p.upstream) this.connectUpstream(p);
      this.flush(p);
      if (p.client.destroyed) {
        if (p.upstream?.connecting) p.upstream.once('connect', () => p.upstream?.end());
        else p.upstream?.end();
        this.pairs.delete(p);
      } else if (p.upstream?.destroyed) {
        p.client.end();
        this.pairs.delete(p);
      }
    }
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream?.destroy();
    }
    this.pairs.clear();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private accept(client: Socket): void {
    const p: Pair = { client, upstream: undefined, toUpstream: [], toClient: [] };
    this.pairs.add(p);
    client.setNoDelay(true);
    client.on('data', (d: Buffer) => {
      if (this.holes || !p.upstream) p.toUpstream.push(d);
      else p.upstream.write(d);
    });
    const end = () => {
      // an end that comes from one side passes only when not blackholed (a FIN is bytes on the wire too)
      this.pairs.delete(p);
      p.client.destroy();
      p.upstream?.destroy();
    };
    client.on('close', () => {
      if (!this.holes) end();
    });
    client.on('error', () => undefined);
    if (!this.holes) this.connectUpstream(p);
  }

  private connectUpstream(p: Pair): void {
    const up = createConnection({ host: this.target.host, port: this.target.port });
    up.setNoDelay(true);
    p.upstream = up;
    up.on('connect', () => this.flush(p));
    up.on('data', (d: Buffer) => {
      if (this.holes) p.toClient.push(d);
      else p.client.write(d);
    });
    up.on('close', () => {
      if (this.holes) return;
      this.pairs.delete(p);
      p.client.destroy();
    });
    up.on('error', () => undefined);
  }

  private flush(p: Pair): void {
    if (this.holes || !p.upstream || p.upstream.connecting) return;
    for (const d of p.toUpstream.splice(0)) p.upstream.write(d);
    for (const d of p.toClient.splice(0)) p.client.write(d);
  }
}

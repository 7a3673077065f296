import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '@orangery/telemetry';
import type { NatsGateway } from '../adapters/nats-gateway';

export interface SseOptions {
  /** resume after this stream sequence (Last-Event-ID); undefined: see `history` */
  afterSeq: number | undefined;
  /** without afterSeq: start this many events back; 0: from now on */
  history: number;
  /** false: end the response once the events stored at the start have been sent */
  follow: boolean;
  pingMs: number;
  /** a client that does not take what was written within this time is disconnected */
  slowClientMs: number;
}

/** Bytes written but not yet taken by a client before a write waits for it to drain. */
export const SSE_HIGH_WATER_BYTES = 256 * 1024;

/**
 * One SSE client: an ordered consumer of ORANGERY_EVENTS (its own, ephemeral), each event
 * written as `id: <stream sequence>` + `data: <CloudEvent>`. Memory stays bounded: when the
 * socket's buffer is full the loop stops pulling (the consumer holds at most a small
 * batch), and a client that does not drain within `slowClientMs` is disconnected rather
 * than buffered for. Closing the connection stops the consumer, which deletes it.
 */
export async function serveEvents(req: IncomingMessage, res: ServerResponse, gateway: NatsGateway, opts: SseOptions, logger: Logger): Promise<void> {
  // Watch for the client leaving from the first moment: a close that happens while the
  // consumer is being set up would otherwise go unseen, and the stream (its slot, its
  // consumer, its timer) would run for ever on a destroyed socket.
  let gone = false;
  const leave = () => (gone = true);
  req.on('close', leave);
  res.on('close', leave);
  let after = opts.afterSeq;
  let endSeq: number | undefined;
  if (after === undefined && (opts.history > 0 || !opts.follow)) {
    const last = await gateway.lastEventSeq();
    after = Math.max(0, last - opts.history);
    endSeq = last;
  } else if (!opts.follow) {
    endSeq = await gateway.lastEventSeq();
  }
  const { messages, close: closeConsumer } = await gateway.events(after);
  if (gone || req.destroyed || res.destroyed) {
    await closeConsumer();
    return;
  }
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(ping);
    void closeConsumer();
  };
  req.on('close', close);
  res.on('close', close);
  res.writeHead(200, {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-store',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
    'X-Content-Type-Options': 'nosniff',
  });
  res.write('retry: 3000\n\n');
  const ping = setInterval(() => {
    if (!closed) res.write(': ping\n\n');
  }, opts.pingMs);
  try {
    if (endSeq !== undefined && (after ?? 0) >= endSeq) return;
    for await (const m of messages) {
      if (closed) break;
      // A data field holds one line: an event spread over lines is sent as several.
      const data = m
        .string()
        .split(/\r\n|\r|\n/)
        .map((line) => `data: ${line}\n`)
        .join('');
      const ok = res.write(`id: ${m.seq}\n${data}\n`);
      if (res.destroyed) break;
      if (!ok && res.writableLength > SSE_HIGH_WATER_BYTES && !(await drained(res, opts.slowClientMs))) {
        logger.info({ seq: m.seq, buffered: res.writableLength }, 'SSE client too slow: disconnected');
        res.destroy();
        break;
      }
      if (endSeq !== undefined && m.seq >= endSeq) break;
    }
  } finally {
    close();
    if (!res.destroyed) res.end();
  }
}

function drained(res: ServerResponse, ms: number): Promise<boolean> {
  if (res.writableLength === 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(t);
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const t = setTimeout(() => done(false), ms);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}

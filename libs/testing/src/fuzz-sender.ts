import { readFileSync } from 'node:fs';
import { connect as tcpConnect, type Socket } from 'node:net';
import { headers as newHeaders, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import type { FuzzPayload } from './fuzz';

/** What came back for one fuzz payload: the reply's text, or why there was none. */
export type FuzzOutcome = { reply: string } | { refusedByClient: string } | { noReply: string };

const encoder = new TextEncoder();
const bytesOf = (b: string | Uint8Array): Uint8Array => (typeof b === 'string' ? encoder.encode(b) : b);

/**
 * Sends fuzz payloads as requests. Ordinary ones go through the NATS client, as any caller
 * would; those with a raw header block go as protocol bytes (`HPUB`) on a socket of their
 * own, so a header the client would refuse to write still reaches the service the way a
 * client in another language (or an attacker) can send it. Replies of both come back to
 * an inbox of `nc`.
 */
export class FuzzSender {
  private socket: Socket | undefined;
  private seq = 0;
  private readonly waiting = new Map<string, (text: string) => void>();
  private readonly inbox: Subscription;
  private readonly prefix = `_FUZZ.${process.pid}.${Date.now()}`;

  constructor(
    private readonly nc: NatsConnection,
    private readonly natsPort: number,
  ) {
    this.inbox = nc.subscribe(`${this.prefix}.*`, {
      callback: (_e, m) => {
        const w = this.waiting.get(m.subject);
        if (w) {
          this.waiting.delete(m.subject);
          w(m.string());
        }
      },
    });
  }

  private async raw(): Promise<Socket> {
    if (this.socket && !this.socket.destroyed) return this.socket;
    await this.nc.flush(); // the inbox subscription is known to the server before anything is sent
    const s = tcpConnect({ port: this.natsPort, host: '127.0.0.1' });
    await new Promise<void>((res, rej) => {
      s.once('connect', () => res());
      s.once('error', rej);
    });
    s.on('error', () => undefined);
    // The server's INFO, PINGs and -ERR lines are read and dropped; PONG keeps us connected.
    s.on('data', (d: Buffer) => {
      if (d.includes('PING')) s.write('PONG\r\n');
    });
    s.write('CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1}\r\n');
    this.socket = s;
    return s;
  }

  /** Publishes `payload` on `subject` with a reply inbox and waits up to `timeoutMs` for the reply. */
  async request(subject: string, payload: FuzzPayload, timeoutMs: number): Promise<FuzzOutcome> {
    const reply = `${this.prefix}.${++this.seq}`;
    const answered = new Promise<string>((res) => this.waiting.set(reply, res));
    const body = bytesOf(payload.body);
    try {
      if (payload.rawHeaders !== undefined) {
        const hdr = encoder.encode(payload.rawHeaders);
        const s = await this.raw();
        s.write(Buffer.concat([Buffer.from(`HPUB ${subject} ${reply} ${hdr.length} ${hdr.length + body.length}\r\n`), hdr, body, Buffer.from('\r\n')]));
      } else if (payload.headers) {
        const h = newHeaders();
        for (const [k, v] of Object.entries(payload.headers)) h.set(k, v);
        this.nc.publish(subject, body, { reply, headers: h });
      } else {
        this.nc.publish(subject, body, { reply });
      }
    } catch (e) {
      this.waiting.delete(reply);
      return { refusedByClient: e instanceof Error ? e.message : String(e) };
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<FuzzOutcome>((res) => {
      timer = setTimeout(() => res({ noReply: `no reply within ${timeoutMs} ms` }), timeoutMs);
    });
    const outcome = await Promise.race([answered.then((text): FuzzOutcome => ({ reply: text })), timedOut]);
    clearTimeout(timer);
    this.waiting.delete(reply);
    return outcome;
  }

  close(): void {
    this.inbox.unsubscribe();
    this.socket?.destroy();
  }
}

/**
 * Why a reply breaks the contract (CONTRACT.md "Request-reply"), or undefined when it keeps
 * it: JSON, `{ ok: true, data: {...} }` or `{ ok: false, error: { code, message } }` with a
 * contract code. INTERNAL counts as a violation: it is the envelope of a bug. No reply at
 * all is one; a payload the client refused to send is nothing to judge.
 */
export function contractViolation(outcome: FuzzOutcome, knownCodes: ReadonlySet<string>): string | undefined {
  if ('noReply' in outcome) return outcome.noReply;
  if ('refusedByClient' in outcome) return undefined;
  let r: unknown;
  try {
    r = JSON.parse(outcome.reply);
  } catch {
    return `reply is not JSON: ${JSON.stringify(outcome.reply.slice(0, 200))}`;
  }
  if (typeof r !== 'object' || r === null) return `reply is not an object: ${outcome.reply.slice(0, 200)}`;
  const o = r as { ok?: unknown; data?: unknown; error?: { code?: unknown; message?: unknown } };
  if (o.ok === true) return typeof o.data === 'object' && o.data !== null ? undefined : `ok reply without data: ${outcome.reply.slice(0, 200)}`;
  if (o.ok !== false || typeof o.error !== 'object' || o.error === null) return `not the reply envelope: ${outcome.reply.slice(0, 200)}`;
  if (!knownCodes.has(String(o.error.code))) return `not a contract code: ${String(o.error.code)}`;
  if (typeof o.error.message !== 'string' || o.error.message === '') return 'error without a message';
  if (o.error.code === 'INTERNAL') return `INTERNAL (a bug): ${o.error.message.slice(0, 200)}`;
  return undefined;
}

/** A process's resident memory in kB (/proc/<pid>/status VmRSS). */
export function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** Log lines that say a bug happened even when the reply looked fine. */
export function unexpectedErrorLines(lines: readonly string[]): string[] {
  return lines
    .filter((l) =>
      ['"msg":"unhandled rejection"', '"msg":"request failed with an unexpected error"', '"msg":"scale consumer stopped"'].some((m) => l.includes(m)),
    )
    .map((l) => l.slice(0, 400));
}

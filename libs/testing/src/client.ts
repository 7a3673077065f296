import { connect } from '@nats-io/transport-node';
import { natsEndpoints } from '@orangery/messaging';
import { EVENTS_STREAM, SUBJECTS } from '@orangery/contracts';
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy } from '@nats-io/jetstream';

/** A bare NATS client, as outside callers use: plain JSON in, the reply envelope out. */
export class ContractClient {
  private constructor(readonly nc: NatsConnection) {}

  static async connect(url: string): Promise<ContractClient> {
    const { servers, user, pass } = natsEndpoints(url);
    return new ContractClient(await connect({ servers, ...(user !== undefined ? { user, pass } : {}), maxReconnectAttempts: -1, reconnectTimeWait: 200 }));
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async request(subject: string, body: unknown, timeoutMs = 10_000): Promise<any> {
    const payload = typeof body === 'string' ? body : JSON.stringify(body);
    const msg = await this.nc.request(subject, payload, { timeout: timeoutMs });
    return JSON.parse(msg.string());
  }

  /** Like request, but retries on timeouts / no responders (a replica was killed). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async requestWithRetry(subject: string, body: unknown, attempts = 10, timeoutMs = 3_000): Promise<any> {
    let last: unknown;
    for (let i = 0; i < attempts; i++) {
      try {
        return await this.request(subject, body, timeoutMs);
      } catch (e) {
        last = e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    throw last;
  }

  /** Every event stored in ORANGERY_EVENTS under `filter`, read with an ephemeral consumer. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async events(filter: string = SUBJECTS.eventsAll): Promise<any[]> {
    const jsm = await jetstreamManager(this.nc);
    const info = await jsm.streams.info(EVENTS_STREAM.name);
    const total = info.state.messages;
    const js = jetstream(this.nc);
    // An ephemeral pull consumer with one filter subject: works on nats-server 2.9 (Debian 12).
    // Retried: right after a cluster node dies, JetStream's API may time out while its groups
    // elect new leaders (the stream itself is intact).
    const ci = await withRetries(() =>
      jsm.consumers.add(EVENTS_STREAM.name, {
        filter_subject: filter,
        deliver_policy: DeliverPolicy.All,
        ack_policy: AckPolicy.None,
        inactive_threshold: 30_000_000_000,
      }),
    );
    const c = await js.consumers.get(EVENTS_STREAM.name, ci.name);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const out: any[] = [];
    if (total === 0 || ci.num_pending === 0) return out;
    const batch = await c.fetch({ max_messages: total, expires: 2_000 });
    for await (const m of batch) {
      out.push(m.json());
      if (m.info.pending === 0) break;
    }
    await jsm.consumers.delete(EVENTS_STREAM.name, ci.name).catch(() => undefined);
    return out;
  }

  async close(): Promise<void> {
    await this.nc.close();
  }
}

/** Up to 4 tries, 2 s apart, of a JetStream API call that timed out. */
async function withRetries<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (e) {
      if (attempt >= 4 || !/timeout/i.test(String((e as Error)?.message ?? e))) throw e;
      await new Promise((r) => setTimeout(r, 2_000));
    }
  }
}

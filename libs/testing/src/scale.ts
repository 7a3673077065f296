import { randomUUID } from 'node:crypto';
import { jetstream } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { SUBJECTS, type EventEnvelope, type ScaleRequestData } from '@orangery/contracts';

/**
 * What an upstream system does: publish a scale request (CloudEvents, JetStream) and wait
 * for its one outcome event. The watcher subscribes before anything is published and keeps
 * every outcome, so none is missed however fast the scheduler is.
 */
export class ScaleWatcher {
  private readonly outcomes = new Map<string, EventEnvelope<Record<string, unknown>>[]>();
  private readonly waiters = new Map<string, ((e: EventEnvelope<Record<string, unknown>>) => void)[]>();
  private readonly sub: Subscription;

  constructor(private readonly nc: NatsConnection) {
    this.sub = nc.subscribe(SUBJECTS.event('scale', '*'), {
      callback: (_e, m) => {
        const ev = m.json<EventEnvelope<Record<string, unknown>>>();
        const id = String(ev.data?.['requestId'] ?? '');
        const list = this.outcomes.get(id) ?? [];
        // JetStream may see a re-published copy (same event id): count each event once
        if (list.some((x) => x.id === ev.id)) return;
        list.push(ev);
        this.outcomes.set(id, list);
        for (const w of this.waiters.get(id) ?? []) w(ev);
        this.waiters.delete(id);
      },
    });
  }

  /** Publishes a scale request; returns its id once JetStream has stored it. */
  async publish(data: Partial<ScaleRequestData> & { env: string; app: string }, id: string = randomUUID()): Promise<string> {
    await this.publishRaw(SUBJECTS.scale(data.env, data.app), {
      specversion: '1.0',
      id,
      source: '/test/upstream',
      type: 'io.orangery.scale.requested',
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      data,
    });
    return id;
  }

  async publishRaw(subject: string, body: unknown): Promise<void> {
    await jetstream(this.nc).publish(subject, typeof body === 'string' ? body : JSON.stringify(body));
  }

  /** Every outcome seen for a request id (exactly one is expected). */
  seen(requestId: string): EventEnvelope<Record<string, unknown>>[] {
    return this.outcomes.get(requestId) ?? [];
  }

  all(): EventEnvelope<Record<string, unknown>>[] {
    return [...this.outcomes.values()].flat();
  }

  /** The request's outcome event (completed or rejected). */
  outcome(requestId: string, timeoutMs = 60_000): Promise<EventEnvelope<Record<string, unknown>>> {
    const known = this.outcomes.get(requestId)?.[0];
    if (known) return Promise.resolve(known);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no outcome for scale request ${requestId} within ${timeoutMs} ms`)), timeoutMs);
      const list = this.waiters.get(requestId) ?? [];
      list.push((e) => {
        clearTimeout(t);
        resolve(e);
      });
      this.waiters.set(requestId, list);
    });
  }

  close(): void {
    this.sub.unsubscribe();
  }
}

import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { buildEvent, decode, Heartbeat, parseJsonObject, SUBJECTS, type Backend } from '@orangery/contracts';
import type { EventPublisher } from '@orangery/messaging';
import type { Logger } from '@orangery/telemetry';
import type { Liveness } from '../domain/ports';

interface HostSeen {
  backend: Backend;
  /** this replica's clock when the last heartbeat arrived */
  seenAt: number;
  /** the last heartbeat's own time (the agent's clock): the same for every replica */
  beatTime: string;
  /** the last heartbeat before the silence, while the host is lost */
  lostAfterBeat: string | undefined;
}

const CHECK_EVERY_MS = 500;
const PUBLISH_ATTEMPTS = 5;

/**
 * Follows the agents' heartbeats (`orangery.hb.*`): how long each host has been silent (for
 * the saga's fencing rule), and `host.lost` / `host.recovered` events. Every replica
 * watches and publishes; the event ids are derived from the heartbeat that preceded the
 * silence (`host-lost:<host>:<its time>`), which every replica saw alike, so JetStream's
 * duplicate window stores each event once however many replicas run.
 */
export class HostWatch implements Liveness {
  private readonly hosts = new Map<string, HostSeen>();
  private readonly startedAt = Date.now();
  private sub: Subscription | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly publisher: EventPublisher,
    private readonly lostAfterMs: number,
    private readonly source: string,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.sub = this.nc.subscribe('orangery.hb.*', { callback: (_e, msg) => this.onBeat(msg.subject, msg.data) });
    this.timer = setInterval(() => this.check(), CHECK_EVERY_MS);
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
  }

  silentForMs(hostId: string): number {
    const h = this.hosts.get(hostId);
    // Never seen since this replica started: silent for as long as it has been watching.
    return Date.now() - (h?.seenAt ?? this.startedAt);
  }

  private onBeat(subject: string, data: Uint8Array): void {
    let beat: Heartbeat;
    try {
      beat = decode(Heartbeat, parseJsonObject(data));
    } catch {
      return;
    }
    if (subject !== SUBJECTS.heartbeat(beat.hostId)) return;
    const now = Date.now();
    const h = this.hosts.get(beat.hostId);
    if (!h) {
      this.hosts.set(beat.hostId, { backend: beat.backend, seenAt: now, beatTime: beat.time, lostAfterBeat: undefined });
      return;
    }
    if (h.lostAfterBeat !== undefined) {
      const silentSince = h.lostAfterBeat;
      h.lostAfterBeat = undefined;
      void this.publish('recovered', beat.hostId, `host-recovered:${beat.hostId}:${silentSince}`, {
        hostId: beat.hostId,
        backend: beat.backend,
        lastHeartbeat: beat.time,
        silentSince,
      });
    }
    h.backend = beat.backend;
    h.seenAt = now;
    h.beatTime = beat.time;
  }

  private check(): void {
    const now = Date.now();
    for (const [hostId, h] of this.hosts) {
      if (h.lostAfterBeat !== undefined || now - h.seenAt < this.lostAfterMs) continue;
      h.lostAfterBeat = h.beatTime;
      void this.publish('lost', hostId, `host-lost:${hostId}:${h.beatTime}`, {
        hostId,
        backend: h.backend,
        lastHeartbeat: h.beatTime,
        lostAfterSeconds: Math.round(this.lostAfterMs / 1000),
      });
    }
  }

  private async publish(what: 'lost' | 'recovered', hostId: string, id: string, data: Record<string, unknown>): Promise<void> {
    const { natsSubject, event } = buildEvent({ area: 'host', what, id, source: this.source, subject: hostId, data });
    this.logger.info({ hostId, event: what }, `host ${what}`);
    for (let attempt = 1; attempt <= PUBLISH_ATTEMPTS; attempt++) {
      try {
        await this.publisher.publish(natsSubject, event);
        return;
      } catch (err) {
        this.logger.warn({ hostId, event: what, attempt, err: String(err) }, 'could not publish a host event; retrying');
        await new Promise((r) => setTimeout(r, 500 * attempt));
      }
    }
  }
}

import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { decode, Heartbeat, parseJsonObject, SUBJECTS } from '@orangery/contracts';
import { SchedulerClient } from '@orangery/messaging';
import type { Logger } from '@orangery/telemetry';
import type { Liveness } from '../domain/ports';

const VERDICTS_EVERY_MS = 2_000;
const VERDICTS_TIMEOUT_MS = 5_000;

/**
 * Whether an old copy's host is gone, for the saga's fencing rule (v1.1, two channels):
 * silence alone proves nothing (an agent frozen, or cut from NATS, keeps its instances
 * serving). The scheduler's leader judges each silent host (its instances off the wire, by
 * ARP probes from another agent) and says `lost` in `hosts.list`; this replica polls that
 * verdict and counts a host's silence (on its own monotonic clock, from the heartbeats it
 * follows) only while the verdict is `lost`. host.lost / host.recovered are the
 * scheduler's events now.
 */
export class HostWatch implements Liveness {
  private readonly seenAt = new Map<string, number>();
  private readonly startedAt = performance.now();
  private lost = new Set<string>();
  private probers: string[] = [];
  private sub: Subscription | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.sub = this.nc.subscribe(SUBJECTS.heartbeatsAll, { callback: (_e, msg) => this.onBeat(msg.subject, msg.data) });
    this.timer = setInterval(() => void this.pollVerdicts(), VERDICTS_EVERY_MS);
    void this.pollVerdicts();
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
  }

  goneForMs(hostId: string): number {
    if (!this.lost.has(hostId)) return 0;
    // Never seen since this replica started: silent for as long as it has been watching.
    return performance.now() - (this.seenAt.get(hostId) ?? this.startedAt);
  }

  proberFor(exclude: readonly string[]): string | undefined {
    const candidates = this.probers.filter((h) => !exclude.includes(h) && !this.lost.has(h));
    return candidates.length > 0 ? candidates[Math.floor(Math.random() * candidates.length)] : undefined;
  }

  private onBeat(subject: string, data: Uint8Array): void {
    let beat: Heartbeat;
    try {
      beat = decode(Heartbeat, parseJsonObject(data));
    } catch {
      return;
    }
    if (subject !== SUBJECTS.heartbeat(beat.hostId)) return;
    this.seenAt.set(beat.hostId, performance.now());
    // Heard again: whatever the last poll said, it is not gone.
    this.lost.delete(beat.hostId);
  }

  private async pollVerdicts(): Promise<void> {
    try {
      const hosts = await new SchedulerClient(this.nc, VERDICTS_TIMEOUT_MS).hostsAll();
      this.lost = new Set(hosts.filter((h) => h.state === 'lost').map((h) => h.id));
      this.probers = hosts.filter((h) => h.state === 'ready' && h.backend === 'docker').map((h) => h.id);
    } catch (err) {
      // Keep the last verdicts: a host once lost stays so until it beats again (onBeat).
      this.logger.debug({ err: String(err) }, 'could not read the scheduler host verdicts');
    }
  }
}

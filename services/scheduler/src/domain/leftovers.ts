import type { AgentInstance, Backend, InstanceOrphanedData } from '@orangery/contracts';
import type { AgentPort, Changes, CoreLog } from './ports';
import type { SchedulerEvents } from './scheduler-events';
import { errorOf } from './slot-records';

export interface LeftoverPorts {
  readonly agents: Pick<AgentPort, 'stop' | 'remove'>;
  readonly log: CoreLog;
  /** journals (the outbox): SlotBook.save */
  readonly save: (changes: Changes) => Promise<void>;
  /** wall clock: keptUntil is a timestamp in an event */
  readonly wallNow: () => number;
}

/**
 * Copies no record places on their host: a leftover of a failed attempt, a removed slot, a
 * copy from before a failover, or the old copy of a replaced instance. The record is the
 * truth: such a copy is stopped (a VM powered off), kept for the retention period (someone
 * may want its logs or disk), announced once (instance.orphaned), never started, and
 * removed only after the retention.
 */
export class Leftovers {
  /** `host/instanceId` -> wall-clock ms until which the copy is kept */
  private readonly kept = new Map<string, number>();

  constructor(
    private readonly ports: LeftoverPorts,
    private readonly retentionMs: number,
    private readonly events: SchedulerEvents,
  ) {}

  /** Keeps a stopped copy until the retention ends; announced once. */
  keep(hostId: string, instanceId: string, backend: Backend, state: string, reason: string): void {
    const key = `${hostId}/${instanceId}`;
    if (this.kept.has(key)) return;
    const keptUntil = this.ports.wallNow() + this.retentionMs;
    this.kept.set(key, keptUntil);
    const data: InstanceOrphanedData = { instanceId, host: hostId, backend, keptUntil: new Date(keptUntil).toISOString(), state, reason };
    this.ports.log.warn({ ...data }, 'leftover copy stopped and kept');
    void this.ports
      .save({ events: [this.events.event('instance', 'orphaned', instanceId, data, undefined, `instance-orphaned:${hostId}:${instanceId}:${keptUntil}`)] })
      .catch((e: unknown) => this.ports.log.warn({ instanceId, err: errorOf(e).message }, 'could not journal instance.orphaned'));
  }

  /** Copies kept now (a gauge; the map is bounded by what agents still list). */
  keptCount(): number {
    return this.kept.size;
  }

  /**
   * After a host's full listing: forgets the kept copies of that host it no longer lists as
   * leftovers (removed by someone else, or adopted by a record again), so the map holds what
   * still exists and not every copy ever seen. Forgetting only delays a removal: a copy that
   * shows up again is kept (and announced) afresh, never removed early.
   */
  listed(hostId: string, leftoverIds: ReadonlySet<string>): void {
    const prefix = `${hostId}/`;
    for (const key of this.kept.keys()) {
      if (key.startsWith(prefix) && !leftoverIds.has(key.slice(prefix.length))) this.kept.delete(key);
    }
  }

  /** An agent lists a copy no record places on its host: stop it, keep it, remove it past its retention. */
  found(hostId: string, inst: AgentInstance): void {
    const key = `${hostId}/${inst.instanceId}`;
    if (inst.state === 'running') {
      this.ports.log.warn({ instanceId: inst.instanceId, host: hostId }, 'stopping a copy no record places there');
      void this.ports.agents
        .stop(hostId, inst.instanceId)
        .then((after) => after && this.keep(hostId, inst.instanceId, inst.backend, after.state, 'found where no record places it'))
        .catch((e: unknown) =>
          this.ports.log.warn({ instanceId: inst.instanceId, host: hostId, err: errorOf(e).message }, 'could not stop a leftover; will retry'),
        );
      return;
    }
    const keptUntil = this.kept.get(key);
    if (keptUntil === undefined) {
      this.keep(hostId, inst.instanceId, inst.backend, inst.state, 'found where no record places it');
    } else if (this.ports.wallNow() > keptUntil) {
      this.ports.log.info({ instanceId: inst.instanceId, host: hostId }, 'removing a leftover past its retention');
      void this.ports.agents
        .remove(hostId, inst.instanceId)
        .then(() => this.kept.delete(key))
        .catch((e: unknown) =>
          this.ports.log.warn({ instanceId: inst.instanceId, host: hostId, err: errorOf(e).message }, 'could not remove a leftover; will retry'),
        );
    }
  }
}

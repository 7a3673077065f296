import type { NewEvent } from '@orangery/contracts';
import type { MigrationRecord } from './model';
import { LeaseLostError, type DomainLog, type MigrationStore, type Clock } from './ports';
import type { MigrationSaga } from './saga';

export interface WorkerOptions {
  /** migrations this replica runs at once */
  concurrency: number;
  source: string;
}

/**
 * Runs the migrations whose lease this replica holds: those it accepted itself, and those
 * it claims (free, or their lease expired: a replica died or shut down). `scan` and `renew`
 * are called on timers by the transport; the lease is what keeps two replicas from ever
 * running the same migration (MigrationStore.claim, save).
 */
export class MigrationWorker {
  private readonly active = new Map<string, { stop: boolean; done: Promise<void> }>();
  private stopping = false;
  private scanning = false;

  constructor(
    private readonly deps: { store: MigrationStore; clock: Clock; log: DomainLog },
    private readonly saga: MigrationSaga,
    private readonly owner: string,
    private readonly opts: WorkerOptions,
  ) {}

  get running(): string[] {
    return [...this.active.keys()];
  }

  /** Runs a migration whose lease this replica holds. */
  adopt(m: MigrationRecord): void {
    if (this.stopping || this.active.has(m.id)) return;
    const entry = { stop: false, done: Promise.resolve() };
    entry.done = this.saga
      .run(m, this.owner, () => entry.stop || this.stopping)
      .catch((e: unknown) => {
        if (e instanceof LeaseLostError) this.deps.log.warn({ migrationId: m.id }, 'lost the lease of a migration; another replica runs it');
        // Anything else (the database away): the lease runs out and the migration is
        // resumed, by this replica or another, from the step on record.
        else this.deps.log.warn({ migrationId: m.id, err: String(e) }, 'migration interrupted; it resumes once its lease expires');
      })
      .finally(() => {
        this.active.delete(m.id);
        // A drain's next migration of the same app may be free to start now.
        if (!this.stopping && m.drainId !== undefined) void this.scan();
      });
    this.active.set(m.id, entry);
  }

  /** Claims what nobody runs, up to the concurrency left. */
  async scan(): Promise<void> {
    if (this.stopping || this.scanning) return;
    this.scanning = true;
    try {
      const room = this.opts.concurrency - this.active.size;
      if (room <= 0) return;
      for (const m of await this.deps.store.claim(this.owner, room)) {
        this.deps.log.info({ migrationId: m.id, step: m.step }, m.step === 'queued' ? 'starting a queued migration' : 'resuming a migration');
        this.adopt(m);
      }
    } catch (e) {
      this.deps.log.warn({ err: String(e) }, 'could not claim migrations');
    } finally {
      this.scanning = false;
    }
  }

  /** Extends the leases of what runs here; a lease that was lost stops its saga at once. */
  async renew(): Promise<void> {
    const ids = this.running;
    if (ids.length === 0) return;
    try {
      const lost = await this.deps.store.renew(this.owner, ids);
      for (const id of lost) {
        const entry = this.active.get(id);
        if (entry) entry.stop = true;
      }
    } catch (e) {
      this.deps.log.warn({ err: String(e) }, 'could not renew migration leases');
    }
  }

  /** Ends drains whose migrations have all ended: host.drained when each completed. */
  async finishDrains(): Promise<void> {
    try {
      for (const { drain, migrations } of await this.deps.store.finishedDrains()) {
        const failed = migrations.filter((m) => m.state !== 'completed').map((m) => m.id);
        const state = failed.length === 0 ? 'completed' : 'failed';
        const events: NewEvent<unknown>[] =
          state === 'completed'
            ? [
                {
                  area: 'host',
                  what: 'drained',
                  id: `host-drained:${drain.id}`,
                  source: this.opts.source,
                  subject: drain.hostId,
                  time: new Date(this.deps.clock.now()),
                  data: { hostId: drain.hostId, drainId: drain.id, migrationIds: drain.migrationIds },
                },
              ]
            : [];
        if (await this.deps.store.endDrain(drain.id, state, events)) {
          this.deps.log.info({ drainId: drain.id, hostId: drain.hostId, state, failed }, `drain ${state}`);
        }
      }
    } catch (e) {
      this.deps.log.warn({ err: String(e) }, 'could not check drains');
    }
  }

  /**
   * Stops taking work and asks every saga to stop after its current attempt; waits up to
   * `waitMs`, then gives back the leases of the sagas that have stopped (so another replica
   * resumes them at once). A saga still inside an agent call keeps its lease until it expires.
   */
  async stop(waitMs: number): Promise<void> {
    this.stopping = true;
    const all = [...this.active.entries()];
    await Promise.race([Promise.allSettled(all.map(([, e]) => e.done)), this.deps.clock.sleep(waitMs)]);
    const stopped = all.filter(([id]) => !this.active.has(id)).map(([id]) => id);
    if (stopped.length > 0) await this.deps.store.unlease(this.owner, stopped).catch(() => undefined);
  }
}

import { instanceIdOf, type NewEvent } from '@orangery/contracts';
import type { HeldAddress } from './failover-judge';
import type { HostBook } from './host-book';
import { appKeyOf, type AppRecord, type SlotRecord } from './model';
import { NotLeaderError, type Changes, type SchedulerStore } from './ports';
import { demandOf, targetKey } from './slot-records';

/**
 * The leader's records in memory (apps, slots, slots by app) and the one way to change
 * them: `save` journals first (one transaction, fenced by the leader epoch), and memory
 * follows only after the commit. A write that fails leaves memory as it was, so the next
 * step reads what the journal holds and a new leader carries on from the same state.
 *
 * Also where this replica's term is kept: `stopped` once stopped or deposed (a write found
 * another leader), `loaded` once the journal is in memory.
 */
export class SlotBook {
  private readonly apps = new Map<string, AppRecord>();
  private readonly slots = new Map<string, SlotRecord>();
  private readonly byApp = new Map<string, Set<string>>();
  private inFlight = 0;
  private isStopped = false;
  private isLoaded = false;

  constructor(
    private readonly store: SchedulerStore,
    /** where the slots' reservations are kept, so placement sees them */
    private readonly hosts: HostBook,
    /** called once when a write finds another leader */
    private readonly onDeposed: () => void,
  ) {}

  /** Reads the journal into memory (a new leader), with each slot's reservations on its hosts. */
  async load(): Promise<{ apps: number; slots: number }> {
    const { apps, slots, drained } = await this.store.load();
    for (const id of drained ?? []) this.hosts.setDrain(id, true);
    for (const a of apps) this.apps.set(appKeyOf(a), a);
    for (const s of slots) this.putSlot(s);
    this.isLoaded = true;
    return { apps: apps.length, slots: slots.length };
  }

  /** Stopped or deposed: nothing more is written or started by this replica. */
  get stopped(): boolean {
    return this.isStopped;
  }

  /** The journal is in memory: before that, every instance an agent lists looks like an orphan. */
  get loaded(): boolean {
    return this.isLoaded;
  }

  stop(): void {
    this.isStopped = true;
  }

  /** Journal writes under way (stop waits for none). */
  get writing(): number {
    return this.inFlight;
  }

  // ---- reading ----------------------------------------------------------------------------

  app(key: string): AppRecord | undefined {
    return this.apps.get(key);
  }

  appKeys(): string[] {
    return [...this.apps.keys()];
  }

  slot(id: string): SlotRecord | undefined {
    return this.slots.get(id);
  }

  slotList(): SlotRecord[] {
    return [...this.slots.values()];
  }

  /** The ids of the app's slots (a live view: copy it before awaiting). */
  slotIdsOf(key: string): ReadonlySet<string> {
    return this.byApp.get(key) ?? new Set<string>();
  }

  /** The ids the host book has reserved on a host: the slots placed there, by their records. */
  slotsOn(hostId: string): string[] {
    return [...(this.hosts.get(hostId)?.placed.keys() ?? [])];
  }

  /** The addresses the records place on a host (what must be off the wire before it is lost). */
  addressesOn(hostId: string): HeldAddress[] {
    const out: HeldAddress[] = [];
    for (const id of this.slotsOn(hostId)) {
      const s = this.slots.get(id);
      if (s && s.hostId === hostId && s.ip) out.push({ instanceId: s.id, ip: s.ip, vlan: s.spec.vlan });
    }
    return out;
  }

  /** Slot numbers below `replicas` that have no record yet. */
  missingSlots(key: string, replicas: number): number[] {
    const have = this.byApp.get(key);
    const out: number[] = [];
    for (let slot = 0; slot < replicas; slot++) {
      const [env, app] = key.split(':') as [string, string];
      if (!have?.has(instanceIdOf({ env, app, slot }))) out.push(slot);
    }
    return out;
  }

  // ---- writing: journal first, then memory ------------------------------------------------

  /** One atomic journal write; NotLeaderError deposes this replica (once) and is rethrown. */
  async save(changes: Changes): Promise<void> {
    this.inFlight++;
    try {
      await this.store.commit(changes);
    } catch (e) {
      if (e instanceof NotLeaderError && !this.isStopped) {
        this.isStopped = true;
        this.onDeposed();
      }
      throw e;
    } finally {
      this.inFlight--;
    }
  }

  /** Journals the changed slot (with the events `events` derives from it), then keeps it. */
  async update(s: SlotRecord, patch: Partial<SlotRecord>, events?: (next: SlotRecord) => NewEvent<unknown>[]): Promise<SlotRecord> {
    const next: SlotRecord = { ...s, ...patch };
    await this.save({ slots: [next], ...(events ? { events: events(next) } : {}) });
    this.slots.set(next.id, next);
    return next;
  }

  /** An app record after its commit. */
  setApp(app: AppRecord): void {
    this.apps.set(appKeyOf(app), app);
  }

  /**
   * Memory only, no journal: for what a new leader does not need (see stepCreate). Every
   * other change goes through `update`.
   */
  remember(s: SlotRecord): void {
    this.slots.set(s.id, s);
  }

  /** A new slot after its commit (or from the journal), with its reservations. */
  putSlot(s: SlotRecord): void {
    this.slots.set(s.id, s);
    const key = appKeyOf(s);
    let set = this.byApp.get(key);
    if (!set) this.byApp.set(key, (set = new Set()));
    set.add(s.id);
    if (s.hostId) this.hosts.reserve(s.hostId, s.id, s, demandOf(s.spec.resources), s.backend ?? undefined);
    if (s.hold?.target) this.hosts.reserve(s.hold.target.hostId, targetKey(s.id), s, demandOf(s.spec.resources));
  }

  /** A slot whose deletion was committed. */
  dropSlot(s: SlotRecord): void {
    this.slots.delete(s.id);
    this.byApp.get(appKeyOf(s))?.delete(s.id);
    if (s.hostId) this.hosts.unreserve(s.hostId, s.id);
  }
}

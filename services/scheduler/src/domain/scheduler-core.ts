import {
  errorBodyOf,
  instanceIdOf,
  isRetryable,
  memoryLimitMb,
  OrangeryError,
  ownerOfInstanceId,
  type AgentInstance,
  type Backend,
  type CreateInstanceCommand,
  type Heartbeat,
  type HostFacts,
  type InstanceOrphanedData,
  type InstancePlacedData,
  type NewEvent,
  type ScaleCompletedData,
  type ScaleRejectedData,
  type ScaleRejectionCode,
  type SlotView,
} from '@orangery/contracts';
import { FailoverJudge } from './failover-judge';
import { HostBook } from './host-book';
import { appKeyOf, type AppRecord, type AppSpec, type Demand, type SlotError, type SlotRecord, type SlotSpec } from './model';
import { place, type HostState, type PlacementPolicy, type PlacementRequest } from './placement';
import { NotLeaderError, type AgentPort, type Changes, type Clock, type CoreLog, type IpamPort, type SchedulerStore } from './ports';
import { backendsFor, parseScale, type ScaleMessage } from './scale-intake';
import { KeyedMutex, Semaphore } from './sync';

export interface CoreSettings {
  /** CloudEvents source of what the scheduler publishes */
  readonly source: string;
  readonly policy: PlacementPolicy;
  /** hosts a slot is tried on before its start counts as failed (START_FAILED) */
  readonly startAttempts: number;
  /** an agent's `failed` is final after this long (the agent restarts a crashed instance a few times first) */
  readonly failedGraceMs: number;
  /** nothing that ran on a silent host is taken as gone before fenceAfter + margin */
  readonly fenceMarginMs: number;
  /** a copy found where no record places it is stopped and kept this long before removal */
  readonly leftoverRetentionMs: number;
  readonly lostAfterMs: number;
  /** slots worked on at once */
  readonly concurrency: number;
  /** env -> the only backends its instances may use */
  readonly envBackends: (env: string) => readonly Backend[] | undefined;
}

export interface CorePorts {
  readonly store: SchedulerStore;
  readonly ipam: IpamPort;
  readonly agents: AgentPort;
  /** monotonic: durations only */
  readonly clock: Clock;
  /** wall clock: timestamps in events (keptUntil) */
  readonly wallClock?: Clock;
  readonly log: CoreLog;
}

/** A scale message could not be judged now (ipam or the database away): redeliver it later. */
export class RetryLater extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'RetryLater';
  }
}

type Step = 'again' | 'done' | number;

/** What a scale.rejected event says (env and app are unknown for a request that is not even JSON). */
interface Rejection {
  readonly requestId: string;
  readonly env?: string | undefined;
  readonly app?: string | undefined;
  readonly code: ScaleRejectionCode;
  readonly message: string;
  readonly details?: Record<string, unknown> | undefined;
  readonly traceparent?: string | undefined;
}

const BACKOFF_MAX_MS = 10_000;
const UNPLACEABLE_RETRY_MS = 5_000;
const FAILED_RETRY_MS = 30_000;

const demandOf = (r: SlotSpec['resources']): Demand => ({
  cpu: r.cpu,
  memoryMb: memoryLimitMb(r.memoryMb, r.heapMb),
  diskMb: r.diskMb ?? 0,
});

const errorOf = (e: unknown): SlotError => {
  const { code, message } = errorBodyOf(e);
  return { code, message };
};

/**
 * The leader's brain: judges scale requests, keeps each app's slots converging on its
 * desired state, and follows what agents report. Level-triggered: every step reads the
 * current records and does the next thing; a step that fails is simply run again later, and
 * a new leader starting from the journal picks up where the old one stopped (every
 * external call is idempotent: allocate per owner, create per instance id and spec, bind,
 * remove, release).
 *
 * Records change only through `save`, which journals first (fenced by the leader epoch)
 * and updates memory after the commit.
 */
export class SchedulerCore {
  readonly hosts: HostBook;
  private readonly apps = new Map<string, AppRecord>();
  private readonly slots = new Map<string, SlotRecord>();
  private readonly slotsByApp = new Map<string, Set<string>>();
  private readonly appLock = new KeyedMutex();
  private readonly workLimit: Semaphore;
  private readonly running = new Set<string>();
  private readonly again = new Set<string>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly verifying = new Map<string, NodeJS.Timeout>();
  private readonly appChecks = new Set<string>();
  private appCheckTimer: NodeJS.Timeout | undefined;
  private readonly hostStates = new Map<string, HostState>();
  private stopped = false;
  /** the journal is in memory: before that, every instance an agent lists looks like an orphan */
  private loaded = false;
  private inFlight = 0;
  readonly failover: FailoverJudge;
  /** leftovers kept on hosts (`host/instanceId` -> wall-clock ms until which they are kept) */
  private readonly leftovers = new Map<string, number>();

  constructor(
    private readonly ports: CorePorts,
    private readonly settings: CoreSettings,
    /** called once when a write finds another leader: the service steps down */
    private readonly onDeposed: () => void = () => undefined,
  ) {
    this.hosts = new HostBook(settings.lostAfterMs, () => ports.clock.now(), () => this.wallNow());
    this.workLimit = new Semaphore(settings.concurrency);
    this.failover = new FailoverJudge(
      this.hosts,
      { source: settings.source, lostAfterMs: settings.lostAfterMs, fenceDeadlineMs: settings.fenceMarginMs },
      {
        agents: ports.agents,
        log: ports.log,
        emit: (events) => this.save({ events }),
        addressesOn: (hostId) => this.addressesOn(hostId),
        lost: (hostId) => this.replaceAll(hostId, { code: 'HOST_LOST', message: `host ${hostId} is silent and its instances are off the wire`, host: hostId }),
      },
    );
  }

  // ---- lifecycle ------------------------------------------------------------------------

  /** Loads the journal (a new leader) and starts converging every app. */
  async start(): Promise<void> {
    const { apps, slots, drained } = await this.ports.store.load();
    for (const id of drained ?? []) this.hosts.setDrain(id, true);
    for (const a of apps) this.apps.set(appKeyOf(a), a);
    for (const s of slots) this.putSlot(s);
    this.loaded = true;
    this.ports.log.info({ apps: apps.length, slots: slots.length }, 'leader state loaded');
    for (const key of this.apps.keys()) void this.reconcileApp(key);
  }

  /** Stops taking work; resolves when no step is in progress any more. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    for (const t of this.verifying.values()) clearTimeout(t);
    clearTimeout(this.appCheckTimer);
    this.timers.clear();
    this.verifying.clear();
    for (let i = 0; i < 300 && (this.running.size > 0 || this.inFlight > 0); i++) await new Promise((r) => setTimeout(r, 20));
  }

  /** Level-triggered sweep: every app and every host, on a timer. */
  tick(): void {
    if (this.stopped) return;
    this.sweepHosts();
    for (const key of this.apps.keys()) void this.reconcileApp(key);
  }

  /** Host states, failover verdicts, isolated hosts' instances: cheap, run every second. */
  sweepHosts(): void {
    if (this.stopped || !this.loaded) return;
    this.hosts.sweep(this.hostStates);
    this.failover.sweep();
    for (const h of this.hosts.all()) {
      // The agent stopped everything itself (its instance network was isolated) and says so:
      // each instance moves once the agent confirms it stopped (stepReplace asks).
      if (h.fenced && !this.hosts.isSilent(h)) this.replaceAll(h.id, { code: 'HOST_ISOLATED', message: `host ${h.id} fenced itself: its instance network is isolated`, host: h.id });
    }
  }

  private wallNow(): number {
    return (this.ports.wallClock ?? { now: () => Date.now() }).now();
  }

  /** The addresses the records place on a host (what must be off the wire before it is lost). */
  private addressesOn(hostId: string): { instanceId: string; ip: string; vlan: number }[] {
    const out: { instanceId: string; ip: string; vlan: number }[] = [];
    for (const id of this.slotsOn(hostId)) {
      const s = this.slots.get(id);
      if (s && s.hostId === hostId && s.ip) out.push({ instanceId: s.id, ip: s.ip, vlan: s.spec.vlan });
    }
    return out;
  }

  /** Marks every settled slot of a host for replacement elsewhere with its IP. */
  private replaceAll(hostId: string, lastError: SlotError): void {
    for (const id of this.slotsOn(hostId)) {
      const s = this.slots.get(id);
      if (!s || s.hostId !== hostId || s.phase !== null || s.hold) continue;
      this.ports.log.warn({ instanceId: id, host: hostId, code: lastError.code }, 'replacing an instance of a lost host');
      void this.update(s, { phase: 'replace', state: 'failed', lastError })
        .then(() => this.kick(id))
        .catch((e: unknown) => this.ports.log.warn({ instanceId: id, err: errorOf(e).message }, 'could not record the replacement; will retry'));
    }
  }

  // ---- read side (the leader answers from memory only in tests; replicas read the DB) --

  app(env: string, app: string): AppRecord | undefined {
    return this.apps.get(`${env}:${app}`);
  }

  slotList(): SlotRecord[] {
    return [...this.slots.values()];
  }

  // ---- scale requests ---------------------------------------------------------------------

  /**
   * Judges one stored scale request. Returns when its fate is journaled (accepted, or
   * rejected with its event in the outbox): the caller acks then. Throws RetryLater when
   * it cannot be judged now; the caller redelivers.
   */
  async handleScale(msg: ScaleMessage): Promise<void> {
    const parsed = parseScale(msg);
    if (await this.ports.store.requestSeen(parsed.requestId)) return;
    if (!parsed.ok) {
      await this.rejectRequest(parsed.seq, { ...parsed, code: 'INVALID_REQUEST' });
      return;
    }
    const { data, requestId, seq, traceparent } = parsed;
    const key = appKeyOf(data);
    await this.appLock.run(key, async () => {
      const current = this.apps.get(key);
      if (current?.requestId === requestId) return; // the same request again: it changes nothing
      const reject = (code: ScaleRejectionCode, message: string, details?: Record<string, unknown>) =>
        this.rejectRequest(seq, { requestId, env: data.env, app: data.app, code, message, details, traceparent });
      if (current && seq < current.seq) {
        return reject('SUPERSEDED', `a newer request (${current.requestId}) for ${key} was accepted first`, { by: current.requestId });
      }
      const { backends, reason, field } = backendsFor(data, this.settings.envBackends(data.env));
      if (backends.length === 0) return reject('INVALID_REQUEST', `field '${field}': ${reason}`, { field, reason });
      let pool;
      try {
        pool = await this.ports.ipam.pool(data.pool);
      } catch (e) {
        throw new RetryLater(`ipam: ${errorOf(e).message}`);
      }
      if (!pool) return reject('POOL_NOT_FOUND', `pool '${data.pool}' does not exist`, { pool: data.pool });

      const spec: AppSpec = {
        replicas: data.replicas,
        resources: data.resources,
        ...(data.image !== undefined ? { image: data.image } : {}),
        ...(data.template !== undefined ? { template: data.template } : {}),
        backends,
        pool: data.pool,
        vlan: pool.vlan,
        spread: data.spread ?? 'host',
        ...(data.environment ? { environment: data.environment } : {}),
      };
      const next: AppRecord = {
        env: data.env,
        app: data.app,
        requestId,
        seq,
        spec,
        stable: current?.stable ?? null,
        outcome: 'pending',
        backend: data.backend ?? 'auto',
        ...(traceparent ? { traceparent } : {}),
      };
      // Place every slot that has no record yet, all or nothing: a request that does not
      // fit is rejected with the shortfall and changes nothing.
      const placed: SlotRecord[] = [];
      const missing = this.missingSlots(key, spec.replicas);
      for (const slot of missing) {
        const decision = place(this.placementRequest(next, []), this.hosts.inventory());
        if (!decision.ok) {
          for (const s of placed) this.hosts.unreserve(s.hostId!, s.id);
          return reject('INSUFFICIENT_CAPACITY', `${decision.reason.message} (${placed.length} of ${missing.length} new instances fit)`, {
            ...decision.reason.details,
            requested: missing.length,
            fit: placed.length,
          });
        }
        const s = this.newSlot(next, slot, decision.hostId);
        this.hosts.reserve(decision.hostId, s.id, next, demandOf(s.spec.resources));
        placed.push(s);
      }
      const changes: Changes = {
        apps: [next],
        slots: placed,
        requests: [{ requestId, env: data.env, app: data.app, seq, outcome: 'accepted' }],
        events: placed.map((s) => this.placedEvent(s, next)),
      };
      if (current?.outcome === 'pending') {
        changes.requests!.push({ requestId: current.requestId, env: data.env, app: data.app, seq: current.seq, outcome: 'rejected' });
        changes.events!.push(
          this.rejectedEvent({
            requestId: current.requestId,
            env: data.env,
            app: data.app,
            code: 'SUPERSEDED',
            message: `request ${requestId} replaced it`,
            details: { by: requestId },
            traceparent: current.traceparent,
          }),
        );
      }
      try {
        await this.save(changes);
      } catch (e) {
        for (const s of placed) this.hosts.unreserve(s.hostId!, s.id);
        throw e instanceof NotLeaderError ? e : new RetryLater(`database: ${errorOf(e).message}`);
      }
      this.apps.set(key, next);
      for (const s of placed) this.putSlot(s);
      this.ports.log.info({ app: key, requestId, replicas: spec.replicas, placed: placed.length }, 'scale request accepted');
      for (const id of this.slotsByApp.get(key) ?? []) this.kick(id);
      this.checkAppSoon(key);
    });
  }

  private async rejectRequest(seq: number, r: Rejection  ): Promise<void> {
    try {
      await this.save({
        requests: [{ requestId: r.requestId, env: r.env ?? '', app: r.app ?? '', seq, outcome: 'rejected', reason: { code: r.code, message: r.message } }],
        events: [this.rejectedEvent(r)],
      });
    } catch (e) {
      throw e instanceof NotLeaderError ? e : new RetryLater(`database: ${errorOf(e).message}`);
    }
    this.ports.log.info({ requestId: r.requestId, app: r.env && r.app ? `${r.env}:${r.app}` : undefined, code: r.code, message: r.message }, 'scale request rejected');
  }

  // ---- app-level convergence -------------------------------------------------------------

  /** Gives every desired slot a record, wakes every slot with work, checks completion. */
  private async reconcileApp(key: string): Promise<void> {
    if (this.stopped) return;
    await this.appLock.run(key, async () => {
      const app = this.apps.get(key);
      if (!app) return;
      const missing = this.missingSlots(key, app.spec.replicas);
      if (missing.length > 0) {
        const fresh: SlotRecord[] = [];
        for (const slot of missing) {
          const decision = place(this.placementRequest(app, []), this.hosts.inventory());
          const s = this.newSlot(app, slot, decision.ok ? decision.hostId : null);
          if (s.hostId) this.hosts.reserve(s.hostId, s.id, app, demandOf(s.spec.resources));
          fresh.push(s);
        }
        try {
          await this.save({ slots: fresh, events: fresh.filter((s) => s.hostId).map((s) => this.placedEvent(s, app)) });
          for (const s of fresh) this.putSlot(s);
        } catch (e) {
          for (const s of fresh) if (s.hostId) this.hosts.unreserve(s.hostId, s.id);
          this.ports.log.warn({ app: key, err: errorOf(e).message }, 'could not record new slots; will retry');
        }
      }
      for (const id of this.slotsByApp.get(key) ?? []) {
        const s = this.slots.get(id)!;
        if (s.phase !== null || s.slot >= app.spec.replicas) this.kick(id);
      }
    });
    this.checkAppSoon(key);
  }

  private missingSlots(key: string, replicas: number): number[] {
    const have = this.slotsByApp.get(key);
    const out: number[] = [];
    for (let slot = 0; slot < replicas; slot++) {
      const [env, app] = key.split(':') as [string, string];
      if (!have?.has(instanceIdOf({ env, app, slot }))) out.push(slot);
    }
    return out;
  }

  private checkAppSoon(key: string): void {
    this.appChecks.add(key);
    if (this.appCheckTimer || this.stopped) return;
    this.appCheckTimer = setTimeout(() => {
      this.appCheckTimer = undefined;
      const keys = [...this.appChecks];
      this.appChecks.clear();
      for (const k of keys) void this.checkApp(k).catch((e: unknown) => this.ports.log.warn({ app: k, err: errorOf(e).message }, 'completion check failed'));
    }, 20);
  }

  /** A pending request is completed when every slot 0..N-1 runs and nothing above N is left. */
  private async checkApp(key: string): Promise<void> {
    await this.appLock.run(key, async () => {
      const app = this.apps.get(key);
      if (!app || app.outcome !== 'pending') return;
      const ids = this.slotsByApp.get(key) ?? new Set<string>();
      if (ids.size !== app.spec.replicas) return;
      const instances: ScaleCompletedData['instances'] = [];
      for (const id of ids) {
        const s = this.slots.get(id)!;
        if (s.slot >= app.spec.replicas || s.state !== 'running' || s.phase !== null) return;
        instances.push({ id, slot: s.slot, host: s.hostId!, backend: s.backend!, ip: s.ip! });
      }
      instances.sort((a, b) => a.slot - b.slot);
      const done: AppRecord = { ...app, outcome: 'completed', stable: app.spec };
      const data: ScaleCompletedData = { requestId: app.requestId, env: app.env, app: app.app, replicas: app.spec.replicas, instances };
      await this.save({
        apps: [done],
        requests: [{ requestId: app.requestId, env: app.env, app: app.app, seq: app.seq, outcome: 'completed' }],
        events: [this.event('scale', 'completed', key, data, app.traceparent, `scale-completed:${app.requestId}`)],
      });
      this.apps.set(key, done);
      this.ports.log.info({ app: key, requestId: app.requestId, replicas: app.spec.replicas }, 'scale request completed');
    });
  }

  /**
   * Ends the app's pending request in a rejection and falls back to the last completed
   * spec (none: zero replicas): a rejected request leaves nothing behind.
   */
  private async rejectPending(key: string, requestId: string, code: ScaleRejectionCode, message: string, details: Record<string, unknown>): Promise<void> {
    await this.appLock.run(key, async () => {
      const app = this.apps.get(key);
      if (!app || app.outcome !== 'pending' || app.requestId !== requestId) return;
      const fallback: AppSpec = app.stable ?? { ...app.spec, replicas: 0 };
      const next: AppRecord = { ...app, spec: fallback, outcome: 'rejected' };
      await this.save({
        apps: [next],
        requests: [{ requestId, env: app.env, app: app.app, seq: app.seq, outcome: 'rejected', reason: { code, message } }],
        events: [this.rejectedEvent({ requestId, env: app.env, app: app.app, code, message, details, traceparent: app.traceparent })],
      });
      this.apps.set(key, next);
      this.ports.log.warn({ app: key, requestId, code, message, replicas: fallback.replicas }, 'scale request rejected; back to the last completed state');
    });
    void this.reconcileApp(key);
  }

  // ---- slot workers -----------------------------------------------------------------------

  /** Runs the slot's next steps now (or after `delayMs`); one worker per slot at a time. */
  kick(id: string, delayMs = 0): void {
    if (this.stopped) return;
    if (delayMs > 0) {
      if (!this.timers.has(id)) {
        this.timers.set(
          id,
          setTimeout(() => {
            this.timers.delete(id);
            this.kick(id);
          }, delayMs),
        );
      }
      return;
    }
    if (this.running.has(id)) {
      this.again.add(id);
      return;
    }
    this.running.add(id);
    void this.workLimit
      .run(() => this.work(id))
      .catch((e: unknown) => {
        if (e instanceof NotLeaderError) return;
        this.ports.log.warn({ instanceId: id, err: errorOf(e).message }, 'slot step failed; will retry');
        this.kick(id, 1_000);
      })
      .finally(() => {
        this.running.delete(id);
        if (this.again.delete(id)) this.kick(id);
      });
  }

  private async work(id: string): Promise<void> {
    for (let n = 0; n < 50 && !this.stopped; n++) {
      const next = await this.step(id);
      if (next === 'done') return;
      if (typeof next === 'number') return this.kick(id, next);
    }
  }

  private async step(id: string): Promise<Step> {
    const s = this.slots.get(id);
    // held by a migration: it decides; the scheduler resumes after commit or release
    if (!s || s.hold) return 'done';
    const key = appKeyOf(s);
    const app = this.apps.get(key);
    const desired = app !== undefined && s.slot < app.spec.replicas;
    if (!desired) return this.stepRemove(s);
    if (s.phase === 'remove' || s.phase === 'replace') return this.stepReplace(s, app);
    if (s.phase === 'create') return this.stepCreate(s, app);
    return 'done';
  }

  /** Off its host (confirmed by the agent, or the host silent past its self-fence), IP back, record gone. */
  private async stepRemove(s: SlotRecord): Promise<Step> {
    if (s.phase !== 'remove') {
      await this.update(s, { phase: 'remove' });
      return 'again';
    }
    if (s.hostId) {
      const gone = await this.offHost(s.hostId, s.id, 'remove');
      if (!gone) return this.backoff(s);
    }
    try {
      await this.ports.ipam.release(ownerOf(s));
    } catch (e) {
      this.ports.log.warn({ instanceId: s.id, err: errorOf(e).message }, 'ip release failed; will retry');
      return this.backoff(s);
    }
    await this.save({ deleteSlots: [s.id] });
    this.dropSlot(s);
    this.ports.log.info({ instanceId: s.id, host: s.hostId, ip: s.ip }, 'instance removed');
    const key = appKeyOf(s);
    const app = this.apps.get(key);
    // desired again meanwhile (scaled up while it was being removed): place it anew
    if (app && s.slot < app.spec.replicas) void this.reconcileApp(key);
    else this.checkAppSoon(key);
    return 'done';
  }

  /** A failed copy (or one removed while wanted again): take it off its host, then create anew, same IP. */
  private async stepReplace(s: SlotRecord, app: AppRecord): Promise<Step> {
    if (s.hostId) {
      const gone = await this.offHost(s.hostId, s.id, 'keep');
      if (!gone) return this.backoff(s);
      this.hosts.unreserve(s.hostId, s.id);
    }
    await this.update(s, {
      phase: 'create',
      state: 'placed',
      hostId: null,
      backend: null,
      tried: s.hostId && s.phase === 'replace' ? [s.hostId] : [],
      attempts: 0,
      spec: this.slotSpec(app.spec),
      requestId: app.outcome === 'pending' ? app.requestId : s.requestId,
    });
    return 'again';
  }

  private async stepCreate(s: SlotRecord, app: AppRecord): Promise<Step> {
    if (!s.hostId) return this.placeSlot(s, app);
    const hostId = s.hostId;
    if (this.hosts.isDown(hostId)) {
      return this.attemptFailed(s, hostId, new OrangeryError('UNAVAILABLE', `host ${hostId} is ${this.hosts.stateOf(this.hosts.get(hostId)!)} (no heartbeat, or fenced)`));
    }
    let alloc;
    try {
      alloc = await this.ports.ipam.allocate(s.spec.pool, ownerOf(s));
    } catch (e) {
      if (isRetryable(e)) return this.backoff(s);
      // POOL_NOT_FOUND, POOL_EXHAUSTED...: no other host changes that
      return this.slotFailed(s, app, { ...errorOf(e), host: hostId });
    }
    if (s.ip !== alloc.ip || s.state !== 'starting') {
      // Memory only: nothing a new leader needs (the record already names the host, and
      // allocate is idempotent), and one journal write less per instance. The next write
      // (running, or a failed attempt) carries it; until then other replicas list `placed`.
      s = { ...s, state: 'starting', ip: alloc.ip, mac: alloc.mac };
      this.slots.set(s.id, s);
    }
    const backend = s.backend ?? this.hosts.get(hostId)?.backend ?? 'docker';
    if (backend !== 'docker') {
      // A VM cannot probe the wire before it boots: a live agent on the VLAN does it for it.
      const refused = await this.probeForVm(s, hostId, alloc.ip, alloc.vlan);
      if (refused !== undefined) return refused;
    }
    let inst: AgentInstance;
    try {
      inst = await this.ports.agents.create(hostId, this.createCommand(s, alloc, backend));
    } catch (e) {
      return this.attemptFailed(s, hostId, e);
    }
    if (inst.state !== 'running') {
      return this.attemptFailed(s, hostId, new OrangeryError('START_FAILED', inst.reason ?? `the instance is ${inst.state} after create`));
    }
    try {
      await this.ports.ipam.bind(alloc.ip, s.id, backend, hostId);
    } catch (e) {
      this.ports.log.warn({ instanceId: s.id, err: errorOf(e).message }, 'ip bind failed; will retry');
      return this.backoff(s);
    }
    await this.update(s, { state: 'running', phase: null, backend, tried: [], attempts: 0, lastError: null });
    this.checkAppSoon(appKeyOf(s));
    return 'done';
  }

  /** undefined: the address is silent (or no agent can tell: logged); otherwise the step to return. */
  private async probeForVm(s: SlotRecord, hostId: string, ip: string, vlan: number): Promise<Step | undefined> {
    const prober = this.failover.proberFor(hostId, vlan);
    if (!prober) {
      this.ports.log.warn({ instanceId: s.id, ip, vlan }, 'no live docker-agent on the VLAN to probe the wire before a VM start; starting without one');
      return undefined;
    }
    let answers: Map<string, boolean>;
    try {
      answers = await this.ports.agents.probe(prober, vlan, [ip]);
    } catch (e) {
      this.ports.log.warn({ instanceId: s.id, ip, prober, err: errorOf(e).message }, 'wire probe before a VM start failed; will retry');
      return this.backoff(s);
    }
    if (answers.get(ip) === false) return undefined;
    return this.attemptFailed(s, hostId, new OrangeryError('IP_IN_USE_ON_WIRE', `${ip} answers ARP on VLAN ${vlan} (probed by ${prober}): nothing was started`, { ip, prober }));
  }

  private async placeSlot(s: SlotRecord, app: AppRecord): Promise<Step> {
    if (s.attempts >= this.settings.startAttempts) return this.slotFailed(s, app);
    const decision = place(this.placementRequest(app, s.tried), this.hosts.inventory());
    if (!decision.ok) {
      if (s.tried.length > 0) return this.slotFailed(s, app);
      if (app.outcome === 'pending') {
        await this.rejectPending(appKeyOf(app), app.requestId, 'INSUFFICIENT_CAPACITY', decision.reason.message, { ...decision.reason.details, slot: s.slot });
        return 'again';
      }
      return UNPLACEABLE_RETRY_MS;
    }
    const spec = this.slotSpec(app.spec);
    this.hosts.reserve(decision.hostId, s.id, app, demandOf(spec.resources));
    try {
      const next = await this.update(
        s,
        { hostId: decision.hostId, backend: this.hosts.get(decision.hostId)?.backend ?? null, state: 'placed', attempts: s.attempts + 1, spec },
        (n) => [this.placedEvent(n, app)],
      );
      this.ports.log.debug({ instanceId: next.id, host: decision.hostId, attempt: next.attempts }, 'placed');
    } catch (e) {
      this.hosts.unreserve(decision.hostId, s.id);
      throw e;
    }
    return 'again';
  }

  /** A start on `hostId` did not work: clean up there, give its resources back, try elsewhere. */
  private async attemptFailed(s: SlotRecord, hostId: string, e: unknown): Promise<Step> {
    const err = { ...errorOf(e), host: hostId };
    this.ports.log.warn({ instanceId: s.id, host: hostId, code: err.code, err: err.message }, 'start failed on this host');
    // A create that timed out may still finish: the agent serializes per instance, so a
    // remove sent now runs after it. A silent host is cleaned when it comes back.
    await this.ports.agents.remove(hostId, s.id).catch(() => undefined);
    this.hosts.unreserve(hostId, s.id);
    const next = await this.update(s, { hostId: null, backend: null, state: 'placed', tried: [...s.tried, hostId], lastError: err });
    return Math.min(200 * 2 ** next.attempts, BACKOFF_MAX_MS);
  }

  /** No eligible host left for this slot: the pending request fails; otherwise try again later. */
  private async slotFailed(s: SlotRecord, app: AppRecord, error?: SlotError): Promise<Step> {
    const last = error ?? s.lastError ?? { code: 'INSUFFICIENT_CAPACITY', message: 'no eligible host left to try' };
    if (app.outcome === 'pending') {
      const failing = [...(this.slotsByApp.get(appKeyOf(app)) ?? [])]
        .map((id) => this.slots.get(id)!)
        .filter((x) => x.slot < app.spec.replicas && x.state !== 'running');
      const slots: Record<string, SlotError | null> = {};
      for (const x of failing) slots[String(x.slot)] = x.id === s.id ? last : x.lastError;
      await this.rejectPending(appKeyOf(app), app.requestId, 'START_FAILED', `slot ${s.slot} could not be started: ${last.message}`, {
        slots,
        tried: s.tried,
      });
      return 'again';
    }
    await this.update(s, { state: 'failed', tried: [], attempts: 0, lastError: last });
    return FAILED_RETRY_MS;
  }

  /**
   * True when the instance is off `hostId`: its agent confirms it (removed; or, for `keep`,
   * stopped and kept as a leftover), or the host is judged lost (silent AND its addresses
   * off the wire). A silent host that is not judged lost is waited for: its copy may be
   * serving, and starting the IP elsewhere would make two.
   */
  private async offHost(hostId: string, id: string, how: 'remove' | 'keep'): Promise<boolean> {
    const h = this.hosts.get(hostId);
    if (h && this.hosts.isSilent(h)) return h.judged === 'lost';
    try {
      if (how === 'remove') {
        await this.ports.agents.remove(hostId, id);
        return true;
      }
      const inst = await this.ports.agents.stop(hostId, id);
      if (inst?.state === 'running') return false;
      if (inst) this.keepLeftover(hostId, id, inst.backend, inst.state, 'replaced elsewhere');
      return true;
    } catch (e) {
      this.ports.log.warn({ instanceId: id, host: hostId, how, err: errorOf(e).message }, 'could not take the instance off its host; will retry');
      return false;
    }
  }

  /** A copy no record places on `hostId` is kept (stopped) until the retention ends; announced once. */
  private keepLeftover(hostId: string, instanceId: string, backend: Backend, state: string, reason: string): void {
    const key = `${hostId}/${instanceId}`;
    if (this.leftovers.has(key)) return;
    const keptUntil = this.wallNow() + this.settings.leftoverRetentionMs;
    this.leftovers.set(key, keptUntil);
    const data: InstanceOrphanedData = { instanceId, host: hostId, backend, keptUntil: new Date(keptUntil).toISOString(), state, reason };
    this.ports.log.warn({ ...data }, 'leftover copy stopped and kept');
    void this.save({ events: [this.event('instance', 'orphaned', instanceId, data, undefined, `instance-orphaned:${hostId}:${instanceId}:${keptUntil}`)] }).catch(
      (e: unknown) => this.ports.log.warn({ instanceId, err: errorOf(e).message }, 'could not journal instance.orphaned'),
    );
  }

  private backoff(s: SlotRecord): number {
    return Math.min(500 * 2 ** Math.min(s.attempts, 5), BACKOFF_MAX_MS);
  }

  // ---- observations -----------------------------------------------------------------------

  heartbeat(hb: Heartbeat): void {
    const before = this.hosts.get(hb.hostId);
    const judged = before?.judged;
    const silentSince = before ? new Date(before.lastBeatWall).toISOString() : undefined;
    if (this.hosts.heartbeat(hb)) {
      this.ports.log.info({ host: hb.hostId, backend: hb.backend }, 'host is ready');
      this.hostStates.set(hb.hostId, this.hosts.stateOf(this.hosts.get(hb.hostId)!));
    }
    if (judged !== undefined && this.hosts.get(hb.hostId)?.judged === undefined && silentSince && !this.stopped) {
      this.ports.log.warn({ host: hb.hostId, was: judged }, 'host heard from again');
      const data = { hostId: hb.hostId, backend: hb.backend, lastHeartbeat: hb.time, silentSince };
      void this.save({ events: [this.event('host', 'recovered', hb.hostId, data, undefined, `host-recovered:${hb.hostId}:${silentSince}`)] }).catch(
        (e: unknown) => this.ports.log.warn({ host: hb.hostId, err: errorOf(e).message }, 'could not journal host.recovered'),
      );
    }
  }

  registered(facts: HostFacts): void {
    this.hosts.heartbeat(facts);
  }

  /** An agent's instance event: anything that leaves a running slot not running is checked. */
  instanceEvent(what: string, instanceId: string, hostId: string): void {
    const s = this.slots.get(instanceId);
    if (!s || s.hostId !== hostId || s.phase !== null || s.hold) return;
    if (what === 'failed') this.verifyLater(instanceId, this.settings.failedGraceMs);
    else if (what === 'stopped') this.verifyLater(instanceId, 1_000);
    else if (what === 'removed') this.verifyLater(instanceId, 0);
  }

  /** Anti-entropy: what an agent says runs on its host against the records. */
  agentList(hostId: string, instances: readonly AgentInstance[]): void {
    // A deposed core's records are stale, and a core not started yet has none: either would
    // remove instances the (new) leader placed.
    if (this.stopped || !this.loaded) return;
    const seen = new Set<string>();
    for (const inst of instances) {
      seen.add(inst.instanceId);
      const s = this.slots.get(inst.instanceId);
      if (s?.hold) continue; // a migration has copies on two hosts for a while
      if (!s || s.hostId !== hostId) {
        // Not ours there: a leftover of a failed attempt, a removed slot, or a copy from
        // before a failover. The record is the truth: the copy is stopped (a VM powered off)
        // and kept for the retention period, never started, removed only after it.
        this.handleLeftover(hostId, inst);
        continue;
      }
      if (s.phase === null && inst.state !== 'running') this.verifyLater(s.id, inst.state === 'failed' ? this.settings.failedGraceMs : 1_000);
    }
    for (const id of this.slotsOn(hostId)) {
      const s = this.slots.get(id);
      if (s && s.phase === null && !s.hold && !seen.has(id)) this.verifyLater(id, 0);
    }
  }

  private handleLeftover(hostId: string, inst: AgentInstance): void {
    const key = `${hostId}/${inst.instanceId}`;
    if (inst.state === 'running') {
      this.ports.log.warn({ instanceId: inst.instanceId, host: hostId }, 'stopping a copy no record places there');
      void this.ports.agents
        .stop(hostId, inst.instanceId)
        .then((after) => after && this.keepLeftover(hostId, inst.instanceId, inst.backend, after.state, 'found where no record places it'))
        .catch((e: unknown) => this.ports.log.warn({ instanceId: inst.instanceId, host: hostId, err: errorOf(e).message }, 'could not stop a leftover; will retry'));
      return;
    }
    const keptUntil = this.leftovers.get(key);
    if (keptUntil === undefined) {
      this.keepLeftover(hostId, inst.instanceId, inst.backend, inst.state, 'found where no record places it');
    } else if (this.wallNow() > keptUntil) {
      this.ports.log.info({ instanceId: inst.instanceId, host: hostId }, 'removing a leftover past its retention');
      void this.ports.agents
        .remove(hostId, inst.instanceId)
        .then(() => this.leftovers.delete(key))
        .catch((e: unknown) => this.ports.log.warn({ instanceId: inst.instanceId, host: hostId, err: errorOf(e).message }, 'could not remove a leftover; will retry'));
    }
  }

  private slotsOn(hostId: string): string[] {
    return [...(this.hosts.get(hostId)?.placed.keys() ?? [])];
  }

  private verifyLater(id: string, delayMs: number): void {
    if (this.verifying.has(id) || this.stopped) return;
    this.verifying.set(
      id,
      setTimeout(() => {
        this.verifying.delete(id);
        void this.verify(id).catch((e: unknown) => this.ports.log.warn({ instanceId: id, err: errorOf(e).message }, 'verify failed'));
      }, delayMs),
    );
  }

  /** Asks the agent how the instance really is, and acts: restart a stopped one, replace a failed one, recreate a missing one. */
  private async verify(id: string): Promise<void> {
    const s = this.slots.get(id);
    if (!s || s.phase !== null || !s.hostId || s.hold) return;
    const inst = await this.ports.agents.get(s.hostId, id);
    const now = this.slots.get(id);
    if (now !== s) return; // changed meanwhile: that change decides
    if (!inst || inst.state === 'removed') {
      this.ports.log.warn({ instanceId: id, host: s.hostId }, 'instance is gone from its host; creating it again');
      await this.update(s, { phase: 'create', state: 'placed' });
      this.kick(id);
    } else if (inst.state === 'failed') {
      this.ports.log.warn({ instanceId: id, host: s.hostId, reason: inst.reason }, 'instance failed; replacing it');
      await this.update(s, { phase: 'replace', state: 'failed', lastError: { code: 'FAILED', message: inst.reason ?? `exit code ${inst.exitCode ?? '?'}`, host: s.hostId } });
      this.kick(id);
    } else if (inst.state === 'stopped' || inst.state === 'created') {
      this.ports.log.warn({ instanceId: id, host: s.hostId }, 'instance stopped by itself; starting it again');
      try {
        const started = await this.ports.agents.start(s.hostId, id);
        if (started.state !== 'running') throw new OrangeryError('START_FAILED', started.reason ?? `still ${started.state}`);
      } catch (e) {
        await this.update(s, { phase: 'replace', state: 'failed', lastError: { ...errorOf(e), host: s.hostId } });
        this.kick(id);
      }
    }
  }

  // ---- the slot API for the migrator (docs/scheduler.md "Slot API") -------------------

  slotView(id: string): SlotView {
    const s = this.slots.get(id);
    if (!s) throw new OrangeryError('NOT_FOUND', `no instance ${id}`, { instanceId: id });
    return {
      id: s.id,
      env: s.env,
      app: s.app,
      slot: s.slot,
      state: s.state,
      phase: s.phase,
      backend: s.backend,
      hostId: s.hostId,
      ip: s.ip,
      mac: s.mac,
      spec: s.spec,
      hold: s.hold ?? null,
    };
  }

  /** A migration takes the slot over: the scheduler leaves it alone until commit or release. */
  async hold(id: string, by: string): Promise<SlotView> {
    const s = this.heldBy(id, by, true);
    if (!s.hold) {
      if (s.phase !== null || this.running.has(id)) {
        throw new OrangeryError('UNAVAILABLE', `instance ${id} is busy (${s.phase ?? 'a step is running'}); try again shortly`, { phase: s.phase });
      }
      if (!s.hostId || s.state !== 'running') throw new OrangeryError('INSTANCE_CONFLICT', `instance ${id} is ${s.state}, not running: nothing to move`, { state: s.state });
      await this.update(s, { hold: { by } });
      this.ports.log.info({ instanceId: id, by }, 'slot held for a migration');
    }
    return this.slotView(id);
  }

  /** Places and reserves the held slot's target (never its current host nor `exclude`). */
  async reserveTarget(id: string, by: string, opts: { toHost?: string; toBackend?: Backend; exclude?: readonly string[] }): Promise<{ hostId: string; backend: Backend }> {
    const s = this.heldBy(id, by, false);
    if (s.hold?.target) return s.hold.target;
    const app = this.apps.get(appKeyOf(s));
    if (!app) throw new OrangeryError('NOT_FOUND', `no app record for ${id}`);
    const backends = opts.toBackend ? [opts.toBackend] : app.spec.backends;
    for (const b of backends) {
      if (!(b === 'docker' ? s.spec.image ?? app.spec.image : s.spec.template ?? app.spec.template)) {
        throw new OrangeryError('INVALID_REQUEST', `field 'toBackend': ${id} has no ${b === 'docker' ? 'image' : 'template'} for ${b}`, { field: 'toBackend' });
      }
    }
    if (opts.toHost !== undefined && !this.hosts.get(opts.toHost)) throw new OrangeryError('NOT_FOUND', `no host ${opts.toHost}`, { hostId: opts.toHost });
    const exclude = new Set([s.hostId!, ...(opts.exclude ?? [])]);
    if (opts.toHost !== undefined) for (const h of this.hosts.all()) if (h.id !== opts.toHost) exclude.add(h.id);
    const request: PlacementRequest = {
      ...this.placementRequest(app, [...exclude]),
      resources: s.spec.resources,
      backend: backends.length === 1 ? backends[0]! : 'auto',
      allowedBackends: backends,
    };
    const decision = place(request, this.hosts.inventory());
    if (!decision.ok) {
      throw new OrangeryError('INSUFFICIENT_CAPACITY', `no host can take ${id}: ${decision.reason.message}`, { ...decision.reason.details });
    }
    const target = { hostId: decision.hostId, backend: this.hosts.get(decision.hostId)!.backend };
    this.hosts.reserve(target.hostId, targetKey(id), s, demandOf(s.spec.resources));
    try {
      await this.update(s, { hold: { by, target } });
    } catch (e) {
      this.hosts.unreserve(target.hostId, targetKey(id));
      throw e;
    }
    return target;
  }

  /** The migration moved the instance to its target: the record follows, and the scheduler takes over again. */
  async commitTarget(id: string, by: string): Promise<SlotView> {
    const done = this.slots.get(id);
    if (done && !done.hold && done.movedBy === by) return this.slotView(id); // committed already
    const s = this.heldBy(id, by, false);
    const target = s.hold?.target;
    if (!target) throw new OrangeryError('INSTANCE_CONFLICT', `no target reserved for ${id}`);
    await this.update(s, { hostId: target.hostId, backend: target.backend, state: 'running', phase: null, hold: null, movedBy: by, tried: [], attempts: 0, lastError: null });
    if (s.hostId) this.hosts.unreserve(s.hostId, id);
    this.hosts.unreserve(target.hostId, targetKey(id));
    this.hosts.reserve(target.hostId, id, s, demandOf(s.spec.resources));
    this.ports.log.info({ instanceId: id, by, from: s.hostId, to: target.hostId }, 'slot moved by a migration');
    return this.slotView(id);
  }

  /** The migration gave up (the old copy is back): drop the target, manage the slot again. */
  async releaseHold(id: string, by: string): Promise<SlotView> {
    const s = this.slots.get(id);
    if (!s) throw new OrangeryError('NOT_FOUND', `no instance ${id}`, { instanceId: id });
    if (!s.hold) return this.slotView(id);
    if (s.hold.by !== by) throw new OrangeryError('INSTANCE_CONFLICT', `instance ${id} is held by ${s.hold.by}`, { heldBy: s.hold.by });
    await this.update(s, { hold: null });
    if (s.hold.target) this.hosts.unreserve(s.hold.target.hostId, targetKey(id));
    this.kick(id);
    return this.slotView(id);
  }

  async setDrain(hostId: string, drain: boolean): Promise<{ hostId: string; state: HostState }> {
    const h = this.hosts.get(hostId);
    if (!h) throw new OrangeryError('NOT_FOUND', `no host ${hostId}`, { hostId });
    await this.save({ hostDrains: [{ hostId, drain, backend: h.backend, facts: h.facts, usage: h.usage }] });
    this.hosts.setDrain(hostId, drain);
    return { hostId, state: this.hosts.stateOf(h) };
  }

  /** The slot, held by `by` (or free, when `orFree`). */
  private heldBy(id: string, by: string, orFree: boolean): SlotRecord {
    const s = this.slots.get(id);
    if (!s) throw new OrangeryError('NOT_FOUND', `no instance ${id}`, { instanceId: id });
    if (s.hold ? s.hold.by !== by : !orFree) {
      throw new OrangeryError('INSTANCE_CONFLICT', s.hold ? `instance ${id} is held by ${s.hold.by}` : `instance ${id} is not held by ${by}`, {
        heldBy: s.hold?.by ?? null,
      });
    }
    return s;
  }

  // ---- records ----------------------------------------------------------------------------

  private async save(changes: Changes): Promise<void> {
    this.inFlight++;
    try {
      await this.ports.store.commit(changes);
    } catch (e) {
      if (e instanceof NotLeaderError && !this.stopped) {
        this.stopped = true;
        this.onDeposed();
      }
      throw e;
    } finally {
      this.inFlight--;
    }
  }

  private async update(s: SlotRecord, patch: Partial<SlotRecord>, events?: (next: SlotRecord) => NewEvent<unknown>[]): Promise<SlotRecord> {
    const next: SlotRecord = { ...s, ...patch };
    await this.save({ slots: [next], ...(events ? { events: events(next) } : {}) });
    this.slots.set(next.id, next);
    return next;
  }

  private putSlot(s: SlotRecord): void {
    this.slots.set(s.id, s);
    const key = appKeyOf(s);
    let set = this.slotsByApp.get(key);
    if (!set) this.slotsByApp.set(key, (set = new Set()));
    set.add(s.id);
    if (s.hostId) this.hosts.reserve(s.hostId, s.id, s, demandOf(s.spec.resources));
    if (s.hold?.target) this.hosts.reserve(s.hold.target.hostId, targetKey(s.id), s, demandOf(s.spec.resources));
  }

  private dropSlot(s: SlotRecord): void {
    this.slots.delete(s.id);
    this.slotsByApp.get(appKeyOf(s))?.delete(s.id);
    if (s.hostId) this.hosts.unreserve(s.hostId, s.id);
  }

  private newSlot(app: AppRecord, slot: number, hostId: string | null): SlotRecord {
    return {
      id: instanceIdOf({ env: app.env, app: app.app, slot }),
      env: app.env,
      app: app.app,
      slot,
      state: 'placed',
      phase: 'create',
      backend: hostId ? (this.hosts.get(hostId)?.backend ?? null) : null,
      hostId,
      ip: null,
      mac: null,
      spec: this.slotSpec(app.spec),
      tried: [],
      attempts: hostId ? 1 : 0,
      lastError: null,
      requestId: app.requestId,
    };
  }

  private slotSpec(spec: AppSpec): SlotSpec {
    return {
      resources: spec.resources,
      ...(spec.image !== undefined ? { image: spec.image } : {}),
      ...(spec.template !== undefined ? { template: spec.template } : {}),
      pool: spec.pool,
      vlan: spec.vlan,
      ...(spec.environment ? { environment: spec.environment } : {}),
    };
  }

  private placementRequest(app: AppRecord, tried: readonly string[]): PlacementRequest {
    const { spec } = app;
    return {
      env: app.env,
      app: app.app,
      resources: spec.resources,
      backend: spec.backends.length === 1 ? spec.backends[0]! : 'auto',
      allowedBackends: spec.backends,
      vlan: spec.vlan,
      spread: spec.spread,
      policy: this.settings.policy,
      excludeHosts: tried,
    };
  }

  /** The same command for both backends: an image for a container, a template for a VM. */
  private createCommand(
    s: SlotRecord,
    alloc: { ip: string; mac: string; prefixLength: number; gateway: string; vlan: number },
    backend: Backend,
  ): CreateInstanceCommand {
    const artifact = backend === 'docker' ? s.spec.image : s.spec.template;
    if (!artifact) throw new OrangeryError('INVALID_REQUEST', `the slot has no ${backend === 'docker' ? 'image' : 'template'} for ${backend}`);
    return {
      instanceId: s.id,
      env: s.env,
      app: s.app,
      slot: s.slot,
      ...(backend === 'docker' ? { image: artifact } : { template: artifact }),
      resources: s.spec.resources,
      network: { ip: alloc.ip, mac: alloc.mac, prefixLength: alloc.prefixLength, gateway: alloc.gateway, vlan: alloc.vlan },
      ...(s.spec.environment ? { environment: s.spec.environment } : {}),
    };
  }

  // ---- events -----------------------------------------------------------------------------

  /** `id` is given for outcomes: one id per request and outcome, so a re-published copy is stored once. */
  private event<T>(area: string, what: string, subject: string, data: T, traceparent?: string, id?: string): NewEvent<unknown> {
    return { area, what, source: this.settings.source, subject, data, ...(traceparent ? { traceparent } : {}), ...(id ? { id } : {}) };
  }

  private placedEvent(s: SlotRecord, app: AppRecord): NewEvent<unknown> {
    const data: InstancePlacedData = {
      instanceId: s.id,
      env: s.env,
      app: s.app,
      slot: s.slot,
      hostId: s.hostId!,
      backend: s.backend ?? 'docker',
      ...(s.requestId ? { requestId: s.requestId } : {}),
      attempt: Math.max(1, s.attempts),
    };
    return this.event('instance', 'placed', s.id, data, app.traceparent);
  }

  private rejectedEvent({ requestId, env, app, code, message, details, traceparent }: Rejection  ): NewEvent<unknown> {
    const data: ScaleRejectedData = {
      requestId,
      ...(env ? { env } : {}),
      ...(app ? { app } : {}),
      reason: { code, message, ...(details ? { details } : {}) },
    };
    return this.event('scale', 'rejected', env && app ? `${env}:${app}` : requestId, data, traceparent, `scale-rejected:${requestId}`);
  }
}

/** The reservation of a migration's target, next to the slot's own on its current host. */
const targetKey = (id: string): string => `${id}#target`;

function ownerOf(s: SlotRecord) {
  return ownerOfInstanceId(s.id) ?? { env: s.env, app: s.app, slot: s.slot };
}

import type { AgentInstance, Backend, Heartbeat, HostFacts, InstanceNetwork, SlotView } from '@orangery/contracts';
import type { EnvSource } from './env-policy';
import { FailoverJudge } from './failover-judge';
import { HostBook } from './host-book';
import { Leftovers } from './leftovers';
import type { AppRecord, SlotRecord } from './model';
import { Observations, type RegistrationCheck } from './observations';
import type { HostState, PlacementPolicy } from './placement';
import type { AgentPort, Clock, CoreLog, IpamPort, SchedulerStore } from './ports';
import { RequestJudge } from './request-judge';
import type { ScaleMessage } from './scale-intake';
import { SchedulerEvents } from './scheduler-events';
import { SlotBook } from './slot-book';
import { SlotLeases } from './slot-leases';
import { SlotReconciler } from './slot-reconciler';
import { errorOf } from './slot-records';
import { WorkQueue } from './work-queue';

export { RetryLater } from './request-judge';

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
  /** env records (docs/scheduler.md "Environments"); absent: no env has one */
  readonly envs?: EnvSource;
}

/** How long stop waits at most for running steps and journal writes (300 x 20 ms). */
const STOP_POLLS = 300;
const STOP_POLL_MS = 20;

/**
 * The leader's brain, as one object for the runtime: judges scale requests, keeps each
 * app's slots converging on its desired state, and follows what agents report.
 * Level-triggered: every step reads the current records and does the next thing; a step
 * that fails is simply run again later, and a new leader starting from the journal picks
 * up where the old one stopped.
 *
 * Only wiring lives here; each decision has its own place (docs/scheduler.md "Architecture"):
 * - RequestJudge: accept / reject / complete a scale request, give desired slots records.
 * - SlotReconciler: one slot's next step (place, create, replace, remove), on a WorkQueue.
 * - Observations: heartbeats, instance events and agent lists -> verify, replace, leftovers.
 * - FailoverJudge: when a silent host's instances are taken for gone.
 * - SlotLeases: the migrator's hold / reserve / commit / release, and drains.
 * - SlotBook: the records, and `save` (journal first, then memory).
 */
export class SchedulerCore {
  readonly hosts: HostBook;
  readonly failover: FailoverJudge;
  private readonly book: SlotBook;
  private readonly queue: WorkQueue<string>;
  private readonly judge: RequestJudge;
  private readonly reconciler: SlotReconciler;
  private readonly observations: Observations;
  private readonly leases: SlotLeases;

  constructor(
    private readonly ports: CorePorts,
    settings: CoreSettings,
    /** called once when a write finds another leader: the service steps down */
    onDeposed: () => void = () => undefined,
  ) {
    const { log, agents } = ports;
    const wallNow = () => (ports.wallClock ?? { now: () => Date.now() }).now();
    const kick = (id: string) => this.queue.kick(id);
    const events = new SchedulerEvents(settings.source);
    this.hosts = new HostBook(settings.lostAfterMs, () => ports.clock.now(), wallNow);
    this.book = new SlotBook(ports.store, this.hosts, () => {
      // a deposed replica starts no more steps (its records are stale now)
      this.queue.stop();
      onDeposed();
    });
    this.queue = new WorkQueue<string>({
      concurrency: settings.concurrency,
      worker: (id) => this.reconciler.reconcile(id),
      onError: (id, e) => log.warn({ instanceId: id, err: errorOf(e).message }, 'slot step failed; will retry'),
    });
    const leftovers = new Leftovers({ agents, log, save: (c) => this.book.save(c), wallNow }, settings.leftoverRetentionMs, events);
    this.judge = new RequestJudge(
      this.book,
      this.hosts,
      events,
      { store: ports.store, ipam: ports.ipam, log, kick, ...(ports.envs ? { envs: ports.envs } : {}) },
      settings,
    );
    this.failover = new FailoverJudge(
      this.hosts,
      { source: settings.source, lostAfterMs: settings.lostAfterMs, fenceDeadlineMs: settings.fenceMarginMs },
      {
        agents,
        log,
        emit: (evs) => this.book.save({ events: evs }),
        addressesOn: (hostId) => this.book.addressesOn(hostId),
        lost: (hostId) =>
          this.observations.replaceAll(hostId, { code: 'HOST_LOST', message: `host ${hostId} is silent and its instances are off the wire`, host: hostId }),
      },
    );
    this.reconciler = new SlotReconciler(
      this.book,
      this.hosts,
      this.judge,
      leftovers,
      events,
      { ipam: ports.ipam, agents, log, proberFor: (hostId, vlan) => this.failover.proberFor(hostId, vlan) },
      settings,
    );
    this.observations = new Observations(
      this.book,
      this.hosts,
      leftovers,
      events,
      { agents, log, kick, judgeSilentHosts: () => this.failover.sweep() },
      settings,
    );
    this.leases = new SlotLeases(this.book, this.hosts, { log, kick, agents, isRunning: (id) => this.queue.isRunning(id) }, settings.policy);
  }

  // ---- lifecycle ------------------------------------------------------------------------

  /** Loads the journal (a new leader) and starts converging every app. */
  async start(): Promise<void> {
    const loaded = await this.book.load();
    this.ports.log.info(loaded, 'leader state loaded');
    for (const key of this.book.appKeys()) void this.judge.reconcileApp(key);
  }

  /** Stops taking work; resolves when no step is in progress any more. */
  async stop(): Promise<void> {
    this.book.stop();
    this.queue.stop();
    this.observations.stop();
    this.judge.stop();
    for (let i = 0; i < STOP_POLLS && (this.queue.busy > 0 || this.book.writing > 0); i++) await new Promise((r) => setTimeout(r, STOP_POLL_MS));
  }

  /** Level-triggered sweep: every app and every host, on a timer. */
  tick(): void {
    if (this.book.stopped) return;
    this.sweepHosts();
    for (const key of this.book.appKeys()) void this.judge.reconcileApp(key);
  }

  /** Host states, failover verdicts, isolated hosts' instances: cheap, run every second. */
  sweepHosts(): void {
    this.observations.sweepHosts();
  }

  /** Runs the slot's next steps now (or after `delayMs`); one worker per slot at a time. */
  kick(id: string, delayMs = 0): void {
    this.queue.kick(id, delayMs);
  }

  // ---- scale requests (RequestJudge) --------------------------------------------------------

  /** Judges one stored scale request; throws RetryLater when it cannot be judged now (see RequestJudge). */
  handleScale(msg: ScaleMessage): Promise<void> {
    return this.judge.handleScale(msg);
  }

  // ---- observations -----------------------------------------------------------------------

  heartbeat(hb: Heartbeat): void {
    this.observations.heartbeat(hb);
  }

  registered(facts: HostFacts): void {
    this.observations.registered(facts);
  }

  /** A host.registered event: a hint; registers only what the host's own agent answers (Observations.confirmRegistration). */
  confirmRegistration(hostId: string): Promise<RegistrationCheck> {
    return this.observations.confirmRegistration(hostId);
  }

  /**
   * An instance event (public subject: possibly forged) is a hint too: it can only make the
   * scheduler ask the slot's recorded host about the instance (Observations.verify), and
   * only that bound reply changes anything.
   */
  instanceEvent(what: string, instanceId: string, hostId: string, ip?: string): void {
    this.observations.instanceEvent(what, instanceId, hostId, ip);
  }

  agentList(hostId: string, instances: readonly AgentInstance[]): void {
    this.observations.agentList(hostId, instances);
  }

  // ---- the slot API for the migrator (SlotLeases) ------------------------------------------

  slotView(id: string): SlotView {
    return this.leases.slotView(id);
  }

  hold(id: string, by: string): Promise<SlotView> {
    return this.leases.hold(id, by);
  }

  reserveTarget(
    id: string,
    by: string,
    opts: { toHost?: string; toBackend?: Backend; exclude?: readonly string[] },
  ): Promise<{ hostId: string; backend: Backend }> {
    return this.leases.reserveTarget(id, by, opts);
  }

  createOnTarget(id: string, by: string, network: InstanceNetwork): Promise<AgentInstance> {
    return this.leases.createOnTarget(id, by, network);
  }

  commitTarget(id: string, by: string): Promise<SlotView> {
    return this.leases.commitTarget(id, by);
  }

  releaseHold(id: string, by: string): Promise<SlotView> {
    return this.leases.releaseHold(id, by);
  }

  setDrain(hostId: string, drain: boolean): Promise<{ hostId: string; state: HostState }> {
    return this.leases.setDrain(hostId, drain);
  }

  // ---- read side (the leader answers from memory only in tests; replicas read the DB) --

  app(env: string, app: string): AppRecord | undefined {
    return this.book.app(`${env}:${app}`);
  }

  slotList(): SlotRecord[] {
    return this.book.slotList();
  }
}

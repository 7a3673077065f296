import { context, ROOT_CONTEXT, SpanStatusCode, trace, type Context } from '@opentelemetry/api';
import { contextOfTraceparent, errorKindOf } from '@orangery/telemetry';
import { isRetryable, OrangeryError, type AgentInstance, type ScaleRejectionCode } from '@orangery/contracts';
import type { HostBook } from './host-book';
import type { Leftovers } from './leftovers';
import { appKeyOf, type AppRecord, type SlotError, type SlotRecord } from './model';
import { place, type PlacementPolicy } from './placement';
import { NotLeaderError, type AgentPort, type AllocationInfo, type CoreLog, type IpamPort } from './ports';
import type { SchedulerEvents } from './scheduler-events';
import type { SlotBook } from './slot-book';
import { createCommandOf, demandOf, errorOf, ownerOf, placementRequestOf, slotSpecOf, swarmCreateCommandOf } from './slot-records';
import { isSwarmSlot, notASwarmTask } from './swarm';
import { DONE, requeue, terminal, type Result } from './work-queue';

/** What the reconciler asks of the app level (RequestJudge). */
export interface AppLevel {
  rejectPending(key: string, requestId: string, code: ScaleRejectionCode, message: string, details: Record<string, unknown>): Promise<void>;
  reconcileApp(key: string): Promise<void>;
  checkAppSoon(key: string): void;
}

export interface ReconcilerSettings {
  readonly policy: PlacementPolicy;
  /** hosts a slot is tried on before its start counts as failed (START_FAILED) */
  readonly startAttempts: number;
}

export interface ReconcilerPorts {
  readonly ipam: Pick<IpamPort, 'allocate' | 'bind' | 'release'>;
  readonly agents: Pick<AgentPort, 'create' | 'remove' | 'stop' | 'probe'>;
  readonly log: CoreLog;
  /** a live docker-agent that can ARP-probe `vlan` for a VM about to start on `hostId` (FailoverJudge.proberFor) */
  readonly proberFor: (hostId: string, vlan: number) => string | undefined;
}

/** Steps a worker takes in one run; a slot still changing after that waits for the next sweep. */
const MAX_STEPS_PER_RUN = 50;
const BACKOFF_MAX_MS = 10_000;
const UNPLACEABLE_RETRY_MS = 5_000;
const FAILED_RETRY_MS = 30_000;

/** Take the next step at once, in the same run. */
const NEXT = requeue(0);

/**
 * Where one slot converges on its app's desired state, controller-runtime style: a step
 * reads the slot's record and its app's (never the event that woke it), does one thing,
 * journals it, and returns a Result: done, requeue now (the next step, in the same run) or
 * after N ms (a backoff, a grace period), terminal (this replica was deposed). A step that
 * throws is retried by the work queue with backoff. Every outside call is idempotent
 * (allocate per owner, create per instance id and spec, bind, remove, release), so a step
 * run twice, or by a new leader from the journal, does no harm.
 *
 * The phases (model.ts `Phase`): not desired -> remove; remove/replace -> off its host,
 * then create; create -> place, allocate, (probe for a VM), create, bind -> running.
 * A swarm slot (swarm.ts) skips allocate and bind: its node's agent picks and binds the
 * task's address and answers it with the node the task runs on; its removal gives nothing
 * back to ipam (the agent unbinds what a removed task held).
 */
export class SlotReconciler {
  constructor(
    private readonly book: SlotBook,
    private readonly hosts: HostBook,
    private readonly apps: AppLevel,
    private readonly leftovers: Pick<Leftovers, 'keep'>,
    private readonly events: SchedulerEvents,
    private readonly ports: ReconcilerPorts,
    private readonly settings: ReconcilerSettings,
  ) {}

  /** The work queue's worker: steps until the slot is done or must wait. */
  async reconcile(id: string): Promise<Result> {
    try {
      for (let n = 0; n < MAX_STEPS_PER_RUN && !this.book.stopped; n++) {
        const result = await this.step(id);
        if (result.kind !== 'requeue' || result.afterMs > 0) return result;
      }
      return DONE;
    } catch (e) {
      // Another replica leads now: it carries on from the journal; this one must not retry.
      if (e instanceof NotLeaderError) return terminal('deposed');
      throw e;
    }
  }

  /** One step of the slot towards its desired state. */
  async step(id: string): Promise<Result> {
    const s = this.book.slot(id);
    // held by a migration: it decides; the scheduler resumes after commit or release
    if (!s || s.hold) return DONE;
    const app = this.book.app(appKeyOf(s));
    const desired = app !== undefined && s.slot < app.spec.replicas;
    if (!desired) return this.traced('scheduler.remove-slot', s, app, () => this.stepRemove(s));
    if (s.phase === 'remove' || s.phase === 'replace') return this.traced('scheduler.replace-slot', s, app, () => this.stepReplace(s, app));
    if (s.phase === 'create') return this.traced(s.hostId ? 'scheduler.start-slot' : 'scheduler.place', s, app, () => this.stepCreate(s, app));
    return DONE;
  }

  /**
   * One step in a span of the trace of the request that asked for the app's present state
   * (the app record's `traceparent`), so the ipam requests and agent commands it sends, and
   * the events they cause, carry that trace. No traceparent: the span starts a trace.
   */
  private async traced(name: string, s: SlotRecord, app: AppRecord | undefined, run: () => Promise<Result>): Promise<Result> {
    const parent: Context = contextOfTraceparent(app?.traceparent) ?? ROOT_CONTEXT;
    const span = trace
      .getTracer('orangery')
      .startSpan(
        name,
        { attributes: { 'orangery.instance_id': s.id, 'orangery.app': `${s.env}:${s.app}`, ...(s.hostId ? { 'orangery.host_id': s.hostId } : {}) } },
        parent,
      );
    try {
      const result = await context.with(trace.setSpan(parent, span), run);
      span.setAttribute('orangery.result', result.kind);
      return result;
    } catch (e) {
      // the error's name or contract code, not its text: a driver's message may name a host
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorKindOf(e) });
      throw e;
    } finally {
      span.end();
    }
  }

  /** Off its host (confirmed by the agent, or the host silent past its self-fence), IP back, record gone. */
  private async stepRemove(s: SlotRecord): Promise<Result> {
    if (s.phase !== 'remove') {
      await this.book.update(s, { phase: 'remove' });
      return NEXT;
    }
    const swarm = isSwarmSlot(s, this.hosts);
    if (s.hostId) {
      const gone = swarm ? await this.offSwarm(s.hostId, s.id) : await this.offHost(s.hostId, s.id, 'remove');
      if (!gone) return this.backoff(s);
    }
    // A swarm task's address was bound by its agent, which unbinds it when the task goes; the
    // release here covers an agent that missed it (restarted, ipam unreachable then): a
    // released address inside a block stays in its block (ipam), never back in the pool.
    try {
      await this.ports.ipam.release(ownerOf(s));
    } catch (e) {
      this.ports.log.warn({ instanceId: s.id, err: errorOf(e).message }, 'ip release failed; will retry');
      return this.backoff(s);
    }
    await this.book.save({ deleteSlots: [s.id] });
    this.book.dropSlot(s);
    this.ports.log.info({ instanceId: s.id, host: s.hostId, ip: s.ip }, 'instance removed');
    const key = appKeyOf(s);
    const app = this.book.app(key);
    // desired again meanwhile (scaled up while it was being removed): place it anew
    if (app && s.slot < app.spec.replicas) void this.apps.reconcileApp(key);
    else this.apps.checkAppSoon(key);
    return DONE;
  }

  /** A failed copy (or one removed while wanted again): take it off its host, then create anew, same IP. */
  private async stepReplace(s: SlotRecord, app: AppRecord): Promise<Result> {
    if (s.hostId) {
      // a swarm service is not kept stopped: it is removed, and created anew under the same name
      const gone = isSwarmSlot(s, this.hosts) ? await this.offSwarm(s.hostId, s.id) : await this.offHost(s.hostId, s.id, 'keep');
      if (!gone) return this.backoff(s);
      this.hosts.unreserve(s.hostId, s.id);
    }
    await this.book.update(s, {
      phase: 'create',
      state: 'placed',
      hostId: null,
      backend: null,
      tried: s.hostId && s.phase === 'replace' ? [s.hostId] : [],
      attempts: 0,
      spec: slotSpecOf(app.spec),
      requestId: app.outcome === 'pending' ? app.requestId : s.requestId,
    });
    return NEXT;
  }

  private async stepCreate(s: SlotRecord, app: AppRecord): Promise<Result> {
    if (!s.hostId) return this.placeSlot(s, app);
    const hostId = s.hostId;
    if (this.hosts.isDown(hostId)) {
      return this.attemptFailed(
        s,
        hostId,
        new OrangeryError('UNAVAILABLE', `host ${hostId} is ${this.hosts.stateOf(this.hosts.get(hostId)!)} (no heartbeat, or fenced)`),
      );
    }
    if (isSwarmSlot(s, this.hosts)) return this.startOnSwarm(s, app, hostId);
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
      this.book.remember(s);
    }
    return this.startOn(s, hostId, alloc);
  }

  /** The slot's address is allocated: (a wire probe for a VM,) create on the host, bind, running. */
  private async startOn(s: SlotRecord, hostId: string, alloc: AllocationInfo): Promise<Result> {
    const backend = s.backend ?? this.hosts.get(hostId)?.backend ?? 'docker';
    if (backend !== 'docker') {
      // A VM cannot probe the wire before it boots: a live agent on the VLAN does it for it.
      const refused = await this.probeForVm(s, hostId, alloc.ip, alloc.vlan);
      if (refused !== undefined) return refused;
    }
    let inst: AgentInstance;
    try {
      inst = await this.ports.agents.create(hostId, createCommandOf(s, alloc, backend));
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
    await this.book.update(s, { state: 'running', phase: null, backend, tried: [], attempts: 0, lastError: null });
    this.apps.checkAppSoon(appKeyOf(s));
    return DONE;
  }

  /**
   * A swarm node's create: no allocate, no bind. The agent creates the slot's service, waits
   * for its task to run, binds the task's address in ipam and answers it with the node the
   * task runs on (possibly another node of the cluster): the record takes that node, IP and
   * MAC, and the slot's reservation moves there.
   */
  private async startOnSwarm(s: SlotRecord, app: AppRecord, hostId: string): Promise<Result> {
    if (s.state !== 'starting') {
      // memory only, as for the other backends (see stepCreate)
      s = { ...s, state: 'starting' };
      this.book.remember(s);
    }
    let inst: AgentInstance;
    try {
      inst = await this.ports.agents.create(hostId, swarmCreateCommandOf(s, app.spec.hostLabels));
    } catch (e) {
      return this.attemptFailed(s, hostId, e);
    }
    if (inst.state !== 'running') {
      return this.attemptFailed(s, hostId, new OrangeryError('START_FAILED', inst.reason ?? `the task is ${inst.state} after create`));
    }
    if (inst.instanceId === s.id && (!inst.ip || !inst.mac)) {
      // running, but its address not known to the agent yet: ask again (the create is idempotent)
      this.ports.log.warn({ instanceId: s.id, host: inst.hostId }, 'swarm task running without a known address yet; asking again');
      return this.backoff(s);
    }
    const wrong = notASwarmTask(this.hosts, s, hostId, inst);
    if (wrong !== undefined && inst.instanceId === s.id && inst.backend === 'swarm' && this.hosts.get(inst.hostId) === undefined) {
      // a node this leader has not heard from yet (its first heartbeat is on the way): the task
      // may be healthy; ask again rather than remove it
      this.ports.log.warn({ instanceId: s.id, node: inst.hostId }, 'swarm ran the task on a node not known yet; asking again');
      return this.backoff(s);
    }
    if (wrong !== undefined) return this.attemptFailed(s, hostId, new OrangeryError('START_FAILED', `the swarm-agent's reply cannot be recorded: ${wrong}`));
    const node = inst.hostId;
    await this.book.update(s, {
      state: 'running',
      phase: null,
      backend: 'swarm',
      hostId: node,
      ip: inst.ip,
      mac: inst.mac,
      tried: [],
      attempts: 0,
      lastError: null,
    });
    if (node !== hostId) {
      this.hosts.unreserve(hostId, s.id);
      this.hosts.reserve(node, s.id, app, demandOf(s.spec.resources), 'swarm');
      this.ports.log.info({ instanceId: s.id, placed: hostId, node, ip: inst.ip }, 'swarm ran the task on another node of the cluster');
    }
    this.apps.checkAppSoon(appKeyOf(s));
    return DONE;
  }

  /**
   * A swarm slot off its cluster: remove sent to its node of record, or, that node silent,
   * to another live node of the cluster (one agent serves them all, and the service is
   * cluster-wide). No live node: wait (the service may be running; swarm keeps it).
   */
  private async offSwarm(hostId: string, id: string): Promise<boolean> {
    const contact = this.hosts.swarmContact(hostId);
    if (!contact) return false;
    try {
      await this.ports.agents.remove(contact, id);
      return true;
    } catch (e) {
      this.ports.log.warn({ instanceId: id, host: contact, err: errorOf(e).message }, 'could not remove the swarm service; will retry');
      return false;
    }
  }

  /** undefined: the address is silent (or no agent can tell: logged); otherwise the step's result. */
  private async probeForVm(s: SlotRecord, hostId: string, ip: string, vlan: number): Promise<Result | undefined> {
    const prober = this.ports.proberFor(hostId, vlan);
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
    return this.attemptFailed(
      s,
      hostId,
      new OrangeryError('IP_IN_USE_ON_WIRE', `${ip} answers ARP on VLAN ${vlan} (probed by ${prober}): nothing was started`, { ip, prober }),
    );
  }

  /** Chooses the slot's next host (never one tried in this round) and reserves it there. */
  private async placeSlot(s: SlotRecord, app: AppRecord): Promise<Result> {
    if (s.attempts >= this.settings.startAttempts) return this.slotFailed(s, app);
    const decision = place(placementRequestOf(app, this.settings.policy, s.tried), this.hosts.inventory());
    if (!decision.ok) {
      if (s.tried.length > 0) return this.slotFailed(s, app);
      if (app.outcome === 'pending') {
        await this.apps.rejectPending(appKeyOf(app), app.requestId, 'INSUFFICIENT_CAPACITY', decision.reason.message, {
          ...decision.reason.details,
          slot: s.slot,
        });
        return NEXT;
      }
      return requeue(UNPLACEABLE_RETRY_MS);
    }
    const spec = slotSpecOf(app.spec);
    this.hosts.reserve(decision.hostId, s.id, app, demandOf(spec.resources));
    try {
      const next = await this.book.update(
        s,
        { hostId: decision.hostId, backend: this.hosts.get(decision.hostId)?.backend ?? null, state: 'placed', attempts: s.attempts + 1, spec },
        (n) => [this.events.placed(n, app)],
      );
      this.ports.log.debug({ instanceId: next.id, host: decision.hostId, attempt: next.attempts }, 'placed');
    } catch (e) {
      this.hosts.unreserve(decision.hostId, s.id);
      throw e;
    }
    return NEXT;
  }

  /** A start on `hostId` did not work: clean up there, give its resources back, try elsewhere. */
  private async attemptFailed(s: SlotRecord, hostId: string, e: unknown): Promise<Result> {
    const err = { ...errorOf(e), host: hostId };
    this.ports.log.warn({ instanceId: s.id, host: hostId, code: err.code, err: err.message }, 'start failed on this host');
    // A create that timed out may still finish: the agent serializes per instance, so a
    // remove sent now runs after it. A silent host is cleaned when it comes back.
    await this.ports.agents.remove(hostId, s.id).catch(() => undefined);
    this.hosts.unreserve(hostId, s.id);
    const next = await this.book.update(s, { hostId: null, backend: null, state: 'placed', tried: [...s.tried, hostId], lastError: err });
    return requeue(Math.min(200 * 2 ** next.attempts, BACKOFF_MAX_MS));
  }

  /** No eligible host left for this slot: the pending request fails; otherwise try again later. */
  private async slotFailed(s: SlotRecord, app: AppRecord, error?: SlotError): Promise<Result> {
    const last = error ?? s.lastError ?? { code: 'INSUFFICIENT_CAPACITY', message: 'no eligible host left to try' };
    if (app.outcome === 'pending') {
      const failing = [...this.book.slotIdsOf(appKeyOf(app))]
        .map((id) => this.book.slot(id)!)
        .filter((x) => x.slot < app.spec.replicas && x.state !== 'running');
      const slots: Record<string, SlotError | null> = {};
      for (const x of failing) slots[String(x.slot)] = x.id === s.id ? last : x.lastError;
      await this.apps.rejectPending(appKeyOf(app), app.requestId, 'START_FAILED', `slot ${s.slot} could not be started: ${last.message}`, {
        slots,
        tried: s.tried,
      });
      return NEXT;
    }
    await this.book.update(s, { state: 'failed', tried: [], attempts: 0, lastError: last });
    return requeue(FAILED_RETRY_MS);
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
      if (inst) this.leftovers.keep(hostId, id, inst.backend, inst.state, 'replaced elsewhere');
      return true;
    } catch (e) {
      this.ports.log.warn({ instanceId: id, host: hostId, how, err: errorOf(e).message }, 'could not take the instance off its host; will retry');
      return false;
    }
  }

  private backoff(s: SlotRecord): Result {
    return requeue(Math.min(500 * 2 ** Math.min(s.attempts, 5), BACKOFF_MAX_MS));
  }
}

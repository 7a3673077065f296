import { context, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { contextOfTraceparent, errorKindOf } from '@orangery/telemetry';
import type { Backend, ScaleCompletedData, ScaleRejectionCode, ScaleRequestData } from '@orangery/contracts';
import type { HostBook } from './host-book';
import { applyEnvPolicy, labelsText, type EnvSource, type PolicyApplied } from './env-policy';
import { appKeyOf, type AppRecord, type AppSpec, type SlotRecord } from './model';
import { placeMany, type PlacementPolicy } from './placement';
import { JournalTooLarge, NotLeaderError, type Changes, type CoreLog, type IpamPort, type PoolInfo, type SchedulerStore } from './ports';
import { backendsFor, isOlderRequest, parseScale, type ScaleMessage } from './scale-intake';
import type { SchedulerEvents, Rejection } from './scheduler-events';
import type { SlotBook } from './slot-book';
import { demandOf, errorOf, newSlot, placementRequestOf } from './slot-records';
import { KeyedMutex } from './sync';

/** A scale message could not be judged now (ipam or the database away): redeliver it later. */
export class RetryLater extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'RetryLater';
  }
}

export interface JudgeSettings {
  readonly policy: PlacementPolicy;
  /** env -> the only backends its instances may use */
  readonly envBackends: (env: string) => readonly Backend[] | undefined;
}

export interface JudgePorts {
  readonly store: Pick<SchedulerStore, 'requestSeen'>;
  readonly ipam: Pick<IpamPort, 'pool'>;
  readonly log: CoreLog;
  /** wakes a slot's worker (the slot reconciler) */
  readonly kick: (id: string) => void;
  /** the env's record, read when a request is judged (absent, or none for the env: the rules without records) */
  readonly envs?: EnvSource;
}

/** How long completion checks are batched: many slots reach `running` in the same moment. */
const APP_CHECK_DELAY_MS = 20;

/**
 * Where an app's desired state is decided, one app at a time (a mutex per app): a scale
 * request is accepted (its new slots placed, all or nothing), rejected (invalid,
 * superseded, no pool, no room), completed once every slot runs, or given up
 * (`rejectPending`, asked by the slot reconciler when a slot cannot be placed or started:
 * the app falls back to its last completed spec). `reconcileApp` gives every desired slot
 * a record and wakes the slots with work; the slots themselves converge in SlotReconciler.
 */
export class RequestJudge {
  private readonly appLock = new KeyedMutex();
  private readonly appChecks = new Set<string>();
  private appCheckTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly book: SlotBook,
    private readonly hosts: HostBook,
    private readonly events: SchedulerEvents,
    private readonly ports: JudgePorts,
    private readonly settings: JudgeSettings,
  ) {}

  stop(): void {
    clearTimeout(this.appCheckTimer);
  }

  // ---- scale requests ---------------------------------------------------------------------

  /**
   * Judges one stored scale request. Returns when its fate is journaled (accepted, or
   * rejected with its event in the outbox): the caller acks then. Throws RetryLater when
   * it cannot be judged now; the caller redelivers.
   */
  async handleScale(msg: ScaleMessage): Promise<void> {
    const parsed = parseScale(msg);
    // A CONSUMER span in the request's trace (its `traceparent`): the ipam lookups made while
    // judging it are its children.
    const parent = contextOfTraceparent(parsed.traceparent) ?? ROOT_CONTEXT;
    const span = trace
      .getTracer('orangery')
      .startSpan(
        'scheduler.scale-request',
        { kind: SpanKind.CONSUMER, attributes: { 'orangery.request_id': parsed.requestId, 'messaging.system': 'nats' } },
        parent,
      );
    try {
      await context.with(trace.setSpan(parent, span), () => this.handleParsed(parsed));
    } catch (e) {
      // the error's name or contract code, not its text: a driver's message may name a host
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorKindOf(e) });
      throw e;
    } finally {
      span.end();
    }
  }

  private async handleParsed(parsed: ReturnType<typeof parseScale>): Promise<void> {
    if (await this.ports.store.requestSeen(parsed.requestId)) return;
    if (!parsed.ok) {
      await this.rejectRequest(parsed.seq, { ...parsed, code: 'INVALID_REQUEST' });
      return;
    }
    await this.appLock.run(appKeyOf(parsed.data), () => this.judge(parsed.data, parsed.requestId, parsed.seq, parsed.generation, parsed.traceparent));
  }

  /** Under the app's lock: accept the request or reject it, with nothing changed. */
  private async judge(data: ScaleRequestData, requestId: string, seq: number, generation: number | undefined, traceparent: string | undefined): Promise<void> {
    const key = appKeyOf(data);
    const current = this.book.app(key);
    if (current?.requestId === requestId) return; // the same request again: it changes nothing
    const reject = (code: ScaleRejectionCode, message: string, details?: Record<string, unknown>) =>
      this.rejectRequest(seq, { requestId, env: data.env, app: data.app, code, message, details, traceparent });
    if (current && isOlderRequest({ seq, generation }, current)) {
      return reject('SUPERSEDED', `a newer request (${current.requestId}) for ${key} was accepted first`, { by: current.requestId });
    }
    // The env's record, read now (one indexed read) and snapshot into the app's spec: a
    // later change of the record moves nothing; the app's next request follows it.
    let envPolicy;
    try {
      envPolicy = this.ports.envs ? await this.ports.envs(data.env) : undefined;
    } catch (e) {
      throw new RetryLater(`env record: ${errorOf(e).message}`);
    }
    const applied = applyEnvPolicy(data, envPolicy);
    if (!applied.ok) return reject('POLICY_VIOLATION', applied.message, applied.details);
    const asked = applied.data;
    const { backends, reason, field } = backendsFor(asked, applied.allowed ?? this.settings.envBackends(data.env));
    if (backends.length === 0) {
      const why = applied.defaultBackend ? `${reason} (${asked.backend} is the default backend of env '${data.env}')` : reason;
      return reject('INVALID_REQUEST', `field '${field}': ${why}`, { field, reason: why });
    }
    let pool;
    try {
      pool = await this.ports.ipam.pool(data.pool);
    } catch (e) {
      throw new RetryLater(`ipam: ${errorOf(e).message}`);
    }
    if (!pool) return reject('POOL_NOT_FOUND', `pool '${data.pool}' does not exist`, { pool: data.pool });

    const next: AppRecord = {
      env: data.env,
      app: data.app,
      requestId,
      seq,
      ...(generation === undefined ? {} : { generation }),
      spec: desiredSpec(asked, backends, pool, applied),
      stable: current?.stable ?? null,
      outcome: 'pending',
      backend: asked.backend ?? 'auto',
      ...(traceparent ? { traceparent } : {}),
    };
    // Place every slot that has no record yet, all or nothing: a request that does not
    // fit is rejected with the shortfall and changes nothing.
    const missing = this.book.missingSlots(key, next.spec.replicas);
    const decision = placeMany(placementRequestOf(next, this.settings.policy, []), missing.length, this.hosts.inventory());
    if (!decision.ok) {
      const fit = decision.placements.length;
      const labels = next.spec.hostLabels;
      const only = labels ? `; env '${data.env}' admits only hosts labelled ${labelsText(labels)}` : '';
      return reject('INSUFFICIENT_CAPACITY', `${decision.reason.message} (${fit} of ${missing.length} new instances fit${only})`, {
        ...decision.reason.details,
        requested: missing.length,
        fit,
        ...(labels ? { hostLabels: labels } : {}),
      });
    }
    const placed = missing.map((slot, i) => this.reserveNew(next, slot, decision.placements[i]!.hostId));
    try {
      await this.book.save(this.acceptance(next, current, placed));
    } catch (e) {
      for (const s of placed) this.hosts.unreserve(s.hostId!, s.id);
      if (e instanceof JournalTooLarge) {
        // Writing it again cannot succeed: an outcome now, never a redelivery loop.
        const limit = e.limitBytes;
        return reject(
          'INVALID_REQUEST',
          `the request is too large to journal (${missing.length} new instances with this spec${limit ? `; the database takes at most ${limit} bytes in one write` : ''}): ask fewer replicas or a smaller environment`,
          { field: 'data', reason: 'too large to journal', ...(limit ? { limit } : {}), newInstances: missing.length },
        );
      }
      throw e instanceof NotLeaderError ? e : new RetryLater(`database: ${errorOf(e).message}`);
    }
    this.book.setApp(next);
    for (const s of placed) this.book.putSlot(s);
    this.ports.log.info({ app: key, requestId, replicas: next.spec.replicas, placed: placed.length }, 'scale request accepted');
    for (const id of this.book.slotIdsOf(key)) this.ports.kick(id);
    this.checkAppSoon(key);
  }

  /** A new slot on `hostId` (or unplaced, when null), its resources reserved there at once. */
  private reserveNew(app: AppRecord, slot: number, hostId: string | null): SlotRecord {
    const s = newSlot(app, slot, hostId, hostId ? (this.hosts.get(hostId)?.backend ?? null) : null);
    if (hostId) this.hosts.reserve(hostId, s.id, app, demandOf(s.spec.resources));
    return s;
  }

  /** The journal write of an accepted request; a pending request it replaces is rejected SUPERSEDED in the same write. */
  private acceptance(next: AppRecord, current: AppRecord | undefined, placed: SlotRecord[]): Changes {
    const { env, app, requestId, seq } = next;
    const changes: Changes = {
      apps: [next],
      slots: placed,
      requests: [{ requestId, env, app, seq, outcome: 'accepted' }],
      events: placed.map((s) => this.events.placed(s, next)),
    };
    if (current?.outcome === 'pending') {
      changes.requests!.push({ requestId: current.requestId, env, app, seq: current.seq, outcome: 'rejected' });
      changes.events!.push(
        this.events.rejected({
          requestId: current.requestId,
          env,
          app,
          code: 'SUPERSEDED',
          message: `request ${requestId} replaced it`,
          details: { by: requestId },
          traceparent: current.traceparent,
        }),
      );
    }
    return changes;
  }

  private async rejectRequest(seq: number, r: Rejection): Promise<void> {
    try {
      await this.book.save({
        requests: [{ requestId: r.requestId, env: r.env ?? '', app: r.app ?? '', seq, outcome: 'rejected', reason: { code: r.code, message: r.message } }],
        events: [this.events.rejected(r)],
      });
    } catch (e) {
      throw e instanceof NotLeaderError ? e : new RetryLater(`database: ${errorOf(e).message}`);
    }
    this.ports.log.info(
      { requestId: r.requestId, app: r.env && r.app ? `${r.env}:${r.app}` : undefined, code: r.code, message: r.message },
      'scale request rejected',
    );
  }

  // ---- app-level convergence -------------------------------------------------------------

  /**
   * Gives every desired slot a record, wakes every slot with work, checks completion.
   * Unlike a request, not all or nothing: a slot that does not fit now gets a record
   * without a host, and its worker places it when room appears.
   */
  async reconcileApp(key: string): Promise<void> {
    if (this.book.stopped) return;
    await this.appLock.run(key, async () => {
      const app = this.book.app(key);
      if (!app) return;
      const missing = this.book.missingSlots(key, app.spec.replicas);
      if (missing.length > 0) {
        // placeMany stops at the first slot that does not fit: nothing changes after it,
        // so every later slot would not fit either.
        const { placements } = placeMany(placementRequestOf(app, this.settings.policy, []), missing.length, this.hosts.inventory());
        const fresh = missing.map((slot, i) => this.reserveNew(app, slot, placements[i]?.hostId ?? null));
        try {
          await this.book.save({ slots: fresh, events: fresh.filter((s) => s.hostId).map((s) => this.events.placed(s, app)) });
          for (const s of fresh) this.book.putSlot(s);
        } catch (e) {
          for (const s of fresh) if (s.hostId) this.hosts.unreserve(s.hostId, s.id);
          this.ports.log.warn({ app: key, err: errorOf(e).message }, 'could not record new slots; will retry');
        }
      }
      for (const id of this.book.slotIdsOf(key)) {
        const s = this.book.slot(id)!;
        if (s.phase !== null || s.slot >= app.spec.replicas) this.ports.kick(id);
      }
    });
    this.checkAppSoon(key);
  }

  /** Batches completion checks (see APP_CHECK_DELAY_MS). */
  checkAppSoon(key: string): void {
    this.appChecks.add(key);
    if (this.appCheckTimer || this.book.stopped) return;
    this.appCheckTimer = setTimeout(() => {
      this.appCheckTimer = undefined;
      const keys = [...this.appChecks];
      this.appChecks.clear();
      for (const k of keys) void this.checkApp(k).catch((e: unknown) => this.ports.log.warn({ app: k, err: errorOf(e).message }, 'completion check failed'));
    }, APP_CHECK_DELAY_MS);
  }

  /** A pending request is completed when every slot 0..N-1 runs and nothing above N is left. */
  private async checkApp(key: string): Promise<void> {
    await this.appLock.run(key, async () => {
      const app = this.book.app(key);
      if (!app || app.outcome !== 'pending') return;
      const ids = this.book.slotIdsOf(key);
      if (ids.size !== app.spec.replicas) return;
      const instances: ScaleCompletedData['instances'] = [];
      for (const id of ids) {
        const s = this.book.slot(id)!;
        if (s.slot >= app.spec.replicas || s.state !== 'running' || s.phase !== null) return;
        instances.push({ id, slot: s.slot, host: s.hostId!, backend: s.backend!, ip: s.ip! });
      }
      instances.sort((a, b) => a.slot - b.slot);
      const done: AppRecord = { ...app, outcome: 'completed', stable: app.spec };
      const data: ScaleCompletedData = { requestId: app.requestId, env: app.env, app: app.app, replicas: app.spec.replicas, instances };
      await this.book.save({
        apps: [done],
        requests: [{ requestId: app.requestId, env: app.env, app: app.app, seq: app.seq, outcome: 'completed' }],
        events: [this.events.completed(app, data)],
      });
      this.book.setApp(done);
      this.ports.log.info({ app: key, requestId: app.requestId, replicas: app.spec.replicas }, 'scale request completed');
    });
  }

  /**
   * Ends the app's pending request in a rejection and falls back to the last completed
   * spec (none: zero replicas): a rejected request leaves nothing behind.
   */
  async rejectPending(key: string, requestId: string, code: ScaleRejectionCode, message: string, details: Record<string, unknown>): Promise<void> {
    await this.appLock.run(key, async () => {
      const app = this.book.app(key);
      if (!app || app.outcome !== 'pending' || app.requestId !== requestId) return;
      const fallback: AppSpec = app.stable ?? { ...app.spec, replicas: 0 };
      const next: AppRecord = { ...app, spec: fallback, outcome: 'rejected' };
      await this.book.save({
        apps: [next],
        requests: [{ requestId, env: app.env, app: app.app, seq: app.seq, outcome: 'rejected', reason: { code, message } }],
        events: [this.events.rejected({ requestId, env: app.env, app: app.app, code, message, details, traceparent: app.traceparent })],
      });
      this.book.setApp(next);
      this.ports.log.warn({ app: key, requestId, code, message, replicas: fallback.replicas }, 'scale request rejected; back to the last completed state');
    });
    void this.reconcileApp(key);
  }
}

/** What the app should look like, resolved: the request (env defaults applied), its allowed backends, its pool's VLAN, the env's host labels and container security. */
function desiredSpec(data: ScaleRequestData, backends: readonly Backend[], pool: PoolInfo, env: PolicyApplied): AppSpec {
  return {
    replicas: data.replicas,
    resources: data.resources,
    ...(data.image !== undefined ? { image: data.image } : {}),
    ...(data.template !== undefined ? { template: data.template } : {}),
    backends,
    pool: data.pool,
    vlan: pool.vlan,
    spread: data.spread ?? 'host',
    ...(data.environment ? { environment: data.environment } : {}),
    ...(env.allowed ? { envBackends: env.allowed } : {}),
    ...(env.hostLabels ? { hostLabels: env.hostLabels } : {}),
    ...(env.security ? { security: env.security } : {}),
  };
}

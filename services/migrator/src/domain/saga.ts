import { isRetryable, OrangeryError, type CreateInstanceCommand, type ErrorCode, type NewEvent } from '@orangery/contracts';
import type { MigrationRecord, StepName } from './model';
import { PortError, type AgentPort, type Clock, type DomainLog, type IpamPort, type Liveness, type MigrationStore, type SchedulerPort } from './ports';
import { currentStep, finishStep, migrationEvent, reasonOf } from './steps';

export interface SagaDeps {
  scheduler: SchedulerPort;
  agents: AgentPort;
  ipam: IpamPort;
  store: MigrationStore;
  liveness: Liveness;
  clock: Clock;
  log: DomainLog;
}

export interface SagaOptions {
  /** CloudEvents source of the migration events */
  source: string;
  /** fenceAfter + margin: a host silent this long has stopped its instances itself */
  fenceDeadlineMs: number;
  /** creates tried on the target (timeouts, engine hiccups) before the migration rolls back */
  createAttempts: number;
  /** how long the new copy may take to be running */
  runningTimeoutMs: number;
  /** how long transient failures (a service away, a timeout) of one step are retried */
  stepGiveUpMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
}

/** What one attempt of a step came to. */
type Outcome =
  | { kind: 'next'; step: StepName; note?: string; skipped?: boolean; started?: boolean }
  | { kind: 'retry'; error: unknown }
  | { kind: 'fail'; error: unknown }
  | { kind: 'end'; state: 'completed' | 'failed' };

const next = (step: StepName, note?: string): Outcome => ({ kind: 'next', step, ...(note !== undefined ? { note } : {}) });
const skip = (step: StepName, note: string): Outcome => ({ kind: 'next', step, note, skipped: true });
const retry = (error: unknown): Outcome => ({ kind: 'retry', error });
const fail = (error: unknown): Outcome => ({ kind: 'fail', error });
const failure = (code: ErrorCode, message: string, details?: Record<string, unknown>): OrangeryError => new OrangeryError(code, message, details, false);

/** Steps whose give-up skips them (the scheduler cleans up later) instead of failing the migration. */
const SKIPPABLE = new Set<StepName>(['remove-old', 'remove-new', 'start-old']);
/** Steps retried for as long as it takes: the scheduler must hear the outcome, or the slot stays held. */
const UNBOUNDED = new Set<StepName>(['commit', 'release']);

/**
 * One planned migration as a saga: hold, reserve, stop-old, create-new, await-running, bind,
 * remove-old, commit; on a failure after the stop, remove-new, start-old, release. Every step
 * is idempotent (the scheduler's hold/reserve/commit/release by migration id, the agents'
 * commands by instance id, ipam's bind), and each attempt is written to the store before it
 * acts: a migrator killed anywhere resumes at the step it was in, and a replica that lost
 * the lease finds out before its next action (the save fails), never after.
 */
export class MigrationSaga {
  constructor(
    private readonly deps: SagaDeps,
    private readonly opts: SagaOptions,
  ) {}

  /** Runs `m` until it ends, `shouldStop` says so, or the lease is lost (LeaseLostError). */
  async run(m: MigrationRecord, owner: string, shouldStop: () => boolean = () => false): Promise<void> {
    const { store, clock } = this.deps;
    while (m.state === 'running' && !shouldStop()) {
      if (m.step === 'queued') {
        finishStep(m, clock.now(), 'hold');
        await store.save(m, owner);
        continue;
      }
      const entry = currentStep(m, clock.now());
      entry.attempts++;
      m.updatedAt = new Date(clock.now()).toISOString();
      // Written before acting: the lease is checked, and the attempt is on record if we die.
      await store.save(m, owner);
      let attempted: Outcome;
      try {
        attempted = await this.attempt(m, owner);
      } catch (e) {
        attempted = isRetryable(e) ? retry(e) : fail(e);
      }
      let out: Exclude<Outcome, { kind: 'retry' }>;
      if (attempted.kind !== 'retry') out = attempted;
      else {
        const spent = clock.now() - Date.parse(entry.startedAt);
        const limit = this.limitMs(m.step);
        const exhausted = m.step === 'create-new' ? entry.attempts >= this.opts.createAttempts : spent >= limit;
        if (!exhausted) {
          entry.error = reasonOf(attempted.error).message;
          this.deps.log.debug({ migrationId: m.id, step: m.step, attempt: entry.attempts, err: entry.error }, 'step will be retried');
          await this.pause(entry.attempts, shouldStop);
          continue;
        }
        out = SKIPPABLE.has(m.step)
          ? { kind: 'next', step: this.after(m), skipped: true, note: `gave up after ${entry.attempts} attempts (${reasonOf(attempted.error).message}); the scheduler cleans up once it manages the slot again` }
          : {
              kind: 'fail',
              error:
                m.step === 'await-running'
                  ? failure('START_FAILED', `not running after ${Math.round(spent / 1000)} s: ${reasonOf(attempted.error).message}`)
                  : attempted.error,
            };
      }
      await this.apply(m, owner, out);
    }
  }

  private limitMs(step: StepName): number {
    if (UNBOUNDED.has(step)) return Number.POSITIVE_INFINITY;
    if (step === 'await-running') return this.opts.runningTimeoutMs;
    return this.opts.stepGiveUpMs;
  }

  private async pause(attempts: number, shouldStop: () => boolean): Promise<void> {
    const ms = Math.min(this.opts.retryMaxMs, this.opts.retryBaseMs * 2 ** Math.min(attempts - 1, 10));
    const until = this.deps.clock.now() + ms;
    while (this.deps.clock.now() < until && !shouldStop()) await this.deps.clock.sleep(Math.min(250, until - this.deps.clock.now()));
  }

  /** Records an outcome: the next step, the start of a rollback, or the end. */
  private async apply(m: MigrationRecord, owner: string, out: Exclude<Outcome, { kind: 'retry' }>): Promise<void> {
    const now = this.deps.clock.now();
    const events: NewEvent<unknown>[] = [];
    if (out.kind === 'next') {
      finishStep(m, now, out.step, { state: out.skipped ? 'skipped' : 'done', ...(out.note !== undefined ? { note: out.note } : {}) });
      if (out.started) events.push(migrationEvent(m, 'started', this.opts.source, now));
    } else if (out.kind === 'end') {
      finishStep(m, now, 'done');
      m.state = out.state;
      if (out.state === 'failed') m.error = m.failure ?? { code: 'INTERNAL', message: 'failed' };
      events.push(migrationEvent(m, out.state, this.opts.source, now));
      this.deps.log.info({ migrationId: m.id, instanceId: m.instanceId, state: m.state, error: m.error?.message }, `migration ${out.state}`);
    } else {
      const reason = reasonOf(out.error);
      const failedStep = m.step;
      this.deps.log.warn({ migrationId: m.id, step: failedStep, reason }, 'migration step failed');
      if (m.rollingBack) {
        // A rollback step that cannot succeed: record it and go on with the rest.
        finishStep(m, now, this.after(m), { state: 'failed', error: reason.message });
      } else if (failedStep === 'hold' && (reason.code === 'INSTANCE_CONFLICT' || reason.code === 'NOT_FOUND')) {
        // Nothing is held (by us): nothing to undo.
        finishStep(m, now, 'done', { state: 'failed', error: reason.message });
        m.state = 'failed';
        m.error = reason;
        events.push(migrationEvent(m, 'failed', this.opts.source, now));
      } else {
        m.rollingBack = true;
        m.failure = reason;
        finishStep(m, now, this.after(m), { state: 'failed', error: reason.message });
      }
    }
    await this.deps.store.save(m, owner, events);
  }

  /** The step after the current one: forward order, or the rollback's. */
  private after(m: MigrationRecord): StepName {
    if (m.rollingBack) {
      if (m.step === 'remove-new' || m.step === 'start-old') return m.step === 'remove-new' ? 'start-old' : 'release';
      if (m.step === 'release') return 'done';
      // A forward step failed: the rollback starts where there is something to undo.
      const stopTried = m.steps.some((s) => s.name === 'stop-old');
      return stopTried ? 'remove-new' : 'release';
    }
    const order: StepName[] = ['hold', 'reserve', 'stop-old', 'create-new', 'await-running', 'bind', 'remove-old', 'commit', 'done'];
    return order[order.indexOf(m.step) + 1] ?? 'done';
  }

  private async attempt(m: MigrationRecord, owner: string): Promise<Outcome> {
    const { scheduler, agents, ipam, liveness } = this.deps;
    const id = m.instanceId;
    switch (m.step) {
      case 'hold': {
        const view = await scheduler.hold(id, m.id);
        if (view.hostId && view.backend) m.from = { hostId: view.hostId, backend: view.backend };
        if (!m.from) return fail(failure('INVALID_REQUEST', `${id} is not placed on any host`));
        return next('reserve');
      }
      case 'reserve': {
        m.to = await scheduler.reserve(id, m.id, {
          ...(m.request.toHost !== undefined ? { toHost: m.request.toHost } : {}),
          ...(m.request.toBackend !== undefined ? { toBackend: m.request.toBackend } : {}),
        });
        return { kind: 'next', step: 'stop-old', started: true };
      }
      case 'stop-old': {
        const from = m.from!;
        const silent = liveness.goneForMs(from.hostId);
        if (silent >= this.opts.fenceDeadlineMs) {
          m.oldStopped = 'fenced';
          return next('create-new', `host ${from.hostId} silent for ${Math.round(silent / 1000)} s, past fenceAfter + margin: its agent has stopped it`);
        }
        const inst = await agents.stop(from.hostId, id);
        if (!inst || inst.state === 'removed') {
          m.oldStopped = 'absent';
          return next('create-new', `no copy on ${from.hostId}`);
        }
        if (inst.state === 'running') return retry(new OrangeryError('UNAVAILABLE', `${id} still runs on ${from.hostId} after stop`));
        m.oldStopped = 'ack';
        return next('create-new', `${from.hostId} replied ${inst.state}`);
      }
      case 'create-new': {
        const to = m.to!;
        const slot = await scheduler.slotGet(id);
        if (!slot) return fail(failure('NOT_FOUND', `the scheduler has no slot ${id}`));
        if (!m.address) {
          const address = await ipam.get({ env: m.env, app: m.app, slot: slot.slot });
          if (!address) return fail(failure('NOT_FOUND', `ipam has no address for ${id}`));
          m.address = address;
        }
        const artifact = to.backend === 'docker' ? slot.spec.image : slot.spec.template;
        if (!artifact) return fail(failure('INVALID_REQUEST', `${m.app} has no ${to.backend === 'docker' ? 'image' : 'template'} for ${to.backend}`));
        const a = m.address;
        const command: CreateInstanceCommand = {
          instanceId: id,
          env: m.env,
          app: m.app,
          slot: slot.slot,
          ...(to.backend === 'docker' ? { image: artifact } : { template: artifact }),
          resources: slot.spec.resources,
          network: { ip: a.ip, mac: a.mac, prefixLength: a.prefixLength, gateway: a.gateway, vlan: a.vlan },
          ...(slot.spec.environment && Object.keys(slot.spec.environment).length > 0 ? { environment: slot.spec.environment } : {}),
        };
        if (to.backend !== 'docker' && !m.createdNew) {
          // A VM cannot probe the wire before it boots: a live docker-agent does it for it.
          // The old copy was confirmed off; an answer now means something else holds the IP.
          const prober = liveness.proberFor([to.hostId, m.from?.hostId ?? '']);
          if (prober) {
            const answers = await agents.probe(prober, a.vlan, [a.ip]);
            if (answers.get(a.ip) !== false) {
              return retry(new OrangeryError('IP_IN_USE_ON_WIRE', `${a.ip} answers ARP on VLAN ${a.vlan} (probed by ${prober}): the VM is not started`, undefined, true));
            }
          } else {
            this.deps.log.warn({ migrationId: m.id, ip: a.ip }, 'no live docker-agent to probe the wire before a VM start; starting without one');
          }
        }
        if (!m.createdNew) {
          // Before the command leaves: a rollback must remove whatever it may have made.
          m.createdNew = true;
          await this.deps.store.save(m, owner);
        }
        const inst = await agents.create(to.hostId, command);
        return next('await-running', `${to.hostId} replied ${inst.state}`);
      }
      case 'await-running': {
        const to = m.to!;
        const inst = await agents.get(to.hostId, id);
        if (inst?.state === 'running') return next('bind');
        if (!inst || inst.state === 'failed' || inst.state === 'removed') {
          return fail(failure('START_FAILED', `${id} on ${to.hostId} is ${inst?.state ?? 'gone'}${inst?.reason ? `: ${inst.reason}` : ''}`));
        }
        return retry(new OrangeryError('UNAVAILABLE', `${id} on ${to.hostId} is ${inst.state}, not running yet`));
      }
      case 'bind': {
        const to = m.to!;
        await ipam.bind(m.address!.ip, id, to.backend, to.hostId);
        return next('remove-old');
      }
      case 'remove-old': {
        const from = m.from!;
        if (m.oldStopped === 'fenced' && liveness.goneForMs(from.hostId) >= this.opts.fenceDeadlineMs) {
          return skip('commit', `host ${from.hostId} is unreachable: the scheduler removes the leftover when it returns`);
        }
        await agents.remove(from.hostId, id);
        return next('commit');
      }
      case 'commit': {
        try {
          await scheduler.commit(id, m.id);
        } catch (e) {
          if (isRetryable(e)) throw e;
          // Committed before we could record it (a resumed saga): the slot lives on the target.
          const view = await scheduler.slotGet(id);
          if (!(view && view.hold?.by !== m.id && view.hostId === m.to?.hostId)) {
            return retry(new OrangeryError('UNAVAILABLE', `commit refused: ${reasonOf(e).message}`));
          }
        }
        return { kind: 'end', state: 'completed' };
      }
      case 'remove-new': {
        if (!m.createdNew) return skip('start-old', 'nothing was created on the target');
        await agents.remove(m.to!.hostId, id);
        return next('start-old');
      }
      case 'start-old': {
        const from = m.from!;
        if (m.oldStopped === 'fenced' || m.oldStopped === 'absent') {
          return skip('release', m.oldStopped === 'fenced' ? `host ${from.hostId} is unreachable` : `there was no copy on ${from.hostId}`);
        }
        if (liveness.goneForMs(from.hostId) >= this.opts.fenceDeadlineMs) return skip('release', `host ${from.hostId} is unreachable`);
        try {
          await agents.start(from.hostId, id);
        } catch (e) {
          if (e instanceof PortError && e.code === 'NOT_FOUND') return skip('release', `no copy on ${from.hostId} to start`);
          // The target copy may still be leaving the wire: worth another try.
          if (e instanceof PortError && e.code === 'IP_IN_USE_ON_WIRE') return retry(e);
          throw e;
        }
        return next('release');
      }
      case 'release': {
        try {
          await scheduler.release(id, m.id);
        } catch (e) {
          if (isRetryable(e)) throw e;
          const view = await scheduler.slotGet(id);
          if (view && view.hold?.by === m.id) return retry(new OrangeryError('UNAVAILABLE', `release refused: ${reasonOf(e).message}`));
        }
        return { kind: 'end', state: 'failed' };
      }
      default:
        throw new OrangeryError('INTERNAL', `migration ${m.id} is at an unknown step '${m.step}'`);
    }
  }
}

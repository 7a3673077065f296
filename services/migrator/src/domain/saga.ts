import { context, SpanStatusCode, trace } from '@opentelemetry/api';
import { contextOfTraceparent, errorKindOf } from '@orangery/telemetry';
import { isRetryable, OrangeryError, type NewEvent } from '@orangery/contracts';
import type { MigrationRecord } from './model';
import type { AgentPort, Clock, DomainLog, IpamPort, Liveness, MigrationStore, SchedulerPort } from './ports';
import { stepOf, type StepDef, type StepResult } from './saga-steps';
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

/** How a step's retries ended: given up (its last error), or the attempt to record instead. */
type Settled = Exclude<StepResult, { kind: 'retry' }>;

/**
 * One planned migration as a saga over the steps of STEPS (saga-steps.ts): each step is
 * attempted, retried while its error is transient and its budget lasts, and leads to its
 * `next` (done, skipped) or its `rollback` (failed). Every step is idempotent (the
 * scheduler's hold/reserve/commit/release by migration id, the agents' commands by
 * instance id, ipam's bind), and each attempt is written to the store before it acts: a
 * migrator killed anywhere resumes at the step it was in, and a replica that lost the lease
 * finds out before its next action (the save fails), never after.
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
      const result = await this.attempt(m, owner);
      if (result.kind !== 'retry') {
        await this.record(m, owner, result);
        continue;
      }
      const gaveUp = this.afterRetries(m, result.error);
      if (gaveUp) {
        await this.record(m, owner, gaveUp);
        continue;
      }
      const entry = currentStep(m, clock.now());
      entry.error = reasonOf(result.error).message;
      this.deps.log.debug({ migrationId: m.id, step: m.step, attempt: entry.attempts, err: entry.error }, 'step will be retried');
      await this.pause(entry.attempts, shouldStop);
    }
  }

  /**
   * One attempt of the step `m` is at. On record before it acts: the lease is checked, and
   * the attempt is counted if the process dies in it. Store errors are thrown; the step's own
   * are sorted: transient ones are a retry, any other a failure.
   */
  async attempt(m: MigrationRecord, owner: string): Promise<StepResult> {
    const entry = currentStep(m, this.deps.clock.now());
    entry.attempts++;
    m.updatedAt = new Date(this.deps.clock.now()).toISOString();
    await this.deps.store.save(m, owner);
    // A span per attempt, in the trace of the request that started the migration (kept on
    // the record, so a resumed saga continues it too): its scheduler, agent and ipam calls join it.
    const parent = contextOfTraceparent(m.traceparent) ?? context.active();
    const span = trace
      .getTracer('orangery')
      .startSpan(
        `migrator.${m.step}`,
        { attributes: { 'orangery.migration_id': m.id, 'orangery.instance_id': m.instanceId, 'orangery.attempt': entry.attempts } },
        parent,
      );
    try {
      const step = stepOf(m);
      if (!step) throw new OrangeryError('INTERNAL', `migration ${m.id} is at an unknown step '${m.step}'`);
      const result = await context.with(trace.setSpan(parent, span), () => step.run({ m, owner, deps: this.deps, opts: this.opts }));
      span.setAttribute('orangery.result', result.kind);
      return result;
    } catch (e) {
      // the error's name or contract code, not its text: a driver's message may name a host
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorKindOf(e) });
      return isRetryable(e) ? { kind: 'retry', error: e } : { kind: 'fail', error: e };
    } finally {
      span.end();
    }
  }

  /** undefined while the step's budget lasts; else what its give-up comes to (a skip or a failure). */
  private afterRetries(m: MigrationRecord, error: unknown): Settled | undefined {
    const step = stepOf(m);
    const entry = currentStep(m, this.deps.clock.now());
    const spent = this.deps.clock.now() - Date.parse(entry.startedAt);
    const exhausted = step?.retries === 'create-attempts' ? entry.attempts >= this.opts.createAttempts : spent >= this.limitMs(step);
    if (!exhausted) return undefined;
    if (step?.giveUp === 'skip') {
      return {
        kind: 'skipped',
        note: `gave up after ${entry.attempts} attempts (${reasonOf(error).message}); the scheduler cleans up once it manages the slot again`,
      };
    }
    return { kind: 'fail', error: step?.giveUpError ? step.giveUpError(error, spent) : error };
  }

  private limitMs(step: StepDef | undefined): number {
    if (step?.retries === 'forever') return Number.POSITIVE_INFINITY;
    if (step?.retries === 'running-timeout') return this.opts.runningTimeoutMs;
    return this.opts.stepGiveUpMs;
  }

  private async pause(attempts: number, shouldStop: () => boolean): Promise<void> {
    const ms = Math.min(this.opts.retryMaxMs, this.opts.retryBaseMs * 2 ** Math.min(attempts - 1, 10));
    const until = this.deps.clock.now() + ms;
    while (this.deps.clock.now() < until && !shouldStop()) await this.deps.clock.sleep(Math.min(250, until - this.deps.clock.now()));
  }

  /**
   * Records a settled attempt: the step closed and the record moved to the table's `next`
   * (done, skipped) or `rollback` (failed), with the step's event; reaching `done` ends the
   * migration, completed, or failed when it was rolling back.
   */
  async record(m: MigrationRecord, owner: string, result: Settled): Promise<void> {
    const now = this.deps.clock.now();
    const step = stepOf(m);
    const events: NewEvent<unknown>[] = [];
    if (result.kind === 'fail') {
      const reason = reasonOf(result.error);
      this.deps.log.warn({ migrationId: m.id, step: m.step, reason }, 'migration step failed');
      const to = step ? (typeof step.rollback === 'function' ? step.rollback(reason) : step.rollback) : 'release';
      if (!m.rollingBack) {
        m.rollingBack = true;
        m.failure = reason;
      }
      finishStep(m, now, to, { state: 'failed', error: reason.message });
    } else {
      finishStep(m, now, step?.next ?? 'done', { state: result.kind, ...(result.note !== undefined ? { note: result.note } : {}) });
      if (step?.announces) events.push(migrationEvent(m, step.announces, this.opts.source, now));
    }
    if (m.step === 'done') {
      m.state = m.rollingBack ? 'failed' : 'completed';
      if (m.state === 'failed') m.error = m.failure ?? { code: 'INTERNAL', message: 'failed' };
      events.push(migrationEvent(m, m.state, this.opts.source, now));
      this.deps.log.info({ migrationId: m.id, instanceId: m.instanceId, state: m.state, error: m.error?.message }, `migration ${m.state}`);
    }
    await this.deps.store.save(m, owner, events);
  }
}

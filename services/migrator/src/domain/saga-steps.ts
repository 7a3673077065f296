import { isRetryable, OrangeryError, type ErrorCode, type MigrationReason } from '@orangery/contracts';
import type { MigrationRecord, SagaStep, StepName } from './model';
import { PortError } from './ports';
import type { SagaDeps, SagaOptions } from './saga';
import { reasonOf } from './steps';

/** What one attempt of a step came to. Where it leads is the table's business, not the step's. */
export type StepResult =
  { kind: 'done'; note?: string } | { kind: 'skipped'; note: string } | { kind: 'retry'; error: unknown } | { kind: 'fail'; error: unknown };

/** What a step works with: the record (which it may fill in), its lease, the ports and the options. */
export interface StepContext {
  readonly m: MigrationRecord;
  readonly owner: string;
  readonly deps: SagaDeps;
  readonly opts: SagaOptions;
}

export interface StepDef {
  /** one attempt; throwing is a retry (transient) or a failure (anything else) */
  run(ctx: StepContext): Promise<StepResult>;
  /** where a done or skipped step leads; `done` ends the migration (completed, or failed when rolling back) */
  next: StepName;
  /** where a failure leads: the first rollback step with something to undo */
  rollback: StepName | ((reason: MigrationReason) => StepName);
  /**
   * How long retries go on: the step give-up time (default), the running timeout, the create
   * attempts, or for ever (the scheduler must hear the outcome, or the slot stays held).
   */
  retries?: 'running-timeout' | 'create-attempts' | 'forever';
  /** after the retries: `skip` goes on to `next` (the scheduler cleans up later) instead of failing */
  giveUp?: 'skip';
  /** the error a give-up fails with, instead of the last attempt's */
  giveUpError?: (lastError: unknown, spentMs: number) => unknown;
  /** the migration.<what> event written with the step's end */
  announces?: 'started';
}

const done = (note?: string): StepResult => ({ kind: 'done', ...(note !== undefined ? { note } : {}) });
const skipped = (note: string): StepResult => ({ kind: 'skipped', note });
const retry = (error: unknown): StepResult => ({ kind: 'retry', error });
const fail = (error: unknown): StepResult => ({ kind: 'fail', error });
const failure = (code: ErrorCode, message: string, details?: Record<string, unknown>): OrangeryError => new OrangeryError(code, message, details, false);
const notYet = (message: string): StepResult => retry(new OrangeryError('UNAVAILABLE', message));

// ---------------------------------------------------------------- forward

async function hold({ m, deps }: StepContext): Promise<StepResult> {
  const view = await deps.scheduler.hold(m.instanceId, m.id);
  if (view.hostId && view.backend) m.from = { hostId: view.hostId, backend: view.backend };
  if (!m.from) return fail(failure('INVALID_REQUEST', `${m.instanceId} is not placed on any host`));
  return done();
}

async function reserve({ m, deps }: StepContext): Promise<StepResult> {
  m.to = await deps.scheduler.reserve(m.instanceId, m.id, {
    ...(m.request.toHost !== undefined ? { toHost: m.request.toHost } : {}),
    ...(m.request.toBackend !== undefined ? { toBackend: m.request.toBackend } : {}),
  });
  return done();
}

async function stopOld({ m, deps, opts }: StepContext): Promise<StepResult> {
  const from = m.from!;
  const silent = deps.liveness.goneForMs(from.hostId);
  if (silent >= opts.fenceDeadlineMs) {
    m.oldStopped = 'fenced';
    return done(`host ${from.hostId} silent for ${Math.round(silent / 1000)} s, past fenceAfter + margin: its agent has stopped it`);
  }
  const inst = await deps.agents.stop(from.hostId, m.instanceId);
  if (!inst || inst.state === 'removed') {
    m.oldStopped = 'absent';
    return done(`no copy on ${from.hostId}`);
  }
  if (inst.state === 'running') return notYet(`${m.instanceId} still runs on ${from.hostId} after stop`);
  m.oldStopped = 'ack';
  return done(`${from.hostId} replied ${inst.state}`);
}

async function createNew(ctx: StepContext): Promise<StepResult> {
  const { m, owner, deps } = ctx;
  const to = m.to!;
  const id = m.instanceId;
  const slot = await deps.scheduler.slotGet(id);
  if (!slot) return fail(failure('NOT_FOUND', `the scheduler has no slot ${id}`));
  if (!m.address) {
    const address = await deps.ipam.get({ env: m.env, app: m.app, slot: slot.slot });
    if (!address) return fail(failure('NOT_FOUND', `ipam has no address for ${id}`));
    m.address = address;
  }
  const artifact = to.backend === 'docker' ? slot.spec.image : slot.spec.template;
  if (!artifact) return fail(failure('INVALID_REQUEST', `${m.app} has no ${to.backend === 'docker' ? 'image' : 'template'} for ${to.backend}`));
  const a = m.address;
  if (to.backend !== 'docker' && !m.createdNew) {
    const answered = await wireAnswers(ctx, a);
    if (answered) return answered;
  }
  if (!m.createdNew) {
    // Before the command leaves: a rollback must remove whatever it may have made.
    m.createdNew = true;
    await deps.store.save(m, owner);
  }
  // The scheduler leader sends the create to the target itself (issue 13): the app's
  // environment (secrets) stays between the scheduler and the agent, never here.
  const inst = await deps.scheduler.createOnTarget(id, m.id, { ip: a.ip, mac: a.mac, prefixLength: a.prefixLength, gateway: a.gateway, vlan: a.vlan });
  return done(`${to.hostId} replied ${inst.state}`);
}

/**
 * A VM cannot probe the wire before it boots: a live docker-agent does it for it. The old
 * copy was confirmed off; an answer now means something else holds the IP (a retry, then
 * the rollback). Undefined when the VM may start.
 */
async function wireAnswers({ m, deps }: StepContext, a: { ip: string; vlan: number }): Promise<StepResult | undefined> {
  const prober = deps.liveness.proberFor([m.to!.hostId, m.from?.hostId ?? '']);
  if (!prober) {
    deps.log.warn({ migrationId: m.id, ip: a.ip }, 'no live docker-agent to probe the wire before a VM start; starting without one');
    return undefined;
  }
  const answers = await deps.agents.probe(prober, a.vlan, [a.ip]);
  if (answers.get(a.ip) === false) return undefined;
  return retry(new OrangeryError('IP_IN_USE_ON_WIRE', `${a.ip} answers ARP on VLAN ${a.vlan} (probed by ${prober}): the VM is not started`, undefined, true));
}

async function awaitRunning({ m, deps }: StepContext): Promise<StepResult> {
  const to = m.to!;
  const inst = await deps.agents.get(to.hostId, m.instanceId);
  if (inst?.state === 'running') return done();
  if (!inst || inst.state === 'failed' || inst.state === 'removed') {
    return fail(failure('START_FAILED', `${m.instanceId} on ${to.hostId} is ${inst?.state ?? 'gone'}${inst?.reason ? `: ${inst.reason}` : ''}`));
  }
  return notYet(`${m.instanceId} on ${to.hostId} is ${inst.state}, not running yet`);
}

async function bind({ m, deps }: StepContext): Promise<StepResult> {
  const to = m.to!;
  await deps.ipam.bind(m.address!.ip, m.instanceId, to.backend, to.hostId);
  return done();
}

async function removeOld({ m, deps, opts }: StepContext): Promise<StepResult> {
  const from = m.from!;
  if (m.oldStopped === 'fenced' && deps.liveness.goneForMs(from.hostId) >= opts.fenceDeadlineMs) {
    return skipped(`host ${from.hostId} is unreachable: the scheduler removes the leftover when it returns`);
  }
  await deps.agents.remove(from.hostId, m.instanceId);
  return done();
}

async function commit({ m, deps }: StepContext): Promise<StepResult> {
  try {
    await deps.scheduler.commit(m.instanceId, m.id);
  } catch (e) {
    if (isRetryable(e)) throw e;
    // Committed before we could record it (a resumed saga): the slot lives on the target.
    const view = await deps.scheduler.slotGet(m.instanceId);
    if (!(view && view.hold?.by !== m.id && view.hostId === m.to?.hostId)) return notYet(`commit refused: ${reasonOf(e).message}`);
  }
  return done();
}

// ---------------------------------------------------------------- rollback

async function removeNew({ m, deps }: StepContext): Promise<StepResult> {
  if (!m.createdNew) return skipped('nothing was created on the target');
  await deps.agents.remove(m.to!.hostId, m.instanceId);
  return done();
}

async function startOld({ m, deps, opts }: StepContext): Promise<StepResult> {
  const from = m.from!;
  if (m.oldStopped === 'fenced' || m.oldStopped === 'absent') {
    return skipped(m.oldStopped === 'fenced' ? `host ${from.hostId} is unreachable` : `there was no copy on ${from.hostId}`);
  }
  if (deps.liveness.goneForMs(from.hostId) >= opts.fenceDeadlineMs) return skipped(`host ${from.hostId} is unreachable`);
  try {
    await deps.agents.start(from.hostId, m.instanceId);
  } catch (e) {
    if (e instanceof PortError && e.code === 'NOT_FOUND') return skipped(`no copy on ${from.hostId} to start`);
    // The target copy may still be leaving the wire: worth another try.
    if (e instanceof PortError && e.code === 'IP_IN_USE_ON_WIRE') return retry(e);
    throw e;
  }
  return done();
}

async function release({ m, deps }: StepContext): Promise<StepResult> {
  try {
    await deps.scheduler.release(m.instanceId, m.id);
  } catch (e) {
    if (isRetryable(e)) throw e;
    const view = await deps.scheduler.slotGet(m.instanceId);
    if (view && view.hold?.by === m.id) return notYet(`release refused: ${reasonOf(e).message}`);
  }
  return done();
}

/** A hold refused because the slot is another's or gone holds nothing of ours: nothing to undo. */
const afterHoldFailed = (reason: MigrationReason): StepName => (reason.code === 'INSTANCE_CONFLICT' || reason.code === 'NOT_FOUND' ? 'done' : 'release');

/**
 * The saga, one line per step. Forward: break before make (the old copy is confirmed off
 * before the new one is created with the same IP and MAC). A failure from stop-old on
 * rolls back from remove-new: the old copy may be off, so the target copy is removed and
 * the old one started again; before stop-old only the scheduler's hold is released. A
 * rollback step that fails is recorded and the rollback goes on (`rollback` = `next`).
 */
export const STEPS: Readonly<Record<SagaStep, StepDef>> = {
  hold: { run: hold, next: 'reserve', rollback: afterHoldFailed },
  reserve: { run: reserve, next: 'stop-old', rollback: 'release', announces: 'started' },
  'stop-old': { run: stopOld, next: 'create-new', rollback: 'remove-new' },
  'create-new': { run: createNew, next: 'await-running', rollback: 'remove-new', retries: 'create-attempts' },
  'await-running': {
    run: awaitRunning,
    next: 'bind',
    rollback: 'remove-new',
    retries: 'running-timeout',
    giveUpError: (last, spentMs) => failure('START_FAILED', `not running after ${Math.round(spentMs / 1000)} s: ${reasonOf(last).message}`),
  },
  bind: { run: bind, next: 'remove-old', rollback: 'remove-new' },
  'remove-old': { run: removeOld, next: 'commit', rollback: 'remove-new', giveUp: 'skip' },
  commit: { run: commit, next: 'done', rollback: 'remove-new', retries: 'forever' },
  'remove-new': { run: removeNew, next: 'start-old', rollback: 'start-old', giveUp: 'skip' },
  'start-old': { run: startOld, next: 'release', rollback: 'release', giveUp: 'skip' },
  release: { run: release, next: 'done', rollback: 'done', retries: 'forever' },
};

/** The definition of the step `m` is at; `queued` and `done` have none. */
export function stepOf(m: MigrationRecord): StepDef | undefined {
  return m.step === 'queued' || m.step === 'done' ? undefined : STEPS[m.step];
}

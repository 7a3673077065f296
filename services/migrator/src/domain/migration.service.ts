import { activeTraceparent } from '@orangery/telemetry';
import { randomUUID } from 'node:crypto';
import {
  isRetryable,
  OrangeryError,
  ownerOfInstanceId,
  passOn,
  type DrainReplyData,
  type MigrateReplyData,
  type MigrateRequest,
  type MigrationView,
} from '@orangery/contracts';
import type { DrainRecord, MigrationRecord } from './model';
import { viewOf } from './model';
import { PortError, type Clock, type DomainLog, type MigrationStore, type SchedulerPort } from './ports';
import type { MigrationSaga } from './saga';

export interface RequestOptions {
  source: string;
  /** how long a request waits for the scheduler leader (no leader, slot busy) before UNAVAILABLE */
  requestRetryMs: number;
}

type Attempted<T> = { value: T } | { retry: unknown };
const iso = (ms: number): string => new Date(ms).toISOString();
export const newMigrationId = (): string => `m-${randomUUID()}`;

/** The request's trace (the responder's server span), kept on the saga so its steps continue it. */
const traced = (): { traceparent?: string } => {
  const traceparent = activeTraceparent();
  return traceparent ? { traceparent } : {};
};

/** The scheduler's refusal as the caller of migrate sees it (its away or INTERNAL: UNAVAILABLE). */
function asContractError(e: unknown): OrangeryError {
  if (e instanceof OrangeryError) return e;
  if (e instanceof PortError) return passOn(e);
  return new OrangeryError('INTERNAL', e instanceof Error ? e.message : String(e));
}

/** IP_WOULD_CHANGE for a migration into, out of or within swarm (docs/migrator.md "Swarm"). */
export function swarmRefusal(instanceId: string, why: string, details: Record<string, unknown>): OrangeryError {
  return new OrangeryError(
    'IP_WOULD_CHANGE',
    `${instanceId} cannot be migrated: ${why}, and a swarm task's address comes from its node's ipam block, so its IP could not be kept. ` +
      'Swarm moves its own tasks: drain the node in swarm (docker node update --availability drain <node>) and Orangery follows them.',
    { instanceId, ...details },
  );
}

/**
 * The operators' requests: migrate (the saga's hold and reserve inside the request, so "no
 * such instance" and "no capacity" are the reply and nothing moves), drain, and migrations.get.
 * Accepted migrations are handed to `accepted` (the worker) to run.
 */
export class MigrationService {
  constructor(
    private readonly deps: { scheduler: SchedulerPort; store: MigrationStore; clock: Clock; log: DomainLog; saga: Pick<MigrationSaga, 'attempt' | 'record'> },
    private readonly owner: string,
    private readonly opts: RequestOptions,
    private readonly accepted: (m: MigrationRecord) => void,
    private readonly drainQueued: () => void = () => undefined,
  ) {}

  /** Retries what says "try again shortly" (no scheduler leader, slot busy) within the request's budget. */
  private patiently<T>(call: () => Promise<T>): Promise<T> {
    return this.withinBudget<T>(async () => {
      try {
        return { value: await call() };
      } catch (e) {
        if (!isRetryable(e)) throw e;
        return { retry: e };
      }
    });
  }

  /** Attempts until one has a value, backing off between them; past the budget the last retry's error is thrown. */
  private async withinBudget<T>(attempt: () => Promise<Attempted<T>>): Promise<T> {
    const deadline = this.deps.clock.now() + this.opts.requestRetryMs;
    let delay = 100;
    for (;;) {
      const out = await attempt();
      if ('value' in out) return out.value;
      if (this.deps.clock.now() + delay > deadline) throw out.retry;
      await this.deps.clock.sleep(delay);
      delay = Math.min(delay * 2, 1_000);
    }
  }

  async migrate(req: MigrateRequest): Promise<MigrateReplyData> {
    const { scheduler, store, clock } = this.deps;
    const owner = ownerOfInstanceId(req.instanceId)!;
    const before = await this.patiently(() => scheduler.slotGet(req.instanceId)).catch((e: unknown) => {
      throw asContractError(e);
    });
    if (!before) throw new OrangeryError('NOT_FOUND', `no instance ${req.instanceId}`, { instanceId: req.instanceId });
    if (!before.hostId || !before.backend) {
      throw new OrangeryError('INVALID_REQUEST', `${req.instanceId} is not placed on any host yet`, { field: 'instanceId', state: before.state });
    }
    // A swarm task's address comes from its node's ipam block (issue 16): the IP cannot be
    // kept across a move into, out of or within swarm. Refused before anything is recorded.
    if (before.backend === 'swarm' || req.toBackend === 'swarm') {
      throw swarmRefusal(req.instanceId, before.backend === 'swarm' ? `it runs on swarm (${before.hostId})` : 'the target backend is swarm', {
        ...(req.toBackend !== undefined ? { toBackend: req.toBackend } : {}),
        from: { hostId: before.hostId, backend: before.backend },
      });
    }
    if (req.toHost !== undefined && req.toHost === before.hostId) {
      throw new OrangeryError('INVALID_REQUEST', `${req.instanceId} is on ${req.toHost} already`, { field: 'toHost' });
    }
    const now = clock.now();
    const m: MigrationRecord = {
      id: newMigrationId(),
      instanceId: req.instanceId,
      env: owner.env,
      app: owner.app,
      request: { ...(req.toHost !== undefined ? { toHost: req.toHost } : {}), ...(req.toBackend !== undefined ? { toBackend: req.toBackend } : {}) },
      from: { hostId: before.hostId, backend: before.backend },
      to: null,
      state: 'running',
      step: 'hold',
      rollingBack: false,
      steps: [],
      ...traced(),
      createdAt: iso(now),
      updatedAt: iso(now),
    };
    // On record before the hold: a replica dying here leaves a migration another resumes
    // (and releases, if it cannot go on), never a hold nobody knows about.
    await store.insert(m, this.owner);
    try {
      // The saga's own hold and reserve, on the request's patience: "no such instance" and
      // "no capacity" are the reply, and nothing moves. Reserve's end writes migration.started.
      await this.runStep(m);
      await this.runStep(m);
    } catch (e) {
      const err = asContractError(e);
      await this.refuse(m, m.step !== 'hold', err);
      throw err;
    }
    this.deps.log.info({ migrationId: m.id, instanceId: m.instanceId, from: m.from, to: m.to }, 'migration started');
    this.accepted(m);
    return { migrationId: m.id };
  }

  /** Runs the saga step `m` is at until it is done, retried within the request's budget; its failure is thrown. */
  private async runStep(m: MigrationRecord): Promise<void> {
    await this.withinBudget<void>(async () => {
      const result = await this.deps.saga.attempt(m, this.owner);
      if (result.kind === 'retry') return { retry: result.error };
      if (result.kind === 'fail') throw result.error;
      await this.deps.saga.record(m, this.owner, result);
      return { value: undefined };
    });
  }

  /** A refused request leaves nothing: the hold released, the record deleted. */
  private async refuse(m: MigrationRecord, held: boolean, err: OrangeryError): Promise<void> {
    try {
      // A hold whose reply was lost may exist even when the call failed: release is idempotent.
      if (held || err.code === 'UNAVAILABLE') await this.patiently(() => this.deps.scheduler.release(m.instanceId, m.id)).catch(() => undefined);
      await this.deps.store.discard(m.id, this.owner);
    } catch (e) {
      // Left as it is, the record is resumed later by a replica, which releases the hold.
      this.deps.log.warn({ migrationId: m.id, err: String(e) }, 'could not clean up a refused migration; it will be rolled back later');
    }
  }

  /**
   * Marks the host draining, then queues one migration per instance on it. A drain's
   * migrations of one app run one after the other (`after`), different apps at once.
   */
  async drain(hostId: string): Promise<DrainReplyData> {
    const { scheduler, store, clock } = this.deps;
    await this.patiently(() => scheduler.hostDrain(hostId, true)).catch((e: unknown) => {
      throw asContractError(e);
    });
    const all = await this.patiently(() => scheduler.instances()).catch((e: unknown) => {
      throw asContractError(e);
    });
    const now = clock.now();
    const drainId = `d-${randomUUID()}`;
    const trace = traced();
    const lastOfApp = new Map<string, string>();
    const migrations: MigrationRecord[] = [];
    for (const inst of all.filter((i) => i.host === hostId).sort((a, b) => (a.id < b.id ? -1 : 1))) {
      const appKey = `${inst.env}:${inst.app}`;
      const after = lastOfApp.get(appKey);
      const m: MigrationRecord = {
        id: newMigrationId(),
        instanceId: inst.id,
        env: inst.env,
        app: inst.app,
        request: {},
        from: inst.backend ? { hostId, backend: inst.backend } : null,
        to: null,
        state: 'running',
        step: 'queued',
        rollingBack: false,
        steps: [],
        drainId,
        ...trace,
        ...(after !== undefined ? { after } : {}),
        createdAt: iso(now),
        updatedAt: iso(now),
      };
      lastOfApp.set(appKey, m.id);
      migrations.push(m);
    }
    const drain: DrainRecord = { id: drainId, hostId, state: 'running', migrationIds: migrations.map((m) => m.id), createdAt: iso(now) };
    await store.insertDrain(drain, migrations);
    this.deps.log.info({ drainId, hostId, migrations: migrations.length }, 'drain started');
    this.drainQueued();
    return { migrationIds: drain.migrationIds, drainId };
  }

  async get(migrationId: string): Promise<MigrationView> {
    const m = await this.deps.store.get(migrationId);
    if (!m) throw new OrangeryError('NOT_FOUND', `no migration ${migrationId}`, { migrationId });
    return viewOf(m);
  }
}

import type { Backend, MigrationReason, MigrationState, MigrationStep, MigrationView, Placement } from '@orangery/contracts';

/**
 * The names of the saga's steps, forward and rollback. Their order, and what each does, is
 * the saga's table (STEPS in saga-steps.ts) and nowhere else.
 */
export type SagaStep =
  'hold' | 'reserve' | 'stop-old' | 'create-new' | 'await-running' | 'bind' | 'remove-old' | 'commit' | 'remove-new' | 'start-old' | 'release';
export type StepName = 'queued' | SagaStep | 'done';

export interface MigrationRecord {
  readonly id: string;
  readonly instanceId: string;
  readonly env: string;
  readonly app: string;
  /** what the operator asked for */
  readonly request: { toHost?: string; toBackend?: Backend };
  from: Placement | null;
  to: Placement | null;
  state: MigrationState;
  /** the step to run next (or running now) */
  step: StepName;
  /** set once the forward path gave up after the old copy may have been stopped */
  rollingBack: boolean;
  /** how the old copy was confirmed off: its agent said so, or its host was silent long enough */
  oldStopped?: 'ack' | 'fenced' | 'absent';
  /** the new copy was (possibly) created: a rollback must remove it */
  createdNew?: boolean;
  /** the slot's address (from ipam), the same on both copies */
  address?: { ip: string; mac: string; prefixLength: number; gateway: string; vlan: number };
  steps: MigrationStep[];
  error?: MigrationReason;
  /** why the forward path failed (kept while rolling back, becomes `error`) */
  failure?: MigrationReason;
  drainId?: string;
  /**
   * W3C trace context of the migrate/drain request that started it: its steps (also after a
   * restart; the record is stored whole) and its events continue that trace
   */
  traceparent?: string;
  /** a drain's migration runs only after this one (the previous of its app) has ended */
  after?: string;
  readonly createdAt: string;
  updatedAt: string;
}

export interface DrainRecord {
  readonly id: string;
  readonly hostId: string;
  state: 'running' | 'completed' | 'failed';
  readonly migrationIds: string[];
  readonly createdAt: string;
}

export function viewOf(m: MigrationRecord): MigrationView {
  return {
    id: m.id,
    instanceId: m.instanceId,
    from: m.from,
    to: m.to,
    state: m.state,
    steps: m.steps.map((s) => ({ ...s })),
    ...(m.error ? { error: m.error } : {}),
    step: m.step,
    ...(m.drainId ? { drainId: m.drainId } : {}),
    createdAt: m.createdAt,
    updatedAt: m.updatedAt,
  };
}

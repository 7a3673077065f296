import { errorBodyOf, type MigrationReason, type MigrationStep, type NewEvent } from '@orangery/contracts';
import type { MigrationRecord, StepName } from './model';

/** Helpers that keep a migration's step log (name, attempts, timestamps) in its record. */

const iso = (ms: number): string => new Date(ms).toISOString();

/** The open entry of the step the record is at, created on first use. */
export function currentStep(m: MigrationRecord, now: number): MigrationStep {
  const last = m.steps[m.steps.length - 1];
  if (last && last.name === m.step && last.state === 'running') return last;
  const entry: MigrationStep = { name: m.step, state: 'running', attempts: 0, startedAt: iso(now) };
  m.steps.push(entry);
  return entry;
}

/** Closes the current step and moves the record to `next`. */
export function finishStep(
  m: MigrationRecord,
  now: number,
  next: StepName,
  how: { state?: 'done' | 'skipped' | 'failed'; note?: string; error?: string } = {},
): void {
  const entry = currentStep(m, now);
  entry.state = how.state ?? 'done';
  entry.finishedAt = iso(now);
  if (how.note !== undefined) entry.note = how.note;
  if (how.error !== undefined) entry.error = how.error;
  m.step = next;
  m.updatedAt = iso(now);
}

/** A port error (or anything thrown) as the reason a migration failed. */
export const reasonOf = (e: unknown): MigrationReason => errorBodyOf(e);

/** The migration.<what> event of a record (event id `migration-<what>:<id>`: stored once). */
export function migrationEvent(m: MigrationRecord, what: 'started' | 'completed' | 'failed', source: string, now: number): NewEvent<unknown> {
  return {
    area: 'migration',
    what,
    id: `migration-${what}:${m.id}`,
    source,
    subject: m.id,
    time: new Date(now),
    data: {
      migrationId: m.id,
      instanceId: m.instanceId,
      from: m.from,
      to: m.to,
      ...(what === 'failed' && m.error ? { reason: m.error } : {}),
      ...(m.drainId ? { drainId: m.drainId } : {}),
    },
    ...(m.traceparent ? { traceparent: m.traceparent } : {}),
  };
}

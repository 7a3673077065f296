import type { InstancePlacedData, NewEvent, ScaleCompletedData, ScaleRejectedData, ScaleRejectionCode } from '@orangery/contracts';
import type { AppRecord, SlotRecord } from './model';

/** What a scale.rejected event says (env and app are unknown for a request that is not even JSON). */
export interface Rejection {
  readonly requestId: string;
  readonly env?: string | undefined;
  readonly app?: string | undefined;
  readonly code: ScaleRejectionCode;
  readonly message: string;
  readonly details?: Record<string, unknown> | undefined;
  readonly traceparent?: string | undefined;
}

/**
 * The scheduler's events, for the outbox (journaled with the change they announce). An
 * outcome carries a fixed id, one per request and outcome, so a re-published copy is stored
 * once.
 */
export class SchedulerEvents {
  constructor(private readonly source: string) {}

  event<T>(area: string, what: string, subject: string, data: T, traceparent?: string, id?: string): NewEvent<unknown> {
    return { area, what, source: this.source, subject, data, ...(traceparent ? { traceparent } : {}), ...(id ? { id } : {}) };
  }

  placed(s: SlotRecord, app: AppRecord): NewEvent<unknown> {
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

  rejected({ requestId, env, app, code, message, details, traceparent }: Rejection): NewEvent<unknown> {
    const data: ScaleRejectedData = {
      requestId,
      ...(env ? { env } : {}),
      ...(app ? { app } : {}),
      reason: { code, message, ...(details ? { details } : {}) },
    };
    return this.event('scale', 'rejected', env && app ? `${env}:${app}` : requestId, data, traceparent, `scale-rejected:${requestId}`);
  }

  completed(app: AppRecord, data: ScaleCompletedData): NewEvent<unknown> {
    return this.event('scale', 'completed', `${app.env}:${app.app}`, data, app.traceparent, `scale-completed:${app.requestId}`);
  }
}

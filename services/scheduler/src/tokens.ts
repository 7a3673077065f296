export const STORE = Symbol('SCHEDULER_STORE');
export const OUTBOX = Symbol('OUTBOX');
export const ENVS = Symbol('SCHEDULER_ENVS');

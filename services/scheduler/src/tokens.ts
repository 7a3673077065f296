export const SQL_POOL = Symbol('SQL_POOL');
export const STORE = Symbol('SCHEDULER_STORE');
export const OUTBOX = Symbol('OUTBOX');

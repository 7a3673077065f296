export const STORE = Symbol('MIGRATION_STORE');
export const OUTBOX = Symbol('OUTBOX');

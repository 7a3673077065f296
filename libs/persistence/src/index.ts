export * from './data-source';
export * from './sql-pool';
export * from './outbox';
export * from './keyset';
export * from './outbox-migration';

export * from './config';
export * from './bootstrap';
export * from './connections';
export * from './periodic';
export * from './database-service';
export * from './wiring-test';
export * from './observe';

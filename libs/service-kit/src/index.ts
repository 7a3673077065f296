export * from './config';
export * from './bootstrap';
export * from './connections';
export * from './periodic';

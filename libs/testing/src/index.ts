export * from './processes';
export * from './servers';
export * from './services';
export * from './client';
export * from './simulated-fleet';
export * from './scale';
export * from './fuzz';
export * from './fuzz-sender';

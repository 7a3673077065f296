export * from './errors';
export * from './envelope';
export * from './names';
export * from './subjects';
export * from './validation';
export * from './cloudevents';
export * from './ipam';

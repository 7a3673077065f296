export * from './connection';
export * from './trace-headers';
export * from './responder';
export * from './requester';
export * from './jetstream';
export * from './event-buffer';
export * from './clients';
export * from './ipam-blocks-client';

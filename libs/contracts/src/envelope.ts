import type { ErrorBody } from './errors';

/** The reply body of every request-reply subject: plain JSON, no framework envelope. */
export type Reply<T> = { ok: true; data: T } | { ok: false; error: ErrorBody };

export const okReply = <T>(data: T): Reply<T> => ({ ok: true, data });
export const errorReply = (error: ErrorBody): Reply<never> => ({ ok: false, error });

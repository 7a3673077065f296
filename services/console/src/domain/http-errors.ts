/**
 * HTTP statuses of the console's errors (CONTRACT.md "Console": 400 INVALID_REQUEST, 404
 * NOT_FOUND / POOL_NOT_FOUND, 409 for POOL_EXISTS and other conflicts, 503 UNAVAILABLE).
 * The rest is ours, documented in docs/console.md: 401 and 403 for tokens, 405, 413, 500
 * for INTERNAL, and 409 for every other refusal a service answers (the request was
 * understood and well-formed; the platform's state refuses it), including codes newer
 * than this build, which are passed on as they are.
 */

/** Errors of the HTTP layer itself; they never travel on NATS, so they are not contract codes. */
export const HTTP_ONLY_CODES = ['UNAUTHORIZED', 'FORBIDDEN', 'METHOD_NOT_ALLOWED', 'PAYLOAD_TOO_LARGE'] as const;
export type HttpOnlyCode = (typeof HTTP_ONLY_CODES)[number];

const STATUS: Record<string, number> = {
  INVALID_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  POOL_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  PAYLOAD_TOO_LARGE: 413,
  INTERNAL: 500,
  UNAVAILABLE: 503,
};

export function httpStatusOf(code: string): number {
  return STATUS[code] ?? 409;
}

export interface ApiErrorBody {
  error: { code: string; message: string; details: Record<string, unknown> };
}

/** An error the API answers: its code decides the status. */
export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  get status(): number {
    return httpStatusOf(this.code);
  }

  toBody(): ApiErrorBody {
    return { error: { code: this.code, message: this.message, details: this.details } };
  }
}

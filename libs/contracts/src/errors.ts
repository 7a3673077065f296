/**
 * Error codes of the public contract (CONTRACT.md) plus the few the project adds for
 * conditions the contract leaves open. Codes are only ever added, never renamed.
 */
export const ERROR_CODES = [
  'INVALID_REQUEST',
  'POOL_NOT_FOUND',
  'POOL_EXISTS',
  'POOL_OVERLAP',
  'POOL_EXHAUSTED',
  'POOL_IN_USE',
  'IP_OUT_OF_POOL',
  'IP_RESERVED',
  'IP_TAKEN',
  'OWNER_HAS_IP',
  'NOT_FOUND',
  'INSUFFICIENT_CAPACITY',
  'SUPERSEDED',
  'START_FAILED',
  'IP_IN_USE_ON_WIRE',
  // CONTRACT.md v1.1 "Environments": the env's record forbids the backend or pool.
  'POLICY_VIOLATION',
  // Project additions (issue 16): an address outside the swarm node's block (docs/ipam.md
  // "Blocks"); a migration that would have to change the instance's IP (docs/migrator.md).
  'NOT_IN_BLOCK',
  'IP_WOULD_CHANGE',
  // Project additions for agents (docs/docker-agent.md): the image is not on the engine;
  // a command for an instance id that exists with another spec; the instance is unknown.
  'IMAGE_NOT_FOUND',
  'INSTANCE_CONFLICT',
  // Project addition for the vmware-agent (docs/vmware-agent.md): the template a VM is to
  // be cloned from is not in vCenter (the VM counterpart of IMAGE_NOT_FOUND).
  'TEMPLATE_NOT_FOUND',
  // Project additions (documented in docs/ipam.md): a dependency (database) is down and
  // the request was not applied; the caller may retry. INTERNAL: a bug, logged with a trace id.
  'UNAVAILABLE',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);
export const isErrorCode = (code: unknown): code is ErrorCode => typeof code === 'string' && KNOWN_CODES.has(code);

/**
 * A code as this build of the contract knows it. Codes are only ever added, so a newer
 * peer may answer one we do not know yet: it is INTERNAL to us (we cannot act on it).
 */
export const contractCode = (code: string): ErrorCode => (isErrorCode(code) ? code : 'INTERNAL');

/** Codes that say "try again later" rather than "this will not work", whoever answered them. */
export const RETRYABLE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['UNAVAILABLE', 'INTERNAL']);

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

/**
 * The one error a domain throws: a contract code, and whether trying again later may
 * succeed (by default, as RETRYABLE_CODES says for the code). It travels to the caller as
 * `{ ok: false, error }`; `retryable` stays on this side (agents say it in `details`).
 */
export class OrangeryError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
    readonly retryable: boolean = RETRYABLE_CODES.has(code),
  ) {
    super(message);
    this.name = 'OrangeryError';
  }

  toBody(): ErrorBody {
    return this.details === undefined ? { code: this.code, message: this.message } : { code: this.code, message: this.message, details: this.details };
  }
}

export const isOrangeryError = (e: unknown): e is OrangeryError => e instanceof OrangeryError;

export function invalidRequest(field: string, reason: string, extra: Record<string, unknown> = {}): OrangeryError {
  const where = field === '' ? 'request' : `field '${field}'`;
  return new OrangeryError('INVALID_REQUEST', `${where}: ${reason}`, { field, reason, ...extra });
}

/**
 * An error another service (ipam, an agent, the scheduler...) answered, or no answer at
 * all, as its caller's domain sees it: the contract code, and whether trying again later
 * may succeed (the client of that service decides, per call: see libs/messaging clients).
 * A domain's own errors are OrangeryErrors; this one only says "they said no".
 */
export class PortError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly retryable: boolean,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'PortError';
  }
}

/**
 * Whether the work that threw `e` is worth trying again later: what the error says, and
 * `true` for anything unexpected (a bug, a driver error no adapter translated). Unexpected
 * errors are retried because every caller bounds its retries (the scheduler's attempts and
 * backoff, the migrator's step budget), as controller-runtime requeues any plain error with
 * backoff; only an error that says so stops the work at once.
 */
export function isRetryable(e: unknown): boolean {
  if (e instanceof OrangeryError || e instanceof PortError) return e.retryable;
  return true;
}

/** What to record or report about `e`: its contract code, message and details (INTERNAL for the unexpected). */
export function errorBodyOf(e: unknown): ErrorBody {
  if (e instanceof OrangeryError) return e.toBody();
  if (e instanceof PortError) {
    return e.details === undefined ? { code: e.code, message: e.message } : { code: e.code, message: e.message, details: e.details };
  }
  return { code: 'INTERNAL', message: e instanceof Error ? e.message : String(e) };
}

/**
 * Another service's refusal passed on to our own caller: a refusal that may pass if tried
 * again (the peer away, or its INTERNAL) is UNAVAILABLE to our caller, as it is not a bug
 * of ours; any other keeps its code.
 */
export function passOn(e: PortError): OrangeryError {
  return new OrangeryError(e.retryable ? 'UNAVAILABLE' : e.code, e.message, e.details, e.retryable);
}

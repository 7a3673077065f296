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

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

/** An error that travels to the caller as `{ ok: false, error }`. */
export class OrangeryError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'OrangeryError';
  }

  toBody(): ErrorBody {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

export const isOrangeryError = (e: unknown): e is OrangeryError => e instanceof OrangeryError;

export function invalidRequest(field: string, reason: string, extra: Record<string, unknown> = {}): OrangeryError {
  const where = field === '' ? 'request' : `field '${field}'`;
  return new OrangeryError('INVALID_REQUEST', `${where}: ${reason}`, { field, reason, ...extra });
}

/**
 * An error a service's port (ipam, an agent, the scheduler...) answered, as its caller's
 * domain sees it: the contract code, and whether trying again later may succeed.
 */
export class PortError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly transient: boolean,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'PortError';
  }
}

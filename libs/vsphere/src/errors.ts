// Errors of the vSphere client: every failure is one of these, with a message a person can
// act on. None of them ever carries a password or a session cookie.
import type { VimObject } from './xml';

/** A vim25 fault: a SOAP fault of a call, or the error of a task. */
export class VsphereFault extends Error {
  override readonly name: string = 'VsphereFault';
  constructor(
    /** The fault type, e.g. `InvalidLogin`, `NotAuthenticated`, `InvalidPowerState`, `DuplicateName`. */
    readonly faultName: string,
    message: string,
    /** The vim25 method (or task name) that failed. */
    readonly method: string,
    /** The fault's own fields, decoded (e.g. `{ requestedState, existingState }`). */
    readonly details: VimObject = {},
  ) {
    super(message);
  }
}

/** Login refused: wrong user name or password (fault InvalidLogin). */
export class VsphereLoginError extends VsphereFault {
  override readonly name = 'VsphereLoginError';
}

/** A task ended in error; `task` is its MoRef value, `entityName` what it ran on. */
export class VsphereTaskError extends VsphereFault {
  override readonly name = 'VsphereTaskError';
  constructor(
    faultName: string,
    message: string,
    method: string,
    details: VimObject,
    readonly task: string,
    readonly entityName: string | undefined,
  ) {
    super(faultName, message, method, details);
  }
}

/** vCenter could not be reached, went away mid-call, or answered something that is not SOAP. */
export class VsphereTransportError extends Error {
  override readonly name = 'VsphereTransportError';
  constructor(
    message: string,
    readonly method: string,
    /** e.g. ECONNREFUSED, ECONNRESET, ETIMEDOUT, HTTP_502. */
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A call or a task wait took longer than allowed. */
export class VsphereTimeoutError extends Error {
  override readonly name = 'VsphereTimeoutError';
  constructor(
    message: string,
    readonly method: string,
  ) {
    super(message);
  }
}

import { describe, expect, it } from 'vitest';
import { contractCode, errorBodyOf, isRetryable, OrangeryError, passOn, PortError } from './errors';

describe('one error model', () => {
  it.each([
    ['a domain error whose code says "try later" (UNAVAILABLE)', new OrangeryError('UNAVAILABLE', 'busy'), true],
    ['a domain error whose code is a refusal (NOT_FOUND)', new OrangeryError('NOT_FOUND', 'no such slot'), false],
    ['a domain error that says otherwise than its code', new OrangeryError('IP_IN_USE_ON_WIRE', 'answers ARP', undefined, true), true],
    ['an answer of another service marked retryable', new PortError('UNAVAILABLE', 'no responders', true), true],
    ['an answer of another service marked final', new PortError('POOL_EXHAUSTED', 'full', false), false],
    ['anything unexpected (a bug, an untranslated driver error): retried, callers bound their retries', new TypeError('x is undefined'), true],
    ['a thrown string', 'oops', true],
  ])('isRetryable: %s', (_what, e, retryable) => {
    expect(isRetryable(e)).toBe(retryable);
  });

  it('a code this build does not know (a newer peer) is INTERNAL; known codes stay', () => {
    expect(contractCode('TIMEOUT')).toBe('INTERNAL');
    expect(contractCode('IP_TAKEN')).toBe('IP_TAKEN');
  });

  it('errorBodyOf reports the code of either error type, and INTERNAL for the unexpected', () => {
    expect(errorBodyOf(new OrangeryError('NOT_FOUND', 'gone', { id: 1 }))).toEqual({ code: 'NOT_FOUND', message: 'gone', details: { id: 1 } });
    expect(errorBodyOf(new PortError('IP_TAKEN', 'held', false))).toEqual({ code: 'IP_TAKEN', message: 'held' });
    expect(errorBodyOf(new Error('boom'))).toEqual({ code: 'INTERNAL', message: 'boom' });
  });

  it("passOn: a peer's retryable failure is UNAVAILABLE to our caller, its refusals keep their code", () => {
    expect(passOn(new PortError('INTERNAL', 'their bug', true)).toBody()).toEqual({ code: 'UNAVAILABLE', message: 'their bug' });
    const refused = passOn(new PortError('INSTANCE_CONFLICT', 'held by m-1', false, { heldBy: 'm-1' }));
    expect(refused).toBeInstanceOf(OrangeryError);
    expect(refused.toBody()).toEqual({ code: 'INSTANCE_CONFLICT', message: 'held by m-1', details: { heldBy: 'm-1' } });
    expect(refused.retryable).toBe(false);
  });
});

import { describe, expect, it } from 'vitest';
import { outcomeOf, RequestIndex } from './request-index';

describe('request index', () => {
  it('a published request is pending until its outcome, which then stays', () => {
    const idx = new RequestIndex(10);
    expect(idx.status('r1')).toBeUndefined();
    idx.noteRequest('r1');
    expect(idx.status('r1')).toEqual({ state: 'pending' });
    idx.noteOutcome('r1', { state: 'completed' });
    idx.noteOutcome('r1', { state: 'rejected', reason: { code: 'SUPERSEDED', message: 'x' } });
    expect(idx.status('r1')).toEqual({ state: 'completed' });
  });

  it('keeps only the newest entries', () => {
    const idx = new RequestIndex(3);
    for (const id of ['a', 'b', 'c', 'd']) idx.noteRequest(id);
    expect(idx.status('a')).toBeUndefined();
    expect(idx.status('d')).toEqual({ state: 'pending' });
    expect(idx.size.requests).toBe(3);
  });

  it('reads outcome events', () => {
    expect(outcomeOf({ type: 'io.orangery.scale.completed', data: { requestId: 'r' } })).toEqual({ requestId: 'r', status: { state: 'completed' } });
    expect(
      outcomeOf({
        type: 'io.orangery.scale.rejected',
        data: { requestId: 'r', reason: { code: 'POOL_NOT_FOUND', message: 'no pool', details: { pool: 'p' } } },
      }),
    ).toEqual({ requestId: 'r', status: { state: 'rejected', reason: { code: 'POOL_NOT_FOUND', message: 'no pool', details: { pool: 'p' } } } });
    expect(outcomeOf({ type: 'io.orangery.instance.running', data: { requestId: 'r' } })).toBeUndefined();
    expect(outcomeOf({ type: 'io.orangery.scale.completed', data: {} })).toBeUndefined();
    expect(outcomeOf('nonsense')).toBeUndefined();
  });
});

import { describe, expect, it } from 'vitest';
import { managerFresh } from './swarm-runtime';

describe('heartbeats vouch only for a recent view of the manager', () => {
  it.each([
    [500, { watchMs: 1000, heartbeatSeconds: 2 }, true],
    [3_900, { watchMs: 1000, heartbeatSeconds: 2 }, true],
    [4_100, { watchMs: 1000, heartbeatSeconds: 2 }, false],
    [2_900, { watchMs: 200, heartbeatSeconds: 1 }, true],
    [3_100, { watchMs: 200, heartbeatSeconds: 1 }, false],
  ])('age %i ms with %o: %s', (age, config, fresh) => {
    expect(managerFresh(age, config)).toBe(fresh);
  });
});

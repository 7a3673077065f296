import { describe, it, expect } from 'vitest';
import { FenceClock } from './fencing';

const FENCE_AFTER = 10_000;
const T0 = 1_000_000;

/** A clock whose last contact was at T0; `fencedAt`: also fenced at that time. */
function clock(opts: { fencedAt?: number } = {}) {
  const c = new FenceClock(FENCE_AFTER, T0);
  if (opts.fencedAt !== undefined) expect(c.shouldFence(opts.fencedAt)).toBe(true);
  return c;
}

describe('FenceClock: when to fence', () => {
  it('starts with the deadline fenceAfter after the first contact, not fenced', () => {
    const c = clock();
    expect(c.deadline).toBe(T0 + FENCE_AFTER);
    expect(c.fenced).toBe(false);
  });

  it.each([0, 1, 5_000, FENCE_AFTER - 1])('does not fence %i ms after the last contact', (elapsed) => {
    const c = clock();
    expect(c.shouldFence(T0 + elapsed)).toBe(false);
    expect(c.fenced).toBe(false);
  });

  it.each([FENCE_AFTER, FENCE_AFTER + 1, 10 * FENCE_AFTER])('fences %i ms after the last contact', (elapsed) => {
    const c = clock();
    expect(c.shouldFence(T0 + elapsed)).toBe(true);
    expect(c.fenced).toBe(true);
  });

  it('fences once per outage: later checks answer false while it lasts', () => {
    const c = clock({ fencedAt: T0 + FENCE_AFTER });
    expect(c.shouldFence(T0 + FENCE_AFTER)).toBe(false);
    expect(c.shouldFence(T0 + FENCE_AFTER + 250)).toBe(false);
    expect(c.shouldFence(T0 + 100 * FENCE_AFTER)).toBe(false);
    expect(c.fenced).toBe(true);
  });

  it('a contact before the deadline moves it to fenceAfter after that contact', () => {
    const c = clock();
    c.contact(T0 + 6_000);
    expect(c.deadline).toBe(T0 + 6_000 + FENCE_AFTER);
    expect(c.shouldFence(T0 + FENCE_AFTER)).toBe(false);
    expect(c.shouldFence(T0 + 6_000 + FENCE_AFTER - 1)).toBe(false);
    expect(c.shouldFence(T0 + 6_000 + FENCE_AFTER)).toBe(true);
  });

  it('regular contacts keep it from ever fencing', () => {
    const c = clock();
    for (let t = T0; t < T0 + 60_000; t += 2_000) {
      c.contact(t);
      expect(c.shouldFence(t + 1_999)).toBe(false);
    }
    expect(c.fenced).toBe(false);
  });

  it('a contact reported late (an older time) does not move the deadline back', () => {
    const c = clock();
    c.contact(T0 + 6_000);
    c.contact(T0 + 2_000);
    expect(c.deadline).toBe(T0 + 6_000 + FENCE_AFTER);
  });
});

describe('FenceClock: recovery', () => {
  it('has nothing to recover from before any fence, contact or not', () => {
    const c = clock();
    expect(c.takeRecovery()).toBeUndefined();
    c.contact(T0 + 5_000);
    expect(c.takeRecovery()).toBeUndefined();
  });

  it('has nothing to recover from while the outage lasts', () => {
    const c = clock({ fencedAt: T0 + FENCE_AFTER });
    expect(c.takeRecovery()).toBeUndefined();
    expect(c.fenced).toBe(true);
  });

  it.each([
    ['before the fence', T0 + FENCE_AFTER - 1],
    ['at the very time of the fence', T0 + FENCE_AFTER],
  ])('a contact dated %s is no recovery', (_what, at) => {
    const c = clock({ fencedAt: T0 + FENCE_AFTER });
    c.contact(at);
    expect(c.takeRecovery()).toBeUndefined();
    expect(c.fenced).toBe(true);
  });

  it('a contact after the fence: returns when the fence happened, once, and clears it', () => {
    const fencedAt = T0 + FENCE_AFTER + 250;
    const c = clock({ fencedAt });
    c.contact(fencedAt + 30_000);
    expect(c.fenced).toBe(true);
    expect(c.takeRecovery()).toBe(fencedAt);
    expect(c.fenced).toBe(false);
    expect(c.takeRecovery()).toBeUndefined();
  });

  it('after a recovery the next outage fences again, and recovers with its own time', () => {
    const c = clock({ fencedAt: T0 + FENCE_AFTER });
    const back = T0 + 40_000;
    c.contact(back);
    expect(c.takeRecovery()).toBe(T0 + FENCE_AFTER);
    expect(c.shouldFence(back + FENCE_AFTER - 1)).toBe(false);
    expect(c.shouldFence(back + FENCE_AFTER)).toBe(true);
    c.contact(back + FENCE_AFTER + 1);
    expect(c.takeRecovery()).toBe(back + FENCE_AFTER);
  });
});

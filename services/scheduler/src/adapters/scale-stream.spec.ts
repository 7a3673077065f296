import { describe, expect, it } from 'vitest';
import { retryDelayMs, SCALE_CONSUMER_CONFIG, SCALE_MAX_DELIVER } from './scale-stream';

describe('the scale consumer', () => {
  it('delivers a request a bounded number of times (max_deliver)', () => {
    expect(SCALE_CONSUMER_CONFIG.max_deliver).toBe(SCALE_MAX_DELIVER);
    expect(SCALE_MAX_DELIVER).toBeGreaterThan(1);
  });

  it('backs off between deliveries: 2 s doubling to at most a minute, about three hours in all', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 50].map(retryDelayMs)).toEqual([2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    let total = 0;
    for (let d = 1; d < SCALE_MAX_DELIVER; d++) total += retryDelayMs(d);
    expect(total / 3_600_000).toBeGreaterThan(2.5);
  });
});

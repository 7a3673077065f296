import { describe, expect, it } from 'vitest';
import { headers, type MsgHdrs } from '@nats-io/nats-core';
import { retryDelayMs, SCALE_CONSUMER_CONFIG, SCALE_MAX_DELIVER, scaleMessageOf } from './scale-stream';

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

describe('scaleMessageOf', () => {
  const data = new TextEncoder().encode('{}');
  it('takes the traceparent from the headers', () => {
    const h = headers();
    h.set('traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
    expect(scaleMessageOf({ seq: 3, subject: 'orangery.scale.e.a', data, headers: h }, { generation: 9 })).toEqual({
      seq: 3,
      generation: 9,
      subject: 'orangery.scale.e.a',
      body: data,
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    });
  });

  it('judges a message whose header block the client cannot decode as one without headers (it used to end the consumer loop)', () => {
    const m = {
      seq: 4,
      subject: 'orangery.scale.e.a',
      data,
      get headers(): MsgHdrs {
        const h = headers();
        h.append('Bad Key', 'v'); // what decoding a received 'Bad Key: v' line throws
        return h;
      },
    };
    expect(() => m.headers).toThrow();
    expect(scaleMessageOf(m, {})).toEqual({ seq: 4, subject: 'orangery.scale.e.a', body: data });
  });
});

import { describe, expect, it } from 'vitest';
import { DiscardPolicy } from '@nats-io/jetstream';
import { EVENTS_STREAM, SCALE_STREAM } from '@orangery/contracts';
import { desiredStreamConfig, streamConfigDrift } from './jetstream';

describe('stream configuration', () => {
  it('bounds both project streams: events drop the oldest, scale requests refuse the newest', () => {
    const events = desiredStreamConfig(EVENTS_STREAM);
    const scale = desiredStreamConfig(SCALE_STREAM);
    expect(events).toMatchObject({ max_bytes: 512 * 1024 * 1024, discard: DiscardPolicy.Old });
    expect(scale).toMatchObject({ max_bytes: 256 * 1024 * 1024, discard: DiscardPolicy.New });
  });

  it.each<[string, object, object]>([
    ['a stream without a bound gets one', { max_bytes: -1, discard: DiscardPolicy.New }, { max_bytes: 1024 }],
    ['a changed bound is applied', { max_bytes: 2048, discard: DiscardPolicy.New }, { max_bytes: 1024 }],
    ['a stream made with discard old gets discard new', { max_bytes: 1024, discard: DiscardPolicy.Old }, { discard: DiscardPolicy.New }],
    ['an equal stream needs nothing', { max_bytes: 1024, discard: DiscardPolicy.New }, {}],
  ])('%s', (_what, current, drift) => {
    const desired = desiredStreamConfig({ name: 'S', subjects: ['s.>'], maxAgeSeconds: 60, duplicateWindowSeconds: 10, maxBytes: 1024, discard: 'new' });
    expect(streamConfigDrift(current, desired)).toEqual(drift);
  });
});

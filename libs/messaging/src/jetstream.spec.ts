import { describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/nats-core';
import { DiscardPolicy } from '@nats-io/jetstream';
import { EVENTS_STREAM, SCALE_STREAM } from '@orangery/contracts';
import { clusterSizeOf, desiredStreamConfig, streamConfigDrift } from './jetstream';

const spec = { name: 'S', subjects: ['a.>', 'b.>'], maxAgeSeconds: 60, duplicateWindowSeconds: 10 };
const withInfo = (info: object | undefined) => ({ info }) as unknown as NatsConnection;

describe('stream settings', () => {
  it.each([
    [1, 1],
    [2, 2],
    [3, 3],
    [5, 3],
    [0, 1],
  ])('a cluster of %i servers gets %i replicas', (size, replicas) => {
    expect(desiredStreamConfig(spec, size).num_replicas).toBe(replicas);
  });

  it('counts the cluster from the servers its members advertise', () => {
    expect(clusterSizeOf(withInfo(undefined))).toBe(1);
    expect(clusterSizeOf(withInfo({ connect_urls: ['x:1', 'y:1'] }))).toBe(1); // no cluster: standalone
    expect(clusterSizeOf(withInfo({ cluster: 'c', connect_urls: ['x:1', 'y:1', 'z:1', 'z:1'] }))).toBe(3);
    expect(clusterSizeOf(withInfo({ cluster: 'c' }))).toBe(1);
  });

  it('finds no drift in a stream that has the settings, whatever the subjects order', () => {
    const desired = desiredStreamConfig(spec, 3);
    expect(streamConfigDrift({ ...desired, subjects: ['b.>', 'a.>'], max_msgs: -1 }, desired)).toEqual([]);
  });

  it('names every setting that differs', () => {
    const desired = desiredStreamConfig(spec, 3);
    expect(streamConfigDrift({ ...desired, num_replicas: 1, max_age: 1, subjects: ['a.>'] }, desired).sort()).toEqual(['max_age', 'num_replicas', 'subjects']);
  });

  it('bounds both project streams: events drop the oldest, scale requests refuse the newest', () => {
    expect(desiredStreamConfig(EVENTS_STREAM, 1)).toMatchObject({ max_bytes: 512 * 1024 * 1024, discard: DiscardPolicy.Old });
    expect(desiredStreamConfig(SCALE_STREAM, 1)).toMatchObject({ max_bytes: 256 * 1024 * 1024, discard: DiscardPolicy.New });
  });

  it.each<[string, object, string[]]>([
    ['a stream without a bound gets one', { max_bytes: -1, discard: DiscardPolicy.New }, ['max_bytes']],
    ['a changed bound is applied', { max_bytes: 2048, discard: DiscardPolicy.New }, ['max_bytes']],
    ['a stream made with discard old gets discard new', { max_bytes: 1024, discard: DiscardPolicy.Old }, ['discard']],
    ['an equal stream needs nothing', { max_bytes: 1024, discard: DiscardPolicy.New }, []],
  ])('%s', (_what, bounds, drift) => {
    const desired = desiredStreamConfig({ ...spec, maxBytes: 1024, discard: 'new' }, 1);
    expect(streamConfigDrift({ ...desired, ...bounds }, desired)).toEqual(drift);
  });
});

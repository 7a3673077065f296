import { describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/nats-core';
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
});

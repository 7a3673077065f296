import { SUBJECTS, type Amounts, type Heartbeat, type ScaleRequestData } from '@orangery/contracts';
import type { ScaleMessage } from '../scale-intake';

/** Small factories for the scheduler's domain tests: heartbeats and scale messages with plain defaults. */

export const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

const zero: Amounts = { cpu: 0, memoryMb: 0, diskMb: 0 };

/** A ready docker host with 8 CPU, 16 GiB and 100 GiB for instances, idle, any VLAN. */
export const heartbeat = (hostId: string, over: Partial<Heartbeat> = {}): Heartbeat => ({
  hostId,
  backend: 'docker',
  capacity: { cpu: 8, memoryMb: 16_384, diskMb: 102_400 },
  total: { cpu: 9, memoryMb: 17_408, diskMb: 102_400 },
  reserved: { cpu: 1, memoryMb: 1024, diskMb: 0 },
  labels: {},
  vlans: 'any',
  time: new Date(0).toISOString(),
  seq: 1,
  allocated: zero,
  usage: zero,
  instances: 0,
  fenced: false,
  ...over,
});

/** prod/web, 2 replicas of 1 CPU / 1 GiB from an image, pool prod-pool, spread host. */
export const scaleData = (over: Partial<ScaleRequestData> = {}): ScaleRequestData => ({
  env: 'prod',
  app: 'web',
  replicas: 2,
  resources: { cpu: 1, memoryMb: 1024 },
  image: 'web:1.0',
  pool: 'prod-pool',
  ...over,
});

/** A CloudEvent body for `data`; `envelope` overrides or adds attributes (undefined removes one). */
export function scaleEvent(data: unknown, envelope: Record<string, unknown> = {}): Record<string, unknown> {
  const ev: Record<string, unknown> = {
    specversion: '1.0',
    id: 'req-1',
    source: 'upstream/test',
    type: 'io.orangery.scale.requested',
    data,
    ...envelope,
  };
  for (const k of Object.keys(ev)) if (ev[k] === undefined) delete ev[k];
  return ev;
}

/** A stored scale message as the stream hands it over, published on the data's own subject. */
export function scaleMessage(
  seq: number,
  data: Partial<ScaleRequestData> = {},
  opts: { id?: string; envelope?: Record<string, unknown>; subject?: string; traceparent?: string; generation?: number } = {},
): ScaleMessage {
  const d = scaleData(data);
  return {
    seq,
    ...(opts.generation === undefined ? {} : { generation: opts.generation }),
    subject: opts.subject ?? SUBJECTS.scale(d.env, d.app),
    body: JSON.stringify(scaleEvent(d, { id: opts.id ?? `req-${seq}`, ...opts.envelope })),
    ...(opts.traceparent ? { traceparent: opts.traceparent } : {}),
  };
}

import type { AppRecord, SlotRecord } from '../model';

/** Records as the journal holds them, for tests that start from a given state. */

/** prod/web, completed at `replicas` slots of 1 CPU / 1 GiB, docker, pool prod-pool (VLAN 100). */
export const appRecord = (over: Partial<AppRecord> = {}): AppRecord => {
  const spec = {
    replicas: 1,
    resources: { cpu: 1, memoryMb: 1024 },
    image: 'web:1.0',
    backends: ['docker' as const],
    pool: 'prod-pool',
    vlan: 100,
    spread: 'host' as const,
  };
  return { env: 'prod', app: 'web', requestId: 'req-1', seq: 1, spec, stable: spec, outcome: 'completed', backend: 'auto', ...over };
};

/** Slot `slot` of prod/web running on `hostId` with 10.0.0.(10+slot). */
export const runningSlot = (slot: number, hostId: string, over: Partial<SlotRecord> = {}): SlotRecord => ({
  id: `prod:web:${slot}`,
  env: 'prod',
  app: 'web',
  slot,
  state: 'running',
  phase: null,
  backend: 'docker',
  hostId,
  ip: `10.0.0.${10 + slot}`,
  mac: `02:00:0a:00:00:${(10 + slot).toString(16).padStart(2, '0')}`,
  spec: { resources: { cpu: 1, memoryMb: 1024 }, image: 'web:1.0', pool: 'prod-pool', vlan: 100 },
  tried: [],
  attempts: 0,
  lastError: null,
  requestId: 'req-1',
  ...over,
});

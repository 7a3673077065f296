import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultLab } from './fixtures/fault-lab';

// Failure semantics v1.1 (CONTRACT.md), the control plane's own outages: NATS down, the
// scheduler and ipam killed, a wall-clock step on the scheduler. Each must change nothing:
// no instance stopped, restarted, re-created or moved (engines and instances.list agree with
// before), no instance IP silent on the wire for more than 3 s, never two replies to one
// ARP request (the watcher on the fabric asks every instance IP every 200 ms throughout).
// 2 docker servers, 4 instances (web x2, api x2), agents heartbeat 1 s / fenceAfter 4 s,
// scheduler lostAfter 3 s / margin 2 s; each fault is followed by fenceAfter + margin + 2 s
// of watching, so a late reaction to it is seen too.
let fl: FaultLab;

beforeAll(async () => {
  fl = await FaultLab.start({ label: 'faults-cp', faketimeScheduler: true });
}, 300_000);

afterAll(async () => {
  await fl?.close();
}, 120_000);

describe('control-plane faults: nothing stops, nothing moves, the wire never goes silent', () => {
  it('NATS down 20 s (stopped, then started on the same port)', async () => {
    const o = await fl.observe('NATS down 20 s', () => fl.natsDown(20));
    expect(o.violations, o.details).toEqual([]);
  }, 150_000);

  it('scheduler and ipam killed (SIGKILL) for 20 s, then restarted', async () => {
    const o = await fl.observe('scheduler + ipam killed 20 s', () => fl.controlPlaneKilled(20));
    expect(o.violations, o.details).toEqual([]);
  }, 150_000);

  it.skipIf(!FaultLab.faketimeAvailable)(
    "the scheduler's wall clock steps +15 s (libfaketime; monotonic clocks untouched)",
    async () => {
      // skipped (with this name in the report) when Debian's faketime package is missing and cannot be installed
      expect(readFileSync(`/proc/${fl.scheduler!.pid}/maps`, 'utf8'), 'the scheduler runs with libfaketime loaded').toContain('libfaketime');
      const o = await fl.observe('scheduler wall clock +15 s', async () => {
        await fl.stepSchedulerClock(15);
        await new Promise((r) => setTimeout(r, 20_000));
      });
      expect(o.violations, o.details).toEqual([]);
    },
    150_000,
  );
});

import { describe, expect, it } from 'vitest';
import { heartbeatOf, hostFactsOf, UsageMeter } from './host-report';
import { FakeEngine } from './testing/fake-engine';

describe('UsageMeter: the heartbeat never waits for the engine', () => {
  it('measures allocation, count and CPU between refreshes on the monotonic clock', async () => {
    const engine = new FakeEngine();
    engine.seed({ instanceId: 'prod:web:0', ip: '198.18.0.10', labels: { 'io.orangery.cpu': '2', 'io.orangery.memory-mb': '512' } });
    let now = 1_000;
    let nanos = 0;
    engine.usage = async () => ({ memoryBytes: 256 * 1024 * 1024, cpuNanos: nanos });
    const meter = new UsageMeter(engine, { now: () => now }, 100);
    await meter.refresh(7);
    nanos += 1_500_000_000; // 1.5 CPU-seconds in one second
    now += 1_000;
    await meter.refresh(7);
    expect(meter.latest.instances).toBe(1);
    expect(meter.latest.allocated.cpu).toBe(2);
    expect(meter.latest.usage).toEqual({ cpu: 1.5, memoryMb: 256, diskMb: 7 });
  });

  it('a hung engine: refresh gives up after its timeout and the last figures stand', async () => {
    const engine = new FakeEngine();
    engine.seed({ instanceId: 'prod:web:0', ip: '198.18.0.10', labels: { 'io.orangery.cpu': '1' } });
    const meter = new UsageMeter(engine, { now: () => 0 }, 50);
    await meter.refresh(3);
    const before = meter.latest;
    engine.listManaged = () => new Promise(() => undefined);
    const t0 = performance.now();
    await expect(meter.refresh(3)).rejects.toThrow(/did not answer within 50 ms/);
    expect(performance.now() - t0).toBeLessThan(1_000);
    expect(meter.latest.allocated).toEqual(before.allocated);
    expect(meter.latest.instances).toBe(1);
  });

  it("reads the containers' stats every statsEveryMs while nothing changes, and at once when the containers do (usage and allocated of the same containers)", async () => {
    const engine = new FakeEngine();
    engine.seed({ instanceId: 'prod:web:0', ip: '198.18.0.10', labels: { 'io.orangery.cpu': '1', 'io.orangery.memory-mb': '64' } });
    let now = 0;
    let statsCalls = 0;
    engine.usage = async () => {
      statsCalls++;
      return { memoryBytes: 64 * 1024 * 1024, cpuNanos: 0 };
    };
    const meter = new UsageMeter(engine, { now: () => now }, 100, 10_000);
    await meter.refresh(0);
    expect(statsCalls).toBe(1);
    // the next heartbeats, 2 s apart, nothing changed: no stats call, the same figures
    for (let k = 0; k < 4; k++) {
      now += 2_000;
      await meter.refresh(0);
    }
    expect(statsCalls).toBe(1);
    expect(meter.latest).toMatchObject({ instances: 1, allocated: { cpu: 1 }, usage: { memoryMb: 64 } });
    // 10 s after the last reading: read again
    now += 2_000;
    await meter.refresh(0);
    expect(statsCalls).toBe(2);
    // a new instance: read at once, so usage and allocated count the same containers
    now += 2_000;
    engine.seed({ instanceId: 'prod:web:1', ip: '198.18.0.11', labels: { 'io.orangery.cpu': '2', 'io.orangery.memory-mb': '64' } });
    await meter.refresh(0);
    expect(statsCalls).toBe(4);
    expect(meter.latest).toMatchObject({ instances: 2, allocated: { cpu: 3 }, usage: { memoryMb: 128 } });
    // one removed: at once too
    now += 2_000;
    engine.containers.delete([...engine.containers.keys()][0]!);
    await meter.refresh(0);
    expect(statsCalls).toBe(5);
    expect(meter.latest).toMatchObject({ instances: 1, allocated: { cpu: 2 }, usage: { memoryMb: 64 } });
  });

  it('the heartbeat carries fenced and isolated', () => {
    const facts = hostFactsOf({ hostId: 'srv-1', reservedCpus: 1, reservedMemoryMb: 1024, labels: {} }, { cpus: 4, memoryMb: 8192, diskMb: 100, version: 'x' });
    const usage = { allocated: { cpu: 0, memoryMb: 0, diskMb: 0 }, instances: 0, usage: { cpu: 0, memoryMb: 0, diskMb: 0 } };
    const hb = heartbeatOf(facts, 3, usage, { fenced: false, isolated: true }, new Date('2026-12-01T00:00:00Z'));
    expect(hb).toMatchObject({ hostId: 'srv-1', seq: 3, fenced: false, isolated: true, capacity: { cpu: 3, memoryMb: 7168 } });
  });
});

import { describe, expect, it } from 'vitest';
import { LABEL } from './container-spec';
import { HostMonitor } from './host-monitor';
import { hostFactsOf, UsageMeter } from './host-report';
import { silentDomainLog } from './testing/logs';
import { FakeEngine, RecordingEvents } from './testing/fake-engine';

const MB = 1024 * 1024;

function setup(diskPolicy: 'report' | 'stop' = 'report') {
  const engine = new FakeEngine();
  const events = new RecordingEvents();
  const stops: string[] = [];
  const gone: ReadonlySet<string>[] = [];
  const fence = { fenced: false, isolated: false };
  let wall = Date.parse('2026-03-01T10:00:00Z');
  const usage = new UsageMeter(engine, { now: () => 0 }, 100);
  const facts = hostFactsOf(
    { hostId: 'srv-1', reservedCpus: 1, reservedMemoryMb: 1024, labels: {} },
    { cpus: 4, memoryMb: 8192, diskMb: 100_000, version: 'x' },
  );
  const monitor = new HostMonitor(
    {
      engine,
      agent: { stop: async ({ instanceId }) => (stops.push(instanceId), undefined as never), forgetGone: (present) => void gone.push(present) },
      usage,
      fence,
      events,
      wallTime: () => new Date(wall),
      log: silentDomainLog,
    },
    facts,
    { diskPolicy },
  );
  const tick = (ms: number) => (wall += ms);
  return { engine, events, stops, gone, fence, monitor, tick };
}

const withDisk = (quotaMb: number) => ({ [LABEL.diskMb]: String(quotaMb) });

describe('HostMonitor', () => {
  it('forgets the disk level of an instance whose container is gone, and tells the agent which containers exist', async () => {
    const w = setup();
    const ids = Array.from({ length: 20 }, (_, i) =>
      w.engine.seed({ instanceId: `prod:web:${i}`, ip: `198.18.0.${10 + i}`, labels: withDisk(100), sizeRw: 85 * MB }),
    );
    await w.monitor.checkDisks();
    expect(w.monitor.trackedDiskLevels()).toBe(20);
    for (const id of ids.slice(1)) w.engine.containers.delete(id);
    await w.monitor.checkDisks();
    expect(w.monitor.trackedDiskLevels()).toBe(1);
    expect([...w.gone.at(-1)!]).toEqual([ids[0]]);
  });

  it('numbers heartbeats in order, stamps them with the injected wall time, and reports the fence', () => {
    const w = setup();
    const first = w.monitor.heartbeat();
    w.tick(5_000);
    w.fence.isolated = true;
    const second = w.monitor.heartbeat();
    expect([first.seq, second.seq]).toEqual([0, 1]);
    expect([first.time, second.time]).toEqual(['2026-03-01T10:00:00.000Z', '2026-03-01T10:00:05.000Z']);
    expect(second).toMatchObject({ hostId: 'srv-1', fenced: false, isolated: true, capacity: { cpu: 3 } });
  });

  it('a disk level is reported once when it changes, not on every check', async () => {
    const w = setup();
    const id = w.engine.seed({ instanceId: 'prod:web:0', ip: '198.18.0.10', labels: withDisk(100), sizeRw: 85 * MB });
    await w.monitor.checkDisks();
    await w.monitor.checkDisks();
    w.engine.containers.get(id)!.sizeRw = 120 * MB;
    await w.monitor.checkDisks();
    expect(w.events.instances.map((e) => [e.what, e.data['usedMb'], e.data['quotaMb']])).toEqual([
      ['disk_warning', 85, 100],
      ['disk_exceeded', 120, 100],
    ]);
    expect(w.stops).toEqual([]);
  });

  it('under the stop policy an exceeded quota stops the instance; a stopped one is not judged', async () => {
    const w = setup('stop');
    w.engine.seed({ instanceId: 'prod:web:0', ip: '198.18.0.10', labels: withDisk(100), sizeRw: 150 * MB });
    w.engine.seed({ instanceId: 'prod:web:1', ip: '198.18.0.11', labels: withDisk(100), sizeRw: 150 * MB, engineState: 'exited', exitCode: 0 });
    await w.monitor.checkDisks();
    expect(w.stops).toEqual(['prod:web:0']);
    expect(w.events.instances.map((e) => [e.what, e.instanceId])).toEqual([['disk_exceeded', 'prod:web:0']]);
  });

  it('the heartbeat carries the disk use the last check measured, once the usage was measured again', async () => {
    const w = setup();
    w.engine.seed({ instanceId: 'prod:web:0', ip: '198.18.0.10', sizeRw: 300 * MB });
    await w.monitor.checkDisks();
    w.monitor.refreshUsage();
    w.monitor.refreshUsage(); // one measurement at a time
    await new Promise((r) => setTimeout(r, 10));
    expect(w.monitor.heartbeat().usage.diskMb).toBe(300);
  });
});

import type { Amounts, Heartbeat, HostFacts } from '@orangery/contracts';
import { allocatedOf } from './agent.service';
import type { Engine, EngineFacts, MonotonicClock } from './ports';
import { withTimeout } from './timeouts';

export interface HostFactsSettings {
  hostId: string;
  reservedCpus: number;
  reservedMemoryMb: number;
  labels: Record<string, string>;
}

/** What the host offers: the engine's totals less the host's reservations (one core always stays usable). */
export function hostFactsOf(s: HostFactsSettings, f: EngineFacts): HostFacts {
  const reservedCpus = Math.min(s.reservedCpus, f.cpus - 1);
  const reserved = { cpu: reservedCpus, memoryMb: s.reservedMemoryMb, diskMb: 0 };
  return {
    hostId: s.hostId,
    backend: 'docker',
    total: { cpu: f.cpus, memoryMb: f.memoryMb, diskMb: f.diskMb },
    reserved,
    capacity: {
      cpu: f.cpus - reserved.cpu,
      memoryMb: Math.max(0, f.memoryMb - reserved.memoryMb),
      diskMb: f.diskMb,
    },
    labels: s.labels,
    vlans: 'any',
  };
}

export interface HostUsage {
  allocated: Amounts;
  instances: number;
  usage: Amounts;
}

/**
 * The heartbeat's numbers, measured apart from the heartbeat: a heartbeat publishes the
 * latest measurement at once and never waits for the engine. Each engine call has a
 * timeout; when the engine does not answer, the last known figures stand.
 */
export class UsageMeter {
  private current: HostUsage = { allocated: { cpu: 0, memoryMb: 0, diskMb: 0 }, instances: 0, usage: { cpu: 0, memoryMb: 0, diskMb: 0 } };
  private readonly lastCpu = new Map<string, { nanos: number; at: number }>();

  constructor(
    private readonly engine: Pick<Engine, 'listManaged' | 'usage'>,
    private readonly clock: MonotonicClock,
    private readonly timeoutMs: number,
    /**
     * ORANGERY_USAGE_SECONDS x 1000: how often the containers' CPU and memory are read (one
     * `stats` call per running container). Every refresh lists the containers; the stats
     * are read when this long has passed since the last whole reading, or at once when the
     * containers (or their states) differ from that reading's (0: every refresh). 50 containers read every 2 s heartbeat was 25 engine
     * calls a second, most of an idle agent's CPU (issue 17).
     */
    private readonly statsEveryMs = 0,
  ) {}

  /** when the last whole stats reading was taken (monotonic ms), and of which containers */
  private statsAt: number | undefined;
  private statsOf = '';

  get latest(): HostUsage {
    return this.current;
  }

  /** Measures again; throws (keeping the last figures) when the engine does not answer in time. */
  async refresh(diskUsedMb: number): Promise<void> {
    this.current = { ...this.current, usage: { ...this.current.usage, diskMb: diskUsedMb } };
    const all = await withTimeout(this.engine.listManaged(), this.timeoutMs, 'the engine (list containers)');
    const running = all.filter((c) => c.engineState === 'running');
    // `usage` and `allocated` must describe the same containers (the scheduler takes their
    // difference as the host's foreign load): any change to the set (a container created,
    // started, stopped, removed) takes a new reading at once.
    const set = all
      .map((c) => `${c.id}:${c.engineState}`)
      .sort()
      .join(',');
    const statsDue = this.statsAt === undefined || set !== this.statsOf || this.clock.now() - this.statsAt >= this.statsEveryMs;
    if (!statsDue) {
      this.current = { ...this.current, allocated: allocatedOf(all), instances: all.length };
      return;
    }
    let memory = 0;
    let cpu = 0;
    let complete = true;
    await Promise.all(
      running.map(async (c) => {
        try {
          const u = await withTimeout(this.engine.usage(c.id), this.timeoutMs, 'the engine (stats)');
          const now = this.clock.now();
          memory += u.memoryBytes;
          const prev = this.lastCpu.get(c.id);
          if (prev && now > prev.at) cpu += (u.cpuNanos - prev.nanos) / ((now - prev.at) * 1e6);
          this.lastCpu.set(c.id, { nanos: u.cpuNanos, at: now });
        } catch {
          complete = false; // gone meanwhile, or the engine is slow: counted next time
        }
      }),
    );
    for (const id of this.lastCpu.keys()) if (!running.some((c) => c.id === id)) this.lastCpu.delete(id);
    const usage =
      complete || running.length === 0
        ? { cpu: Math.max(0, Math.round(cpu * 100) / 100), memoryMb: Math.round(memory / (1024 * 1024)), diskMb: diskUsedMb }
        : this.current.usage; // a partial sum would under-report: keep the last whole one
    if (complete) {
      this.statsAt = this.clock.now();
      this.statsOf = set;
    }
    this.current = { allocated: allocatedOf(all), instances: all.length, usage };
  }
}

/** The heartbeat (CONTRACT.md "Heartbeat", v1.1: `isolated`). */
export function heartbeatOf(facts: HostFacts, seq: number, usage: HostUsage, fence: { fenced: boolean; isolated: boolean }, time: Date): Heartbeat {
  return {
    ...facts,
    time: time.toISOString(),
    seq,
    allocated: usage.allocated,
    usage: usage.usage,
    instances: usage.instances,
    fenced: fence.fenced,
    isolated: fence.isolated,
  };
}

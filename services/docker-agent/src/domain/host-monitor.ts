import type { Heartbeat, HostFacts } from '@orangery/contracts';
import type { AgentService } from './agent.service';
import { diskLevel, LABEL } from './container-spec';
import { heartbeatOf, type UsageMeter } from './host-report';
import type { DomainLog, Engine, EventSink } from './ports';

export interface HostMonitorDeps {
  engine: Pick<Engine, 'listManaged'>;
  agent: Pick<AgentService, 'stop' | 'forgetGone'>;
  usage: Pick<UsageMeter, 'latest' | 'refresh'>;
  /** the self-fence's state, as the heartbeat reports it */
  fence: { readonly fenced: boolean; readonly isolated: boolean };
  events: EventSink;
  /** wall-clock time, for the heartbeat's `time` only */
  wallTime: () => Date;
  log: DomainLog;
}

/**
 * The host's own reports between commands: the heartbeat (the latest measurement, never
 * waiting for the engine), the usage measurement beside it, and the disk watcher (overlayfs
 * has no per-container quota: the writable layers are measured and acted on). The runtime
 * calls these on its timers and publishes what `heartbeat` returns.
 */
export class HostMonitor {
  private seq = 0;
  private diskUsedMb = 0;
  private usageRefresh: Promise<void> | undefined;
  private readonly diskLevels = new Map<string, string>();

  /** Instances whose disk level is remembered (bounded by the containers that exist). */
  trackedDiskLevels(): number {
    return this.diskLevels.size;
  }

  constructor(
    private readonly deps: HostMonitorDeps,
    /** what the host offers (hostFactsOf), repeated in every heartbeat */
    readonly facts: HostFacts,
    private readonly settings: { diskPolicy: 'report' | 'stop' },
  ) {}

  /** The next heartbeat, from the latest measurement (CONTRACT.md "Heartbeat"). */
  heartbeat(): Heartbeat {
    const { fenced, isolated } = this.deps.fence;
    return heartbeatOf(this.facts, this.seq++, this.deps.usage.latest, { fenced, isolated }, this.deps.wallTime());
  }

  /** Starts a measurement unless one is under way; a failed one keeps the last figures. */
  refreshUsage(): void {
    if (this.usageRefresh) return;
    this.usageRefresh = this.deps.usage
      .refresh(this.diskUsedMb)
      .catch((err: unknown) => this.deps.log.debug({ err: String(err) }, 'usage not measured; the heartbeat keeps the last figures'))
      .finally(() => (this.usageRefresh = undefined));
  }

  /**
   * Measures every writable layer: the host's disk use for the heartbeat, and per running
   * instance a level against its quota. A change of level is reported once (warning,
   * exceeded); `exceeded` under the `stop` policy stops the instance.
   */
  async checkDisks(): Promise<void> {
    const all = await this.deps.engine.listManaged(true);
    // the full listing: what is kept per instance or container follows what exists
    const instances = new Set(all.map((c) => c.labels[LABEL.instanceId] ?? c.id));
    for (const id of this.diskLevels.keys()) if (!instances.has(id)) this.diskLevels.delete(id);
    this.deps.agent.forgetGone(new Set(all.map((c) => c.id)));
    let used = 0;
    for (const c of all) {
      used += c.sizeRw ?? 0;
      const instanceId = c.labels[LABEL.instanceId] ?? c.id;
      const quota = c.labels[LABEL.diskMb] ? Number(c.labels[LABEL.diskMb]) : undefined;
      const level = c.engineState === 'running' ? diskLevel(c.sizeRw ?? 0, quota) : 'ok';
      const before = this.diskLevels.get(instanceId) ?? 'ok';
      this.diskLevels.set(instanceId, level);
      if (level === before || level === 'ok') continue;
      const data = { usedMb: Math.round((c.sizeRw ?? 0) / (1024 * 1024)), quotaMb: quota, policy: this.settings.diskPolicy };
      if (level === 'warning') {
        this.deps.events.instance({ what: 'disk_warning', instanceId, data });
      } else {
        this.deps.events.instance({ what: 'disk_exceeded', instanceId, data });
        this.deps.log.warn({ instanceId, ...data }, 'disk quota exceeded');
        if (this.settings.diskPolicy === 'stop') await this.deps.agent.stop({ instanceId }).catch(() => undefined);
      }
    }
    this.diskUsedMb = Math.round(used / (1024 * 1024));
  }
}

import type { AgentService } from './agent.service';
import { IsolationMonitor, type IsolationCause, type IsolationStep } from './isolation';
import type { ArpProbe, Engine, EventSink, IsolationTarget, LinkState, MonotonicClock } from './ports';
import { withTimeout } from './timeouts';

export interface SelfFenceSettings {
  uplink: string;
  fenceAfterMs: number;
  /** how often check() runs (the monitor's sample gap allowance is derived from it) */
  checkIntervalMs: number;
  /** engine calls (networks) and sysfs reads give up after this */
  engineTimeoutMs: number;
  /** one ARP probe round must end within this (the probe's own window plus slack) */
  probeTimeoutMs: number;
  /** ORANGERY_ISOLATION_ADDRESSES; undefined: the gateways of the engine's managed networks */
  addresses: readonly IsolationTarget[] | undefined;
  /** grace of the fence's stops (seconds, then SIGKILL) */
  stopGraceSeconds: number;
}

export interface FenceLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

export interface SelfFenceDeps {
  agent: Pick<AgentService, 'stopAll' | 'fenced'>;
  engine: Pick<Engine, 'listNetworks'>;
  probe: ArpProbe;
  link: Pick<LinkState, 'carrier'>;
  events: EventSink;
  clock: MonotonicClock;
  /** wall-clock time for event payloads only, never for decisions */
  wallTime: () => Date;
  log: FenceLog;
  /** the network answers again after a fence: re-register (host.registered, reregistered: true) */
  onRecovered: (fencedAt: string) => void;
}

/** Gateways are read from the engine at most this often (and reused when it does not answer). */
const TARGETS_REFRESH_MS = 5_000;
/** While fenced, instances a stop could not reach are tried again this often. */
const FENCE_RETRY_MS = 5_000;

/**
 * The agent's self-fence: each check() probes the isolation addresses (ARP, on their VLAN's
 * interface) and reads the uplink's carrier, feeds the IsolationMonitor, and acts on its
 * verdict: stop every instance (host.isolated, instance.stopped) or, when the network
 * answers again, clear the fence and re-register. Instances stopped by a fence stay stopped.
 *
 * Nothing here waits on NATS, and every outside call is bounded, so a check ends in about
 * a probe window whatever the engine or the control plane do. The fence's stops run in the
 * background: the checks (and recovery) go on meanwhile.
 */
export class SelfFence {
  private readonly monitor: IsolationMonitor;
  private targets: IsolationTarget[] = [];
  private targetsReadAt: number | undefined;
  private targetsRefresh: Promise<void> | undefined;
  private readonly probeErrors = new Set<string>();
  private fencedAtWall: string | undefined;
  private fenceWork: Promise<void> | undefined;
  private retryAt: number | undefined;

  constructor(
    private readonly deps: SelfFenceDeps,
    private readonly settings: SelfFenceSettings,
  ) {
    this.monitor = new IsolationMonitor({
      fenceAfterMs: settings.fenceAfterMs,
      maxSampleGapMs: Math.max(3_000, 3 * settings.checkIntervalMs),
    });
    if (settings.addresses) this.targets = [...settings.addresses];
  }

  get isolated(): boolean {
    return this.monitor.isolated;
  }

  get fenced(): boolean {
    return this.monitor.fenced;
  }

  /** The addresses probed in the last check. */
  get isolationAddresses(): IsolationTarget[] {
    return [...this.targets];
  }

  /** One sample of the wire and what follows from it. */
  async check(): Promise<IsolationStep> {
    await this.refreshTargets();
    const [carrier, answers] = await Promise.all([
      withTimeout(this.deps.link.carrier(this.settings.uplink), this.settings.engineTimeoutMs, 'sysfs').catch(() => undefined),
      this.probeAll(this.targets),
    ]);
    const now = this.deps.clock.now();
    const wasIsolated = this.monitor.isolated;
    const step = this.monitor.observe({ carrier, answers }, now);
    this.noteArming(now);
    if (this.monitor.isolated && !wasIsolated && !this.monitor.fenced) {
      this.deps.log.warn(
        { cause: this.monitor.cause, uplink: this.settings.uplink, addresses: [...answers.keys()], fenceAfterMs: this.settings.fenceAfterMs },
        'instance network isolated; fencing if it lasts',
      );
    } else if (!this.monitor.isolated && wasIsolated && step.kind !== 'recover') {
      this.deps.log.info({}, 'instance network answers again before the fence');
    }
    if (step.kind === 'fence') this.startFence(step.cause, step.addresses, step.isolatedForMs);
    else if (step.kind === 'recover') this.recover(step.fencedForMs);
    else if (this.monitor.fenced && this.retryAt !== undefined && now >= this.retryAt && !this.fenceWork) this.retryStops();
    return step;
  }

  /** For shutdown and tests: the fence's stops in flight, if any. */
  async settled(): Promise<void> {
    await this.fenceWork;
  }

  private async refreshTargets(): Promise<void> {
    if (this.settings.addresses) return;
    const now = this.deps.clock.now();
    if (this.targetsReadAt !== undefined && now - this.targetsReadAt < TARGETS_REFRESH_MS) return;
    if (!this.targetsRefresh) {
      this.targetsRefresh = withTimeout(this.deps.engine.listNetworks(), this.settings.engineTimeoutMs, 'the engine (list networks)')
        .then((networks) => {
          const seen = new Map<string, IsolationTarget>();
          for (const n of networks) if (n.gateway) seen.set(`${n.gateway}@${n.parent}`, { ip: n.gateway, iface: n.parent });
          this.targets = [...seen.values()];
        })
        .catch(() => undefined) // the engine did not answer: the last list stands
        .finally(() => {
          this.targetsReadAt = this.deps.clock.now();
          this.targetsRefresh = undefined;
        });
    }
    // Only the first read is waited for; later ones land in a later check.
    if (this.targetsReadAt === undefined) await this.targetsRefresh;
  }

  private async probeAll(targets: readonly IsolationTarget[]): Promise<Map<string, boolean>> {
    const answers = new Map<string, boolean>();
    await Promise.all(
      targets.map(async (t) => {
        try {
          const answered = await withTimeout(this.deps.probe.inUse(t.iface, t.ip), this.settings.probeTimeoutMs, `ARP probe of ${t.ip}`);
          // Several networks may share a gateway address on different VLANs: any answer counts.
          answers.set(t.ip, (answers.get(t.ip) ?? false) || answered);
          this.probeErrors.delete(`${t.ip}@${t.iface}`);
        } catch (err) {
          const key = `${t.ip}@${t.iface}`;
          if (!this.probeErrors.has(key)) {
            this.probeErrors.add(key);
            this.deps.log.warn({ ip: t.ip, iface: t.iface, err: String(err) }, 'isolation probe failed; it counts as no evidence until it works');
          }
        }
      }),
    );
    return answers;
  }

  private noteArming(now: number): void {
    const silent = this.monitor.takeNeverAnswered(now);
    if (silent.length === 0) return;
    this.deps.log.warn(
      { addresses: silent, armed: this.monitor.armed },
      this.monitor.armed
        ? 'isolation addresses that never answered ARP are ignored until they do'
        : 'no isolation address has ever answered ARP: only loss of carrier on the uplink can fence this host until one does (check ORANGERY_ISOLATION_ADDRESSES or the gateways)',
    );
  }

  private startFence(cause: IsolationCause, addresses: string[], isolatedForMs: number): void {
    this.fencedAtWall = this.deps.wallTime().toISOString();
    const at = this.fencedAtWall;
    this.deps.log.error(
      { cause, addresses, isolatedForMs, uplink: this.settings.uplink },
      cause === 'no-carrier'
        ? 'uplink has no carrier for fenceAfter: self-fencing, stopping every instance'
        : 'no isolation address answered ARP for fenceAfter: self-fencing, stopping every instance',
    );
    const reason = cause === 'no-carrier' ? `no carrier on ${this.settings.uplink}` : 'no isolation address answered ARP';
    this.fenceWork = this.stopEverything()
      .then(({ stopped, stillRunning, error }) => {
        this.deps.events.host('isolated', {
          at,
          isolationAddresses: addresses,
          stopped,
          ...(stillRunning.length > 0 || error ? { stillRunning } : {}),
          reason,
        });
        this.deps.log.error({ stopped, stillRunning, ...(error ? { err: error } : {}) }, 'self-fenced');
      })
      .finally(() => (this.fenceWork = undefined));
  }

  private retryStops(): void {
    this.fenceWork = this.stopEverything()
      .then(({ stopped, stillRunning, error }) => {
        if (stopped.length > 0 || stillRunning.length > 0 || error) {
          this.deps.log.warn({ stopped, stillRunning, ...(error ? { err: error } : {}) }, 'fenced: stopped what the fence could not stop before');
        }
      })
      .finally(() => (this.fenceWork = undefined));
  }

  /** stopAll, with instance.stopped per stop; a failure schedules another try while fenced. */
  private async stopEverything(): Promise<{ stopped: string[]; stillRunning: string[]; error?: string }> {
    let result: { stopped: string[]; stillRunning: string[]; error?: string };
    try {
      result = await this.deps.agent.stopAll(this.settings.stopGraceSeconds);
    } catch (err) {
      this.deps.agent.fenced = true; // stopAll sets it first; kept explicit: nothing may start now
      result = { stopped: [], stillRunning: [], error: String(err) };
    }
    for (const instanceId of result.stopped) {
      this.deps.events.instance({ what: 'stopped', instanceId, data: { reason: 'self-fenced: instance network isolated' } });
    }
    const failed = result.stillRunning.length > 0 || result.error !== undefined;
    this.retryAt = failed && this.monitor.fenced ? this.deps.clock.now() + FENCE_RETRY_MS : undefined;
    return result;
  }

  private recover(fencedForMs: number): void {
    const fencedAt = this.fencedAtWall ?? this.deps.wallTime().toISOString();
    this.fencedAtWall = undefined;
    this.retryAt = undefined;
    this.deps.agent.fenced = false;
    this.deps.log.warn({ fencedAt, fencedForMs }, 'instance network answers again after a self-fence; re-registering (the instances stay stopped)');
    this.deps.onRecovered(fencedAt);
  }
}

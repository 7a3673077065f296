import { context, type Context } from '@opentelemetry/api';
import { OrangeryError, type AgentInstance, type Amounts, type ContainerCreateCommand, type StopInstanceCommand } from '@orangery/contracts';
import { cidrOf } from '@orangery/netaddr';
import { LABEL, memoryLimitMb, networkName, parentInterface, planContainer, specHash } from './container-spec';
import { stateOf, type ArpProbe, type Engine, type EventSink, type ManagedContainer } from './ports';
import { withTimeout } from './timeouts';

const DEFAULT_ENGINE_TIMEOUT_MS = 2_000;
/** start commands whose engine `start` event is awaited, at most (their trace contexts) */
const MAX_START_TRACES = 1_000;

export interface AgentSettings {
  hostId: string;
  uplink: string;
  reservedCpus: number;
  totalCpus: number;
  restartMaxRetries: number;
  stopTimeoutSeconds: number;
  /** ORANGERY_PIDS_LIMIT (default 4096) */
  pidsLimit?: number;
  /** engine calls on the self-fence path give up after this (default 2000 ms; a stop gets its grace on top) */
  engineTimeoutMs?: number;
}

/**
 * The docker-agent's commands. Every one is idempotent: the engine's labels are the only
 * state, so the same command twice has one effect, and a restarted agent knows everything.
 * Commands for one instance run one at a time (a per-instance queue); different instances
 * proceed in parallel.
 */
export class AgentService {
  private readonly queues = new Map<string, Promise<unknown>>();
  /** containers we are stopping on purpose: their exit is `stopped`, not `failed` */
  readonly expectedStops = new Set<string>();
  private readonly restarts = new Map<string, number>();
  /**
   * The trace context of the command that started a container, until the engine's `start`
   * event for it (InstanceEvents) publishes instance.running in that trace; bounded.
   */
  private readonly startTraces = new Map<string, Context>();
  /** container ids missing from the last forgetGone listing (forgotten if missing again) */
  private missingOnce = new Set<string>();

  constructor(
    private readonly engine: Engine,
    private readonly probe: ArpProbe,
    private readonly events: EventSink,
    private readonly settings: AgentSettings,
  ) {}

  private serialize<T>(instanceId: string, work: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(instanceId) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(work);
    this.queues.set(instanceId, next);
    void next
      .finally(() => {
        if (this.queues.get(instanceId) === next) this.queues.delete(instanceId);
      })
      .catch(() => undefined);
    return next;
  }

  create(cmd: ContainerCreateCommand): Promise<AgentInstance> {
    return this.serialize(cmd.instanceId, async () => {
      const wantStart = cmd.start ?? true;
      const existing = await this.engine.findByInstance(cmd.instanceId);
      if (existing) {
        if (existing.labels[LABEL.specHash] !== specHash(cmd)) {
          throw new OrangeryError('INSTANCE_CONFLICT', `${cmd.instanceId} already exists on ${this.settings.hostId} with another spec; remove it first`, {
            instanceId: cmd.instanceId,
            ip: existing.labels[LABEL.ip],
          });
        }
        if (wantStart && stateOf(existing) !== 'running') await this.startChecked(existing);
        return this.describe((await this.engine.findByInstance(cmd.instanceId)) ?? existing);
      }
      if (cmd.resources.cpu > this.settings.totalCpus - this.settings.reservedCpus) {
        throw new OrangeryError(
          'INSUFFICIENT_CAPACITY',
          `asks ${cmd.resources.cpu} CPUs; ${this.settings.hostId} offers ${this.settings.totalCpus - this.settings.reservedCpus} to instances`,
          {
            cpu: cmd.resources.cpu,
            available: this.settings.totalCpus - this.settings.reservedCpus,
          },
        );
      }
      await this.refuseDuplicateIp(cmd.instanceId, cmd.network.ip);
      if (!(await this.engine.hasImage(cmd.image))) {
        const reason = `image ${cmd.image} is not on the engine of ${this.settings.hostId} (agents pull nothing)`;
        this.events.instance({ what: 'failed', instanceId: cmd.instanceId, data: { reason, code: 'IMAGE_NOT_FOUND', ip: cmd.network.ip } });
        throw new OrangeryError('IMAGE_NOT_FOUND', reason, { image: cmd.image });
      }
      const subnet = cidrOf(cmd.network.ip, cmd.network.prefixLength);
      const network = networkName(cmd.network, subnet);
      // Before the probe: the network's creation is what makes <uplink>.<vlan> exist.
      await this.engine.ensureNetwork({
        name: network,
        parent: parentInterface(this.settings.uplink, cmd.network.vlan),
        subnet,
        gateway: cmd.network.gateway,
      });
      // The wire probe takes seconds of silence; it runs while the container is being
      // created, and the start waits for its verdict.
      const probe = wantStart ? this.probeWire(cmd.instanceId, cmd.network.ip, cmd.network.vlan) : undefined;
      probe?.catch(() => undefined);
      const plan = planContainer(cmd, {
        totalCpus: this.settings.totalCpus,
        reservedCpus: this.settings.reservedCpus,
        pidsLimit: this.settings.pidsLimit,
      });
      const id = await this.engine.create(plan, network);
      // What was just created, we know: no read of it (issue 17: every engine call is on the start path).
      const created: ManagedContainer = {
        id,
        image: plan.image,
        labels: plan.labels,
        engineState: 'created',
        exitCode: undefined,
        oomKilled: false,
      };
      if (probe) {
        try {
          await probe;
          await this.refuseDuplicateIp(cmd.instanceId, cmd.network.ip);
          this.refuseWhileFenced(cmd.instanceId);
          this.rememberStartTrace(id);
          await this.engine.start(id);
        } catch (e) {
          // Nothing half-done: a container that could not start is not left behind.
          await this.engine.remove(id).catch(() => undefined);
          throw e;
        }
      }
      return this.describe((await this.engine.findByInstance(cmd.instanceId)) ?? created);
    });
  }

  start(instanceId: string): Promise<AgentInstance> {
    return this.serialize(instanceId, async () => {
      const c = await this.require(instanceId);
      if (stateOf(c) !== 'running') await this.startChecked(c);
      this.restarts.delete(c.id);
      return this.describe((await this.engine.findByInstance(instanceId)) ?? c);
    });
  }

  stop(cmd: StopInstanceCommand): Promise<AgentInstance> {
    return this.serialize(cmd.instanceId, async () => {
      const c = await this.require(cmd.instanceId);
      if (stateOf(c) === 'running') {
        this.expectedStops.add(c.id);
        await this.engine.stop(c.id, cmd.timeoutSeconds ?? this.settings.stopTimeoutSeconds);
      }
      this.restarts.delete(c.id);
      return this.describe((await this.engine.findByInstance(cmd.instanceId)) ?? c);
    });
  }

  remove(instanceId: string): Promise<AgentInstance> {
    return this.serialize(instanceId, async () => {
      const c = await this.engine.findByInstance(instanceId);
      if (!c) {
        return this.describe(undefined, instanceId);
      }
      this.expectedStops.add(c.id);
      await this.engine.remove(c.id);
      return { ...this.describe(c), state: 'removed' };
    });
  }

  async get(instanceId: string): Promise<AgentInstance> {
    return this.describe(await this.require(instanceId));
  }

  async list(): Promise<{ hostId: string; instances: AgentInstance[] }> {
    const all = await this.engine.listManaged();
    return { hostId: this.settings.hostId, instances: all.map((c) => this.describe(c)) };
  }

  /**
   * The restart policy, kept by the agent rather than the engine: Docker restarts
   * `on-failure` containers when the daemon itself restarts, which after a failover would
   * put an old copy of a moved IP back on the wire before anyone could check. Here a failed
   * instance is restarted (wire probe first) at most `restartMaxRetries` times, with
   * backoff, and never while the host is fenced. Returns whether a restart was attempted.
   */
  async restartAfterFailure(containerId: string, instanceId: string, fenced: () => boolean): Promise<boolean> {
    const attempts = (this.restarts.get(containerId) ?? 0) + 1;
    if (attempts > this.settings.restartMaxRetries || fenced()) return false;
    this.restarts.set(containerId, attempts);
    await new Promise((r) => setTimeout(r, Math.min(30_000, 500 * 2 ** (attempts - 1))));
    if (fenced()) return false;
    await this.serialize(instanceId, async () => {
      const c = await this.engine.findByInstance(instanceId);
      if (!c || c.id !== containerId || stateOf(c) === 'running' || this.expectedStops.has(c.id)) return;
      await this.startChecked(c);
    });
    return true;
  }

  /**
   * Forgets what is kept per container (restart attempts, stops it requested) for containers
   * the engine no longer has, so these sets hold what exists rather than every container
   * ever seen. An entry goes only when its container is missing from two listings in a row:
   * the `die` of a container removed just now may still be on its way, and it must still be
   * read as a requested stop.
   */
  forgetGone(present: ReadonlySet<string>): void {
    const missing = new Set<string>();
    for (const id of [...this.restarts.keys(), ...this.expectedStops]) {
      if (present.has(id)) continue;
      if (this.missingOnce.has(id)) {
        this.restarts.delete(id);
        this.expectedStops.delete(id);
      } else {
        missing.add(id);
      }
    }
    this.missingOnce = missing;
  }

  /** Entries kept per container (for tests and a gauge). */
  trackedContainers(): number {
    return new Set([...this.restarts.keys(), ...this.expectedStops]).size;
  }

  /** While true, nothing starts on this host (self-fence: its instance network is isolated); see SelfFence. */
  fenced = false;

  /**
   * At agent start: reports every managed container as it is (events with `adopted: true`)
   * and changes nothing. A container found stopped or failed stays so: after a move its IP
   * may be live elsewhere, and only the control plane may start it again.
   */
  async adopt(): Promise<{ instances: number; running: ManagedContainer[] }> {
    const all = await this.engine.listManaged();
    for (const c of all) {
      const d = this.describe(c);
      const what = d.state === 'running' ? 'running' : d.state === 'failed' ? 'failed' : 'stopped';
      this.events.instance({ what, instanceId: d.instanceId, data: { ...d, adopted: true } });
    }
    return { instances: all.length, running: all.filter((c) => stateOf(c) === 'running') };
  }

  /**
   * Self-fence: from now on nothing starts, then every running instance is stopped, each
   * through its own queue so a create or start in flight cannot slip a container past it.
   * A stop that fails is tried again; the instances still running are reported apart.
   * Every engine call has a timeout: a hung engine makes the fence report, not hang.
   */
  async stopAll(timeoutSeconds: number): Promise<{ stopped: string[]; stillRunning: string[] }> {
    this.fenced = true;
    const stopped: string[] = [];
    const stillRunning: string[] = [];
    const limit = this.settings.engineTimeoutMs ?? DEFAULT_ENGINE_TIMEOUT_MS;
    const all = await withTimeout(this.engine.listManaged(), limit, 'the engine (list containers)');
    const ids = new Set([...all.map((c) => c.labels[LABEL.instanceId] ?? c.id), ...this.queues.keys()]);
    await Promise.all(
      [...ids].map((instanceId) =>
        this.serialize(instanceId, async () => {
          for (let attempt = 1; ; attempt++) {
            const c = await withTimeout(this.engine.findByInstance(instanceId), limit, 'the engine (inspect)').catch(() => undefined);
            if (!c || stateOf(c) !== 'running') {
              if (attempt > 1) stopped.push(instanceId);
              return;
            }
            this.expectedStops.add(c.id);
            try {
              await withTimeout(this.engine.stop(c.id, timeoutSeconds), timeoutSeconds * 1000 + limit, 'the engine (stop)');
              stopped.push(instanceId);
              return;
            } catch {
              if (attempt >= 3) {
                stillRunning.push(instanceId);
                return;
              }
            }
          }
        }),
      ),
    );
    return { stopped, stillRunning };
  }

  /** What the instances on this host were promised (from labels). */
  async allocated(): Promise<{ amounts: Amounts; count: number }> {
    const all = await this.engine.listManaged();
    return { amounts: allocatedOf(all), count: all.length };
  }

  private async require(instanceId: string): Promise<ManagedContainer> {
    const c = await this.engine.findByInstance(instanceId);
    if (!c) throw new OrangeryError('NOT_FOUND', `no instance ${instanceId} on ${this.settings.hostId}`, { instanceId });
    return c;
  }

  /** Another instance of ours already holds the address on this host (the wire probe cannot see it: macvlan children are invisible to their parent). */
  private async refuseDuplicateIp(instanceId: string, ip: string): Promise<void> {
    const other = (await this.engine.listManaged()).find(
      (c) => c.labels[LABEL.ip] === ip && c.labels[LABEL.instanceId] !== instanceId && stateOf(c) !== 'stopped' && stateOf(c) !== 'failed',
    );
    if (other) {
      const reason = `${ip} is held by ${other.labels[LABEL.instanceId]} on this host; nothing was started`;
      this.events.instance({ what: 'failed', instanceId, data: { reason, code: 'IP_IN_USE_ON_WIRE', ip } });
      throw new OrangeryError('IP_IN_USE_ON_WIRE', reason, { ip, holder: other.labels[LABEL.instanceId] });
    }
  }

  /**
   * Starts a container only after proving its address is free on the wire. Must run
   * under the instance's queue, so two starts of one instance cannot both probe "free".
   */
  private async startChecked(c: ManagedContainer): Promise<void> {
    const instanceId = c.labels[LABEL.instanceId] ?? '';
    const ip = c.labels[LABEL.ip] ?? '';
    await this.refuseDuplicateIp(instanceId, ip);
    await this.probeWire(instanceId, ip, Number(c.labels[LABEL.vlan] ?? 0));
    // Checked last, right before the start: a fence may have come during the probe.
    this.refuseWhileFenced(instanceId);
    this.rememberStartTrace(c.id);
    await this.engine.start(c.id);
  }

  private rememberStartTrace(containerId: string): void {
    this.startTraces.delete(containerId);
    this.startTraces.set(containerId, context.active());
    // a start whose event never came (the stream was down) must not be kept for ever
    if (this.startTraces.size > MAX_START_TRACES) this.startTraces.delete(this.startTraces.keys().next().value!);
  }

  /** The context of the command that started `containerId` (once), for its instance.running. */
  takeStartTrace(containerId: string): Context | undefined {
    const ctx = this.startTraces.get(containerId);
    this.startTraces.delete(containerId);
    return ctx;
  }

  private refuseWhileFenced(instanceId: string): void {
    if (this.fenced) {
      throw new OrangeryError('UNAVAILABLE', `${this.settings.hostId} is fenced (its instance network is isolated); ${instanceId} was not started`, {
        instanceId,
        retryable: true,
      });
    }
  }

  /** Throws IP_IN_USE_ON_WIRE (and publishes instance.failed) when something answers ARP for `ip`. */
  private async probeWire(instanceId: string, ip: string, vlan: number): Promise<void> {
    const iface = parentInterface(this.settings.uplink, vlan);
    if (await this.probe.inUse(iface, ip)) {
      const reason = `${ip} answers ARP on ${iface}: another endpoint holds it; nothing was started`;
      this.events.instance({ what: 'failed', instanceId, data: { reason, code: 'IP_IN_USE_ON_WIRE', ip } });
      throw new OrangeryError('IP_IN_USE_ON_WIRE', reason, { ip, iface });
    }
  }

  describe(c: ManagedContainer | undefined, instanceId?: string): AgentInstance {
    const l = c?.labels ?? {};
    const id = l[LABEL.instanceId] ?? instanceId ?? '';
    const [env = '', app = '', slot = '0'] = id.split(':');
    const out: AgentInstance = {
      instanceId: id,
      env: l[LABEL.env] ?? env,
      app: l[LABEL.app] ?? app,
      slot: Number(l[LABEL.slot] ?? slot),
      hostId: this.settings.hostId,
      backend: 'docker',
      state: stateOf(c),
      ip: l[LABEL.ip] ?? '',
      mac: l[LABEL.mac] ?? '',
      image: c?.image ?? '',
    };
    if (c) {
      out.containerId = c.id;
      if (c.exitCode !== undefined && out.state !== 'running') out.exitCode = c.exitCode;
      if (c.oomKilled) out.reason = 'killed by the kernel: out of memory';
      out.resources = {
        cpu: Number(l[LABEL.cpu] ?? 0),
        memoryMb: Number(l[LABEL.memoryMb] ?? 0),
        ...(l[LABEL.heapMb] ? { heapMb: Number(l[LABEL.heapMb]) } : {}),
        ...(l[LABEL.diskMb] ? { diskMb: Number(l[LABEL.diskMb]) } : {}),
      };
    }
    return out;
  }
}

/** What the given containers were promised, from their labels (any state: a stopped one keeps its place). */
export function allocatedOf(containers: readonly ManagedContainer[]): Amounts {
  const amounts = { cpu: 0, memoryMb: 0, diskMb: 0 };
  for (const c of containers) {
    amounts.cpu += Number(c.labels[LABEL.cpu] ?? 0);
    // the container's real limit: the heap's head room can raise it above what was asked
    amounts.memoryMb += memoryLimitMb(Number(c.labels[LABEL.memoryMb] ?? 0), c.labels[LABEL.heapMb] ? Number(c.labels[LABEL.heapMb]) : undefined);
    amounts.diskMb += Number(c.labels[LABEL.diskMb] ?? 0);
  }
  amounts.cpu = Math.round(amounts.cpu * 1000) / 1000;
  return amounts;
}

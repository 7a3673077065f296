import { LABEL, type ContainerPlan } from '../container-spec';
import type { ArpProbe, Engine, EngineEvent, EngineFacts, EngineNetwork, EventSink, InstanceEvent, ManagedContainer, NetworkSpec } from '../ports';

/** What the fake keeps per container: what the port shows, plus what docker would know. */
export interface FakeContainer extends ManagedContainer {
  name: string;
  network: string;
  plan: ContainerPlan | undefined;
}

/** An error shaped like dockerode's (statusCode), for the cases docker answers with one. */
export class FakeEngineError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

export interface FakeEngineHooks {
  /** runs at the start of `create`, before anything changes: a test can hold it there */
  beforeCreate?: (plan: ContainerPlan) => Promise<void> | void;
  /** runs at the start of `start`; throwing makes the start fail */
  beforeStart?: (id: string) => Promise<void> | void;
  /** runs at the start of `stop`; throwing makes the stop fail */
  beforeStop?: (id: string) => Promise<void> | void;
}

export interface SeedContainer {
  instanceId: string;
  ip: string;
  engineState?: string;
  exitCode?: number;
  oomKilled?: boolean;
  labels?: Record<string, string>;
  image?: string;
  sizeRw?: number;
}

/**
 * An Engine in memory that keeps the port's contracts as the docker adapter does:
 * - `listManaged`/`findByInstance` see only containers labelled managed, and return copies;
 * - names are unique (a second create with one name fails as docker's 409 does);
 * - `start` of a running container, `stop` of a stopped one and `remove` of a missing one
 *   are no-ops, as the adapter turns docker's 304/404 into success;
 * - a macvlan network on `<uplink>.<vlan>` brings that interface into `interfaces`, as the
 *   macvlan driver creates the sub-interface when it creates the network;
 * - `events` follows what happens from the call on, as docker's stream does: `start`, `die`
 *   with the exit code (a stop's 143, a forced remove's 137), `oom` before its `die`, `destroy`.
 * Every call is counted in `calls` and written to `journal` (shared with FakeArpProbe).
 */
export class FakeEngine implements Engine {
  readonly containers = new Map<string, FakeContainer>();
  readonly images: Set<string>;
  readonly networks = new Map<string, NetworkSpec>();
  readonly interfaces: Set<string>;
  readonly calls = { create: 0, start: 0, stop: 0, remove: 0, ensureNetwork: 0 };
  /** `create <instanceId>`, `start <id>`, `stop <id> <timeout>`, `remove <id>`, `network <name>` */
  readonly journal: string[];
  readonly hooks: FakeEngineHooks = {};
  engineFacts: EngineFacts = { cpus: 4, memoryMb: 16_384, diskMb: 100_000, version: 'fake 1.0 (API 1.41)' };
  private nextId = 1;
  private readonly followers = new Set<(e: EngineEvent) => void>();

  constructor(opts: { images?: string[]; interfaces?: string[]; journal?: string[] } = {}) {
    this.images = new Set(opts.images ?? []);
    this.interfaces = new Set(opts.interfaces ?? []);
    this.journal = opts.journal ?? [];
  }

  async facts(): Promise<EngineFacts> {
    return { ...this.engineFacts };
  }

  async listManaged(withSize = false): Promise<ManagedContainer[]> {
    return [...this.containers.values()].filter(isManaged).map((c) => this.view(c, withSize));
  }

  async findByInstance(instanceId: string): Promise<ManagedContainer | undefined> {
    const c = this.byInstance(instanceId);
    return c ? this.view(c, false) : undefined;
  }

  async hasImage(image: string): Promise<boolean> {
    return this.images.has(image);
  }

  async ensureNetwork(spec: NetworkSpec): Promise<void> {
    this.calls.ensureNetwork++;
    if (this.networks.has(spec.name)) return;
    this.journal.push(`network ${spec.name}`);
    this.networks.set(spec.name, { ...spec });
    this.interfaces.add(spec.parent);
  }

  async listNetworks(): Promise<EngineNetwork[]> {
    return [...this.networks.values()].map((n) => ({ name: n.name, parent: n.parent, gateway: n.gateway }));
  }

  async create(plan: ContainerPlan, network: string): Promise<string> {
    this.calls.create++;
    await this.hooks.beforeCreate?.(plan);
    if (!this.networks.has(network)) throw new FakeEngineError(404, `network ${network} not found`);
    if (!this.images.has(plan.image)) throw new FakeEngineError(404, `no such image: ${plan.image}`);
    if ([...this.containers.values()].some((c) => c.name === plan.name)) {
      throw new FakeEngineError(409, `the container name "/${plan.name}" is already in use`);
    }
    const id = `c${String(this.nextId++).padStart(3, '0')}`;
    this.journal.push(`create ${plan.labels[LABEL.instanceId]}`);
    this.containers.set(id, {
      id,
      name: plan.name,
      image: plan.image,
      labels: { ...plan.labels },
      engineState: 'created',
      exitCode: undefined,
      oomKilled: false,
      network,
      plan: structuredClone(plan),
    });
    return id;
  }

  async start(id: string): Promise<void> {
    this.calls.start++;
    await this.hooks.beforeStart?.(id);
    const c = this.mustGet(id);
    this.journal.push(`start ${id}`);
    const wasRunning = c.engineState === 'running';
    Object.assign(c, { engineState: 'running', exitCode: undefined, oomKilled: false });
    if (!wasRunning) this.emit({ kind: 'start', containerId: id, labels: { ...c.labels } });
  }

  async stop(id: string, timeoutSeconds: number): Promise<void> {
    this.calls.stop++;
    await this.hooks.beforeStop?.(id);
    const c = this.containers.get(id);
    this.journal.push(`stop ${id} ${timeoutSeconds}`);
    if (!c || c.engineState !== 'running') return;
    // what a process stopped by SIGTERM reports
    Object.assign(c, { engineState: 'exited', exitCode: 143 });
    this.emit({ kind: 'die', containerId: id, labels: { ...c.labels }, exitCode: 143 });
  }

  async remove(id: string): Promise<void> {
    this.calls.remove++;
    this.journal.push(`remove ${id}`);
    const c = this.containers.get(id);
    this.containers.delete(id);
    if (!c) return;
    // a forced remove kills what runs (SIGKILL)
    if (c.engineState === 'running') this.emit({ kind: 'die', containerId: id, labels: { ...c.labels }, exitCode: 137 });
    this.emit({ kind: 'destroy', containerId: id, labels: { ...c.labels } });
  }

  /** Follows from this call on (not from the first `next`), until `signal` aborts. */
  events(signal: AbortSignal): AsyncIterable<EngineEvent> {
    const queue: EngineEvent[] = [];
    let wake: (() => void) | undefined;
    const follower = (e: EngineEvent): void => {
      queue.push(structuredClone(e));
      wake?.();
    };
    const onAbort = (): void => wake?.();
    this.followers.add(follower);
    signal.addEventListener('abort', onAbort, { once: true });
    const followers = this.followers;
    return (async function* () {
      try {
        while (!signal.aborted) {
          const e = queue.shift();
          if (e) {
            yield e;
            continue;
          }
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
      } finally {
        followers.delete(follower);
        signal.removeEventListener('abort', onAbort);
      }
    })();
  }

  async usage(id: string): Promise<{ memoryBytes: number; cpuNanos: number }> {
    this.mustGet(id);
    return { memoryBytes: 0, cpuNanos: 0 };
  }

  // ---- for tests: the engine's side of the world ---------------------------------------

  /** A labelled container put there directly (another instance, or one an earlier agent made). */
  seed(s: SeedContainer): string {
    const id = `c${String(this.nextId++).padStart(3, '0')}`;
    const [env = '', app = '', slot = '0'] = s.instanceId.split(':');
    this.containers.set(id, {
      id,
      name: `orangery-${s.instanceId.replace(/:/g, '-')}`,
      image: s.image ?? 'seeded:1',
      labels: {
        [LABEL.managed]: 'true',
        [LABEL.instanceId]: s.instanceId,
        [LABEL.env]: env,
        [LABEL.app]: app,
        [LABEL.slot]: slot,
        [LABEL.ip]: s.ip,
        [LABEL.vlan]: '0',
        ...s.labels,
      },
      engineState: s.engineState ?? 'running',
      exitCode: s.exitCode,
      oomKilled: s.oomKilled ?? false,
      ...(s.sizeRw !== undefined ? { sizeRw: s.sizeRw } : {}),
      network: 'seeded',
      plan: undefined,
    });
    return id;
  }

  /** The process of a running container exits by itself (a crash, or the OOM killer). */
  crash(id: string, exitCode = 1, oomKilled = false): void {
    const c = this.mustGet(id);
    Object.assign(c, { engineState: 'exited', exitCode, oomKilled });
    if (oomKilled) this.emit({ kind: 'oom', containerId: id, labels: { ...c.labels } });
    this.emit({ kind: 'die', containerId: id, labels: { ...c.labels }, exitCode });
  }

  /** An event as the engine's stream would carry it, to whoever follows. */
  emit(e: EngineEvent): void {
    for (const f of this.followers) f(e);
  }

  byInstance(instanceId: string): FakeContainer | undefined {
    return [...this.containers.values()].find((c) => isManaged(c) && c.labels[LABEL.instanceId] === instanceId);
  }

  stateOfInstance(instanceId: string): string | undefined {
    return this.byInstance(instanceId)?.engineState;
  }

  /** A deep copy of everything, to compare before and after. */
  snapshot() {
    return structuredClone({ containers: [...this.containers.values()], networks: [...this.networks.values()] });
  }

  private mustGet(id: string): FakeContainer {
    const c = this.containers.get(id);
    if (!c) throw new FakeEngineError(404, `no such container: ${id}`);
    return c;
  }

  private view(c: FakeContainer, withSize: boolean): ManagedContainer {
    const out: ManagedContainer = {
      id: c.id,
      image: c.image,
      labels: { ...c.labels },
      engineState: c.engineState,
      exitCode: c.exitCode,
      oomKilled: c.oomKilled,
    };
    if (withSize) out.sizeRw = c.sizeRw ?? 0;
    return out;
  }
}

const isManaged = (c: ManagedContainer): boolean => c.labels[LABEL.managed] === 'true';

/**
 * ARP duplicate-address detection in memory: `onWire` holds the addresses some endpoint
 * answers for. With `interfaces`, a probe on an interface that does not exist fails as
 * arping does.
 */
export class FakeArpProbe implements ArpProbe {
  readonly onWire = new Set<string>();
  readonly calls: { iface: string; ip: string }[] = [];
  /** runs before the verdict: a test can hold the probe there */
  gate: (() => Promise<void>) | undefined;

  constructor(private readonly opts: { journal?: string[]; interfaces?: ReadonlySet<string> } = {}) {}

  async inUse(iface: string, ip: string): Promise<boolean> {
    this.calls.push({ iface, ip });
    this.opts.journal?.push(`probe ${iface} ${ip}`);
    if (this.opts.interfaces && !this.opts.interfaces.has(iface)) {
      throw new Error(`arping on ${iface} failed: unknown iface ${iface}`);
    }
    await this.gate?.();
    return this.onWire.has(ip);
  }
}

/** An EventSink that keeps what it is given, in order. */
export class RecordingEvents implements EventSink {
  readonly instances: InstanceEvent[] = [];
  readonly hosts: { what: string; data: Record<string, unknown> }[] = [];

  instance(e: InstanceEvent): void {
    this.instances.push(structuredClone(e));
  }

  host(what: string, data: Record<string, unknown>): void {
    this.hosts.push({ what, data: structuredClone(data) });
  }
}

/** A promise a test resolves when it wants to. */
export function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

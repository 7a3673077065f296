import { context, type Context } from '@opentelemetry/api';
import { invalidRequest, OrangeryError, type AgentInstance, type Amounts, type StopInstanceCommand, type VmCreateCommand } from '@orangery/contracts';
import { memoryLimitMb } from '@orangery/contracts';
import { HostLimiter } from './host-limiter';
import { VmIndex } from './vm-index';
import { stateOfVm, type EsxiHost, type EventSink, type Vcenter, type Vm } from './ports';
import { labelsOf, planVm, specHash, type VmLabels } from './vm-spec';

/** power-ons whose change from vCenter is awaited, at most (their trace contexts) */
const MAX_POWER_ON_TRACES = 1_000;

export interface VmwareAgentSettings {
  /** ORANGERY_VCENTER_EXTRA_CONFIG: VMX keys with placeholders */
  extraConfig: Readonly<Record<string, string>>;
  /** a create or start answers `running` when the guest reports its IP, or after this with the power on */
  guestIpTimeoutMs: number;
  /** default grace between the guest shutdown and the power-off */
  stopTimeoutSeconds: number;
  tasksPerHost: number;
  queuePerHost: number;
  /** how often power state and guest IP are polled while waiting */
  pollMs?: number;
  /** a command that finds vCenter unreachable is run again from the top for this long (0: answer at once) */
  unavailableRetryMs?: number;
}

export type ManagedVm = Vm & { labels: VmLabels };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The vmware-agent's commands, for every ESXi host of one vCenter. Every command is
 * idempotent: the VMs' guestinfo labels are the only state, so a command sent twice has
 * one effect and a restarted agent knows everything. Commands for one instance run one at
 * a time; vCenter tasks are bounded per ESXi host (HostLimiter).
 */
export class VmwareAgentService {
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly hosts = new Map<string, EsxiHost>();
  /** addresses being given to a VM right now: two creates cannot both find one free */
  private readonly claims = new Map<string, string>();
  /** VMs we power off on purpose: their power-off is `stopped on request` */
  readonly expectedStops = new Set<string>();
  /**
   * The trace context of the command that powered a VM on, until vCenter's change feed
   * (VcenterChanges) reports it powered on and instance.running is published in that trace; bounded.
   */
  private readonly powerOnTraces = new Map<string, Context>();
  readonly limiter: HostLimiter;
  private readonly pollMs: number;

  constructor(
    private readonly vc: Vcenter,
    private readonly events: EventSink,
    private readonly settings: VmwareAgentSettings,
    /** fed by vCenter's change stream (runtime); creates read it while it is in sync */
    readonly index: VmIndex = new VmIndex(),
  ) {
    this.limiter = new HostLimiter(settings.tasksPerHost, settings.queuePerHost);
    this.pollMs = settings.pollMs ?? 100;
  }

  /** The ESXi hosts this agent serves (from the inventory; the runtime keeps it fresh). */
  setHosts(hosts: ReadonlyMap<string, EsxiHost>): void {
    this.hosts.clear();
    for (const [id, h] of hosts) this.hosts.set(id, h);
  }

  /** Every VM of the datacenter: from the change stream when in sync, else one listing (within `timeoutMs` when given). */
  async snapshot(timeoutMs?: number): Promise<Vm[]> {
    return this.index.ready ? this.index.list() : this.vc.vms(timeoutMs);
  }

  /**
   * Restart safety: reports every Orangery VM as it is (`instance.running` or
   * `instance.stopped`, `adopted: true`) and changes nothing. A VM that no record places
   * where it is (a copy from before a failover) is the scheduler's to judge: it may stop
   * it, never this agent on its own, and nothing is powered on here.
   */
  async adopt(): Promise<ManagedVm[]> {
    const mine = managed(await this.vc.vms());
    for (const vm of mine) {
      const d = this.describe(vm);
      this.events.instance({ what: d.state === 'running' ? 'running' : 'stopped', hostId: d.hostId, instanceId: d.instanceId, data: { ...d, adopted: true } });
    }
    return mine;
  }

  /**
   * The change stream may lag behind vCenter by an update or two (a clone's `enter` with
   * the power off can arrive after the agent's own write of the power-on). Decisions rest
   * on the VMs that matter, so those are read again from vCenter: the instance's own VM and
   * any VM with the address. Rare, and one VM each: cheap where a listing is not.
   */
  private async freshFor(instanceId: string, ip: string, vms: readonly Vm[]): Promise<Vm[]> {
    if (!this.index.ready) return [...vms];
    const out: Vm[] = [];
    for (const v of vms) {
      const l = labelsOf(v.extraConfig);
      const matters = !v.template && (l?.instanceId === instanceId || l?.ip === ip || v.guestIp === ip);
      if (!matters) {
        out.push(v);
        continue;
      }
      const now = await this.vc.vm(v.ref);
      if (now) {
        this.index.upsert(now);
        out.push(now);
      } else {
        this.index.remove(v.ref);
      }
    }
    return out;
  }

  /**
   * vCenter restarts and network blips are short; a command that found vCenter unreachable
   * is run again from the top (every command starts by looking up what exists, so this is
   * safe even after a clone cut off mid-call) until `unavailableRetryMs` has passed. Only
   * the vCenter adapter's UNAVAILABLE (with `details.vcenter`) counts; a full host queue or
   * a disconnected host is answered at once.
   */
  private async persist<T>(work: () => Promise<T>): Promise<T> {
    const budget = this.settings.unavailableRetryMs ?? 0;
    const deadline = Date.now() + budget;
    for (;;) {
      try {
        return await work();
      } catch (e) {
        const vcenterDown = e instanceof OrangeryError && e.code === 'UNAVAILABLE' && e.details?.['vcenter'] !== undefined;
        if (!vcenterDown) throw e;
        if (Date.now() + 1_000 > deadline) {
          throw budget > 0 ? new OrangeryError('UNAVAILABLE', `${e.message} (still after ${Math.round(budget / 1000)} s of retries)`, e.details) : e;
        }
        await sleep(1_000);
      }
    }
  }

  private serialize<T>(instanceId: string, work: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(instanceId) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(() => this.persist(work));
    this.queues.set(instanceId, next);
    void next
      .finally(() => {
        if (this.queues.get(instanceId) === next) this.queues.delete(instanceId);
      })
      .catch(() => undefined);
    return next;
  }

  create(hostId: string, cmd: VmCreateCommand): Promise<AgentInstance> {
    return this.serialize(cmd.instanceId, async () => {
      const host = this.requireHost(hostId);
      const wantStart = cmd.start ?? true;
      const all = await this.freshFor(cmd.instanceId, cmd.network.ip, await this.snapshot());
      const existing = managed(all).find((v) => v.labels.instanceId === cmd.instanceId);
      if (existing) {
        if (existing.labels.specHash !== specHash(cmd, hostId)) {
          throw new OrangeryError(
            'INSTANCE_CONFLICT',
            `${cmd.instanceId} already exists as VM ${existing.name} on ${existing.labels.hostId} with another spec; remove it first`,
            { instanceId: cmd.instanceId, ip: existing.labels.ip, hostId: existing.labels.hostId, vmId: existing.ref },
          );
        }
        if (!wantStart || existing.powerState === 'poweredOn') return this.describe(existing);
        return this.describe(await this.startChecked(existing, all));
      }
      const release = this.claimAddress(cmd.instanceId, cmd.network.ip, all);
      try {
        return await this.cloneAndStart(hostId, host, cmd, wantStart);
      } finally {
        release();
      }
    });
  }

  /** After the address was claimed: template, port group, clone, power-on. */
  private async cloneAndStart(hostId: string, host: EsxiHost, cmd: VmCreateCommand, wantStart: boolean): Promise<AgentInstance> {
    const templateRef = await this.vc.findTemplate(cmd.template);
    if (!templateRef) {
      const reason = `template ${cmd.template} is not in vCenter`;
      this.events.instance({ what: 'failed', hostId, instanceId: cmd.instanceId, data: { reason, code: 'TEMPLATE_NOT_FOUND', ip: cmd.network.ip } });
      throw new OrangeryError('TEMPLATE_NOT_FOUND', reason, { template: cmd.template });
    }
    const portGroup = await this.vc.portGroupFor(host.ref, cmd.network.vlan);
    if (!portGroup) throw invalidRequest('network.vlan', `${hostId} reaches no port group with VLAN ${cmd.network.vlan}`, { hostId, vlan: cmd.network.vlan });
    const plan = planVm(cmd, hostId, this.settings.extraConfig);
    const ref = await this.limiter.run(hostId, () => this.vc.clone(templateRef, host.ref, portGroup, plan));
    // What the clone is, we know: no read of it (each call counts when vCenter is busy).
    const vm: ManagedVm = {
      ref,
      name: plan.name,
      powerState: 'poweredOff',
      template: false,
      guestIp: undefined,
      extraConfig: plan.extraConfig,
      labels: labelsOf(plan.extraConfig)!,
    };
    this.index.upsert(vm);
    if (!wantStart) return this.describe(vm);
    try {
      return this.describe(await this.powerOnAndWait(vm));
    } catch (e) {
      // Nothing half-done: a clone that vCenter said could not start (a fault, off right
      // after its power-on, gone) never served and is not left behind. When vCenter did
      // not answer (unreachable, timed out: did the power-on happen?) the VM is left as it
      // is, on or off: destroying it once vCenter answers again would destroy a VM that
      // may be serving. The command is run again from the top (persist) and finds it by
      // its labels.
      if (!startRefused(e)) throw e;
      await this.vc.powerOff(ref).catch(() => undefined);
      await this.vc.destroy(ref).then(
        () => this.index.remove(ref),
        () => undefined,
      );
      throw e;
    }
  }

  /**
   * The instance's VM on `hostId`, read from vCenter. With the change-stream index in sync,
   * its candidates come from the index and only they are read (one VM each); a listing of
   * the whole datacenter happens only when the index is not in sync or knows no such VM (a
   * clone whose `enter` has not arrived yet, or a VM that is really gone).
   */
  private async lookup(hostId: string, instanceId: string): Promise<ManagedVm | undefined> {
    if (this.index.ready) {
      for (const candidate of managed(this.index.list()).filter((v) => v.labels.instanceId === instanceId)) {
        const now = await this.vc.vm(candidate.ref);
        if (!now) {
          this.index.remove(candidate.ref);
          continue;
        }
        this.index.upsert(now);
        const found = managedOn([now], hostId).find((v) => v.labels.instanceId === instanceId);
        if (found) return found;
      }
    }
    return managedOn(await this.vc.vms(), hostId).find((v) => v.labels.instanceId === instanceId);
  }

  private async lookupOrFail(hostId: string, instanceId: string): Promise<ManagedVm> {
    const vm = await this.lookup(hostId, instanceId);
    if (!vm) throw new OrangeryError('NOT_FOUND', `no instance ${instanceId} on ${hostId}`, { instanceId });
    return vm;
  }

  start(hostId: string, instanceId: string): Promise<AgentInstance> {
    return this.serialize(instanceId, async () => {
      const found = await this.lookupOrFail(hostId, instanceId);
      if (found.powerState === 'poweredOn') return this.describe(found);
      // the duplicate-address check needs every VM: the index (with the ones that matter read fresh), or one listing
      const all = await this.freshFor(instanceId, found.labels.ip, await this.snapshot());
      const vm = this.require(all, hostId, instanceId);
      if (vm.powerState === 'poweredOn') return this.describe(vm);
      return this.describe(await this.startChecked(vm, all));
    });
  }

  stop(hostId: string, cmd: StopInstanceCommand): Promise<AgentInstance> {
    return this.serialize(cmd.instanceId, async () => {
      const vm = await this.lookupOrFail(hostId, cmd.instanceId);
      if (vm.powerState !== 'poweredOn') return this.describe(vm);
      this.expectedStops.add(vm.ref);
      const graceMs = (cmd.timeoutSeconds ?? this.settings.stopTimeoutSeconds) * 1000;
      await this.limiter.run(hostId, async () => {
        // The guest shuts down cleanly when it can; a guest that cannot (no tools) or does
        // not within the grace period is powered off.
        if (graceMs > 0 && (await this.vc.shutdownGuest(vm.ref))) {
          const deadline = Date.now() + graceMs;
          while (Date.now() < deadline) {
            const now = await this.vc.vm(vm.ref);
            if (!now || now.powerState !== 'poweredOn') return;
            await sleep(Math.min(this.pollMs * 2, Math.max(0, deadline - Date.now())));
          }
        }
        const now = await this.vc.vm(vm.ref);
        if (now?.powerState === 'poweredOn') await this.vc.powerOff(vm.ref);
      });
      const after = await this.vc.vm(vm.ref);
      if (after) this.index.upsert(after);
      return this.describe(after ? { ...after, labels: vm.labels } : undefined, vm);
    });
  }

  remove(hostId: string, instanceId: string): Promise<AgentInstance> {
    return this.serialize(instanceId, async () => {
      const vm = await this.lookup(hostId, instanceId);
      if (!vm) return this.describeMissing(hostId, instanceId);
      this.expectedStops.add(vm.ref);
      await this.limiter.run(hostId, async () => {
        if (vm.powerState !== 'poweredOff') await this.vc.powerOff(vm.ref);
        await this.vc.destroy(vm.ref);
      });
      this.index.remove(vm.ref);
      return { ...this.describe(vm), state: 'removed' };
    });
  }

  async get(hostId: string, instanceId: string): Promise<AgentInstance> {
    return this.describe(await this.lookupOrFail(hostId, instanceId));
  }

  async list(hostId: string): Promise<{ hostId: string; instances: AgentInstance[] }> {
    return { hostId, instances: managedOn(await this.vc.vms(), hostId).map((v) => this.describe(v)) };
  }

  /**
   * orangery_agent_instances: every managed VM's state, from the change-stream index only
   * (a metrics scrape never lists vCenter); undefined while the index is not in sync.
   */
  instanceStates(): string[] | undefined {
    if (!this.index.ready) return undefined;
    const vms = this.index.list();
    return [...this.hosts.keys()].flatMap((h) => managedOn(vms, h).map((v) => this.describe(v).state));
  }

  /** What the instances placed on a host were promised (from labels), and how many there are. */
  allocated(vms: readonly Vm[], hostId: string): { amounts: Amounts; count: number } {
    const on = managedOn(vms, hostId);
    const amounts = { cpu: 0, memoryMb: 0, diskMb: 0 };
    for (const { labels: l } of on) {
      amounts.cpu += l.cpu;
      amounts.memoryMb += memoryLimitMb(l.memoryMb, l.heapMb);
      amounts.diskMb += l.diskMb ?? 0;
    }
    amounts.cpu = Math.round(amounts.cpu * 1000) / 1000;
    return { amounts, count: on.length };
  }

  describe(vm: ManagedVm | undefined, fallback?: ManagedVm): AgentInstance {
    const v = vm ?? fallback!;
    const l = v.labels;
    const out: AgentInstance & { vmId: string; vmName: string } = {
      instanceId: l.instanceId,
      env: l.env,
      app: l.app,
      slot: l.slot,
      hostId: l.hostId,
      backend: 'vmware',
      state: stateOfVm(vm),
      ip: l.ip,
      mac: l.mac,
      template: l.template,
      resources: {
        cpu: l.cpu,
        memoryMb: l.memoryMb,
        ...(l.heapMb !== undefined ? { heapMb: l.heapMb } : {}),
        ...(l.diskMb !== undefined ? { diskMb: l.diskMb } : {}),
      },
      vmId: v.ref,
      vmName: v.name,
    };
    return out;
  }

  private describeMissing(hostId: string, instanceId: string): AgentInstance {
    const [env = '', app = '', slot = '0'] = instanceId.split(':');
    return { instanceId, env, app, slot: Number(slot), hostId, backend: 'vmware', state: 'removed', ip: '', mac: '' };
  }

  private requireHost(hostId: string): EsxiHost {
    const host = this.hosts.get(hostId);
    if (!host) throw new OrangeryError('NOT_FOUND', `no ESXi host ${hostId} in this vCenter`, { hostId });
    if (host.connectionState !== 'connected') {
      throw new OrangeryError('UNAVAILABLE', `ESXi host ${hostId} is ${host.connectionState} in vCenter; nothing was created`, { hostId, retryable: true });
    }
    return host;
  }

  private require(vms: readonly Vm[], hostId: string, instanceId: string): ManagedVm {
    const vm = managedOn(vms, hostId).find((v) => v.labels.instanceId === instanceId);
    if (!vm) throw new OrangeryError('NOT_FOUND', `no instance ${instanceId} on ${hostId}`, { instanceId });
    return vm;
  }

  /**
   * Checks the address and claims it in one synchronous step (no await in between), so of
   * two commands racing for one address exactly one goes on. Returns the release.
   */
  private claimAddress(instanceId: string, ip: string, vms: readonly Vm[]): () => void {
    this.refuseDuplicateIp(instanceId, ip, vms);
    this.claims.set(ip, instanceId);
    return () => {
      if (this.claims.get(ip) === instanceId) this.claims.delete(ip);
    };
  }

  /**
   * Duplicate addresses, as far as vCenter can tell: another powered-on Orangery VM with
   * the address, any powered-on VM whose guest reports it, or a create giving it out right
   * now. (The wire itself is not probed: see docs/vmware-agent.md.)
   */
  private refuseDuplicateIp(instanceId: string, ip: string, vms: readonly Vm[]): void {
    let holder: string | undefined;
    for (const v of vms) {
      if (v.template || v.powerState !== 'poweredOn') continue;
      const l = labelsOf(v.extraConfig);
      if (l && l.instanceId === instanceId) continue;
      if ((l && l.ip === ip) || v.guestIp === ip) {
        holder = l?.instanceId ?? `VM ${v.name}`;
        break;
      }
    }
    const claimant = this.claims.get(ip);
    if (!holder && claimant && claimant !== instanceId) holder = claimant;
    if (holder) {
      const reason = `${ip} is held by ${holder} in vCenter; nothing was started`;
      const hostId = managed(vms).find((v) => v.labels.instanceId === instanceId)?.labels.hostId;
      this.events.instance({ what: 'failed', hostId: hostId ?? '', instanceId, data: { reason, code: 'IP_IN_USE_ON_WIRE', ip } });
      throw new OrangeryError('IP_IN_USE_ON_WIRE', reason, { ip, holder });
    }
  }

  /** Must run under the instance's queue: two starts of one instance cannot both find the address free. */
  private async startChecked(vm: ManagedVm, vms: readonly Vm[]): Promise<ManagedVm> {
    const release = this.claimAddress(vm.labels.instanceId, vm.labels.ip, vms);
    try {
      return await this.powerOnAndWait(vm);
    } finally {
      release();
    }
  }

  /** Power on, then wait for the guest to report the IP (or the timeout, with the power on). */
  /** The context of the command that powered `vmRef` on (once), for its instance.running. */
  takePowerOnTrace(vmRef: string): Context | undefined {
    const ctx = this.powerOnTraces.get(vmRef);
    this.powerOnTraces.delete(vmRef);
    return ctx;
  }

  private async powerOnAndWait(vm: ManagedVm): Promise<ManagedVm> {
    this.expectedStops.delete(vm.ref);
    this.powerOnTraces.delete(vm.ref);
    this.powerOnTraces.set(vm.ref, context.active());
    // a power-on whose change never came must not be kept for ever
    if (this.powerOnTraces.size > MAX_POWER_ON_TRACES) this.powerOnTraces.delete(this.powerOnTraces.keys().next().value!);
    await this.limiter.run(vm.labels.hostId, () => this.vc.powerOn(vm.ref));
    const deadline = Date.now() + this.settings.guestIpTimeoutMs;
    let last: Vm | undefined;
    for (;;) {
      // power state and guest IP only: the labels are known (issue 17: at 8 in flight the
      // extraConfig of every poll was most of the agent's reads from vCenter)
      last = await this.vc.vm(vm.ref, 'power');
      if (!last) throw new OrangeryError('START_FAILED', `VM ${vm.name} of ${vm.labels.instanceId} disappeared while starting`, { vmId: vm.ref });
      if (last.powerState !== 'poweredOn') {
        throw new OrangeryError('START_FAILED', `VM ${vm.name} of ${vm.labels.instanceId} is ${last.powerState} right after its power-on`, { vmId: vm.ref });
      }
      if (last.guestIp === vm.labels.ip || Date.now() >= deadline) break;
      await sleep(this.pollMs);
    }
    const started: Vm = { ...last, extraConfig: vm.extraConfig };
    this.index.upsert(started);
    return { ...started, labels: vm.labels };
  }
}

/** vCenter answered that the power-on did not happen or did not last (not: vCenter did not answer). */
function startRefused(e: unknown): boolean {
  if (!(e instanceof OrangeryError)) return false;
  return e.code === 'START_FAILED' || e.code === 'INSUFFICIENT_CAPACITY' || e.code === 'INTERNAL';
}

export function managed(vms: readonly Vm[]): ManagedVm[] {
  const out: ManagedVm[] = [];
  for (const v of vms) {
    if (v.template) continue;
    const labels = labelsOf(v.extraConfig);
    if (labels) out.push({ ...v, labels });
  }
  return out;
}

export function managedOn(vms: readonly Vm[], hostId: string): ManagedVm[] {
  return managed(vms).filter((v) => v.labels.hostId === hostId);
}

import type {
  AgentInstance,
  Backend,
  CreateInstanceCommand,
  ErrorCode,
  InstanceNetwork,
  InstanceSummary,
  NewEvent,
  Owner,
  Placement,
  SlotView,
} from '@orangery/contracts';
import type { DrainRecord, MigrationRecord } from '../model';
import {
  LeaseLostError,
  PortError,
  type AddressInfo,
  type AgentPort,
  type Clock,
  type IpamPort,
  type Liveness,
  type MigrationStore,
  type SchedulerPort,
} from '../ports';

/**
 * In-memory stand-ins for the migrator's ports. They behave like the real services where
 * the saga depends on it (idempotent calls, holds by migration id, leases), log every call
 * so a test can assert the order of what happened outside, and break on demand.
 */

const clone = <T>(v: T): T => structuredClone(v);

/** Time that moves only when told, or when the code under test sleeps. */
export class ManualClock implements Clock {
  constructor(public ms = Date.parse('2026-01-01T00:00:00Z')) {}
  now(): number {
    return this.ms;
  }
  async sleep(ms: number): Promise<void> {
    this.ms += ms;
    await Promise.resolve();
  }
}

/** A shared log of outside calls, e.g. `agent.stop h1`, `scheduler.commit`. */
export type CallLog = string[];

type Fault = { match: (call: string) => boolean; error: () => Error; remaining: number };

class Faults {
  private readonly list: Fault[] = [];
  add(match: (call: string) => boolean, error: () => Error, times = Number.POSITIVE_INFINITY): void {
    this.list.push({ match, error, remaining: times });
  }
  check(call: string): void {
    const f = this.list.find((x) => x.remaining > 0 && x.match(call));
    if (!f) return;
    f.remaining--;
    throw f.error();
  }
}

export const transient = (message = 'no service answers'): PortError => new PortError('UNAVAILABLE', message, true);
export const refused = (code: ErrorCode, message = code.toLowerCase()): PortError => new PortError(code, message, false);

export class FakeScheduler implements SchedulerPort {
  readonly slots = new Map<string, SlotView>();
  readonly drained = new Set<string>();
  readonly hosts = new Set<string>();
  readonly faults = new Faults();
  /** where reserve places a slot when no toHost is given */
  nextTarget: Placement = { hostId: 'h2', backend: 'docker' };
  /** the apps' environments, as the scheduler keeps them: never in a SlotView, only in the agent's create */
  readonly environments = new Map<string, Record<string, string>>();
  /** the agents createOnTarget sends the create to (as the leader does); set by the test's world */
  agents: Pick<FakeAgents, 'create'> | undefined;

  constructor(private readonly log: CallLog) {}

  addSlot(id: string, hostId: string, backend: Backend = 'docker', ip = '198.18.0.7'): void {
    const [env, app, slot] = id.split(':');
    this.hosts.add(hostId);
    this.slots.set(id, {
      id,
      env: env!,
      app: app!,
      slot: Number(slot),
      state: 'running',
      phase: null,
      backend,
      hostId,
      ip,
      mac: '02:00:c6:12:00:07',
      spec: { resources: { cpu: 1, memoryMb: 512 }, image: 'svc:1', template: 'tpl', pool: 'p', vlan: 0 },
      hold: null,
    });
  }

  private call(name: string, id: string): SlotView {
    this.log.push(`scheduler.${name}`);
    this.faults.check(name);
    const s = this.slots.get(id);
    if (!s) throw refused('NOT_FOUND', `no instance ${id}`);
    return s;
  }

  async slotGet(id: string): Promise<SlotView | undefined> {
    this.log.push('scheduler.slotGet');
    this.faults.check('slotGet');
    const s = this.slots.get(id);
    return s ? clone(s) : undefined;
  }

  async hold(id: string, by: string): Promise<SlotView> {
    const s = this.call('hold', id);
    if (s.hold && s.hold.by !== by) throw refused('INSTANCE_CONFLICT', `held by ${s.hold.by}`);
    s.hold ??= { by };
    return clone(s);
  }

  async reserve(id: string, by: string, where: { toHost?: string; toBackend?: Backend }): Promise<Placement> {
    const s = this.call('reserve', id);
    if (s.hold?.by !== by) throw refused('INSTANCE_CONFLICT', 'not held');
    if (s.hold.target) return clone(s.hold.target);
    if (where.toHost !== undefined && !this.hosts.has(where.toHost)) throw refused('NOT_FOUND', `no host ${where.toHost}`);
    const target = where.toHost !== undefined ? { hostId: where.toHost, backend: where.toBackend ?? 'docker' } : this.nextTarget;
    s.hold.target = clone(target);
    return clone(target);
  }

  /**
   * Like the leader's slot.create: checks the hold and the address, then sends the create
   * with the slot's environment to the target's agent. Logs only what the agent receives
   * (`agent.create <target>`), so the saga's outside calls read as before.
   */
  async createOnTarget(id: string, by: string, network: InstanceNetwork): Promise<AgentInstance> {
    this.faults.check('createOnTarget');
    const s = this.slots.get(id);
    if (!s) throw refused('NOT_FOUND', `no instance ${id}`);
    if (s.hold?.by !== by || !s.hold.target) throw refused('INSTANCE_CONFLICT', 'not held by this migration, or no target');
    if (network.ip !== s.ip || network.mac !== s.mac) throw refused('INVALID_REQUEST', "not the slot's address");
    const target = s.hold.target;
    const artifact = target.backend === 'docker' ? s.spec.image : s.spec.template;
    const environment = this.environments.get(id);
    if (!this.agents) throw new Error('FakeScheduler.agents is not set');
    return this.agents.create(target.hostId, {
      instanceId: id,
      env: s.env,
      app: s.app,
      slot: s.slot,
      ...(target.backend === 'docker' ? { image: artifact! } : { template: artifact! }),
      resources: s.spec.resources,
      network,
      ...(environment ? { environment: clone(environment) } : {}),
    });
  }

  async commit(id: string, by: string): Promise<SlotView> {
    const s = this.call('commit', id);
    if (s.hold?.by !== by || !s.hold.target) throw refused('INSTANCE_CONFLICT', 'not held by this migration');
    s.hostId = s.hold.target.hostId;
    s.backend = s.hold.target.backend;
    s.hold = null;
    return clone(s);
  }

  async release(id: string, by: string): Promise<SlotView> {
    const s = this.call('release', id);
    if (!s.hold) return clone(s);
    if (s.hold.by !== by) throw refused('INSTANCE_CONFLICT', `held by ${s.hold.by}`);
    s.hold = null;
    return clone(s);
  }

  async hostDrain(hostId: string, drain: boolean): Promise<void> {
    this.log.push('scheduler.hostDrain');
    this.faults.check('hostDrain');
    if (!this.hosts.has(hostId)) throw refused('NOT_FOUND', `no host ${hostId}`);
    if (drain) this.drained.add(hostId);
  }

  async instances(): Promise<InstanceSummary[]> {
    return [...this.slots.values()].map((s) => ({
      id: s.id,
      env: s.env,
      app: s.app,
      slot: s.slot,
      state: 'running',
      backend: s.backend,
      host: s.hostId,
      ip: s.ip,
      mac: s.mac,
    }));
  }
}

export class FakeAgents implements AgentPort {
  /** host -> instance id -> instance */
  readonly hosts = new Map<string, Map<string, AgentInstance>>();
  readonly faults = new Faults();
  /** what get answers after a create, until changed (e.g. 'created' for a slow start) */
  stateAfterCreate: AgentInstance['state'] = 'running';
  /** every create command as the agent received it, by `<hostId>/<instanceId>` (the last one) */
  readonly created = new Map<string, CreateInstanceCommand>();

  constructor(private readonly log: CallLog) {}

  place(hostId: string, id: string, state: AgentInstance['state'] = 'running'): void {
    const [env, app, slot] = id.split(':');
    const host = this.hosts.get(hostId) ?? new Map<string, AgentInstance>();
    host.set(id, { instanceId: id, env: env!, app: app!, slot: Number(slot), hostId, backend: 'docker', state, ip: '198.18.0.7', mac: '02:00:c6:12:00:07' });
    this.hosts.set(hostId, host);
  }

  copy(hostId: string, id: string): AgentInstance | undefined {
    return this.hosts.get(hostId)?.get(id);
  }

  private call(name: string, hostId: string): void {
    this.log.push(`agent.${name} ${hostId}`);
    this.faults.check(`${name} ${hostId}`);
  }

  async stop(hostId: string, id: string): Promise<AgentInstance | undefined> {
    this.call('stop', hostId);
    const i = this.copy(hostId, id);
    if (i && i.state === 'running') i.state = 'stopped';
    return i ? clone(i) : undefined;
  }

  async start(hostId: string, id: string): Promise<AgentInstance> {
    this.call('start', hostId);
    const i = this.copy(hostId, id);
    if (!i) throw refused('NOT_FOUND');
    i.state = 'running';
    return clone(i);
  }

  /** the target agent's side of the scheduler's slot.create (FakeScheduler.createOnTarget) */
  async create(hostId: string, command: CreateInstanceCommand): Promise<AgentInstance> {
    this.call('create', hostId);
    this.created.set(`${hostId}/${command.instanceId}`, clone(command));
    const existing = this.copy(hostId, command.instanceId);
    if (existing) return clone(existing);
    this.place(hostId, command.instanceId, this.stateAfterCreate);
    const i = this.copy(hostId, command.instanceId)!;
    i.ip = command.network.ip;
    i.mac = command.network.mac;
    return clone(i);
  }

  async remove(hostId: string, id: string): Promise<void> {
    this.call('remove', hostId);
    this.hosts.get(hostId)?.delete(id);
  }

  async get(hostId: string, id: string): Promise<AgentInstance | undefined> {
    this.call('get', hostId);
    const i = this.copy(hostId, id);
    return i ? clone(i) : undefined;
  }

  /** An address answers while a running copy anywhere holds it. */
  async probe(hostId: string, _vlan: number, ips: readonly string[]): Promise<Map<string, boolean>> {
    this.call('probe', hostId);
    const live = new Set<string>();
    for (const on of this.hosts.values()) for (const i of on.values()) if (i.state === 'running') live.add(i.ip);
    return new Map(ips.map((ip) => [ip, live.has(ip)]));
  }
}

export class FakeIpam implements IpamPort {
  readonly bound = new Map<string, { instanceId: string; backend: Backend; host: string }>();
  readonly faults = new Faults();
  address: AddressInfo = { ip: '198.18.0.7', mac: '02:00:c6:12:00:07', prefixLength: 24, gateway: '198.18.0.1', vlan: 0 };

  constructor(private readonly log: CallLog) {}

  async get(_owner: Owner): Promise<AddressInfo | undefined> {
    this.log.push('ipam.get');
    return { ...this.address };
  }

  async bind(ip: string, instanceId: string, backend: Backend, host: string): Promise<void> {
    this.log.push(`ipam.bind ${host}`);
    this.faults.check('bind');
    this.bound.set(ip, { instanceId, backend, host });
  }
}

export class FakeLiveness implements Liveness {
  readonly silentMs = new Map<string, number>();
  /** ready docker hosts that can probe the wire */
  probers: string[] = [];
  proberFor(exclude: readonly string[]): string | undefined {
    return this.probers.find((h) => !exclude.includes(h));
  }
  goneForMs(hostId: string): number {
    return this.silentMs.get(hostId) ?? 0;
  }
}

interface Row {
  record: MigrationRecord;
  owner: string | undefined;
  leaseUntil: number | undefined;
}

/** Migrations and drains in memory, with the MySQL store's lease rules. */
export class InMemoryMigrationStore implements MigrationStore {
  readonly rows = new Map<string, Row>();
  readonly drains = new Map<string, DrainRecord>();
  readonly events: NewEvent<unknown>[] = [];
  /** every save, as a copy of the record (the saga's history) */
  readonly saves: MigrationRecord[] = [];
  /** throws this (once) on the save whose record matches: a process killed there */
  crashOn: ((m: MigrationRecord) => boolean) | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly leaseMs = 15_000,
  ) {}

  async insert(m: MigrationRecord, owner: string | undefined, events?: NewEvent<unknown>[]): Promise<void> {
    this.rows.set(m.id, { record: clone(m), owner, leaseUntil: owner === undefined ? undefined : this.clock.now() + this.leaseMs });
    this.events.push(...(events ?? []));
  }

  async insertDrain(d: DrainRecord, migrations: MigrationRecord[]): Promise<void> {
    this.drains.set(d.id, clone(d));
    for (const m of migrations) await this.insert(m, undefined);
  }

  async save(m: MigrationRecord, owner: string, events?: NewEvent<unknown>[]): Promise<void> {
    const row = this.rows.get(m.id);
    if (!row || row.owner !== owner) throw new LeaseLostError(m.id);
    if (this.crashOn?.(m)) {
      this.crashOn = undefined;
      throw new Error('killed');
    }
    row.record = clone(m);
    if (m.state !== 'running') row.leaseUntil = undefined;
    this.saves.push(clone(m));
    this.events.push(...(events ?? []));
  }

  async discard(id: string, owner: string): Promise<void> {
    if (this.rows.get(id)?.owner === owner) this.rows.delete(id);
  }

  async get(id: string): Promise<MigrationRecord | undefined> {
    const r = this.rows.get(id);
    return r ? clone(r.record) : undefined;
  }

  /** The lease runs out (the replica holding it died). */
  expire(id: string): void {
    const r = this.rows.get(id)!;
    r.leaseUntil = this.clock.now() - 1;
  }

  async claim(owner: string, limit: number): Promise<MigrationRecord[]> {
    const now = this.clock.now();
    const out: MigrationRecord[] = [];
    for (const r of this.rows.values()) {
      if (out.length >= limit) break;
      if (r.record.state !== 'running' || (r.leaseUntil !== undefined && r.leaseUntil >= now)) continue;
      const after = r.record.after !== undefined ? this.rows.get(r.record.after) : undefined;
      if (after && after.record.state === 'running') continue;
      r.owner = owner;
      r.leaseUntil = now + this.leaseMs;
      out.push(clone(r.record));
    }
    return out;
  }

  async renew(owner: string, ids: string[]): Promise<string[]> {
    const lost: string[] = [];
    for (const id of ids) {
      const r = this.rows.get(id);
      if (r?.owner === owner) r.leaseUntil = this.clock.now() + this.leaseMs;
      else lost.push(id);
    }
    return lost;
  }

  async unlease(owner: string, ids: string[]): Promise<void> {
    for (const id of ids) {
      const r = this.rows.get(id);
      if (r?.owner === owner) r.leaseUntil = undefined;
    }
  }

  async finishedDrains(): Promise<{ drain: DrainRecord; migrations: MigrationRecord[] }[]> {
    return [...this.drains.values()]
      .filter((d) => d.state === 'running')
      .map((d) => ({ drain: clone(d), migrations: d.migrationIds.map((id) => clone(this.rows.get(id)!.record)) }))
      .filter((x) => x.migrations.every((m) => m.state !== 'running'));
  }

  async endDrain(id: string, state: 'completed' | 'failed', events: NewEvent<unknown>[]): Promise<boolean> {
    const d = this.drains.get(id);
    if (!d || d.state !== 'running') return false;
    d.state = state;
    this.events.push(...events);
    return true;
  }
}

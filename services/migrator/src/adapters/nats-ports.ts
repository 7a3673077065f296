import type { NatsConnection } from '@nats-io/nats-core';
import {
  SUBJECTS,
  type AgentInstance,
  type Allocation,
  type Backend,
  type CreateInstanceCommand,
  type InstanceSummary,
  type Owner,
  type Placement,
  type ProbeWireResult,
  type Reply,
  type SlotView,
} from '@orangery/contracts';
import { callContract, unwrapReply } from '@orangery/messaging';
import { type AddressInfo, type AgentPort, type IpamPort, type SchedulerPort } from '../domain/ports';

const call = callContract;
const unwrap = <T>(r: Reply<T>): T => unwrapReply(r);

/** The scheduler leader's slot API and its operator query. */
export class NatsScheduler implements SchedulerPort {
  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 10_000,
  ) {}

  async slotGet(instanceId: string): Promise<SlotView | undefined> {
    const r = await call<SlotView>(this.nc, SUBJECTS.schedulerSlot.get, { instanceId }, this.timeoutMs);
    if (!r.ok && r.error.code === 'NOT_FOUND') return undefined;
    return unwrap(r);
  }

  async hold(instanceId: string, by: string): Promise<SlotView> {
    return unwrap(await call<SlotView>(this.nc, SUBJECTS.schedulerSlot.hold, { instanceId, by }, this.timeoutMs));
  }

  async reserve(instanceId: string, by: string, where: { toHost?: string; toBackend?: Backend; exclude?: string[] }): Promise<Placement> {
    const r = unwrap(await call<Placement>(this.nc, SUBJECTS.schedulerSlot.reserve, { instanceId, by, ...where }, this.timeoutMs));
    return { hostId: r.hostId, backend: r.backend };
  }

  async commit(instanceId: string, by: string): Promise<SlotView> {
    return unwrap(await call<SlotView>(this.nc, SUBJECTS.schedulerSlot.commit, { instanceId, by }, this.timeoutMs));
  }

  async release(instanceId: string, by: string): Promise<SlotView> {
    return unwrap(await call<SlotView>(this.nc, SUBJECTS.schedulerSlot.release, { instanceId, by }, this.timeoutMs));
  }

  async hostDrain(hostId: string, drain: boolean): Promise<void> {
    unwrap(await call(this.nc, SUBJECTS.schedulerSlot.hostDrain, { hostId, drain }, this.timeoutMs));
  }

  async instances(): Promise<InstanceSummary[]> {
    return unwrap(await call<{ instances: InstanceSummary[] }>(this.nc, SUBJECTS.scheduler.instancesList, {}, this.timeoutMs)).instances;
  }
}

/** Host agents (docker-agent, vmware-agent) over their command subjects. */
export class NatsAgents implements AgentPort {
  constructor(
    private readonly nc: NatsConnection,
    /** create and start wait for the duplicate-address probe and the engine; stop for the grace period */
    private readonly slowTimeoutMs = 30_000,
    private readonly timeoutMs = 10_000,
  ) {}

  async stop(hostId: string, instanceId: string): Promise<AgentInstance | undefined> {
    const r = await call<AgentInstance>(this.nc, SUBJECTS.agent.stop(hostId), { instanceId }, this.slowTimeoutMs);
    if (!r.ok && r.error.code === 'NOT_FOUND') return undefined;
    return unwrap(r);
  }

  async start(hostId: string, instanceId: string): Promise<AgentInstance> {
    return unwrap(await call<AgentInstance>(this.nc, SUBJECTS.agent.start(hostId), { instanceId }, this.slowTimeoutMs));
  }

  async create(hostId: string, command: CreateInstanceCommand): Promise<AgentInstance> {
    return unwrap(await call<AgentInstance>(this.nc, SUBJECTS.agent.create(hostId), command, this.slowTimeoutMs));
  }

  async remove(hostId: string, instanceId: string): Promise<void> {
    const r = await call(this.nc, SUBJECTS.agent.remove(hostId), { instanceId }, this.slowTimeoutMs);
    if (!r.ok && r.error.code !== 'NOT_FOUND') unwrap(r);
  }

  async get(hostId: string, instanceId: string): Promise<AgentInstance | undefined> {
    const r = await call<AgentInstance>(this.nc, SUBJECTS.agent.get(hostId), { instanceId }, this.timeoutMs);
    if (!r.ok && r.error.code === 'NOT_FOUND') return undefined;
    return unwrap(r);
  }

  async probe(hostId: string, vlan: number, ips: readonly string[]): Promise<Map<string, boolean>> {
    const r = unwrap(await call<ProbeWireResult>(this.nc, SUBJECTS.agent.probe(hostId), { vlan, ips }, this.timeoutMs));
    return new Map(r.results.map((x) => [x.ip, x.answered]));
  }
}

export class NatsIpam implements IpamPort {
  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 5_000,
  ) {}

  async get(owner: Owner): Promise<AddressInfo | undefined> {
    const r = await call<Allocation>(this.nc, SUBJECTS.ipam.get, { owner }, this.timeoutMs);
    if (!r.ok && r.error.code === 'NOT_FOUND') return undefined;
    const a = unwrap(r);
    if (a.state === 'released') return undefined;
    return { ip: a.ip, mac: a.mac, prefixLength: a.prefixLength, gateway: a.gateway, vlan: a.vlan };
  }

  async bind(ip: string, instanceId: string, backend: Backend, host: string): Promise<void> {
    unwrap(await call(this.nc, SUBJECTS.ipam.bind, { ip, instanceId, backend, host }, this.timeoutMs));
  }
}

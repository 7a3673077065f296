import type { NatsConnection } from '@nats-io/nats-core';
import {
  SUBJECTS,
  type AgentInstance,
  type AgentInstanceList,
  type Allocation,
  type Backend,
  type CreateInstanceCommand,
  type Owner,
  type Reply,
} from '@orangery/contracts';
import { NoReplyError, requestJson } from '@orangery/messaging';
import { PortError, type AgentPort, type AllocationInfo, type IpamPort, type PoolInfo } from '../domain/ports';

/** Codes that say "try again later" rather than "this will not work". */
const TRANSIENT = new Set(['UNAVAILABLE', 'INTERNAL']);

async function call<T>(nc: NatsConnection, subject: string, body: unknown, timeoutMs: number): Promise<Reply<T>> {
  try {
    return await requestJson<T>(nc, subject, body, timeoutMs);
  } catch (e) {
    if (e instanceof NoReplyError) throw new PortError('UNAVAILABLE', e.message, true, { subject, kind: e.kind });
    throw new PortError('UNAVAILABLE', `${subject}: ${e instanceof Error ? e.message : String(e)}`, true);
  }
}

function fail(reply: Extract<Reply<unknown>, { ok: false }>, transient: (code: string) => boolean): never {
  const { code, message, details } = reply.error;
  throw new PortError(code, message, transient(code), details);
}

/** ipam over NATS (the public contract's subjects). */
export class NatsIpam implements IpamPort {
  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 5_000,
  ) {}

  async pool(name: string): Promise<PoolInfo | undefined> {
    const r = await call<{ name: string; vlan: number }>(this.nc, SUBJECTS.ipam.poolGet, { name }, this.timeoutMs);
    if (r.ok) return { name: r.data.name, vlan: r.data.vlan };
    if (r.error.code === 'POOL_NOT_FOUND' || r.error.code === 'NOT_FOUND') return undefined;
    return fail(r, () => true);
  }

  async allocate(pool: string, owner: Owner): Promise<AllocationInfo> {
    const r = await call<Allocation>(this.nc, SUBJECTS.ipam.allocate, { pool, owner }, this.timeoutMs);
    if (!r.ok) return fail(r, (c) => TRANSIENT.has(c));
    const a = r.data;
    return { ip: a.ip, mac: a.mac, prefixLength: a.prefixLength, gateway: a.gateway, vlan: a.vlan };
  }

  async bind(ip: string, instanceId: string, backend: Backend, host: string): Promise<void> {
    const r = await call(this.nc, SUBJECTS.ipam.bind, { ip, instanceId, backend, host }, this.timeoutMs);
    if (!r.ok) fail(r, (c) => TRANSIENT.has(c) || c === 'NOT_FOUND');
  }

  async release(owner: Owner): Promise<void> {
    const r = await call(this.nc, SUBJECTS.ipam.release, { owner }, this.timeoutMs);
    if (!r.ok && r.error.code !== 'NOT_FOUND') fail(r, (c) => TRANSIENT.has(c));
  }
}

/** Host agents (docker-agent, vmware-agent) over their command subjects. */
export class NatsAgents implements AgentPort {
  constructor(
    private readonly nc: NatsConnection,
    /** create waits for the duplicate-address probe and the engine: generous */
    private readonly createTimeoutMs = 30_000,
    private readonly timeoutMs = 10_000,
  ) {}

  async create(hostId: string, command: CreateInstanceCommand): Promise<AgentInstance> {
    const r = await call<AgentInstance>(this.nc, SUBJECTS.agent.create(hostId), command, this.createTimeoutMs);
    return r.ok ? r.data : fail(r, (c) => TRANSIENT.has(c));
  }

  async start(hostId: string, instanceId: string): Promise<AgentInstance> {
    const r = await call<AgentInstance>(this.nc, SUBJECTS.agent.start(hostId), { instanceId }, this.createTimeoutMs);
    return r.ok ? r.data : fail(r, (c) => TRANSIENT.has(c));
  }

  async remove(hostId: string, instanceId: string): Promise<void> {
    const r = await call(this.nc, SUBJECTS.agent.remove(hostId), { instanceId }, this.timeoutMs);
    if (!r.ok && r.error.code !== 'NOT_FOUND') fail(r, (c) => TRANSIENT.has(c));
  }

  async get(hostId: string, instanceId: string): Promise<AgentInstance | undefined> {
    const r = await call<AgentInstance>(this.nc, SUBJECTS.agent.get(hostId), { instanceId }, this.timeoutMs);
    if (r.ok) return r.data;
    if (r.error.code === 'NOT_FOUND') return undefined;
    return fail(r, (c) => TRANSIENT.has(c));
  }

  async list(hostId: string): Promise<AgentInstance[]> {
    const r = await call<AgentInstanceList>(this.nc, SUBJECTS.agent.list(hostId), {}, this.timeoutMs);
    return r.ok ? r.data.instances : fail(r, (c) => TRANSIENT.has(c));
  }
}

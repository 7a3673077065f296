import type { NatsConnection } from '@nats-io/nats-core';
import DataLoader from 'dataloader';
import {
  SUBJECTS,
  type AgentInstance,
  type AgentInstanceList,
  type ProbeWireResult,
  type Allocation,
  type Backend,
  type CreateInstanceCommand,
  type Owner,
  type Reply,
} from '@orangery/contracts';
import { callContract, TRANSIENT_CODES, unwrapReply } from '@orangery/messaging';
import { PortError, type AgentPort, type AllocationInfo, type IpamPort, type PoolInfo } from '../domain/ports';

const call = callContract;
const TRANSIENT = TRANSIENT_CODES;

function fail(reply: Extract<Reply<unknown>, { ok: false }>, transient: (code: string) => boolean): never {
  return unwrapReply(reply, transient);
}

/** Items per batch request (ipam accepts up to 500) and how long the first one waits for company. */
const BATCH_MAX = 200;
const BATCH_WINDOW_MS = 2;

type ItemReply<T> = Reply<T>;

/**
 * ipam over NATS. `allocate` and `bind` are micro-batched: the calls of one event-loop turn
 * (plus BATCH_WINDOW_MS) go out as one `orangery.ipam.allocate.batch` / `bind.batch`
 * (docs/ipam.md "Batch requests"), each call getting exactly its single reply. One ipam
 * transaction then serves up to BATCH_MAX slots: measured, that is what lets the scheduler
 * place thousands of instances a second (single requests top out near 600/s).
 * DataLoader does the batching (cache off): it is the well-kept library for exactly this.
 */
export class NatsIpam implements IpamPort {
  private readonly allocations: DataLoader<{ pool: string; owner: Owner }, ItemReply<Allocation>>;
  private readonly binds: DataLoader<{ ip: string; instanceId: string; backend: Backend; host: string }, ItemReply<unknown>>;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 5_000,
  ) {
    const options = { cache: false, maxBatchSize: BATCH_MAX, batchScheduleFn: (run: () => void) => setTimeout(run, BATCH_WINDOW_MS) };
    this.allocations = new DataLoader((items) => this.batch<Allocation>(SUBJECTS.ipam.allocateBatch, items), options);
    this.binds = new DataLoader((items) => this.batch(SUBJECTS.ipam.bindBatch, items), options);
  }

  /** One batch request; a failure of the whole request (ipam away) fails each item, transiently. */
  private async batch<T>(subject: string, items: readonly unknown[]): Promise<(ItemReply<T> | Error)[]> {
    try {
      const r = await call<{ results: ItemReply<T>[] }>(this.nc, subject, { items }, this.timeoutMs);
      if (!r.ok) return items.map(() => new PortError(r.error.code, r.error.message, true, r.error.details));
      return r.data.results;
    } catch (e) {
      return items.map(() => (e instanceof Error ? e : new Error(String(e))));
    }
  }

  async pool(name: string): Promise<PoolInfo | undefined> {
    const r = await call<{ name: string; vlan: number }>(this.nc, SUBJECTS.ipam.poolGet, { name }, this.timeoutMs);
    if (r.ok) return { name: r.data.name, vlan: r.data.vlan };
    if (r.error.code === 'POOL_NOT_FOUND' || r.error.code === 'NOT_FOUND') return undefined;
    return fail(r, () => true);
  }

  async allocate(pool: string, owner: Owner): Promise<AllocationInfo> {
    const r = await this.allocations.load({ pool, owner });
    if (!r.ok) return fail(r, (c) => TRANSIENT.has(c));
    const a = r.data;
    return { ip: a.ip, mac: a.mac, prefixLength: a.prefixLength, gateway: a.gateway, vlan: a.vlan };
  }

  async bind(ip: string, instanceId: string, backend: Backend, host: string): Promise<void> {
    const r = await this.binds.load({ ip, instanceId, backend, host });
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

  async stop(hostId: string, instanceId: string): Promise<AgentInstance | undefined> {
    const r = await call<AgentInstance>(this.nc, SUBJECTS.agent.stop(hostId), { instanceId }, this.createTimeoutMs);
    if (r.ok) return r.data;
    if (r.error.code === 'NOT_FOUND') return undefined;
    return fail(r, (c) => TRANSIENT.has(c));
  }

  async probe(hostId: string, vlan: number, ips: readonly string[]): Promise<Map<string, boolean>> {
    const r = await call<ProbeWireResult>(this.nc, SUBJECTS.agent.probe(hostId), { vlan, ips }, this.timeoutMs);
    if (!r.ok) return fail(r, (c) => TRANSIENT.has(c));
    return new Map(r.data.results.map((x) => [x.ip, x.answered]));
  }
}

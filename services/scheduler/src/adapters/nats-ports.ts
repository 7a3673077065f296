import type { NatsConnection } from '@nats-io/nats-core';
import DataLoader from 'dataloader';
import { PortError, type Allocation, type Backend, type Owner, type Reply } from '@orangery/contracts';
import { AgentClient, IpamClient, replyError, unwrapReply, type BindItem } from '@orangery/messaging';
import type { AgentPort, AllocationInfo, IpamPort, PoolInfo } from '../domain/ports';

/** Items per batch request (ipam accepts up to 500) and how long the first one waits for company. */
const BATCH_MAX = 200;
const BATCH_WINDOW_MS = 2;

/** `e` as a failure worth retrying: the scheduler's own verdict for some of ipam's refusals. */
const retryable = (e: unknown): unknown => (e instanceof PortError && !e.retryable ? new PortError(e.code, e.message, true, e.details) : e);

/**
 * ipam over NATS. `allocate` and `bind` are micro-batched: the calls of one event-loop turn
 * (plus BATCH_WINDOW_MS) go out as one `allocate.batch` / `bind.batch` request
 * (docs/ipam.md "Batch requests"), each call getting exactly its single reply. One ipam
 * transaction then serves up to BATCH_MAX slots: measured, that is what lets the scheduler
 * place thousands of instances a second (single requests top out near 600/s).
 * DataLoader does the batching (cache off): it is the well-kept library for exactly this.
 */
export class NatsIpam implements IpamPort {
  private readonly client: IpamClient;
  private readonly allocations: DataLoader<{ pool: string; owner: Owner }, Reply<Allocation>>;
  private readonly binds: DataLoader<BindItem, Reply<unknown>>;

  constructor(nc: NatsConnection, timeoutMs = 5_000) {
    this.client = new IpamClient(nc, timeoutMs);
    const options = { cache: false, maxBatchSize: BATCH_MAX, batchScheduleFn: (run: () => void) => setTimeout(run, BATCH_WINDOW_MS) };
    this.allocations = new DataLoader((items) => this.batch(() => this.client.allocateBatch(items), items.length), options);
    this.binds = new DataLoader((items) => this.batch(() => this.client.bindBatch(items), items.length), options);
  }

  /** One batch request; a failure of the whole request (ipam away, or refusing it) fails each item, retryably. */
  private async batch<T>(send: () => Promise<Reply<T>[]>, count: number): Promise<(Reply<T> | Error)[]> {
    try {
      return await send();
    } catch (e) {
      const err = retryable(e);
      return Array.from({ length: count }, () => (err instanceof Error ? err : new Error(String(err))));
    }
  }

  async pool(name: string): Promise<PoolInfo | undefined> {
    try {
      const p = await this.client.poolGet(name);
      return p && { name: p.name, vlan: p.vlan };
    } catch (e) {
      // a pool that exists answers; any other refusal is worth asking again
      throw retryable(e);
    }
  }

  async allocate(pool: string, owner: Owner): Promise<AllocationInfo> {
    const a = unwrapReply(await this.allocations.load({ pool, owner }));
    return { ip: a.ip, mac: a.mac, prefixLength: a.prefixLength, gateway: a.gateway, vlan: a.vlan };
  }

  async bind(ip: string, instanceId: string, backend: Backend, host: string): Promise<void> {
    const r = await this.binds.load({ ip, instanceId, backend, host });
    if (r.ok) return;
    // NOT_FOUND: the allocation is not visible to bind yet; the slot binds again later
    throw r.error.code === 'NOT_FOUND' ? retryable(replyError(r.error)) : replyError(r.error);
  }

  release(owner: Owner): Promise<void> {
    return this.client.release(owner);
  }
}

/** Host agents (docker-agent, vmware-agent): the agent contract's client is the port as it is. */
export class NatsAgents extends AgentClient implements AgentPort {}

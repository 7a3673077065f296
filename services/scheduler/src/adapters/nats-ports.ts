import type { NatsConnection } from '@nats-io/nats-core';
import DataLoader from 'dataloader';
import { context, trace, type Context, type Link } from '@opentelemetry/api';
import { PortError, type Allocation, type Backend, type Owner, type Reply } from '@orangery/contracts';
import { AgentClient, currentTraceparent, IpamClient, replyError, unwrapReply, type BindItem } from '@orangery/messaging';
import type { AgentPort, AllocationInfo, IpamPort, PoolInfo } from '../domain/ports';

/** Items per batch request (ipam accepts up to 500) and how long the first one waits for company. */
const BATCH_MAX = 200;
const BATCH_WINDOW_MS = 2;

/** `e` as a failure worth retrying: the scheduler's own verdict for some of ipam's refusals. */
const retryable = (e: unknown): unknown => (e instanceof PortError && !e.retryable ? new PortError(e.code, e.message, true, e.details) : e);

/** A batched call's item and the trace context of the caller that asked for it. */
type Traced<T> = T & { readonly ctx: Context };

/** The item as sent: its caller's `traceparent` rides along, so ipam's event for it carries the caller's trace. */
const withTraceparent = <T>({ ctx, ...item }: Traced<T>): T & { traceparent?: string } => {
  const traceparent = currentTraceparent(ctx);
  return { ...(item as T), ...(traceparent ? { traceparent } : {}) };
};

/**
 * A batch's span: child of the first item's context (so the ipam request and ipam's server
 * span join that trace), with a LINK to every other item's span context, so each caller's
 * trace shows the batch its call rode in.
 */
function inBatchSpan<R>(name: string, ctxs: readonly Context[], run: () => Promise<R>): Promise<R> {
  const parent = ctxs[0] ?? context.active();
  const seen = new Set<string>();
  const links: Link[] = [];
  for (const ctx of ctxs.slice(1)) {
    const sc = trace.getSpanContext(ctx);
    if (!sc || seen.has(sc.spanId)) continue;
    seen.add(sc.spanId);
    links.push({ context: sc });
  }
  const span = trace.getTracer('orangery').startSpan(name, { links, attributes: { 'orangery.batch.size': ctxs.length } }, parent);
  return context.with(trace.setSpan(parent, span), run).finally(() => span.end());
}

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
  private readonly allocations: DataLoader<Traced<{ pool: string; owner: Owner }>, Reply<Allocation>>;
  private readonly binds: DataLoader<Traced<BindItem>, Reply<unknown>>;

  constructor(nc: NatsConnection, timeoutMs = 5_000) {
    this.client = new IpamClient(nc, timeoutMs);
    const options = { cache: false, maxBatchSize: BATCH_MAX, batchScheduleFn: (run: () => void) => setTimeout(run, BATCH_WINDOW_MS) };
    this.allocations = new DataLoader(
      (items) =>
        inBatchSpan(
          'scheduler.allocate-batch',
          items.map((i) => i.ctx),
          () => this.batch(() => this.client.allocateBatch(items.map(withTraceparent)), items.length),
        ),
      options,
    );
    this.binds = new DataLoader(
      (items) =>
        inBatchSpan(
          'scheduler.bind-batch',
          items.map((i) => i.ctx),
          () => this.batch(() => this.client.bindBatch(items.map(withTraceparent)), items.length),
        ),
      options,
    );
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
    const a = unwrapReply(await this.allocations.load({ pool, owner, ctx: context.active() }));
    return { ip: a.ip, mac: a.mac, prefixLength: a.prefixLength, gateway: a.gateway, vlan: a.vlan };
  }

  async bind(ip: string, instanceId: string, backend: Backend, host: string): Promise<void> {
    const r = await this.binds.load({ ip, instanceId, backend, host, ctx: context.active() });
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

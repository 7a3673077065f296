import type { NatsConnection } from '@nats-io/nats-core';
import {
  SUBJECTS,
  type AgentInstance,
  type AgentInstanceList,
  type Allocation,
  type Backend,
  type CreateInstanceCommand,
  type SwarmCreateInstanceCommand,
  type ErrorCode,
  type InstanceNetwork,
  type HostsListData,
  type HostSummary,
  type InstancesListData,
  type InstancesListRequest,
  type InstanceSummary,
  type Owner,
  type Placement,
  type Pool,
  type PoolList,
  type PoolListRequest,
  type PoolWithUsage,
  type ProbeWireResult,
  type Reply,
  type SlotView,
} from '@orangery/contracts';
import { callContract, unwrapReply } from './requester';

/**
 * One typed client per service contract (CONTRACT.md, docs/asyncapi.yaml). Every method
 * sends one request with a timeout and returns the reply's data; a refusal is thrown as a
 * PortError (retryable as RETRYABLE_CODES says), no reply at all as a retryable PortError
 * UNAVAILABLE. Where the contract's "not found" is an answer rather than a failure, the
 * method says so and returns undefined. What a caller then retries is its own policy.
 */

/** A page request of a list subject (CONTRACT.md "Operators", v1.1). */
export interface PageRequest {
  limit?: number;
  cursor?: string;
}

/**
 * Every page of a list subject, one request per page, in the list's order: asks for the
 * first page, then for the page after each `nextCursor` until a reply has none.
 */
export async function* pages<P extends { nextCursor?: string }>(fetchPage: (cursor: string | undefined) => Promise<P>): AsyncGenerator<P> {
  let cursor: string | undefined;
  for (;;) {
    const page = await fetchPage(cursor);
    yield page;
    if (page.nextCursor === undefined) return;
    // A cursor that does not move would loop forever: the lister is broken.
    if (page.nextCursor === cursor) throw new Error(`a list answered the cursor it was given (${cursor}) as its next one`);
    cursor = page.nextCursor;
  }
}

/** All items of a list subject: every page's `items(page)`, in order. */
export async function listAll<P extends { nextCursor?: string }, T>(
  fetchPage: (cursor: string | undefined) => Promise<P>,
  items: (page: P) => readonly T[],
): Promise<T[]> {
  const out: T[] = [];
  for await (const page of pages(fetchPage)) out.push(...items(page));
  return out;
}

/** The data of `r`, undefined when it is one of the `absent` codes. */
function dataOrAbsent<T>(r: Reply<T>, absent: readonly ErrorCode[]): T | undefined {
  if (!r.ok && absent.includes(r.error.code)) return undefined;
  return unwrapReply(r);
}

abstract class ContractClient {
  constructor(
    protected readonly nc: NatsConnection,
    protected readonly timeoutMs: number,
  ) {}

  protected send<T>(subject: string, body: unknown, timeoutMs = this.timeoutMs): Promise<Reply<T>> {
    return callContract<T>(this.nc, subject, body, timeoutMs);
  }
}

export interface BindItem {
  ip: string;
  instanceId: string;
  backend: Backend;
  host: string;
}

/** ipam (docs/ipam.md). */
export class IpamClient extends ContractClient {
  constructor(nc: NatsConnection, timeoutMs = 5_000) {
    super(nc, timeoutMs);
  }

  /** undefined when the pool does not exist */
  async poolGet(name: string): Promise<Pool | undefined> {
    return dataOrAbsent(await this.send<Pool>(SUBJECTS.ipam.poolGet, { name }), ['POOL_NOT_FOUND', 'NOT_FOUND']);
  }

  /** the owner's allocation (also a released one); undefined when it has none */
  async get(owner: Owner): Promise<Allocation | undefined> {
    return dataOrAbsent(await this.send<Allocation>(SUBJECTS.ipam.get, { owner }), ['NOT_FOUND']);
  }

  async bind(item: BindItem): Promise<void> {
    unwrapReply(await this.send(SUBJECTS.ipam.bind, item));
  }

  /** NOT_FOUND is success: nothing to give back */
  async release(owner: Owner): Promise<void> {
    dataOrAbsent(await this.send(SUBJECTS.ipam.release, { owner }), ['NOT_FOUND']);
  }

  /** One page of pools in name order (v1.1): `nextCursor` while more remain. */
  async poolsPage(req: PageRequest = {}): Promise<PoolList> {
    return unwrapReply(await this.send<PoolList>(SUBJECTS.ipam.poolList, req satisfies PoolListRequest));
  }

  /** Every pool, in name order, read page by page. */
  async poolsAll(limit?: number): Promise<PoolWithUsage[]> {
    return listAll(
      (cursor) => this.poolsPage({ ...(limit !== undefined ? { limit } : {}), ...(cursor !== undefined ? { cursor } : {}) }),
      (p) => p.pools,
    );
  }

  /**
   * One reply per item, in order; a refusal of the whole batch is thrown. An item's
   * `traceparent` is the trace its ip.allocated carries (project addition).
   */
  async allocateBatch(items: readonly { pool: string; owner: Owner; traceparent?: string }[]): Promise<Reply<Allocation>[]> {
    return unwrapReply(await this.send<{ results: Reply<Allocation>[] }>(SUBJECTS.ipam.allocateBatch, { items })).results;
  }

  /** One reply per item, in order; a refusal of the whole batch is thrown. */
  async bindBatch(items: readonly (BindItem & { traceparent?: string })[]): Promise<Reply<unknown>[]> {
    return unwrapReply(await this.send<{ results: Reply<unknown>[] }>(SUBJECTS.ipam.bindBatch, { items })).results;
  }
}

/** The scheduler: its operator queries and the leader's slot API (docs/scheduler.md "Slot API"). */
export class SchedulerClient extends ContractClient {
  constructor(nc: NatsConnection, timeoutMs = 10_000) {
    super(nc, timeoutMs);
  }

  /** One page of hosts in id order (v1.1): `nextCursor` while more remain. */
  async hostsPage(req: PageRequest = {}, timeoutMs?: number): Promise<HostsListData> {
    return unwrapReply(await this.send<HostsListData>(SUBJECTS.scheduler.hostsList, req, timeoutMs));
  }

  /** Every host, in id order, read page by page (each page within `timeoutMs`). */
  async hostsAll(timeoutMs?: number): Promise<HostSummary[]> {
    return listAll(
      (cursor) => this.hostsPage(cursor !== undefined ? { cursor } : {}, timeoutMs),
      (p) => p.hosts,
    );
  }

  /** One page of instances in (env, app, slot) order, filtered by env and app (v1.1). */
  async instancesPage(req: InstancesListRequest = {}): Promise<InstancesListData> {
    return unwrapReply(await this.send<InstancesListData>(SUBJECTS.scheduler.instancesList, req));
  }

  /** Every instance (of `env` and `app` when given), in (env, app, slot) order, read page by page. */
  async instancesAll(filter: { env?: string; app?: string } = {}): Promise<InstanceSummary[]> {
    return listAll(
      (cursor) => this.instancesPage({ ...filter, ...(cursor !== undefined ? { cursor } : {}) }),
      (p) => p.instances,
    );
  }

  /** undefined when the slot does not exist */
  async slotGet(instanceId: string): Promise<SlotView | undefined> {
    return dataOrAbsent(await this.send<SlotView>(SUBJECTS.schedulerSlot.get, { instanceId }), ['NOT_FOUND']);
  }

  /**
   * The leader creates the held slot's copy on its reserved target (issue 13: the app's
   * environment stays in the scheduler). Waits `timeoutMs`: longer than the leader's own
   * wait for the agent's create, or a slow create is retried while it still runs (harmless:
   * the agent's create is idempotent, but wasteful).
   */
  async slotCreate(instanceId: string, by: string, network: InstanceNetwork, timeoutMs?: number): Promise<AgentInstance> {
    return unwrapReply(await this.send<AgentInstance>(SUBJECTS.schedulerSlot.create, { instanceId, by, network }, timeoutMs));
  }

  async hold(instanceId: string, by: string): Promise<SlotView> {
    return unwrapReply(await this.send<SlotView>(SUBJECTS.schedulerSlot.hold, { instanceId, by }));
  }

  async reserve(instanceId: string, by: string, where: { toHost?: string; toBackend?: Backend; exclude?: string[] }): Promise<Placement> {
    const r = unwrapReply(await this.send<Placement>(SUBJECTS.schedulerSlot.reserve, { instanceId, by, ...where }));
    return { hostId: r.hostId, backend: r.backend };
  }

  async commit(instanceId: string, by: string): Promise<SlotView> {
    return unwrapReply(await this.send<SlotView>(SUBJECTS.schedulerSlot.commit, { instanceId, by }));
  }

  async release(instanceId: string, by: string): Promise<SlotView> {
    return unwrapReply(await this.send<SlotView>(SUBJECTS.schedulerSlot.release, { instanceId, by }));
  }

  async hostDrain(hostId: string, drain: boolean): Promise<void> {
    unwrapReply(await this.send(SUBJECTS.schedulerSlot.hostDrain, { hostId, drain }));
  }
}

export interface AgentClientTimeouts {
  /**
   * create, start, stop and remove: the duplicate-address probe, the engine and a stop's
   * grace period (ORANGERY_AGENT_TIMEOUT_SECONDS)
   */
  commandMs?: number;
  /** get, list and the wire probe */
  queryMs?: number;
}

/** A host's agent, docker or vmware (docs/asyncapi.yaml, `orangery.agent.<hostId>.*`). */
export class AgentClient extends ContractClient {
  private readonly commandMs: number;

  constructor(nc: NatsConnection, timeouts: AgentClientTimeouts = {}) {
    super(nc, timeouts.queryMs ?? 10_000);
    this.commandMs = timeouts.commandMs ?? 30_000;
  }

  /** a swarm node's host takes a SwarmCreateInstanceCommand (a pool, no network: swarm picks the address) */
  async create(hostId: string, command: CreateInstanceCommand | SwarmCreateInstanceCommand): Promise<AgentInstance> {
    return unwrapReply(await this.send<AgentInstance>(SUBJECTS.agent.create(hostId), command, this.commandMs));
  }

  async start(hostId: string, instanceId: string): Promise<AgentInstance> {
    return unwrapReply(await this.send<AgentInstance>(SUBJECTS.agent.start(hostId), { instanceId }, this.commandMs));
  }

  /** the instance as the agent replies after the stop; undefined when the agent has no such instance */
  async stop(hostId: string, instanceId: string): Promise<AgentInstance | undefined> {
    return dataOrAbsent(await this.send<AgentInstance>(SUBJECTS.agent.stop(hostId), { instanceId }, this.commandMs), ['NOT_FOUND']);
  }

  /** succeeds when the instance is gone, also when it never existed */
  async remove(hostId: string, instanceId: string): Promise<void> {
    dataOrAbsent(await this.send(SUBJECTS.agent.remove(hostId), { instanceId }, this.commandMs), ['NOT_FOUND']);
  }

  /** undefined when the agent has no such instance */
  async get(hostId: string, instanceId: string): Promise<AgentInstance | undefined> {
    return dataOrAbsent(await this.send<AgentInstance>(SUBJECTS.agent.get(hostId), { instanceId }), ['NOT_FOUND']);
  }

  async list(hostId: string): Promise<AgentInstance[]> {
    return unwrapReply(await this.send<AgentInstanceList>(SUBJECTS.agent.list(hostId), {})).instances;
  }

  /**
   * The host's facts as its own agent states them (issue 13): the reply comes from the one
   * subscriber NATS permissions allow on `orangery.agent.<hostId>.>`. Unchecked here: the
   * caller decodes it and checks that it names `hostId`.
   */
  async hostFacts(hostId: string): Promise<unknown> {
    return unwrapReply(await this.send<unknown>(SUBJECTS.agent.hostGet(hostId), {}));
  }

  /** ARP probes from `hostId`'s interface on `vlan`: ip -> whether something answered */
  async probe(hostId: string, vlan: number, ips: readonly string[]): Promise<Map<string, boolean>> {
    const r = unwrapReply(await this.send<ProbeWireResult>(SUBJECTS.agent.probe(hostId), { vlan, ips }));
    return new Map(r.results.map((x) => [x.ip, x.answered]));
  }
}

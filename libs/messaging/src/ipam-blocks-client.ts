import type { NatsConnection } from '@nats-io/nats-core';
import {
  SUBJECTS,
  type Allocation,
  type BlockBindRequest,
  type BlockList,
  type BlockListRequest,
  type BlockRef,
  type BlockReserveRequest,
  type IpBlock,
  type Reply,
} from '@orangery/contracts';
import { callContract, unwrapReply } from './requester';

/**
 * ipam's swarm node blocks (docs/ipam.md "Blocks"), for the swarm-agent: a refusal is thrown
 * as a PortError with the contract's code (NOT_IN_BLOCK, IP_TAKEN, POOL_EXHAUSTED, ...), no
 * responders as a retryable UNAVAILABLE.
 */
export class IpamBlocksClient {
  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 5_000,
  ) {}

  /** The host's block of the pool: the one it holds, or a new one of `size` addresses. */
  async reserve(req: BlockReserveRequest): Promise<IpBlock> {
    return unwrapReply(await this.send<IpBlock>(SUBJECTS.ipam.blockReserve, req));
  }

  /** Gives the block back; undefined when the host held none (NOT_FOUND: nothing to give back). */
  async release(ref: BlockRef): Promise<IpBlock | undefined> {
    const r = await this.send<IpBlock>(SUBJECTS.ipam.blockRelease, ref);
    if (!r.ok && r.error.code === 'NOT_FOUND') return undefined;
    return unwrapReply(r);
  }

  async list(req: BlockListRequest = {}): Promise<IpBlock[]> {
    return unwrapReply(await this.send<BlockList>(SUBJECTS.ipam.blockList, req)).blocks;
  }

  /** Records a running task's address (inside its node's block) as bound to its instance. */
  async bind(req: BlockBindRequest): Promise<Allocation> {
    return unwrapReply(await this.send<Allocation>(SUBJECTS.ipam.blockBind, req));
  }

  /**
   * The task is gone; undefined when the address was never bound (NOT_FOUND). With
   * `instanceId`, only if the address is still bound to that instance: otherwise the
   * allocation comes back unchanged (its instanceId the current holder's), nothing freed.
   */
  async unbind(ip: string, instanceId?: string): Promise<Allocation | undefined> {
    const r = await this.send<Allocation>(SUBJECTS.ipam.blockUnbind, instanceId === undefined ? { ip } : { ip, instanceId });
    if (!r.ok && r.error.code === 'NOT_FOUND') return undefined;
    return unwrapReply(r);
  }

  private send<T>(subject: string, body: unknown): Promise<Reply<T>> {
    return callContract<T>(this.nc, subject, body, this.timeoutMs);
  }
}

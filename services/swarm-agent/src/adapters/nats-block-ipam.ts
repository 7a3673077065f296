import type { NatsConnection } from '@nats-io/nats-core';
import { SUBJECTS, type Allocation, type BlockBindRequest, type BlockUnbindRequest, type IpBlock, type Owner } from '@orangery/contracts';
import { callContract, IpamBlocksClient, IpamClient, unwrapReply } from '@orangery/messaging';
import type { BlockIpam } from '../domain/ports';

/** ipam's block calls (and `ipam.get`) over NATS; no reply is a retryable UNAVAILABLE. */
export class NatsBlockIpam implements BlockIpam {
  private readonly blocks: IpamBlocksClient;
  private readonly ipam: IpamClient;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 5_000,
  ) {
    this.blocks = new IpamBlocksClient(nc, timeoutMs);
    this.ipam = new IpamClient(nc, timeoutMs);
  }

  reserve(pool: string, host: string, size: number): Promise<IpBlock> {
    return this.blocks.reserve({ pool, host, size });
  }

  async release(pool: string, host: string): Promise<void> {
    await this.blocks.release({ pool, host });
  }

  bind(req: BlockBindRequest): Promise<Allocation> {
    return this.blocks.bind(req);
  }

  /** `{ ip, instanceId }` sent directly until IpamBlocksClient.unbind takes the instance id (NOT_FOUND: not held, no error) */
  async unbind(ip: string, instanceId?: string): Promise<void> {
    const req: BlockUnbindRequest = instanceId === undefined ? { ip } : { ip, instanceId };
    const r = await callContract<Allocation>(this.nc, SUBJECTS.ipam.blockUnbind, req, this.timeoutMs);
    if (!r.ok && r.error.code === 'NOT_FOUND') return;
    unwrapReply(r);
  }

  async held(owner: Owner): Promise<Allocation | undefined> {
    const a = await this.ipam.get(owner);
    return a && a.state !== 'released' ? a : undefined;
  }
}

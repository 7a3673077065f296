import type { NatsConnection } from '@nats-io/nats-core';
import type { Allocation, BlockBindRequest, IpBlock, Owner } from '@orangery/contracts';
import { IpamBlocksClient, IpamClient } from '@orangery/messaging';
import type { BlockIpam } from '../domain/ports';

/** ipam's block calls (and `ipam.get`) over NATS; no reply is a retryable UNAVAILABLE. */
export class NatsBlockIpam implements BlockIpam {
  private readonly blocks: IpamBlocksClient;
  private readonly ipam: IpamClient;

  constructor(nc: NatsConnection, timeoutMs = 5_000) {
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

  async unbind(ip: string): Promise<void> {
    await this.blocks.unbind(ip);
  }

  async held(owner: Owner): Promise<Allocation | undefined> {
    const a = await this.ipam.get(owner);
    return a && a.state !== 'released' ? a : undefined;
  }
}

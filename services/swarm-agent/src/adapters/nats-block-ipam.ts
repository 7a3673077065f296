import type { NatsConnection } from '@nats-io/nats-core';
import { SUBJECTS, type Allocation, type BlockBindRequest, type IpBlock, type Owner } from '@orangery/contracts';
import { callContract, unwrapReply } from '@orangery/messaging';
import type { BlockIpam } from '../domain/ports';

/** ipam's block calls over NATS (docs/asyncapi.yaml); no reply is a retryable UNAVAILABLE. */
export class NatsBlockIpam implements BlockIpam {
  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 5_000,
  ) {}

  async reserve(pool: string, host: string, size: number): Promise<IpBlock> {
    return unwrapReply(await callContract<IpBlock>(this.nc, SUBJECTS.ipam.blockReserve, { pool, host, size }, this.timeoutMs));
  }

  async release(pool: string, host: string): Promise<void> {
    unwrapReply(await callContract(this.nc, SUBJECTS.ipam.blockRelease, { pool, host }, this.timeoutMs));
  }

  async bind(req: BlockBindRequest): Promise<Allocation> {
    return unwrapReply(await callContract<Allocation>(this.nc, SUBJECTS.ipam.blockBind, req, this.timeoutMs));
  }

  async unbind(ip: string): Promise<void> {
    const r = await callContract(this.nc, SUBJECTS.ipam.blockUnbind, { ip }, this.timeoutMs);
    if (!r.ok && r.error.code === 'NOT_FOUND') return;
    unwrapReply(r);
  }

  async held(owner: Owner): Promise<Allocation | undefined> {
    const r = await callContract<Allocation>(this.nc, SUBJECTS.ipam.get, { owner }, this.timeoutMs);
    if (!r.ok && r.error.code === 'NOT_FOUND') return undefined;
    const a = unwrapReply(r);
    return a.state === 'released' ? undefined : a;
  }
}

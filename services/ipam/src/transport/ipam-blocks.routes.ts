import { BlockBindRequest, BlockListRequest, BlockRef, BlockReserveRequest, BlockUnbindRequest, decode, SUBJECTS } from '@orangery/contracts';
import { currentTraceparent, type RequestContext, type Route } from '@orangery/messaging';
import type { CallContext } from '../domain/allocation-rules';
import type { IpBlocks } from '../domain/blocks';

const callContext = (ctx: RequestContext): CallContext => {
  const traceparent = currentTraceparent();
  return { ...(traceparent ? { traceparent } : {}), ...(ctx.actor ? { actor: ctx.actor.slice(0, 255) } : {}) };
};

/** `orangery.ipam.block.*` (docs/ipam.md "Blocks"): one line per subject, as ipamRoutes. */
export function blockRoutes(blocks: IpBlocks): Route[] {
  const s = SUBJECTS.ipam;
  return [
    { subject: s.blockReserve, handler: (b, c) => blocks.reserve(decode(BlockReserveRequest, b), callContext(c)) },
    { subject: s.blockRelease, handler: (b, c) => blocks.release(decode(BlockRef, b), callContext(c)) },
    { subject: s.blockList, handler: async (b) => blocks.list(decode(BlockListRequest, b)) },
    { subject: s.blockBind, handler: (b, c) => blocks.bind(decode(BlockBindRequest, b), callContext(c)) },
    { subject: s.blockUnbind, handler: (b, c) => blocks.unbind(decode(BlockUnbindRequest, b), callContext(c)) },
  ];
}

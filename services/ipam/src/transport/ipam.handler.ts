import { Inject, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  AddressLookupRequest,
  AllocateBatchRequest,
  AllocateRequest,
  BindBatchRequest,
  BindRequest,
  decode,
  decodeBatch,
  errorReply,
  type DecodedItem,
  type Reply,
  CURSORS,
  pageQueryOf,
  PoolListRequest,
  PoolCreateRequest,
  PoolNameRequest,
  QUEUE_GROUPS,
  SUBJECTS,
} from '@orangery/contracts';
import { currentTraceparent, ensureEventsStream, Responder, type RequestContext, type Route } from '@orangery/messaging';
import { LOGGER, NATS } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { IpamService, CallContext } from '../domain/ipam.service';
import type { OutboxRelay } from '@orangery/persistence';
import { IP_BLOCKS, IPAM_SERVICE, OUTBOX } from '../tokens';
import type { IpBlocks } from '../domain/blocks';
import { blockRoutes } from './ipam-blocks.routes';

const callContext = (ctx: RequestContext): CallContext => {
  const traceparent = currentTraceparent();
  return { ...(traceparent ? { traceparent } : {}), ...(ctx.actor ? { actor: ctx.actor.slice(0, 255) } : {}) };
};

/**
 * Runs the well-formed items of a batch through `serve` and merges its results with the
 * malformed items' INVALID_REQUEST, in item order.
 */
async function serveBatch<T, R>(items: DecodedItem<T>[], serve: (valid: T[]) => Promise<Reply<R>[]>): Promise<{ results: Reply<R>[] }> {
  const valid = items.flatMap((item) => (item.ok ? [item.value] : []));
  const served = valid.length > 0 ? await serve(valid) : [];
  let next = 0;
  return { results: items.map((item) => (item.ok ? served[next++]! : errorReply(item.error.toBody()))) };
}

/** Maps the `orangery.ipam.*` subjects onto the domain: decode and validate, call, reply. */
export function ipamRoutes(ipam: IpamService): Route[] {
  const s = SUBJECTS.ipam;
  return [
    { subject: s.poolCreate, handler: (b, c) => ipam.createPool(decode(PoolCreateRequest, b), callContext(c)) },
    { subject: s.poolGet, handler: async (b) => ipam.getPool(decode(PoolNameRequest, b).name) },
    { subject: s.poolList, handler: async (b) => ipam.listPools(pageQueryOf(CURSORS.pools, decode(PoolListRequest, b))) },
    { subject: s.poolDelete, handler: (b, c) => ipam.deletePool(decode(PoolNameRequest, b).name, callContext(c)) },
    { subject: s.allocate, handler: (b, c) => ipam.allocate(decode(AllocateRequest, b), callContext(c)) },
    { subject: s.bind, handler: (b, c) => ipam.bind(decode(BindRequest, b), callContext(c)) },
    { subject: s.release, handler: (b, c) => ipam.release(decode(AddressLookupRequest, b), callContext(c)) },
    { subject: s.get, handler: async (b) => ipam.get(decode(AddressLookupRequest, b)) },
    {
      subject: s.allocateBatch,
      handler: async (b, c) => serveBatch(decodeBatch(AllocateBatchRequest, b), (items) => ipam.allocateBatch(items, callContext(c))),
    },
    {
      subject: s.bindBatch,
      handler: async (b, c) => serveBatch(decodeBatch(BindBatchRequest, b), (items) => ipam.bindBatch(items, callContext(c))),
    },
  ];
}

export class IpamHandler implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private responder: Responder | undefined;

  constructor(
    @Inject(NATS) private readonly nc: NatsConnection,
    @Inject(IPAM_SERVICE) private readonly ipam: IpamService,
    @Inject(OUTBOX) private readonly outbox: OutboxRelay,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(IP_BLOCKS) private readonly blocks: IpBlocks,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    // The stream must exist before the first event is published.
    await ensureEventsStream(this.nc, this.logger);
    this.outbox.start();
    this.responder = new Responder(this.nc, QUEUE_GROUPS.ipam, this.logger);
    this.responder.serve([...ipamRoutes(this.ipam), ...blockRoutes(this.blocks)]);
    this.logger.info({ queue: QUEUE_GROUPS.ipam }, 'serving orangery.ipam.*');
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.responder?.drain();
    await this.outbox.stop();
  }
}

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { DiscardPolicy, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { ensureStream, jetstream, jetstreamManager } from '@orangery/messaging';
import { createLogger } from '@orangery/telemetry';
import { HarnessDir, NatsServer } from '@orangery/testing';

// JetStream streams get a byte bound (max_bytes), kept in line on streams that already exist,
// with the discard policy each stream needs: scale requests are refused at the bound (the
// publisher gets an error), events age out oldest first. Real nats-server.
const dir = new HarnessDir('stream-bounds');
const logger = createLogger('stream-bounds-test');
let nats: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  nc = await connect({ servers: nats.url });
});

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
  await dir.cleanup();
});

const payload = 'x'.repeat(1000);

describe('stream byte bounds', () => {
  it('a stream made without a byte bound (an older build) gets it on the next start', async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({
      name: 'T_OLD',
      subjects: ['t.old.>'],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: 3600 * 1e9,
      duplicate_window: 120 * 1e9,
    });
    expect((await jsm.streams.info('T_OLD')).config.max_bytes).toBe(-1);
    const spec = { name: 'T_OLD', subjects: ['t.old.>'], maxAgeSeconds: 3600, duplicateWindowSeconds: 120, maxBytes: 64 * 1024, discard: 'new' as const };
    await ensureStream(nc, spec, logger);
    const info = await jsm.streams.info('T_OLD');
    expect(info.config.max_bytes).toBe(64 * 1024);
    expect(info.config.discard).toBe(DiscardPolicy.New);
    // unchanged settings: nothing to update, and a second replica's start changes nothing
    await ensureStream(nc, spec, logger);
    expect((await jsm.streams.info('T_OLD')).config.max_bytes).toBe(64 * 1024);
  });

  it('a stream holding more than a new, lower bound keeps its bound and every message (an update would delete the oldest)', async () => {
    const spec = { name: 'T_FULL', subjects: ['t.full.>'], maxAgeSeconds: 3600, duplicateWindowSeconds: 120, maxBytes: 256 * 1024, discard: 'new' as const };
    await ensureStream(nc, spec, logger);
    const js = jetstream(nc);
    for (let i = 0; i < 100; i++) await js.publish(`t.full.${i}`, payload);
    const jsm = await jetstreamManager(nc);
    const before = await jsm.streams.info('T_FULL');
    expect(before.state.messages).toBe(100);
    // a service started with a bound below what the stream holds (~100 KB): nothing deleted
    await ensureStream(nc, { ...spec, maxBytes: 32 * 1024 }, logger);
    const after = await jsm.streams.info('T_FULL');
    expect(after.state.messages).toBe(100);
    expect(after.config.max_bytes).toBe(256 * 1024);
    // one the stream fits under is applied
    await ensureStream(nc, { ...spec, maxBytes: 192 * 1024 }, logger);
    expect((await jsm.streams.info('T_FULL')).config.max_bytes).toBe(192 * 1024);
    expect((await jsm.streams.info('T_FULL')).state.messages).toBe(100);
  });

  it('at its bound, a discard-new stream (scale requests) refuses the publish and keeps every stored request', async () => {
    await ensureStream(
      nc,
      { name: 'T_SCALE', subjects: ['t.scale.>'], maxAgeSeconds: 3600, duplicateWindowSeconds: 120, maxBytes: 8 * 1024, discard: 'new' },
      logger,
    );
    const js = jetstream(nc);
    let stored = 0;
    let refused: unknown;
    for (let i = 0; i < 20 && !refused; i++) {
      try {
        await js.publish(`t.scale.e.a${i}`, payload);
        stored++;
      } catch (e) {
        refused = e;
      }
    }
    expect(refused).toBeInstanceOf(Error);
    expect(String((refused as Error).message)).toMatch(/maximum bytes|resource limits/i);
    const info = await (await jetstreamManager(nc)).streams.info('T_SCALE');
    expect(info.state.messages).toBe(stored);
    expect(info.state.first_seq).toBe(1);
  });

  it('at its bound, a discard-old stream (events) drops the oldest and stays within the bound', async () => {
    await ensureStream(
      nc,
      { name: 'T_EVT', subjects: ['t.evt.>'], maxAgeSeconds: 3600, duplicateWindowSeconds: 120, maxBytes: 8 * 1024, discard: 'old' },
      logger,
    );
    const js = jetstream(nc);
    for (let i = 0; i < 40; i++) await js.publish(`t.evt.x.e${i}`, payload);
    const info = await (await jetstreamManager(nc)).streams.info('T_EVT');
    expect(info.state.bytes).toBeLessThanOrEqual(8 * 1024);
    expect(info.state.first_seq).toBeGreaterThan(1);
    expect(info.state.last_seq).toBe(40);
  });
});

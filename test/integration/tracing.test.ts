import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SUBJECTS } from '@orangery/contracts';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, SimulatedFleet, waitFor } from '@orangery/testing';

// One trace end to end (issue 15, CONTRACT.md "Events", tracing): a scale request published
// with a `traceparent` is followed through the real scheduler, ipam and migrator processes
// (real NATS, MariaDB) and the simulated agents (libs/testing), whose spans are exported by
// the OpenTelemetry SDK over OTLP/HTTP (JSON) to a receiver run here.

interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  links: { traceId: string; spanId: string }[];
}

const SPAN_KIND = { INTERNAL: 1, SERVER: 2, CLIENT: 3, PRODUCER: 4, CONSUMER: 5 } as const;

/** OTLP/JSON ids are hex; a base64 one (protobuf-JSON mapping) is converted. */
const hexId = (id: unknown): string => {
  const s = typeof id === 'string' ? id : '';
  if (s === '' || /^[0-9a-f]+$/i.test(s)) return s.toLowerCase();
  return Buffer.from(s, 'base64').toString('hex');
};

const spans: ReceivedSpan[] = [];
let receiver: Server;
let otlpUrl: string;

function startReceiver(): Promise<void> {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        let body = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
        if (req.url === '/v1/traces') {
          // eslint-disable-next-line @typescript-eslint/no-explicit-any
          const parsed = JSON.parse(body.toString('utf8')) as any;
          for (const rs of parsed.resourceSpans ?? []) {
            // eslint-disable-next-line @typescript-eslint/no-explicit-any
            const service = String(rs.resource?.attributes?.find((a: any) => a.key === 'service.name')?.value?.stringValue ?? '');
            for (const ss of rs.scopeSpans ?? []) {
              for (const s of ss.spans ?? []) {
                spans.push({
                  service,
                  traceId: hexId(s.traceId),
                  spanId: hexId(s.spanId),
                  parentSpanId: hexId(s.parentSpanId),
                  name: String(s.name),
                  kind: Number(s.kind),
                  // eslint-disable-next-line @typescript-eslint/no-explicit-any
                  links: (s.links ?? []).map((l: any) => ({ traceId: hexId(l.traceId), spanId: hexId(l.spanId) })),
                });
              }
            }
          }
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      } catch {
        res.writeHead(400);
        res.end();
      }
    });
  });
  return new Promise((resolve) =>
    receiver.listen(0, '127.0.0.1', () => {
      otlpUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
      resolve();
    }),
  );
}

const newTraceparent = (): { traceparent: string; traceId: string } => {
  const traceId = randomBytes(16).toString('hex');
  return { traceId, traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` };
};
const traceIdOf = (traceparent: unknown): string | undefined => (typeof traceparent === 'string' ? traceparent.split('-')[1] : undefined);

const dir = new HarnessDir('tracing');
let nats: NatsServer;
let client: ContractClient;
let scale: ScaleWatcher;
let fleet: SimulatedFleet;
let migrator: ServiceProcess;
let migratorEnv: Record<string, string>;
/** per-command reply delays of the fleet, set by a test */
const delays: Partial<Record<string, number>> = {};

beforeAll(async () => {
  await startReceiver();
  nats = await NatsServer.start(dir);
  const dbUrl = await freshDatabase('tracing');
  client = await ContractClient.connect(nats.url);
  scale = new ScaleWatcher(client.nc);
  const otel = {
    OTEL_EXPORTER_OTLP_ENDPOINT: otlpUrl,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_BSP_SCHEDULE_DELAY: '200',
  };
  const common = {
    ORANGERY_NATS_URL: nats.url,
    ORANGERY_DB_URL: dbUrl,
    ORANGERY_HEARTBEAT_SECONDS: '1',
    ORANGERY_LOST_AFTER_SECONDS: '3',
    ORANGERY_FENCE_AFTER_SECONDS: '3',
    ORANGERY_FENCE_MARGIN_SECONDS: '1',
    ...otel,
  };
  await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl, ...otel });
  const pool = await client.request(SUBJECTS.ipam.poolCreate, { name: 'sim', cidr: '198.19.0.0/16', gateway: '198.19.0.1', cooldownSeconds: 0 });
  expect(pool.ok, JSON.stringify(pool)).toBe(true);
  fleet = await SimulatedFleet.start({
    natsUrl: nats.url,
    hosts: 3,
    idPrefix: 'trc-',
    capacity: { cpu: 8, memoryMb: 16_384, diskMb: 100_000 },
    heartbeatSeconds: 1,
    fenceAfterSeconds: 3,
    replyDelayMs: (_h, cmd) => delays[cmd] ?? 0,
  });
  const scheduler = await ServiceProcess.start(dir, 'scheduler', { ...common, ORANGERY_RECONCILE_SECONDS: '1' });
  await scheduler.waitForLog('leading: consuming scale requests', 60_000);
  migratorEnv = { ...common, ORANGERY_MIGRATION_LEASE_SECONDS: '3' };
  migrator = await ServiceProcess.start(dir, 'migrator', migratorEnv);
  await waitFor(
    '3 ready hosts',
    async () => {
      const r = await client.requestWithRetry(SUBJECTS.scheduler.hostsList, {});
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      return r.ok && r.data.hosts.filter((h: any) => h.state === 'ready').length === 3 ? true : undefined;
    },
    30_000,
  );
}, 180_000);

afterAll(async () => {
  scale?.close();
  await fleet?.stop();
  await client?.close();
  await dir.cleanup();
  receiver?.close();
});

describe('one trace end to end', () => {
  let requestTrace: string;
  let instanceId: string;

  it('follows a scale request through the scheduler, ipam and the agents: spans and events share its trace id', async () => {
    const { traceparent, traceId } = newTraceparent();
    requestTrace = traceId;
    const requestId = randomUUID();
    const data = {
      env: 'test',
      app: 'traced',
      replicas: 2,
      resources: { cpu: 1, memoryMb: 512, heapMb: 256, diskMb: 1_000 },
      image: 'svc:1',
      backend: 'docker',
      pool: 'sim',
      spread: 'host',
    };
    await scale.publishRaw(SUBJECTS.scale('test', 'traced'), {
      specversion: '1.0',
      id: requestId,
      source: '/test/upstream',
      type: 'io.orangery.scale.requested',
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      traceparent,
      data,
    });
    const out = await scale.outcome(requestId, 60_000);
    expect(out.type, JSON.stringify(out.data)).toBe('io.orangery.scale.completed');
    expect(traceIdOf(out.traceparent)).toBe(traceId);

    // The events the contract lists carry the request's trace id.
    const events = await waitFor(
      'the events of both instances',
      async () => {
        const all = await client.events();
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const mine = all.filter((e: any) => JSON.stringify(e.data ?? {}).includes('traced'));
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const running = mine.filter((e: any) => e.type === 'io.orangery.instance.running');
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const bound = mine.filter((e: any) => e.type === 'io.orangery.ip.bound');
        return running.length >= 2 && bound.length >= 2 ? mine : undefined;
      },
      30_000,
    );
    for (const type of ['instance.placed', 'ip.allocated', 'ip.bound', 'instance.running', 'scale.completed']) {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const ofType = events.filter((e: any) => e.type === `io.orangery.${type}`);
      expect(ofType.length, type).toBeGreaterThan(0);
      for (const e of ofType) expect(traceIdOf(e.traceparent), `${type} ${e.subject}`).toBe(traceId);
    }
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    instanceId = String(events.find((e: any) => e.type === 'io.orangery.instance.running').data.instanceId);

    // The spans: one trace holds the scheduler's and ipam's, with client -> server parents.
    const inTrace = await waitFor(
      'the spans of the trace',
      async () => {
        const t = spans.filter((s) => s.traceId === traceId);
        const ipamServer = t.filter((s) => s.service === 'orangery-ipam' && s.kind === SPAN_KIND.SERVER);
        const bindBatch = ipamServer.some((s) => s.name === SUBJECTS.ipam.bindBatch);
        return bindBatch && t.some((s) => s.name === 'scheduler.start-slot') ? t : undefined;
      },
      30_000,
    );
    const byId = new Map(inTrace.map((s) => [s.spanId, s]));
    const services = new Set(inTrace.map((s) => s.service));
    expect([...services].sort()).toEqual(expect.arrayContaining(['orangery-ipam', 'orangery-scheduler']));
    expect(inTrace.some((s) => s.service === 'orangery-scheduler' && s.name === 'scheduler.scale-request' && s.kind === SPAN_KIND.CONSUMER)).toBe(true);
    // placed while the request is judged (instance.placed above); each slot then starts in its own step span
    expect(inTrace.filter((s) => s.service === 'orangery-scheduler' && s.name === 'scheduler.start-slot').length).toBeGreaterThanOrEqual(2);

    for (const subject of [SUBJECTS.ipam.allocateBatch, SUBJECTS.ipam.bindBatch]) {
      const server = inTrace.find((s) => s.service === 'orangery-ipam' && s.name === subject && s.kind === SPAN_KIND.SERVER);
      expect(server, subject).toBeDefined();
      // ipam's server span is a child of the scheduler's client span for that request...
      const clientSpan = byId.get(server!.parentSpanId);
      expect(clientSpan, `parent of ${subject}`).toMatchObject({ service: 'orangery-scheduler', kind: SPAN_KIND.CLIENT, name: subject });
      // ...itself a child of the batch's span, whose parent is a slot's step in this trace
      const batch = byId.get(clientSpan!.parentSpanId);
      expect(batch?.name).toBe(subject === SUBJECTS.ipam.allocateBatch ? 'scheduler.allocate-batch' : 'scheduler.bind-batch');
      expect(byId.get(batch!.parentSpanId)?.name).toBe('scheduler.start-slot');
    }
    // A batch serving both slots links the other slot's step (or, batched apart, each has its own batch span).
    const batches = inTrace.filter((s) => s.name === 'scheduler.allocate-batch');
    const linkedOrSeparate =
      batches.length >= 2 || batches.some((b) => b.links.some((l) => l.traceId === traceId && byId.get(l.spanId)?.name === 'scheduler.start-slot'));
    expect(linkedOrSeparate, JSON.stringify(batches)).toBe(true);

    // The agent hop: the create command's client span is the parent the (simulated) agent
    // continued, and its instance.running names it.
    const creates = inTrace.filter((s) => s.service === 'orangery-scheduler' && s.kind === SPAN_KIND.CLIENT && s.name.endsWith('.instance.create'));
    expect(creates.length).toBeGreaterThanOrEqual(2);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const running = events.filter((e: any) => e.type === 'io.orangery.instance.running');
    for (const e of running) expect(creates.map((c) => c.spanId)).toContain(String(e.traceparent).split('-')[2]);
  }, 120_000);

  it('gives each of two requests in flight its own trace, also for the ip events of a batch they share', async () => {
    const apps = ['twin-a', 'twin-b'].map((app) => ({ app, requestId: randomUUID(), ...newTraceparent() }));
    await Promise.all(
      apps.map((a) =>
        scale.publishRaw(SUBJECTS.scale('test', a.app), {
          specversion: '1.0',
          id: a.requestId,
          source: '/test/upstream',
          type: 'io.orangery.scale.requested',
          time: new Date().toISOString(),
          datacontenttype: 'application/json',
          traceparent: a.traceparent,
          data: {
            env: 'test',
            app: a.app,
            replicas: 3,
            resources: { cpu: 1, memoryMb: 512, heapMb: 256, diskMb: 1_000 },
            image: 'svc:1',
            backend: 'docker',
            pool: 'sim',
          },
        }),
      ),
    );
    for (const a of apps) expect((await scale.outcome(a.requestId, 60_000)).type).toBe('io.orangery.scale.completed');
    const events = await waitFor(
      'the ip events of both apps',
      async () => {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const ip = (await client.events(SUBJECTS.event('ip', '*'))).filter((e: any) => String(e.data?.owner?.app ?? '').startsWith('twin-'));
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        return ip.filter((e: any) => e.type === 'io.orangery.ip.bound').length >= 6 ? ip : undefined;
      },
      30_000,
    );
    for (const a of apps) {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const mine = events.filter((e: any) => e.data.owner.app === a.app);
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      expect(mine.map((e: any) => e.type).sort()).toEqual([...Array(3).fill('io.orangery.ip.allocated'), ...Array(3).fill('io.orangery.ip.bound')]);
      for (const e of mine) expect(traceIdOf(e.traceparent), `${e.type} ${e.subject}`).toBe(a.traceId);
    }
    // A batch span serving both apps names the other app's step by a link.
    const shared = await waitFor(
      'the batch spans of both requests',
      async () => {
        const batches = spans.filter((s) => s.name === 'scheduler.allocate-batch' && apps.some((a) => a.traceId === s.traceId));
        return batches.length > 0 ? batches : undefined;
      },
      30_000,
    );
    for (const b of shared) {
      for (const l of b.links) expect(apps.map((a) => a.traceId)).toContain(l.traceId);
    }
  }, 120_000);

  it("runs a migration's saga in the trace of the migrate request, also after the request was answered", async () => {
    const { traceparent, traceId } = newTraceparent();
    expect(traceId).not.toBe(requestTrace);
    // an instance of the app the first test scaled (looked up: this test does not rely on the first's variables)
    const list = await client.requestWithRetry(SUBJECTS.scheduler.instancesList, { env: 'test', app: 'traced' });
    expect(list.ok, JSON.stringify(list)).toBe(true);
    instanceId = String(list.data.instances[0]?.id);
    const h = natsHeaders();
    h.set('traceparent', traceparent);
    const msg = await client.nc.request(SUBJECTS.migrator.migrate, JSON.stringify({ instanceId }), { timeout: 30_000, headers: h });
    const reply = msg.json<{ ok: boolean; data: { migrationId: string } }>();
    expect(reply.ok, msg.string()).toBe(true);
    const migrationId = reply.data.migrationId;
    await waitFor(
      'the migration to complete',
      async () => {
        const r = await client.requestWithRetry(SUBJECTS.migrator.migrationsGet, { migrationId });
        return r.ok && r.data.state !== 'running' ? r.data : undefined;
      },
      60_000,
    );
    const names = await waitFor(
      "the saga's spans",
      async () => {
        const t = spans.filter((s) => s.traceId === traceId);
        return t.some((s) => s.name === 'migrator.commit') ? t : undefined;
      },
      30_000,
    );
    const migratorSpans = names.filter((s) => s.service === 'orangery-migrator').map((s) => s.name);
    // the request's own steps and those after its reply, from the worker
    expect(migratorSpans).toEqual(
      expect.arrayContaining([SUBJECTS.migrator.migrate, 'migrator.hold', 'migrator.reserve', 'migrator.create-new', 'migrator.commit']),
    );
    // the scheduler served the saga's calls in the same trace
    expect(names.some((s) => s.service === 'orangery-scheduler' && s.kind === SPAN_KIND.SERVER)).toBe(true);
    const events = await client.events(SUBJECTS.event('migration', '*'));
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const mine = events.filter((e: any) => e.subject === migrationId);
    expect(mine.map((e) => e.type)).toEqual(expect.arrayContaining(['io.orangery.migration.started', 'io.orangery.migration.completed']));
    for (const e of mine) expect(traceIdOf(e.traceparent), e.type).toBe(traceId);
  }, 120_000);

  it('a saga resumed by a restarted migrator continues the trace of the request that started it', async () => {
    const { traceparent, traceId } = newTraceparent();
    const list = await client.requestWithRetry(SUBJECTS.scheduler.instancesList, { env: 'test', app: 'traced' });
    expect(list.ok, JSON.stringify(list)).toBe(true);
    const id = String(list.data.instances[1]?.id ?? list.data.instances[0]?.id);
    delays['create'] = 2_500;
    try {
      const h = natsHeaders();
      h.set('traceparent', traceparent);
      const msg = await client.nc.request(SUBJECTS.migrator.migrate, JSON.stringify({ instanceId: id }), { timeout: 30_000, headers: h });
      const reply = msg.json<{ ok: boolean; data: { migrationId: string } }>();
      expect(reply.ok, msg.string()).toBe(true);
      const migrationId = reply.data.migrationId;
      await waitFor(
        'the saga at create-new',
        async () => {
          const r = await client.requestWithRetry(SUBJECTS.migrator.migrationsGet, { migrationId });
          return r.ok && r.data.step === 'create-new' ? true : undefined;
        },
        20_000,
      );
      // killed before its commit: what commits now is the new process, from the record
      await migrator.kill9();
      migrator = await ServiceProcess.start(dir, 'migrator', migratorEnv);
      const m = await waitFor(
        'the migration to end',
        async () => {
          const r = await client.requestWithRetry(SUBJECTS.migrator.migrationsGet, { migrationId });
          return r.ok && r.data.state !== 'running' ? r.data : undefined;
        },
        60_000,
      );
      expect(m.state, JSON.stringify(m)).toBe('completed');
      const resumed = await waitFor(
        'the resumed saga spans',
        async () => {
          const t = spans.filter((s) => s.traceId === traceId && s.service === 'orangery-migrator');
          return t.some((s) => s.name === 'migrator.commit') ? t : undefined;
        },
        30_000,
      );
      // the create-new attempt cut by the kill, then again by the new process, then the rest
      expect(resumed.filter((s) => s.name === 'migrator.create-new').length).toBeGreaterThanOrEqual(1);
      expect(resumed.map((s) => s.name)).toEqual(expect.arrayContaining(['migrator.create-new', 'migrator.commit']));
      const completed = (await client.events(SUBJECTS.event('migration', 'completed'))).filter((e) => e.subject === migrationId);
      expect(completed.length).toBe(1);
      expect(traceIdOf(completed[0].traceparent)).toBe(traceId);
    } finally {
      delete delays['create'];
    }
  }, 120_000);
});

import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import type { TSchema } from '@sinclair/typebox';
import {
  AddressLookupRequest,
  AllocateBatchRequest,
  AllocateRequest,
  BindBatchRequest,
  BindRequest,
  BlockBindRequest,
  BlockListRequest,
  BlockRef,
  BlockReserveRequest,
  BlockUnbindRequest,
  DrainRequest,
  EnvListRequest,
  EnvNameRequest,
  EnvPutRequest,
  ERROR_CODES,
  Heartbeat,
  HostDrainRequest,
  HostsListRequest,
  InstanceEventData,
  InstancesListRequest,
  MigrateRequest,
  MigrationGetRequest,
  PoolCreateRequest,
  PoolListRequest,
  PoolNameRequest,
  SCALE_STREAM,
  ScaleRequestedEvent,
  SlotGetRequest,
  SlotHoldRequest,
  SlotReserveRequest,
  SUBJECTS,
} from '@orangery/contracts';
import {
  adversarialPayload,
  contractViolation,
  rssKb,
  unexpectedErrorLines,
  ContractClient,
  describePayload,
  fieldSweep,
  freshDatabase,
  FuzzSender,
  fuzzSeed,
  HarnessDir,
  NatsServer,
  samplePayloads,
  ScaleWatcher,
  ServiceProcess,
  SimulatedFleet,
  waitFor,
  type FuzzPayload,
} from '@orangery/testing';

// Every request subject of ipam, the scheduler and the migrator, and every subject they
// consume (scale requests on JetStream, heartbeats, host and instance events), gets random
// and adversarial payloads derived from the contract's own schemas (libs/testing fuzz.ts).
// Every reply must be the contract's envelope with a contract code, no process may die or
// grow without bound, a rejected request changes nothing, and afterwards a normal scale
// request still completes with exactly one outcome.
//
// Replay a run: ORANGERY_FUZZ_SEED=<the printed seed> npx vitest run --project integration test/integration/fuzz.test.ts
// More payloads: ORANGERY_FUZZ_RUNS=<per subject> (default 40).
const SEED = fuzzSeed();
const RUNS = Number(process.env['ORANGERY_FUZZ_RUNS'] ?? 40);
const REPLY_TIMEOUT_MS = 10_000;
const CONCURRENCY = 4;

const dir = new HarnessDir('fuzz');
let nats: NatsServer;
let dbUrl: string;
let client: ContractClient;
let sender: FuzzSender;
let scale: ScaleWatcher;
let fleet: SimulatedFleet;
const services: ServiceProcess[] = [];
const rssBefore = new Map<string, number>();
const rssPeak = new Map<string, number>();
let rssTimer: NodeJS.Timeout | undefined;
/** ok replies to requests that may change state: which pools (names) they touched */
const touchedPools = new Set<string>();

const HOSTS = 3;
const small = { cpu: 1, memoryMb: 512, heapMb: 256, diskMb: 1_000 };
const scaleData = (app: string, replicas: number, extra: Record<string, unknown> = {}) => ({
  env: 'fz',
  app,
  replicas,
  resources: small,
  image: 'svc:1',
  backend: 'docker' as const,
  pool: 'fz',
  spread: 'host' as const,
  ...extra,
});

const GHOST = 'fz:ghost:0';
const MIGRATION = 'm-00000000-0000-0000-0000-000000000000';

/** Every request subject, its schema and a valid request to mutate (objects that do not exist: a valid mutation must not move real instances). */
const REQUEST_SUBJECTS: { subject: string; schema: TSchema; example: Record<string, unknown> }[] = [
  {
    subject: SUBJECTS.ipam.poolCreate,
    schema: PoolCreateRequest,
    example: {
      name: 'fz-new',
      cidr: '198.18.200.0/24',
      gateway: '198.18.200.1',
      vlan: 7,
      reserved: ['198.18.200.5', '198.18.200.10-198.18.200.20'],
      cooldownSeconds: 60,
    },
  },
  { subject: SUBJECTS.ipam.poolGet, schema: PoolNameRequest, example: { name: 'fz' } },
  { subject: SUBJECTS.ipam.poolList, schema: PoolListRequest, example: { limit: 10 } },
  { subject: SUBJECTS.ipam.poolDelete, schema: PoolNameRequest, example: { name: 'fz-none' } },
  { subject: SUBJECTS.ipam.allocate, schema: AllocateRequest, example: { pool: 'fz-none', owner: { env: 'fz', app: 'ghost', slot: 0 } } },
  { subject: SUBJECTS.ipam.bind, schema: BindRequest, example: { ip: '198.18.100.250', instanceId: GHOST, backend: 'docker', host: 'fz-0001' } },
  { subject: SUBJECTS.ipam.release, schema: AddressLookupRequest, example: { ip: '198.18.100.250' } },
  { subject: SUBJECTS.ipam.get, schema: AddressLookupRequest, example: { owner: { env: 'fz', app: 'base', slot: 0 } } },
  {
    subject: SUBJECTS.ipam.allocateBatch,
    schema: AllocateBatchRequest,
    example: { items: [{ pool: 'fz-none', owner: { env: 'fz', app: 'ghost', slot: 1 } }] },
  },
  {
    subject: SUBJECTS.ipam.bindBatch,
    schema: BindBatchRequest,
    example: { items: [{ ip: '198.18.100.251', instanceId: GHOST, backend: 'vmware', host: 'fz-0002' }] },
  },
  // swarm nodes' blocks (docs/ipam.md "Blocks"): a pool that does not exist, an address in no block
  { subject: SUBJECTS.ipam.blockReserve, schema: BlockReserveRequest, example: { pool: 'fz-none', host: 'fz-0009', size: 4 } },
  { subject: SUBJECTS.ipam.blockRelease, schema: BlockRef, example: { pool: 'fz-none', host: 'fz-0009' } },
  { subject: SUBJECTS.ipam.blockList, schema: BlockListRequest, example: { pool: 'fz', host: 'fz-0009' } },
  {
    subject: SUBJECTS.ipam.blockBind,
    schema: BlockBindRequest,
    example: { pool: 'fz-none', ip: '198.18.100.252', owner: { env: 'fz', app: 'ghost', slot: 0 }, instanceId: GHOST, host: 'fz-0009' },
  },
  { subject: SUBJECTS.ipam.blockUnbind, schema: BlockUnbindRequest, example: { ip: '198.18.100.252' } },
  { subject: SUBJECTS.scheduler.hostsList, schema: HostsListRequest, example: { limit: 2 } },
  { subject: SUBJECTS.scheduler.instancesList, schema: InstancesListRequest, example: { env: 'fz', app: 'base', limit: 5 } },
  { subject: SUBJECTS.schedulerSlot.get, schema: SlotGetRequest, example: { instanceId: GHOST } },
  { subject: SUBJECTS.schedulerSlot.hold, schema: SlotHoldRequest, example: { instanceId: GHOST, by: MIGRATION } },
  {
    subject: SUBJECTS.schedulerSlot.reserve,
    schema: SlotReserveRequest,
    example: { instanceId: GHOST, by: MIGRATION, toHost: 'fz-0002', toBackend: 'docker', exclude: ['fz-0001'] },
  },
  { subject: SUBJECTS.schedulerSlot.commit, schema: SlotHoldRequest, example: { instanceId: GHOST, by: MIGRATION } },
  { subject: SUBJECTS.schedulerSlot.release, schema: SlotHoldRequest, example: { instanceId: GHOST, by: MIGRATION } },
  { subject: SUBJECTS.schedulerSlot.hostDrain, schema: HostDrainRequest, example: { hostId: 'fz-ghost', drain: false } },
  {
    subject: SUBJECTS.scheduler.envsPut,
    schema: EnvPutRequest,
    example: {
      name: 'fz-env',
      backends: ['docker', 'swarm'],
      pools: ['fz'],
      hostLabels: { tier: 'gold' },
      defaults: { spread: 'none', backend: 'docker' },
      containerSecurity: { allowPrivilegeEscalation: true, pidsLimit: 8192, addCapabilities: ['NET_RAW'] },
    },
  },
  { subject: SUBJECTS.scheduler.envsGet, schema: EnvNameRequest, example: { name: 'fz-env' } },
  { subject: SUBJECTS.scheduler.envsList, schema: EnvListRequest, example: { limit: 3 } },
  { subject: SUBJECTS.scheduler.envsDelete, schema: EnvNameRequest, example: { name: 'fz-none' } },
  { subject: SUBJECTS.migrator.migrationsGet, schema: MigrationGetRequest, example: { migrationId: MIGRATION } },
  { subject: SUBJECTS.migrator.migrate, schema: MigrateRequest, example: { instanceId: GHOST, toBackend: 'docker', toHost: 'fz-0002' } },
  { subject: SUBJECTS.migrator.drain, schema: DrainRequest, example: { hostId: 'fz-ghost' } },
];

/** Subjects whose ok reply changes ipam state, and the pool it names. */
const MUTATING = new Set<string>([
  SUBJECTS.ipam.poolCreate,
  SUBJECTS.ipam.poolDelete,
  SUBJECTS.ipam.allocate,
  SUBJECTS.ipam.bind,
  SUBJECTS.ipam.release,
  SUBJECTS.ipam.allocateBatch,
  SUBJECTS.ipam.bindBatch,
  SUBJECTS.ipam.blockReserve,
  SUBJECTS.ipam.blockRelease,
  SUBJECTS.ipam.blockBind,
  SUBJECTS.ipam.blockUnbind,
]);

const CODES = new Set<string>(ERROR_CODES);

function sampleRss(): void {
  for (const s of services) {
    if (s.child.exitCode !== null) continue;
    try {
      rssPeak.set(s.name, Math.max(rssPeak.get(s.name) ?? 0, rssKb(s.pid)));
    } catch {
      /* exited between the check and the read: the liveness assertion reports it */
    }
  }
}

/** Runs `work` over `items`, `CONCURRENCY` at a time. */
async function inParallel<T>(items: T[], work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

async function stateSnapshot() {
  const pools = await client.requestWithRetry(SUBJECTS.ipam.poolList, {});
  const inst = await client.requestWithRetry(SUBJECTS.scheduler.instancesList, { env: 'fz' });
  const hosts = await client.requestWithRetry(SUBJECTS.scheduler.hostsList, {});
  expect(pools.ok && inst.ok && hosts.ok, JSON.stringify([pools, inst, hosts]).slice(0, 500)).toBe(true);
  return {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    pools: pools.data.pools.map((p: any) => ({ ...p })),
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    instances: inst.data.instances.map((i: any) => ({ id: i.id, state: i.state, host: i.host, ip: i.ip, mac: i.mac })),
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    hosts: hosts.data.hosts.map((h: any) => ({ id: h.id, state: h.state, capacity: h.capacity, allocated: h.allocated, labels: h.labels })),
  };
}
let before: Awaited<ReturnType<typeof stateSnapshot>>;

beforeAll(async () => {
  console.info(`fuzz seed ${SEED} (replay: ORANGERY_FUZZ_SEED=${SEED}), ${RUNS} payloads per subject`);
  nats = await NatsServer.start(dir);
  dbUrl = await freshDatabase('fuzz');
  client = await ContractClient.connect(nats.url);
  sender = new FuzzSender(client.nc, nats.port);
  scale = new ScaleWatcher(client.nc);
  const common = { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl, ORANGERY_OBSERVE_ADDR: '' };
  const timing = { ORANGERY_HEARTBEAT_SECONDS: '1', ORANGERY_LOST_AFTER_SECONDS: '5', ORANGERY_FENCE_AFTER_SECONDS: '5', ORANGERY_AGENT_TIMEOUT_SECONDS: '5' };
  services.push(await ServiceProcess.start(dir, 'ipam', common));
  const pool = await client.request(SUBJECTS.ipam.poolCreate, { name: 'fz', cidr: '198.18.100.0/24', gateway: '198.18.100.1', cooldownSeconds: 0 });
  expect(pool.ok, JSON.stringify(pool)).toBe(true);
  fleet = await SimulatedFleet.start({ natsUrl: nats.url, hosts: HOSTS, idPrefix: 'fz-', heartbeatSeconds: 1, fenceAfterSeconds: 5 });
  const scheduler = await ServiceProcess.start(dir, 'scheduler', { ...common, ...timing, ORANGERY_RECONCILE_SECONDS: '1' });
  services.push(scheduler);
  await scheduler.waitForLog('leading: consuming scale requests', 60_000);
  services.push(await ServiceProcess.start(dir, 'migrator', { ...common, ...timing }));
  await waitFor(
    `${HOSTS} ready hosts`,
    async () => {
      const r = await client.request(SUBJECTS.scheduler.hostsList, {});
      return r.ok && r.data.hosts.filter((h: { state: string }) => h.state === 'ready').length === HOSTS;
    },
    20_000,
  );
  const id = await scale.publish(scaleData('base', 2));
  expect((await scale.outcome(id, 60_000)).type).toBe('io.orangery.scale.completed');
  before = await stateSnapshot();
  for (const s of services) rssBefore.set(s.name, rssKb(s.pid));
  rssTimer = setInterval(sampleRss, 250);
}, 120_000);

afterAll(async () => {
  clearInterval(rssTimer);
  scale?.close();
  sender?.close();
  await fleet?.stop();
  await client?.close();
  await dir.cleanup();
});

describe(`fuzz every subject (seed ${SEED})`, () => {
  it('every request subject answers every adversarial payload with the contract envelope and a contract code', async () => {
    const failures: string[] = [];
    let sent = 0;
    let refused = 0;
    const jobs = REQUEST_SUBJECTS.flatMap(({ subject, schema, example }, i) =>
      [...fieldSweep(example), ...samplePayloads(adversarialPayload(schema, example), SEED + i, RUNS)].map((payload) => ({ subject, payload })),
    );
    await inParallel(jobs, async ({ subject, payload }) => {
      const outcome = await sender.request(subject, payload, REPLY_TIMEOUT_MS);
      sent++;
      if ('refusedByClient' in outcome) refused++;
      const why = contractViolation(outcome, CODES);
      if (why) failures.push(`${subject} <- ${describePayload(payload)}: ${why}`);
      if ('reply' in outcome && MUTATING.has(subject) && outcome.reply.startsWith('{"ok":true')) touchedPools.add(touchedPool(subject, payload));
    });
    console.info(
      `${sent} requests on ${REQUEST_SUBJECTS.length} subjects, ${refused} refused by the client before sending, ${failures.length} contract violations`,
    );
    expect(failures, `seed ${SEED}: ${failures.length} violations`).toEqual([]);
  });

  it('garbage scale requests on JetStream each get exactly one outcome, a rejection', async () => {
    const jsm = await jetstreamManager(client.nc);
    const generation = Date.parse((await jsm.streams.info(SCALE_STREAM.name)).created);
    const subjects = [
      'orangery.scale.fz.fuzzapp',
      'orangery.scale.fz.fuzzapp',
      'orangery.scale.FZ.App',
      'orangery.scale.fz',
      'orangery.scale.fz.a.b',
      'orangery.scale.-.-',
    ];
    // A valid request for a pool that does not exist: even a mutation that stays valid is rejected (POOL_NOT_FOUND), nothing is placed.
    const example = (id: string) => ({
      specversion: '1.0',
      id,
      source: '/fuzz',
      type: 'io.orangery.scale.requested',
      datacontenttype: 'application/json',
      data: scaleData('fuzzapp', 2, { pool: 'fz-none', environment: { JAVA_OPTS: '-Xmx1g' } }),
    });
    const payloads = [
      ...fieldSweep(example(`fz-${SEED}`)),
      ...samplePayloads(adversarialPayload(ScaleRequestedEvent, example(`fz-${SEED}`)), SEED + 1000, RUNS * 2),
    ];
    const expected = new Map<string, string>();
    const failures: string[] = [];
    for (const [i, payload] of payloads.entries()) {
      // Each request its own id (a repeated id is one request: the first outcome stands for both).
      const p: FuzzPayload = { ...payload, body: typeof payload.body === 'string' ? payload.body.replace(`fz-${SEED}`, `fz-${SEED}-${i}`) : payload.body };
      const subject = subjects[i % subjects.length]!;
      const outcome = await sender.request(subject, p, REPLY_TIMEOUT_MS);
      if (!('reply' in outcome)) continue; // refused by the client, or not stored: no outcome owed
      const ack = JSON.parse(outcome.reply || '{}') as { seq?: number; duplicate?: boolean };
      if (typeof ack.seq !== 'number' || ack.duplicate) continue;
      expected.set(expectedRequestId(p.body, generation, ack.seq), `${subject} <- ${describePayload(p)}`);
    }
    console.info(`${payloads.length} scale payloads, ${expected.size} stored, each owed one outcome`);
    await waitFor(
      `an outcome for each of ${expected.size} garbage scale requests`,
      () => [...expected.keys()].every((id) => scale.seen(id).length > 0),
      60_000,
      250,
    ).catch(() => undefined);
    // a second outcome would come right after the first: give it the time
    await new Promise((r) => setTimeout(r, 2_000));
    for (const [id, what] of expected) {
      const seen = scale.seen(id);
      if (seen.length !== 1) failures.push(`${what}: ${seen.length} outcomes for ${id}`);
      else if (seen[0]!.type !== 'io.orangery.scale.rejected') failures.push(`${what}: ${seen[0]!.type}`);
    }
    expect(failures, `seed ${SEED}`).toEqual([]);
  });

  it('garbage heartbeats and host/instance events are ignored: nothing changes, nobody dies', async () => {
    const hb = samplePayloads(
      adversarialPayload(Heartbeat, {
        hostId: 'fz-ghost',
        backend: 'docker',
        capacity: { cpu: 8, memoryMb: 1024, diskMb: 100 },
        total: { cpu: 9, memoryMb: 2048, diskMb: 100 },
        reserved: { cpu: 1, memoryMb: 1024, diskMb: 0 },
        labels: {},
        vlans: 'any',
        time: new Date().toISOString(),
        seq: 1,
        allocated: { cpu: 0, memoryMb: 0, diskMb: 0 },
        usage: { cpu: 0, memoryMb: 0, diskMb: 0 },
        instances: 0,
        fenced: false,
      }),
      SEED + 2000,
      RUNS,
    );
    const event = (type: string, data: Record<string, unknown>) => ({
      specversion: '1.0',
      id: randomUUID(),
      source: 'orangery/fuzz',
      type,
      subject: GHOST,
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      data,
    });
    const instanceData = { instanceId: GHOST, hostId: 'fz-ghost', backend: 'docker', ip: '198.18.100.250', reason: 'fuzz' };
    const ev = samplePayloads(adversarialPayload(InstanceEventData, event('io.orangery.instance.failed', instanceData)), SEED + 3000, RUNS);
    const hostEv = samplePayloads(
      adversarialPayload(undefined, event('io.orangery.host.registered', { hostId: 'fz-ghost', backend: 'docker' })),
      SEED + 4000,
      RUNS,
    );
    const hbSubjects = ['orangery.hb.fz-ghost', 'orangery.hb.FZ', 'orangery.hb.fz-0001x'];
    const evSubjects = [
      'orangery.evt.instance.failed',
      'orangery.evt.instance.stopped',
      'orangery.evt.instance.running',
      'orangery.evt.instance.removed',
      'orangery.evt.instance.x',
    ];
    // Published without waiting for a reply (nobody answers these): the raw ones over the fuzz socket too.
    const publishAll = async (subjects: string[], payloads: FuzzPayload[]) => {
      for (const [i, p] of payloads.entries()) await sender.request(subjects[i % subjects.length]!, p, 20);
    };
    await publishAll(hbSubjects, hb);
    await publishAll(evSubjects, ev);
    await publishAll(['orangery.evt.host.registered'], hostEv);
    await client.nc.flush();
    // give the consumers time to digest (heartbeats: two intervals)
    await new Promise((r) => setTimeout(r, 3_000));
    for (const s of services) expect(s.child.exitCode, `${s.name}: ${s.stderr.slice(-500)}`).toBeNull();
  });

  it('afterwards: every process is up, memory is bounded, rejected requests changed nothing, and a normal scale request completes once', async () => {
    sampleRss();
    for (const s of services) {
      expect(s.child.exitCode, `${s.name} exited: ${s.stderr.slice(-500)}`).toBeNull();
      const start = rssBefore.get(s.name)!;
      const now = rssKb(s.pid);
      console.info(
        `${s.name}: RSS ${Math.round(start / 1024)} MB before, peak ${Math.round((rssPeak.get(s.name) ?? now) / 1024)} MB, ${Math.round(now / 1024)} MB after`,
      );
      expect(now, `${s.name} RSS after the fuzz (kB)`).toBeLessThan(2 * start + 100 * 1024);
    }
    // A bug the envelope hides still shows in the log: nothing unhandled, nothing unexpected.
    for (const s of services) {
      expect(unexpectedErrorLines(s.lines), `${s.name} logged`).toEqual([]);
    }
    const after = await stateSnapshot();
    const untouched = (pools: { name: string }[]) => pools.filter((p) => !touchedPools.has(p.name));
    expect(untouched(after.pools)).toEqual(untouched(before.pools));
    expect(after.instances).toEqual(before.instances);
    const known = new Set(before.hosts.map((h: { id: string }) => h.id));
    expect(after.hosts.filter((h: { id: string }) => known.has(h.id))).toEqual(before.hosts);
    // a fuzzed envs.put may have given env 'fz' a record (a valid random body): without it, the rules of before
    await client.request(SUBJECTS.scheduler.envsDelete, { name: 'fz' });
    const id = await scale.publish(scaleData('base', 3));
    const out = await scale.outcome(id, 60_000);
    expect(out.type, JSON.stringify(out.data)).toBe('io.orangery.scale.completed');
    await new Promise((r) => setTimeout(r, 2_000));
    expect(scale.seen(id).length).toBe(1);
    const list = (await client.request(SUBJECTS.scheduler.instancesList, { env: 'fz', app: 'base' })).data.instances;
    expect(list.map((i: { state: string }) => i.state)).toEqual(['running', 'running', 'running']);
  });
});

/** The pool an ok reply of a mutating ipam request touched (best effort: the request's own names). */
function touchedPool(subject: string, payload: FuzzPayload): string {
  try {
    const b = JSON.parse(typeof payload.body === 'string' ? payload.body : new TextDecoder().decode(payload.body)) as Record<string, unknown>;
    if (subject === SUBJECTS.ipam.poolCreate || subject === SUBJECTS.ipam.poolDelete) return String(b['name']);
    if (subject.startsWith('orangery.ipam.block.') && typeof b['pool'] === 'string') return b['pool'];
    return 'fz'; // an allocation or release moved a count of some pool: the fixture pool is the only one with addresses
  } catch {
    return '';
  }
}

/**
 * The id the scheduler rejects a stored request under (CONTRACT.md v1.1, docs/scheduler.md):
 * its CloudEvents id when usable, `sha256:<hex>` of an unusable one, `js-<generation>-<seq>`
 * when it has none.
 */
function expectedRequestId(body: string | Uint8Array, generation: number, seq: number): string {
  const text = typeof body === 'string' ? body : new TextDecoder().decode(body);
  let id: unknown;
  try {
    const v = text.trim() === '' ? {} : (JSON.parse(text) as unknown);
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) id = (v as Record<string, unknown>)['id'];
  } catch {
    /* not JSON: no id */
  }
  if (typeof id !== 'string' || id === '') return `js-${generation}-${seq}`;
  if (id.length <= 128 && /^[\x20-\x7E]+$/.test(id)) return id;
  return `sha256:${createHash('sha256').update(id, 'utf8').digest('hex')}`;
}

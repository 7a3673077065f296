import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import type { TSchema } from '@sinclair/typebox';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import {
  CreateInstanceCommand,
  HostGetCommand,
  InstanceRef,
  ListInstancesCommand,
  ProbeWireCommand,
  StopInstanceCommand,
  type AgentInstance,
  type Heartbeat,
} from './agent';
import { AGENT_ERRORS, buildAsyncApi, IPAM_ERRORS } from './asyncapi';
import { buildEvent } from './cloudevents';
import { errorReply, okReply } from './envelope';
import { ERROR_CODES } from './errors';
import {
  AddressLookupRequest,
  AllocateBatchRequest,
  AllocateRequest,
  BindBatchRequest,
  BindRequest,
  PoolCreateRequest,
  PoolListRequest,
  PoolNameRequest,
  BlockBindRequest,
  BlockListRequest,
  BlockRef,
  BlockReserveRequest,
  BlockUnbindRequest,
  type Allocation,
} from './ipam';
import { QUEUE_GROUPS, SUBJECTS } from './subjects';
import { DrainRequest, MigrateRequest, MigrationGetRequest } from './migrator';

type Json = Record<string, unknown>;

/** What each IPAM subject decodes its request with (services/ipam/src/transport/ipam.handler.ts). */
const VALIDATED_WITH: Record<keyof typeof SUBJECTS.ipam, TSchema> = {
  poolCreate: PoolCreateRequest,
  poolGet: PoolNameRequest,
  poolList: PoolListRequest,
  poolDelete: PoolNameRequest,
  allocate: AllocateRequest,
  bind: BindRequest,
  release: AddressLookupRequest,
  get: AddressLookupRequest,
  // through decodeBatch, which accepts exactly what these accept (bad items answered one by one)
  allocateBatch: AllocateBatchRequest,
  bindBatch: BindBatchRequest,
  blockReserve: BlockReserveRequest,
  blockRelease: BlockRef,
  blockList: BlockListRequest,
  blockBind: BlockBindRequest,
  blockUnbind: BlockUnbindRequest,
};

/** What each agent command decodes its request with (services/docker-agent/src/transport/host-runtime.ts). */
const AGENT_VALIDATED_WITH: Record<keyof typeof SUBJECTS.agent, TSchema> = {
  create: CreateInstanceCommand,
  start: InstanceRef,
  stop: StopInstanceCommand,
  remove: InstanceRef,
  get: InstanceRef,
  list: ListInstancesCommand,
  probe: ProbeWireCommand,
  hostGet: HostGetCommand,
};

const doc = buildAsyncApi();
const channels = doc['channels'] as Record<string, Json>;
const operations = doc['operations'] as Record<string, Json>;

/** Resolves a local `$ref` (`#/a/b/c`) against the document. */
function deref(node: unknown): Json {
  const ref = (node as Json)['$ref'];
  if (typeof ref !== 'string') return node as Json;
  expect(ref.startsWith('#/'), ref).toBe(true);
  let at: unknown = doc;
  for (const seg of ref.slice(2).split('/')) {
    at = (at as Json | undefined)?.[seg.replaceAll('~1', '/').replaceAll('~0', '~')];
    expect(at, `unresolved ${ref}`).toBeDefined();
  }
  return deref(at);
}

const channelIdOf = (address: string): string | undefined => Object.keys(channels).find((id) => channels[id]!['address'] === address);

/** The operation serving a channel, and the payload schemas of its request and reply. */
function requestReplyOf(address: string): { op: Json; request: Json; reply: Json } {
  const channelId = channelIdOf(address);
  expect(channelId, `no channel for ${address}`).toBeDefined();
  const op = Object.values(operations).find((o) => (o['channel'] as Json)['$ref'] === `#/channels/${channelId}`);
  expect(op, `no operation for ${address}`).toBeDefined();
  const [request] = op!['messages'] as Json[];
  const [reply] = (op!['reply'] as Json)['messages'] as Json[];
  return { op: op!, request: deref(deref(request)['payload']), reply: deref(deref(reply)['payload']) };
}

const allocation: Allocation = {
  ip: '198.18.0.7',
  pool: 'prod-app',
  prefixLength: 24,
  gateway: '198.18.0.1',
  vlan: 100,
  mac: '02:00:c6:12:00:07',
  owner: { env: 'prod', app: 'pay-gateway', slot: 2 },
  state: 'bound',
  instanceId: 'prod:pay-gateway:2',
  backend: 'docker',
  host: 'node-1',
};

const instance: AgentInstance = {
  instanceId: 'prod:pay-gateway:2',
  env: 'prod',
  app: 'pay-gateway',
  slot: 2,
  hostId: 'node-1',
  backend: 'docker',
  containerId: 'c0ffee',
  state: 'running',
  ip: allocation.ip,
  mac: allocation.mac,
  image: 'pay-gateway:1.4.2',
  resources: { cpu: 2, memoryMb: 4096, heapMb: 3072, diskMb: 10240 },
};

const facts = {
  hostId: 'node-1',
  backend: 'docker',
  capacity: { cpu: 3, memoryMb: 7168, diskMb: 51200 },
  total: { cpu: 4, memoryMb: 8192, diskMb: 51200 },
  reserved: { cpu: 1, memoryMb: 1024, diskMb: 0 },
  labels: { rack: 'r1' },
  vlans: 'any',
} as const;

/** The payload schema of the first message of a channel. */
function payloadOf(address: string): Json {
  const id = channelIdOf(address);
  expect(id, `no channel for ${address}`).toBeDefined();
  const [message] = Object.values(channels[id!]!['messages'] as Json);
  return deref(deref(message)['payload']);
}

describe('buildAsyncApi', () => {
  it('is an AsyncAPI 3.0.0 document of contract v1 with the local NATS server', () => {
    expect(doc['asyncapi']).toBe('3.0.0');
    expect(doc['info']).toMatchObject({ title: 'Orangery', version: '1.0.0' });
    expect(String((doc['info'] as Json)['description'])).toContain('CONTRACT.md');
    expect(doc['servers']).toEqual({ local: expect.objectContaining({ host: '127.0.0.1:4222', protocol: 'nats' }) });
  });

  it('has a request-reply operation for every IPAM subject, whose request schema is the validation schema', () => {
    for (const [key, subject] of Object.entries(SUBJECTS.ipam) as [keyof typeof SUBJECTS.ipam, string][]) {
      const { op, request } = requestReplyOf(subject);
      expect(op['action'], subject).toBe('receive');
      expect(request, `${subject} request schema`).toEqual(JSON.parse(JSON.stringify(VALIDATED_WITH[key])));
      expect(op['x-orangery-errors'], subject).toEqual(IPAM_ERRORS[key]);
    }
  });

  it('has a request-reply operation for every agent command, whose request schema is the validation schema', () => {
    for (const [key, subjectOf] of Object.entries(SUBJECTS.agent) as [keyof typeof SUBJECTS.agent, (h: string) => string][]) {
      const subject = subjectOf('{hostId}');
      const { op, request, reply } = requestReplyOf(subject);
      expect(op['action'], subject).toBe('receive');
      expect(request, `${subject} request schema`).toEqual(JSON.parse(JSON.stringify(AGENT_VALIDATED_WITH[key])));
      expect(op['x-orangery-errors'], subject).toEqual(AGENT_ERRORS[key]);
      expect(op['bindings'], subject).toEqual({ nats: { queue: QUEUE_GROUPS.agent('{hostId}'), bindingVersion: '0.1.0' } });
      expect(op['x-orangery-status'], subject).toBeUndefined();
      expect(reply['anyOf'], `${subject} reply`).toHaveLength(2);
      const channel = channels[channelIdOf(subject)!]!;
      expect(channel['parameters'], subject).toHaveProperty('hostId');
      expect(channel['x-orangery-status'], subject).toBeUndefined();
    }
  });

  it('has a request-reply operation for every migrator subject, whose request schema is the validation schema', () => {
    const validatedWith: Record<keyof typeof SUBJECTS.migrator, TSchema> = {
      migrate: MigrateRequest,
      drain: DrainRequest,
      migrationsGet: MigrationGetRequest,
    };
    for (const [key, subject] of Object.entries(SUBJECTS.migrator) as [keyof typeof SUBJECTS.migrator, string][]) {
      const { op, request } = requestReplyOf(subject);
      expect(op['action'], subject).toBe('receive');
      expect(request, `${subject} request schema`).toEqual(JSON.parse(JSON.stringify(validatedWith[key])));
      expect(op['bindings'], subject).toEqual({ nats: { queue: QUEUE_GROUPS.migrator, bindingVersion: '0.1.0' } });
      expect(op['x-orangery-errors'], subject).toContain('INVALID_REQUEST');
    }
    const ajv = new Ajv({ strict: false });
    addFormats(ajv);
    const migrate = ajv.compile(requestReplyOf(SUBJECTS.migrator.migrate).reply);
    expect(migrate(okReply({ migrationId: 'm-0c8e4b8e-2f0e-4a43-9a57-2f3f4a1c7b10' }))).toBe(true);
    const get = ajv.compile(requestReplyOf(SUBJECTS.migrator.migrationsGet).reply);
    const view = {
      id: 'm-0c8e4b8e-2f0e-4a43-9a57-2f3f4a1c7b10',
      instanceId: 'prod:pay-gateway:2',
      from: { hostId: 'node-1', backend: 'docker' },
      to: { hostId: 'esx-2', backend: 'vmware' },
      state: 'failed',
      steps: [{ name: 'hold', state: 'done', attempts: 1, startedAt: new Date().toISOString(), finishedAt: new Date().toISOString() }],
      error: { code: 'IP_IN_USE_ON_WIRE', message: 'answers ARP' },
    };
    expect(get(okReply(view)), JSON.stringify(get.errors)).toBe(true);
    expect(get(okReply({ ...view, state: 'lost' }))).toBe(false);
    const event = ajv.compile(payloadOf(SUBJECTS.event('migration', 'failed')));
    const { event: failed } = buildEvent({
      area: 'migration',
      what: 'failed',
      source: 'orangery/migrator/x',
      subject: view.id,
      data: { migrationId: view.id, instanceId: view.instanceId, from: view.from, to: view.to, reason: view.error },
    });
    expect(event(failed), JSON.stringify(event.errors)).toBe(true);
  });

  it('lists only known error codes, INVALID_REQUEST on every IPAM and agent subject', () => {
    for (const codes of [...Object.values(IPAM_ERRORS), ...Object.values(AGENT_ERRORS)]) {
      expect(codes).toContain('INVALID_REQUEST');
      for (const code of codes) expect(ERROR_CODES).toContain(code);
    }
  });

  it('has a channel for every other subject, and none is planned any more', () => {
    for (const [id, channel] of Object.entries(channels)) expect(channel['x-orangery-status'], id).toBeUndefined();
    const live = [
      SUBJECTS.heartbeat('{hostId}'),
      ...Object.values(SUBJECTS.scheduler),
      SUBJECTS.scale('{env}', '{app}'),
      SUBJECTS.event('instance', 'placed'),
      ...['completed', 'rejected'].map((what) => SUBJECTS.event('scale', what)),
      ...['allocated', 'bound', 'released'].map((what) => SUBJECTS.event('ip', what)),
      ...['registered', 'fenced', 'lost', 'recovered', 'drained'].map((what) => SUBJECTS.event('host', what)),
      ...Object.values(SUBJECTS.migrator),
      ...['started', 'completed', 'failed'].map((what) => SUBJECTS.event('migration', what)),
      ...['running', 'stopped', 'failed', 'removed', 'disk_warning', 'disk_exceeded'].map((what) => SUBJECTS.event('instance', what)),
    ];
    for (const address of live) {
      const id = channelIdOf(address);
      expect(id, `no channel for ${address}`).toBeDefined();
      expect(channels[id!]!['x-orangery-status'], address).toBeUndefined();
      const op = Object.values(operations).find((o) => (o['channel'] as Json)['$ref'] === `#/channels/${id}`);
      expect(op?.['x-orangery-status'], address).toBeUndefined();
    }
  });

  it('resolves every $ref, and every operation message belongs to its channel', () => {
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (node !== null && typeof node === 'object') {
        if ('$ref' in node) deref(node);
        Object.values(node).forEach(walk);
      }
    };
    walk(doc);
    for (const [id, op] of Object.entries(operations)) {
      const channelRef = (op['channel'] as Json)['$ref'] as string;
      for (const m of op['messages'] as Json[]) expect(String(m['$ref']).startsWith(`${channelRef}/messages/`), id).toBe(true);
      const reply = op['reply'] as Json | undefined;
      if (reply) {
        const replyRef = (reply['channel'] as Json)['$ref'] as string;
        for (const m of reply['messages'] as Json[]) expect(String(m['$ref']).startsWith(`${replyRef}/messages/`), id).toBe(true);
      }
    }
  });

  it('has reply and event schemas that accept what the platform sends and refuse what it never does', () => {
    const ajv = new Ajv({ strict: false });
    addFormats(ajv);
    const allocate = ajv.compile(requestReplyOf(SUBJECTS.ipam.allocate).reply);
    expect(allocate(okReply(allocation)), JSON.stringify(allocate.errors)).toBe(true);
    expect(allocate(errorReply({ code: 'POOL_EXHAUSTED', message: 'no free address', details: { pool: 'prod-app' } }))).toBe(true);
    expect(allocate({ ok: false, error: { code: 'NO_SUCH_CODE', message: 'x' } })).toBe(false);
    expect(allocate({ ok: true, data: { ...allocation, state: 'lost' } })).toBe(false);

    const poolDelete = ajv.compile(requestReplyOf(SUBJECTS.ipam.poolDelete).reply);
    expect(poolDelete(okReply({}))).toBe(true);

    const batch = ajv.compile(requestReplyOf(SUBJECTS.ipam.allocateBatch).reply);
    const results = [okReply(allocation), errorReply({ code: 'IP_TAKEN', message: 'taken', details: { ip: allocation.ip } })];
    expect(batch(okReply({ results })), JSON.stringify(batch.errors)).toBe(true);
    expect(batch(okReply({ results: [{ ok: true, data: { ...allocation, state: 'lost' } }] }))).toBe(false);
    expect(batch(okReply({ results: [allocation] }))).toBe(false);
    expect(ajv.compile(requestReplyOf(SUBJECTS.ipam.bindBatch).reply)(okReply({ results }))).toBe(true);

    const channelId = channelIdOf(SUBJECTS.event('ip', 'bound'))!;
    const message = deref((channels[channelId]!['messages'] as Json)['event']);
    const event = ajv.compile(deref(message['payload']));
    const { event: bound } = buildEvent({ area: 'ip', what: 'bound', source: 'orangery/ipam', subject: allocation.ip, data: allocation });
    expect(event(bound), JSON.stringify(event.errors)).toBe(true);
    const { event: released } = buildEvent({ area: 'ip', what: 'released', source: 'orangery/ipam', subject: allocation.ip, data: allocation });
    expect(event(released)).toBe(false);
  });

  it('has agent reply, heartbeat and event schemas that accept what the docker-agent sends', () => {
    const ajv = new Ajv({ strict: false });
    addFormats(ajv);
    const create = ajv.compile(requestReplyOf(SUBJECTS.agent.create('{hostId}')).reply);
    expect(create(okReply(instance)), JSON.stringify(create.errors)).toBe(true);
    expect(create(okReply({ ...instance, state: 'placed' }))).toBe(false);
    expect(create(errorReply({ code: 'IMAGE_NOT_FOUND', message: 'image x is not on the engine', details: { image: 'x' } }))).toBe(true);
    const list = ajv.compile(requestReplyOf(SUBJECTS.agent.list('{hostId}')).reply);
    expect(list(okReply({ hostId: 'node-1', instances: [instance] })), JSON.stringify(list.errors)).toBe(true);
    expect(list(okReply({ instances: [instance] }))).toBe(false);

    const hb: Heartbeat = {
      ...facts,
      time: new Date().toISOString(),
      seq: 7,
      allocated: { cpu: 2, memoryMb: 4096, diskMb: 10240 },
      usage: { cpu: 0.31, memoryMb: 812, diskMb: 3 },
      instances: 1,
      fenced: false,
    };
    const heartbeat = ajv.compile(payloadOf(SUBJECTS.heartbeat('{hostId}')));
    expect(heartbeat(hb), JSON.stringify(heartbeat.errors)).toBe(true);
    expect(heartbeat({ ...hb, seq: undefined })).toBe(false);

    // The data as services/docker-agent/src/adapters/event-queue.ts builds it: { instanceId|hostId, hostId, backend, ...data }.
    const source = 'orangery/docker-agent/node-1';
    const base = { hostId: 'node-1', backend: 'docker' };
    const accepts = (area: string, what: string, data: Record<string, unknown>): boolean => {
      const validate = ajv.compile(payloadOf(SUBJECTS.event(area, what)));
      const subject = area === 'host' ? 'node-1' : instance.instanceId;
      const { event } = buildEvent({ area, what, source, subject, data });
      const ok = validate(event);
      if (!ok) expect.soft(validate.errors, `${area}.${what}`).toEqual([]);
      return ok;
    };
    expect(accepts('host', 'registered', { ...base, ...facts, engine: '26.1.5 (API 1.45)', uplink: 'fabric0' })).toBe(true);
    expect(accepts('host', 'registered', { ...base, ...facts, reregistered: true, fencedAt: new Date().toISOString() })).toBe(true);
    expect(accepts('host', 'fenced', { ...base, at: new Date().toISOString(), stopped: [instance.instanceId] })).toBe(true);
    const inst = { instanceId: instance.instanceId, ...base };
    const engineBase = { containerId: 'c0ffee', ip: instance.ip, mac: instance.mac };
    expect(accepts('instance', 'running', { ...inst, ...engineBase })).toBe(true);
    expect(accepts('instance', 'running', { ...inst, ...instance, adopted: true })).toBe(true);
    expect(accepts('instance', 'stopped', { ...inst, ...engineBase, exitCode: 0, reason: 'stopped on request' })).toBe(true);
    expect(accepts('instance', 'stopped', { ...inst, reason: 'self-fenced: no contact with NATS' })).toBe(true);
    expect(accepts('instance', 'failed', { ...inst, ...engineBase, exitCode: 137, reason: 'killed by the kernel: out of memory' })).toBe(true);
    expect(accepts('instance', 'failed', { ...inst, reason: 'image x is not on the engine', code: 'IMAGE_NOT_FOUND', ip: instance.ip })).toBe(true);
    expect(accepts('instance', 'removed', { ...inst, ...engineBase })).toBe(true);
    for (const what of ['disk_warning', 'disk_exceeded']) {
      expect(accepts('instance', what, { ...inst, usedMb: 9000, quotaMb: 10240, policy: 'report' })).toBe(true);
    }
    // ...and refuse what it never sends.
    const fenced = ajv.compile(payloadOf(SUBJECTS.event('host', 'fenced')));
    const { event: noStopped } = buildEvent({ area: 'host', what: 'fenced', source, subject: 'node-1', data: { ...base, at: 'now' } });
    expect(fenced(noStopped)).toBe(false);
    const disk = ajv.compile(payloadOf(SUBJECTS.event('instance', 'disk_exceeded')));
    const { event: badPolicy } = buildEvent({
      area: 'instance',
      what: 'disk_exceeded',
      source,
      subject: instance.instanceId,
      data: { ...inst, usedMb: 11000, quotaMb: 10240, policy: 'kill' },
    });
    expect(disk(badPolicy)).toBe(false);
  });
});

describe('docs/asyncapi.yaml', () => {
  it('is what buildAsyncApi() generates', () => {
    const stale = 'docs/asyncapi.yaml is stale: run npm run docs:asyncapi';
    let committed: unknown;
    try {
      committed = parse(readFileSync(resolve(process.cwd(), 'docs/asyncapi.yaml'), 'utf8'));
    } catch (e) {
      throw new Error(`${stale} (${(e as Error).message})`);
    }
    expect(committed, stale).toEqual(buildAsyncApi());
  });
});

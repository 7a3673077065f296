import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import type { TSchema } from '@sinclair/typebox';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { buildAsyncApi, IPAM_ERRORS } from './asyncapi';
import { buildEvent } from './cloudevents';
import { errorReply, okReply } from './envelope';
import { ERROR_CODES } from './errors';
import { AddressLookupRequest, AllocateRequest, BindRequest, EmptyRequest, PoolCreateRequest, PoolNameRequest, type Allocation } from './ipam';
import { SUBJECTS } from './subjects';

type Json = Record<string, unknown>;

/** What each IPAM subject decodes its request with (services/ipam/src/transport/ipam.handler.ts). */
const VALIDATED_WITH: Record<keyof typeof SUBJECTS.ipam, TSchema> = {
  poolCreate: PoolCreateRequest,
  poolGet: PoolNameRequest,
  poolList: EmptyRequest,
  poolDelete: PoolNameRequest,
  allocate: AllocateRequest,
  bind: BindRequest,
  release: AddressLookupRequest,
  get: AddressLookupRequest,
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

const channelIdOf = (address: string): string | undefined =>
  Object.keys(channels).find((id) => channels[id]!['address'] === address);

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

  it('lists only known error codes, INVALID_REQUEST on every IPAM subject', () => {
    for (const codes of Object.values(IPAM_ERRORS)) {
      expect(codes).toContain('INVALID_REQUEST');
      for (const code of codes) expect(ERROR_CODES).toContain(code);
    }
  });

  it('has a channel for every other subject, planned where the service does not exist yet', () => {
    const planned = [
      ...Object.values(SUBJECTS.scheduler),
      ...Object.values(SUBJECTS.migrator),
      SUBJECTS.heartbeat('{hostId}'),
      SUBJECTS.scale('{env}', '{app}'),
    ];
    for (const address of planned) {
      const id = channelIdOf(address);
      expect(id, `no channel for ${address}`).toBeDefined();
      expect(channels[id!]!['x-orangery-status'], address).toBe('planned');
    }
    for (const what of ['allocated', 'bound', 'released']) {
      const id = channelIdOf(SUBJECTS.event('ip', what));
      expect(id, `no channel for ip.${what}`).toBeDefined();
      expect(channels[id!]!['x-orangery-status']).toBeUndefined();
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

  it("has reply and event schemas that accept what the platform sends and refuse what it never does", () => {
    const ajv = new Ajv({ strict: false });
    addFormats(ajv);
    const allocate = ajv.compile(requestReplyOf(SUBJECTS.ipam.allocate).reply);
    expect(allocate(okReply(allocation)), JSON.stringify(allocate.errors)).toBe(true);
    expect(allocate(errorReply({ code: 'POOL_EXHAUSTED', message: 'no free address', details: { pool: 'prod-app' } }))).toBe(true);
    expect(allocate({ ok: false, error: { code: 'NO_SUCH_CODE', message: 'x' } })).toBe(false);
    expect(allocate({ ok: true, data: { ...allocation, state: 'lost' } })).toBe(false);

    const poolDelete = ajv.compile(requestReplyOf(SUBJECTS.ipam.poolDelete).reply);
    expect(poolDelete(okReply({}))).toBe(true);

    const channelId = channelIdOf(SUBJECTS.event('ip', 'bound'))!;
    const message = deref((channels[channelId]!['messages'] as Json)['event']);
    const event = ajv.compile(deref(message['payload']));
    const { event: bound } = buildEvent({ area: 'ip', what: 'bound', source: 'orangery/ipam', subject: allocation.ip, data: allocation });
    expect(event(bound), JSON.stringify(event.errors)).toBe(true);
    const { event: released } = buildEvent({ area: 'ip', what: 'released', source: 'orangery/ipam', subject: allocation.ip, data: allocation });
    expect(event(released)).toBe(false);
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

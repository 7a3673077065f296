import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { TSchema } from '@sinclair/typebox';
import {
  AddressLookupRequest,
  AllocateBatchRequest,
  AllocateRequest,
  BindRequest,
  CreateInstanceCommand,
  decode,
  DrainRequest,
  HostDrainRequest,
  HostsListRequest,
  InstanceRef,
  InstancesListRequest,
  MigrateRequest,
  MigrationGetRequest,
  parseJsonObject,
  PoolCreateRequest,
  PoolListRequest,
  PoolNameRequest,
  ProbeWireCommand,
  ScaleRequestedEvent,
  SlotGetRequest,
  SlotHoldRequest,
  SlotReserveRequest,
  StopInstanceCommand,
} from '@orangery/contracts';
import { adversarialPayload, FUZZ_MAX_BODY, NOT_AN_OBJECT, samplePayloads, validOf } from './fuzz';

const SCHEMAS: Record<string, TSchema> = {
  PoolCreateRequest,
  PoolNameRequest,
  PoolListRequest,
  AllocateRequest,
  BindRequest,
  AddressLookupRequest,
  AllocateBatchRequest,
  HostsListRequest,
  InstancesListRequest,
  SlotGetRequest,
  SlotHoldRequest,
  SlotReserveRequest,
  HostDrainRequest,
  MigrateRequest,
  DrainRequest,
  MigrationGetRequest,
  CreateInstanceCommand,
  InstanceRef,
  StopInstanceCommand,
  ProbeWireCommand,
  ScaleRequestedEvent,
};

describe('fuzz arbitraries derived from the contract schemas', () => {
  it.each(Object.entries(SCHEMAS))('every value validOf(%s) generates is accepted by that schema', (_name, schema) => {
    fc.assert(
      fc.property(validOf(schema), (v) => {
        decode(schema, v);
      }),
      { seed: 42, numRuns: 100 },
    );
  });

  it('the same seed gives the same payloads (a printed seed replays a run)', () => {
    const arb = adversarialPayload(AllocateRequest, { pool: 'p', owner: { env: 'e', app: 'a', slot: 1 } });
    const a = samplePayloads(arb, 1234, 50).map((p) => p.what);
    const b = samplePayloads(arb, 1234, 50).map((p) => p.what);
    const c = samplePayloads(arb, 4321, 50).map((p) => p.what);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
  });

  it('covers every kind of attack the issue names within a few hundred payloads', () => {
    const arb = adversarialPayload(BindRequest, { ip: '198.18.0.9', instanceId: 'e:a:1', backend: 'docker', host: 'h1' });
    const whats = samplePayloads(arb, 7, 600).map((p) => p.what);
    for (const kind of [
      'drop ',
      'mistype ',
      'string:crlf',
      'string:huge',
      'string:unicode',
      'string:control',
      'number ',
      'literal ',
      'nesting 10000',
      'extra key __proto__',
      'duplicate key',
      'headers: raw',
      'headers: actor huge',
      'empty body',
    ]) {
      expect(
        whats.some((w) => w.startsWith(kind) || w.includes(kind)),
        kind,
      ).toBe(true);
    }
  });

  it('mutated payloads fit in one NATS message (max_payload 1 MiB)', () => {
    const arb = adversarialPayload(PoolCreateRequest, { name: 'p', cidr: '198.18.0.0/24', gateway: '198.18.0.1', reserved: ['198.18.0.5'] });
    for (const p of samplePayloads(arb, 99, 300)) {
      const size = typeof p.body === 'string' ? Buffer.byteLength(p.body) : p.body.length;
      expect(size, p.what).toBeLessThan(FUZZ_MAX_BODY + 4096);
    }
  });

  it('a body that is not a JSON object (or not UTF-8) is INVALID_REQUEST at the parse, whatever it is', () => {
    for (const n of NOT_AN_OBJECT) {
      const body = n.body();
      let code: string | undefined;
      try {
        parseJsonObject(body);
      } catch (e) {
        code = (e as { code?: string }).code;
      }
      // '{} {}'-like garbage, the BOM and invalid UTF-8 are refused too; only 'whitespace' and 'empty' mean {}
      // ('deep object' and 'many keys' are JSON objects: the schema refuses them, after the parse)
      if (['empty body', 'whitespace', 'deep object', 'many keys'].includes(n.what)) expect(code, n.what).toBeUndefined();
      else expect(code, n.what).toBe('INVALID_REQUEST');
    }
  });
});

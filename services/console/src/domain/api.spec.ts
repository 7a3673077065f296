import { describe, expect, it } from 'vitest';
import { matchRoute, OPERATIONS, queryObject } from './api';
import { httpStatusOf } from './http-errors';
import { openApiDocument } from './openapi';

describe('console routes', () => {
  it('matches paths and decodes parameters', () => {
    const m = matchRoute('POST', '/api/v1/instances/prod%3Aweb%3A2/migrate');
    expect(m && 'op' in m && m.op.id).toBe('migrate');
    expect(m && 'op' in m && m.params).toEqual({ instanceId: 'prod:web:2' });
    expect(matchRoute('GET', '/api/v1/pools/p1')).toMatchObject({ op: { id: 'getPool' }, params: { name: 'p1' } });
  });

  it('tells a wrong method (405) from an unknown path (404)', () => {
    expect(matchRoute('DELETE', '/api/v1/pools')).toEqual({ allowed: ['GET', 'POST'] });
    expect(matchRoute('GET', '/api/v1/nothing')).toBeUndefined();
    expect(matchRoute('GET', '/api/v1/pools/a/b')).toBeUndefined();
  });

  it('converts integer query fields and spots repeated keys', () => {
    const op = OPERATIONS.find((o) => o.id === 'listPools')!;
    expect(queryObject(op, new URLSearchParams('limit=5&cursor=abc'))).toEqual({ value: { limit: 5, cursor: 'abc' } });
    expect(queryObject(op, new URLSearchParams('limit=five'))).toEqual({ value: { limit: 'five' } });
    expect(queryObject(op, new URLSearchParams('limit=1&limit=2')).repeated).toBe('limit');
    const inst = OPERATIONS.find((o) => o.id === 'listInstances')!;
    expect(queryObject(inst, new URLSearchParams('env=&app='))).toEqual({ value: {} });
  });

  it('every command is a POST or PUT and every read a GET', () => {
    for (const op of OPERATIONS) expect(op.command, op.id).toBe(op.method !== 'GET');
  });

  it('maps contract codes to the statuses the contract names', () => {
    expect(httpStatusOf('INVALID_REQUEST')).toBe(400);
    expect(httpStatusOf('NOT_FOUND')).toBe(404);
    expect(httpStatusOf('POOL_NOT_FOUND')).toBe(404);
    expect(httpStatusOf('POOL_EXISTS')).toBe(409);
    expect(httpStatusOf('POOL_OVERLAP')).toBe(409);
    expect(httpStatusOf('POLICY_VIOLATION')).toBe(409);
    expect(httpStatusOf('UNAVAILABLE')).toBe(503);
    expect(httpStatusOf('UNAUTHORIZED')).toBe(401);
    expect(httpStatusOf('FORBIDDEN')).toBe(403);
  });
});

describe('OpenAPI document', () => {
  const doc = openApiDocument('1.1.0') as { openapi: string; paths: Record<string, Record<string, Record<string, unknown>>> };

  it('describes every operation of the contract', () => {
    expect(doc.openapi).toBe('3.1.0');
    const ops = Object.entries(doc.paths).flatMap(([p, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${p}`));
    expect(ops.sort()).toEqual(
      [
        'GET /api/v1/pools',
        'POST /api/v1/pools',
        'GET /api/v1/pools/{name}',
        'GET /api/v1/hosts',
        'GET /api/v1/instances',
        'POST /api/v1/apps/{env}/{app}/scale',
        'GET /api/v1/requests/{requestId}',
        'POST /api/v1/instances/{instanceId}/migrate',
        'GET /api/v1/migrations/{id}',
        'POST /api/v1/hosts/{hostId}/drain',
        'GET /api/v1/envs',
        'GET /api/v1/envs/{name}',
        'PUT /api/v1/envs/{name}',
        'DELETE /api/v1/envs/{name}',
        'GET /api/v1/events',
      ].sort(),
    );
  });

  it("uses the contract's schemas (pool.create's body) and names the statuses", () => {
    const create = doc.paths['/api/v1/pools']!['post']!;
    const body = (create['requestBody'] as { content: Record<string, { schema: { required: string[]; additionalProperties: boolean } }> }).content[
      'application/json'
    ]!.schema;
    expect(body.required).toEqual(['name', 'cidr', 'gateway']);
    expect(body.additionalProperties).toBe(false);
    expect(Object.keys(create['responses'] as object).sort()).toEqual(['201', '400', '401', '403', '409', '413', '500', '503']);
    const scale = doc.paths['/api/v1/apps/{env}/{app}/scale']!['post']!;
    expect(Object.keys(scale['responses'] as object)).toContain('202');
    expect(JSON.stringify(scale)).not.toContain('"env":{'); // env and app come from the path
  });
});

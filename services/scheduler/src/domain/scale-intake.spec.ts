import { describe, it, expect } from 'vitest';
import type { Backend, ScaleRequestData } from '@orangery/contracts';
import { messageIdOf } from '@orangery/contracts';
import { backendsFor, parseScale, substituteRequestId, subjectNames, type InvalidScale, type ScaleMessage, type ValidScale } from './scale-intake';
import { scaleData, scaleEvent, scaleMessage, TRACEPARENT } from './testing/factories';

const OTHER_TRACE = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

const msg = (body: unknown, over: Partial<ScaleMessage> = {}): ScaleMessage => ({
  seq: 7,
  subject: 'orangery.scale.prod.web',
  body: typeof body === 'string' ? body : JSON.stringify(body),
  ...over,
});

function invalid(m: ScaleMessage): InvalidScale {
  const r = parseScale(m);
  expect(r.ok, 'expected a rejection').toBe(false);
  return r as InvalidScale;
}

function valid(m: ScaleMessage): ValidScale {
  const r = parseScale(m);
  expect(r.ok, r.ok ? '' : (r as InvalidScale).message).toBe(true);
  return r as ValidScale;
}

/** `n` variables V0..V<n-1>, each value `size` characters. */
const manyVars = (n: number, size: number): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`V${i}`, 'x'.repeat(size)]));

describe('parseScale', () => {
  it('accepts a well-formed request and keeps its id, sequence and data', () => {
    const r = valid(scaleMessage(12, { replicas: 3 }, { id: 'abc' }));
    expect(r).toMatchObject({ requestId: 'abc', seq: 12, data: { env: 'prod', app: 'web', replicas: 3, pool: 'prod-pool' } });
    expect(r.traceparent).toBeUndefined();
  });

  it('accepts a body given as bytes', () => {
    const body = new TextEncoder().encode(JSON.stringify(scaleEvent(scaleData())));
    expect(valid(msg('', { body })).requestId).toBe('req-1');
  });

  it.each<[string, string]>([
    ['not JSON', '{"id": '],
    ['a JSON array', '[1, 2]'],
    ['a JSON string', '"scale"'],
  ])('rejects a body that is %s, under the stream sequence, naming no field', (_what, body) => {
    const r = invalid(msg(body));
    expect(r).toMatchObject({ requestId: 'js-7', seq: 7, env: 'prod', app: 'web', details: { field: '' } });
    expect(r.message).not.toBe('');
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['data.replicas missing', { data: { ...scaleData(), replicas: undefined } }, 'data.replicas'],
    ['data.pool missing', { data: { ...scaleData(), pool: undefined } }, 'data.pool'],
    ['data missing', { data: undefined }, 'data'],
    ['source missing', { source: undefined }, 'source'],
    ['replicas not an integer', { data: { ...scaleData(), replicas: 1.5 } }, 'data.replicas'],
    ['replicas a string', { data: { ...scaleData(), replicas: '3' } }, 'data.replicas'],
    ['an unknown data field', { data: { ...scaleData(), colour: 'red' } }, 'data.colour'],
    ['a bad backend', { data: { ...scaleData(), backend: 'lxc' } }, 'data.backend'],
    ['a bad env name', { data: { ...scaleData(), env: 'Prod' } }, 'data.env'],
    ['more replicas than slots exist (10000)', { data: { ...scaleData(), replicas: 10_001 } }, 'data.replicas'],
    ['more than 256 environment variables', { data: { ...scaleData(), environment: manyVars(257, 1) } }, 'data.environment'],
    ['more than 64 KB of environment', { data: { ...scaleData(), environment: manyVars(17, 4000) } }, 'data.environment'],
  ])('rejects %s naming the field', (_what, envelope, field) => {
    const body = scaleEvent(scaleData(), { id: 'r-9' });
    for (const [k, v] of Object.entries(envelope)) {
      if (v === undefined) delete body[k];
      else body[k] = k === 'data' ? JSON.parse(JSON.stringify(v)) : v;
    }
    const r = invalid(msg(body));
    expect(r.requestId).toBe('r-9');
    expect(r.details['field']).toBe(field);
  });

  it('rejects another event type, naming the type attribute', () => {
    const r = invalid(msg(scaleEvent(scaleData(), { type: 'io.orangery.scale.completed' })));
    expect(r.details['field']).toBe('type');
    expect(r.requestId).toBe('req-1');
  });

  it('rejects data that names another app than the subject', () => {
    const r = invalid(msg(scaleEvent(scaleData({ app: 'api' })), { subject: 'orangery.scale.prod.web' }));
    expect(r.details['field']).toBe('data.app');
    expect(r.message).toContain('prod/api');
    // the rejection goes to the app of the subject: that is where the publisher looks
    expect(r).toMatchObject({ env: 'prod', app: 'web' });
  });

  it('rejects data that names another env than the subject', () => {
    expect(invalid(msg(scaleEvent(scaleData({ env: 'qa' })))).details['field']).toBe('data.app');
  });

  it.each(['orangery.scale.prod', 'orangery.scale.prod.web.extra', 'orangery.other.prod.web', 'orangery.scale.Prod.web', 'x.scale.prod.web'])(
    'rejects the subject %s with no app to blame',
    (subject) => {
      const r = invalid(msg(scaleEvent(scaleData()), { subject }));
      expect(r.message).toContain('is not orangery.scale.<env>.<app>');
      expect(r.env).toBeUndefined();
      expect(r.app).toBeUndefined();
    },
  );

  it('rejects a heap implausibly larger than the memory', () => {
    const r = invalid(msg(scaleEvent(scaleData({ resources: { cpu: 1, memoryMb: 16, heapMb: 16 * 64 + 1 } }))));
    expect(r.details['field']).toBe('data.resources.heapMb');
  });

  it('accepts a heap up to 64 times the memory (the real limit is raised by memoryLimitMb)', () => {
    valid(msg(scaleEvent(scaleData({ resources: { cpu: 1, memoryMb: 16, heapMb: 16 * 64 } }))));
  });

  it.each<[string, unknown]>([
    ['missing', undefined],
    ['empty', ''],
    ['not a string', 42],
  ])('falls back to js-<seq> when the id is %s', (_what, id) => {
    const r = invalid(msg(scaleEvent(scaleData(), { id }), { seq: 31 }));
    expect(r.requestId).toBe('js-31');
  });

  it.each<[string, string]>([
    ['CR/LF (a header injection)', 'req-1\r\nNats-Msg-Id: other'],
    ['a lone LF', 'a\nb'],
    ['a NUL', 'a\u0000b'],
    ['a tab', 'a\tb'],
    ['DEL', 'a\u007fb'],
    ['non-ASCII', 'réq-1'],
    ['129 characters', 'x'.repeat(129)],
    ['256 characters', 'x'.repeat(256)],
  ])('rejects an id with %s naming the field id, under sha256:<hex of the id>', (_what, id) => {
    const r = invalid(msg(scaleEvent(scaleData(), { id }), { seq: 32 }));
    expect(r.details).toMatchObject({ field: 'id', maxLength: 128 });
    expect(r.message).toContain("field 'id'");
    expect(r.requestId).toBe(substituteRequestId(id));
    expect(r.requestId).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(r).toMatchObject({ env: 'prod', app: 'web' });
  });

  it('accepts 1000 replicas, 256 variables and an environment of exactly 64 KB', () => {
    valid(msg(scaleEvent(scaleData({ replicas: 1000, environment: manyVars(256, 1) }))));
    const env = manyVars(16, 4000); // 16 x (2 or 3 + 4000) bytes
    const used = Object.entries(env).reduce((n, [k, v]) => n + k.length + v.length, 0);
    env['FILL'] = 'y'.repeat(64 * 1024 - used - 'FILL'.length);
    expect(env['FILL']!.length).toBeLessThanOrEqual(4096);
    valid(msg(scaleEvent(scaleData({ environment: env }))));
    env['FILL'] += 'y';
    expect(invalid(msg(scaleEvent(scaleData({ environment: env })))).details).toMatchObject({ field: 'data.environment', limit: 65536, bytes: 65537 });
  });

  it('counts the environment in UTF-8 bytes, not characters', () => {
    const env = manyVars(16, 4000);
    env['FILL'] = 'é'.repeat(2000); // 4000 bytes
    expect(invalid(msg(scaleEvent(scaleData({ environment: env })))).details['field']).toBe('data.environment');
  });

  it('keeps an id of 128 printable characters, spaces included', () => {
    const id = ' ~'.repeat(64);
    expect(valid(msg(scaleEvent(scaleData(), { id }))).requestId).toBe(id);
  });

  it('keeps ids that differ only by surrounding spaces apart, down to their outcome message ids', () => {
    const ids = ['a', ' a', 'a ', ' a '];
    const requestIds = ids.map((id) => valid(msg(scaleEvent(scaleData(), { id }))).requestId);
    expect(requestIds).toEqual(ids);
    // NATS headers trim values: the message ids must differ after a trim (see libs/messaging message-id.spec.ts)
    const msgIds = requestIds.map((id) => messageIdOf(`scale-rejected:${id}`).trim());
    expect(new Set(msgIds).size).toBe(ids.length);
  });

  it('keeps a usable id even when the rest of the request is invalid', () => {
    expect(invalid(msg(scaleEvent({ app: 'web' }, { id: 'mine' }))).requestId).toBe('mine');
  });

  describe('traceparent', () => {
    it('comes from the message header when the event has none', () => {
      expect(valid(msg(scaleEvent(scaleData()), { traceparent: TRACEPARENT })).traceparent).toBe(TRACEPARENT);
    });

    it("comes from the event's attribute first", () => {
      const r = valid(msg(scaleEvent(scaleData(), { traceparent: OTHER_TRACE }), { traceparent: TRACEPARENT }));
      expect(r.traceparent).toBe(OTHER_TRACE);
    });

    it('is carried by a rejection too (from the header)', () => {
      expect(invalid(msg('nope', { traceparent: TRACEPARENT })).traceparent).toBe(TRACEPARENT);
    });

    it('rejects a malformed traceparent attribute', () => {
      expect(invalid(msg(scaleEvent(scaleData(), { traceparent: 'not-a-trace' }))).details['field']).toBe('traceparent');
    });

    it('is absent when neither gives one', () => {
      expect('traceparent' in valid(msg(scaleEvent(scaleData())))).toBe(false);
      expect('traceparent' in invalid(msg('nope'))).toBe(false);
    });
  });
});

describe('subjectNames', () => {
  it.each<[string, { env?: string; app?: string }]>([
    ['orangery.scale.prod.pay-gateway', { env: 'prod', app: 'pay-gateway' }],
    ['orangery.scale.prod.-bad', {}],
    ['orangery.scale.prod', {}],
    ['orangery.scale.prod.web.x', {}],
  ])('%s -> %j', (subject, expected) => {
    expect(subjectNames(subject)).toEqual(expected);
  });
});

describe('backendsFor', () => {
  type Case = [string, Partial<ScaleRequestData>, readonly Backend[] | undefined, Backend[], string | undefined, RegExp | undefined];
  it.each<Case>([
    // name, request, env policy -> backends, field, reason
    ['auto with an image runs in containers', { backend: 'auto', image: 'a:1' }, undefined, ['docker'], undefined, undefined],
    ['auto with a template runs in VMs', { backend: 'auto', template: 't' }, undefined, ['vmware'], undefined, undefined],
    ['auto with both may use both', { backend: 'auto', image: 'a:1', template: 't' }, undefined, ['docker', 'vmware'], undefined, undefined],
    ['no backend given is auto', { image: 'a:1', template: 't' }, undefined, ['docker', 'vmware'], undefined, undefined],
    ['auto with neither runs nowhere', { backend: 'auto' }, undefined, [], 'data.image', /image .*template/],
    ['docker with an image', { backend: 'docker', image: 'a:1', template: 't' }, undefined, ['docker'], undefined, undefined],
    ['docker without an image', { backend: 'docker', template: 't' }, undefined, [], 'data.image', /docker needs an image/],
    ['vmware with a template', { backend: 'vmware', image: 'a:1', template: 't' }, undefined, ['vmware'], undefined, undefined],
    ['vmware without a template', { backend: 'vmware', image: 'a:1' }, undefined, [], 'data.template', /vmware needs a template/],
    ['swarm with an image (a swarm service runs an image)', { backend: 'swarm', image: 'a:1' }, undefined, ['swarm'], undefined, undefined],
    ['swarm without an image', { backend: 'swarm', template: 't' }, undefined, [], 'data.image', /swarm needs an image/],
    ['env policy narrows auto', { backend: 'auto', image: 'a:1', template: 't' }, ['vmware'], ['vmware'], undefined, undefined],
    ['env policy allowing both changes nothing', { image: 'a:1' }, ['docker', 'vmware'], ['docker'], undefined, undefined],
    ['env policy refusing the only artifact', { backend: 'auto', image: 'a:1' }, ['vmware'], [], 'data.backend', /env 'prod' allows only vmware/],
    ['env policy refusing the asked backend', { backend: 'docker', image: 'a:1' }, ['vmware'], [], 'data.backend', /allows only vmware/],
  ])('%s', (_what, over, policy, backends, field, reason) => {
    const data = { env: 'prod', ...over };
    delete (data as Partial<ScaleRequestData>).image;
    delete (data as Partial<ScaleRequestData>).template;
    Object.assign(data, over);
    const r = backendsFor(data, policy);
    expect(r.backends).toEqual(backends);
    expect(r.field).toBe(field);
    if (reason) expect(r.reason).toMatch(reason);
    else expect(r.reason).toBeUndefined();
  });
});

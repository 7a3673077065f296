import { Readable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import type { ContainerCreateCommand } from '@orangery/contracts';
import { planContainer } from '../domain/container-spec';
import { DockerEngine, engineEventOf, linesOf } from './docker-engine';

const line = (o: unknown) => JSON.stringify(o);
const labels = { 'io.orangery.managed': 'true', 'io.orangery.instance-id': 'prod:web:0' };

describe('the engine event stream, parsed into port events', () => {
  it.each([
    ['start', { id: 'c1', Action: 'start', Actor: { Attributes: labels } }, { kind: 'start', containerId: 'c1', labels }],
    ['oom', { id: 'c1', Action: 'oom', Actor: { Attributes: labels } }, { kind: 'oom', containerId: 'c1', labels }],
    ['destroy', { id: 'c1', Action: 'destroy', Actor: { Attributes: labels } }, { kind: 'destroy', containerId: 'c1', labels }],
    [
      'die with its exit code',
      { id: 'c1', Action: 'die', Actor: { Attributes: { ...labels, exitCode: '143' } } },
      { kind: 'die', containerId: 'c1', labels: { ...labels, exitCode: '143' }, exitCode: 143 },
    ],
    ['die without one', { id: 'c1', Action: 'die', Actor: { Attributes: labels } }, { kind: 'die', containerId: 'c1', labels, exitCode: undefined }],
  ])('%s', (_name, raw, parsed) => {
    expect(engineEventOf(line(raw))).toEqual(parsed);
  });

  it.each([
    ['an action not followed', line({ id: 'c1', Action: 'exec_start', Actor: { Attributes: labels } })],
    ['no container id', line({ Action: 'die', Actor: { Attributes: labels } })],
    ['not JSON', '{"id": "c1", "Act'],
  ])('ignores %s', (_name, raw) => {
    expect(engineEventOf(raw)).toBeUndefined();
  });

  it('splits chunks into lines wherever the chunks break', async () => {
    const chunks = ['{"a":1}\n{"b"', ':2}\n\n', '{"c":3}\n{"unfinished"'].map((c) => Buffer.from(c));
    const lines: string[] = [];
    for await (const l of linesOf(Readable.from(chunks))) lines.push(l);
    expect(lines).toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
  });
});

describe('create: the plan as the engine gets it', () => {
  const cmd = (security?: ContainerCreateCommand['security']): ContainerCreateCommand => ({
    instanceId: 'prod:web:0',
    env: 'prod',
    app: 'web',
    slot: 0,
    image: 'orangery/service:1',
    resources: { cpu: 1, memoryMb: 512 },
    network: { ip: '198.18.0.10', mac: '02:00:c6:12:00:0a', prefixLength: 24, gateway: '198.18.0.1', vlan: 0 },
    ...(security ? { security } : {}),
  });
  async function hostConfigOf(c: ContainerCreateCommand, pidsLimit?: number): Promise<Record<string, unknown>> {
    const engine = new DockerEngine('unix:///nonexistent.sock');
    const createContainer = vi.fn(async (_opts: { HostConfig: Record<string, unknown> }) => ({ id: 'c1' }));
    (engine.docker as unknown as { createContainer: typeof createContainer }).createContainer = createContainer;
    expect(await engine.create(planContainer(c, { totalCpus: 4, reservedCpus: 1, pidsLimit }), 'orangery-v0-198.18.0.0_24')).toBe('c1');
    return createContainer.mock.calls[0]![0].HostConfig;
  }

  it('no-new-privileges, the PIDs limit and the dropped capabilities', async () => {
    expect(await hostConfigOf(cmd(), 4096)).toMatchObject({
      SecurityOpt: ['no-new-privileges'],
      PidsLimit: 4096,
      CapDrop: ['NET_RAW', 'MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SYS_CHROOT'],
    });
  });

  it('relaxed: no security option, the per-instance limit, NET_RAW kept; never a CapAdd nor Privileged', async () => {
    const hc = await hostConfigOf(cmd({ allowPrivilegeEscalation: true, pidsLimit: 10_000, addCapabilities: ['NET_RAW'] }), 4096);
    expect(hc).toMatchObject({ SecurityOpt: [], PidsLimit: 10_000, CapDrop: ['MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SYS_CHROOT'] });
    expect(hc).not.toHaveProperty('CapAdd');
    expect(hc).not.toHaveProperty('Privileged');
  });
});

describe('hasImage', () => {
  const engineAnswering = (err: Error & { statusCode?: number }) => {
    const engine = new DockerEngine('unix:///nonexistent.sock');
    (engine.docker as unknown as { getImage: () => { inspect: () => Promise<never> } }).getImage = () => ({
      inspect: async () => {
        throw err;
      },
    });
    return engine;
  };

  it('an image the engine does not have is false (IMAGE_NOT_FOUND in the domain)', async () => {
    expect(await engineAnswering(Object.assign(new Error('(HTTP code 404) no such image'), { statusCode: 404 })).hasImage('orangery/none:1')).toBe(false);
  });

  it("a reference the engine cannot parse (its 400, e.g. '2/_@', which the contract's pattern lets through) is INVALID_REQUEST naming image, not INTERNAL", async () => {
    const err = await engineAnswering(Object.assign(new Error('(HTTP code 400) unexpected - invalid reference format'), { statusCode: 400 }))
      .hasImage('2/_@')
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'image' } });
  });

  it('any other engine error stays an error of the engine', async () => {
    const err = await engineAnswering(Object.assign(new Error('(HTTP code 500) server error'), { statusCode: 500 }))
      .hasImage('a:1')
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toBeUndefined();
  });
});

import { describe, expect, it } from 'vitest';
import { CreateInstanceCommand, DROPPED_CAPABILITIES, type ContainerSecurity } from './agent';
import { instanceSpecHash } from './spec-hash';
import { decode } from './validation';

const web = (): CreateInstanceCommand => ({
  instanceId: 'prod:web:0',
  env: 'prod',
  app: 'web',
  slot: 0,
  image: 'orangery/service:1',
  resources: { cpu: 1, memoryMb: 512 },
  network: { ip: '198.18.0.10', mac: '02:00:c6:12:00:0a', prefixLength: 24, gateway: '198.18.0.1', vlan: 0 },
});

const billing = (): CreateInstanceCommand => ({
  ...web(),
  instanceId: 'prod:billing:3',
  app: 'billing',
  slot: 3,
  resources: { cpu: 1.5, memoryMb: 1024, heapMb: 1024, diskMb: 2048 },
  network: { ip: '198.18.4.20', mac: '02:00:c6:12:04:14', prefixLength: 22, gateway: '198.18.4.1', vlan: 100 },
  environment: { JAVA_OPTS: '-Xmx1024m', TZ: 'UTC' },
  command: ['java', '-jar', '/app.jar'],
});

describe('instanceSpecHash and `security` (v1.1)', () => {
  // The values the hash had before `security` existed (computed with that code): the label on
  // every container created then. A changed value here means an upgraded agent would refuse
  // a same-spec create for its old containers with INSTANCE_CONFLICT.
  it('keeps the hash of containers created before `security` existed', () => {
    expect(instanceSpecHash(web())).toBe('a6ed60573d16346a');
    expect(instanceSpecHash(billing())).toBe('17fd4eda8074da48');
  });

  it.each<[string, ContainerSecurity]>([
    ['empty', {}],
    ['privilege escalation not allowed (the default)', { allowPrivilegeEscalation: false }],
    ['no capability given back', { addCapabilities: [] }],
  ])('a `security` that relaxes nothing (%s) hashes as none', (_what, security) => {
    expect(instanceSpecHash({ ...web(), security })).toBe('a6ed60573d16346a');
  });

  it.each<[string, ContainerSecurity]>([
    ['privilege escalation', { allowPrivilegeEscalation: true }],
    ['a PIDs limit', { pidsLimit: 8192 }],
    ['a capability', { addCapabilities: ['NET_RAW'] }],
  ])('a relaxation (%s) is another spec', (_what, security) => {
    expect(instanceSpecHash({ ...web(), security })).not.toBe(instanceSpecHash(web()));
  });

  it('the order of capabilities does not matter; the values do', () => {
    const a = instanceSpecHash({ ...web(), security: { addCapabilities: ['NET_RAW', 'SYS_CHROOT'] } });
    expect(instanceSpecHash({ ...web(), security: { addCapabilities: ['SYS_CHROOT', 'NET_RAW'] } })).toBe(a);
    expect(instanceSpecHash({ ...web(), security: { addCapabilities: ['NET_RAW'] } })).not.toBe(a);
    expect(instanceSpecHash({ ...web(), security: { pidsLimit: 100 } })).not.toBe(instanceSpecHash({ ...web(), security: { pidsLimit: 101 } }));
  });
});

describe('CreateInstanceCommand.security', () => {
  it('accepts the relaxations within bounds', () => {
    const security = { allowPrivilegeEscalation: true, pidsLimit: 16, addCapabilities: [...DROPPED_CAPABILITIES] };
    expect(decode(CreateInstanceCommand, { ...web(), security }).security).toEqual(security);
    expect(decode(CreateInstanceCommand, { ...web(), security: { pidsLimit: 4_194_304 } }).security).toEqual({ pidsLimit: 4_194_304 });
  });

  it.each<[string, unknown]>([
    ['a capability beyond Docker defaults', { addCapabilities: ['SYS_ADMIN'] }],
    ['NET_ADMIN', { addCapabilities: ['NET_ADMIN'] }],
    ['a CAP_ prefix', { addCapabilities: ['CAP_NET_RAW'] }],
    ['lower case', { addCapabilities: ['net_raw'] }],
    ['ALL', { addCapabilities: ['ALL'] }],
    ['a duplicate', { addCapabilities: ['NET_RAW', 'NET_RAW'] }],
    ['a PIDs limit of 0 (unlimited)', { pidsLimit: 0 }],
    ['a PIDs limit of -1 (unlimited)', { pidsLimit: -1 }],
    ['a PIDs limit too small', { pidsLimit: 15 }],
    ['a PIDs limit too large', { pidsLimit: 4_194_305 }],
    ['a fractional PIDs limit', { pidsLimit: 100.5 }],
    ['a string', { allowPrivilegeEscalation: 'yes' }],
    ['an unknown field', { privileged: true }],
    ['not an object', 'relaxed'],
  ])('refuses %s (INVALID_REQUEST)', (_what, security) => {
    expect(() => decode(CreateInstanceCommand, { ...web(), security })).toThrow(expect.objectContaining({ code: 'INVALID_REQUEST' }));
  });
});

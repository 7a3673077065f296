import { describe, expect, it } from 'vitest';
import { HOST_ID_PATTERN, type VmCreateCommand } from '@orangery/contracts';
import { extraConfigProblem, fillPlaceholders, hostIdFromName, LABEL, labelsOf, planVm, specHash, vmNameOf } from './vm-spec';

const cmd = (over: Partial<VmCreateCommand> = {}): VmCreateCommand => ({
  instanceId: 'prod:pay-gateway:2',
  env: 'prod',
  app: 'pay-gateway',
  slot: 2,
  template: 'centos7-jdk8',
  resources: { cpu: 1.5, memoryMb: 3200, heapMb: 3072, diskMb: 10240 },
  network: { ip: '198.18.7.10', mac: '02:4f:c6:12:07:0a', prefixLength: 16, gateway: '198.18.0.1', vlan: 100 },
  ...over,
});

describe('hostIdFromName', () => {
  it.each([
    ['esx01.lab.local', 'esx01-lab-local'],
    ['ESX02.Example.COM', 'esx02-example-com'],
    ['10.0.0.5', '10-0-0-5'],
    ['--weird__name--', 'weird-name'],
  ])('%s -> %s', (name, id) => expect(hostIdFromName(name)).toBe(id));

  it('keeps long names within 63 characters, distinct and valid', () => {
    const a = hostIdFromName(`${'a'.repeat(70)}.one`);
    const b = hostIdFromName(`${'a'.repeat(70)}.two`);
    for (const id of [a, b]) expect(id).toMatch(new RegExp(HOST_ID_PATTERN));
    expect(a).not.toBe(b);
    expect(hostIdFromName('...')).toMatch(new RegExp(HOST_ID_PATTERN));
  });
});

describe('vmNameOf', () => {
  it('is orangery-<env>-<app>-<slot>', () => expect(vmNameOf('prod:pay-gateway:2')).toBe('orangery-prod-pay-gateway-2'));
  it('stays within vCenter’s 80 characters and unique', () => {
    const long = `${'e'.repeat(60)}:${'a'.repeat(60)}`;
    const a = vmNameOf(`${long}:1`);
    const b = vmNameOf(`${long}:2`);
    expect(a.length).toBeLessThanOrEqual(80);
    expect(a).not.toBe(b);
    expect(a).toMatch(/^[a-z0-9-]+$/);
  });
});

describe('placeholders in ORANGERY_VCENTER_EXTRA_CONFIG', () => {
  it('fills every known placeholder and leaves other braces alone', () => {
    const v = { ip: '1.2.3.4', mac: 'm', prefixLength: '24', gateway: 'g', instanceId: 'i', env: 'e', app: 'a', slot: '3' };
    expect(fillPlaceholders('{ip}/{prefixLength} via {gateway} {mac} {instanceId} {env} {app} {slot} {x}', v)).toBe('1.2.3.4/24 via g m i e a 3 {x}');
  });
  it.each([
    [{ 'RUN.container': '["--ip","{ip}"]' }, undefined],
    [{ 'guestinfo.metadata': '{ip}' }, undefined],
    [{ 'bad key': 'x' }, /not a VMX key/],
    [{ k: '{nope}' }, /unknown placeholder \{nope\}/],
    [{ k: 1 }, /must be a string/],
    [{ 'guestinfo.orangery.ip': 'x' }, /agent's own/],
    [{ k: 'a\nb' }, /control characters/],
  ])('%j -> %s', (extra, problem) => {
    const p = extraConfigProblem(extra as Record<string, unknown>);
    if (problem) expect(p).toMatch(problem);
    else expect(p).toBeUndefined();
  });
});

describe('planVm', () => {
  it('turns a create command into a clone: CPUs, JVM memory, MAC, fixed IP, labels and the filled extra keys', () => {
    const plan = planVm(cmd(), 'esx01-lab-local', { 'RUN.container': '["--ip","{ip}","--mac-address","{mac}"]', 'guestinfo.slot': '{env}/{app}/{slot}' });
    expect(plan).toMatchObject({
      name: 'orangery-prod-pay-gateway-2',
      template: 'centos7-jdk8',
      numCpus: 2,
      memoryMb: 3840,
      vlan: 100,
      mac: '02:4f:c6:12:07:0a',
      customization: { hostName: 'pay-gateway-2', ip: '198.18.7.10', subnetMask: '255.255.0.0', gateway: '198.18.0.1' },
    });
    expect(plan.extraConfig).toMatchObject({
      'RUN.container': '["--ip","198.18.7.10","--mac-address","02:4f:c6:12:07:0a"]',
      'guestinfo.slot': 'prod/pay-gateway/2',
      'ethernet0.checkMACAddress': 'FALSE',
      [LABEL.instanceId]: 'prod:pay-gateway:2',
      [LABEL.ip]: '198.18.7.10',
      [LABEL.hostId]: 'esx01-lab-local',
      [LABEL.managed]: 'true',
    });
  });

  it('memory without a heap is what was asked; at least one vCPU', () => {
    const plan = planVm(cmd({ resources: { cpu: 0.1, memoryMb: 512 } }), 'h', {});
    expect(plan).toMatchObject({ numCpus: 1, memoryMb: 512 });
  });

  it('labels read back to what was asked (adoption), templates with spaces included', () => {
    const plan = planVm(cmd({ template: 'centos 7 jdk8' }), 'esx01-lab-local', {});
    expect(plan.extraConfig[LABEL.template]).toBe('centos%207%20jdk8');
    expect(labelsOf(plan.extraConfig)).toEqual({
      instanceId: 'prod:pay-gateway:2',
      env: 'prod',
      app: 'pay-gateway',
      slot: 2,
      hostId: 'esx01-lab-local',
      ip: '198.18.7.10',
      mac: '02:4f:c6:12:07:0a',
      vlan: 100,
      template: 'centos 7 jdk8',
      cpu: 1.5,
      memoryMb: 3200,
      heapMb: 3072,
      diskMb: 10240,
      specHash: specHash(cmd({ template: 'centos 7 jdk8' }), 'esx01-lab-local'),
    });
    expect(labelsOf({ 'guestinfo.orangery.instanceId': 'x:y:1' })).toBeUndefined();
  });

  it('the spec hash changes with anything that makes another VM, and with the host', () => {
    const base = specHash(cmd(), 'h1');
    expect(specHash(cmd(), 'h1')).toBe(base);
    expect(specHash(cmd(), 'h2')).not.toBe(base);
    expect(specHash(cmd({ template: 'other' }), 'h1')).not.toBe(base);
    expect(specHash(cmd({ resources: { ...cmd().resources, memoryMb: 1 } }), 'h1')).not.toBe(base);
    expect(specHash(cmd({ network: { ...cmd().network, ip: '198.18.7.11' } }), 'h1')).not.toBe(base);
    expect(specHash(cmd({ start: false }), 'h1')).toBe(base);
  });
});

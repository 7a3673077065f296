import { describe, it, expect } from 'vitest';
import type { ContainerCreateCommand as CreateInstanceCommand } from '@orangery/contracts';
import {
  allowedCpuset,
  containerName,
  DEFAULT_PIDS_LIMIT,
  diskLevel,
  LABEL,
  memoryLimitMb,
  MIN_HEADROOM_MB,
  networkName,
  parentInterface,
  planContainer,
  specHash,
  type DiskLevel,
} from './container-spec';

// ---- factories -------------------------------------------------------------------------

const MiB = 1024 * 1024;

/** prod:web:0 on 198.18.0.10/24, untagged, 1 CPU and 512 MiB, no heap, no disk quota. */
const cmdOf = (over: Partial<CreateInstanceCommand> = {}): CreateInstanceCommand => ({
  instanceId: 'prod:web:0',
  env: 'prod',
  app: 'web',
  slot: 0,
  image: 'orangery/service:1',
  resources: { cpu: 1, memoryMb: 512 },
  network: { ip: '198.18.0.10', mac: '02:00:c6:12:00:0a', prefixLength: 24, gateway: '198.18.0.1', vlan: 0 },
  ...over,
});

/** A JVM-like instance: heap, disk quota, extra environment and a command, on VLAN 100. */
const javaCmd = (): CreateInstanceCommand =>
  cmdOf({
    instanceId: 'prod:billing:3',
    app: 'billing',
    slot: 3,
    resources: { cpu: 1.5, memoryMb: 1024, heapMb: 1024, diskMb: 2048 },
    network: { ip: '198.18.4.20', mac: '02:00:c6:12:04:14', prefixLength: 22, gateway: '198.18.4.1', vlan: 100 },
    environment: { JAVA_OPTS: '-Xmx1024m', TZ: 'UTC' },
    command: ['java', '-jar', '/app.jar'],
  });

/** 4 cores, 1 kept for the host: instances get cores 1-3. */
const HOST = { totalCpus: 4, reservedCpus: 1 };

// ---- memory ----------------------------------------------------------------------------

describe('memoryLimitMb', () => {
  it.each<[string, number, number | undefined, number]>([
    ['no heap: the memory asked', 2048, undefined, 2048],
    ['heap 0 counts as no heap', 2048, 0, 2048],
    ['memory well above heap + head room is kept', 4096, 3072, 4096],
    ['memory exactly heap + head room is kept', 3840, 3072, 3840],
    ['heap 3072: raised to heap + 25% (768)', 1024, 3072, 3072 + 768],
    ['heap 512: raised to heap + the 256 MiB minimum', 512, 512, 512 + 256],
    ['heap 1024: 25% and the minimum meet at 256', 512, 1024, 1024 + 256],
    ['heap 2001: 25% rounded up', 16, 2001, 2001 + 501],
  ])('%s', (_what, memoryMb, heapMb, expected) => {
    expect(memoryLimitMb(memoryMb, heapMb)).toBe(expected);
  });

  it.each([1, 100, 511, 512, 1023, 1024, 1025, 3072, 8191, 65_536])(
    'heap %i MiB: never below heap + max(256 MiB, 25%% of heap), never below the memory asked',
    (heapMb) => {
      for (const memoryMb of [16, heapMb, heapMb * 2]) {
        const limit = memoryLimitMb(memoryMb, heapMb);
        expect(limit).toBeGreaterThanOrEqual(heapMb + Math.max(MIN_HEADROOM_MB, heapMb * 0.25));
        expect(limit).toBeGreaterThanOrEqual(memoryMb);
        expect(Number.isInteger(limit)).toBe(true);
      }
    },
  );
});

// ---- CPUs and interfaces ---------------------------------------------------------------

describe('allowedCpuset', () => {
  it.each<[number, number, string]>([
    [2, 1, '1'],
    [8, 2, '2-7'],
    [4, 1, '1-3'],
    [4, 0, '0-3'],
    [1, 0, '0'],
  ])('%i CPUs with %i reserved for the host: %s', (total, reserved, expected) => {
    expect(allowedCpuset(total, reserved)).toBe(expected);
  });

  it.each<[number, number]>([
    [2, 2],
    [4, 4],
    [2, 3],
  ])('%i CPUs with %i reserved leave none for instances: throws', (total, reserved) => {
    expect(() => allowedCpuset(total, reserved)).toThrow(/leaves none for instances/);
  });
});

describe('parentInterface', () => {
  it.each<[string, number, string]>([
    ['eth1', 0, 'eth1'],
    ['eth1', 100, 'eth1.100'],
    ['eth1', 4094, 'eth1.4094'],
    ['enp0s31f6', 4094, 'enp0s31f6.4094'],
    ['enx00e04c680001', 0, 'enx00e04c680001'],
  ])('uplink %s, vlan %i: %s', (uplink, vlan, expected) => {
    expect(parentInterface(uplink, vlan)).toBe(expected);
  });

  it.each<[string, number]>([
    ['enx00e04c680001', 100],
    ['enp0s31f6f1', 4094],
    ['a-very-long-uplink', 0],
  ])('uplink %s, vlan %i: a name over 15 characters throws', (uplink, vlan) => {
    expect(() => parentInterface(uplink, vlan)).toThrow(/longer than the kernel's 15 characters/);
  });
});

describe('networkName', () => {
  const net = (vlan: number) => ({ vlan, ip: '198.18.0.10', prefixLength: 24 });

  it('names the network by VLAN and subnet', () => {
    expect(networkName(net(0), '198.18.0.0/24')).toBe('orangery-v0-198.18.0.0_24');
    expect(networkName(net(100), '198.18.0.0/24')).toBe('orangery-v100-198.18.0.0_24');
  });

  it('gives pools that share a VLAN networks of their own, and one network per (VLAN, subnet)', () => {
    const names = [
      networkName(net(100), '198.18.0.0/24'),
      networkName(net(100), '198.18.1.0/24'),
      networkName(net(101), '198.18.0.0/24'),
      networkName({ vlan: 100, ip: '198.18.0.77', prefixLength: 24 }, '198.18.0.0/24'),
    ];
    expect(new Set(names).size).toBe(3);
    expect(names[3]).toBe(names[0]);
  });

  it('is a valid docker network name', () => {
    expect(networkName(net(4094), '198.19.255.252/30')).toMatch(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/);
  });
});

// ---- spec hash -------------------------------------------------------------------------

describe('specHash', () => {
  it('is stable: the same command, or a copy of it, hashes alike', () => {
    const h = specHash(javaCmd());
    expect(h).toMatch(/^[0-9a-f]{16}$/);
    expect(specHash(javaCmd())).toBe(h);
    expect(specHash(structuredClone(javaCmd()))).toBe(h);
    expect(specHash(JSON.parse(JSON.stringify(javaCmd())) as CreateInstanceCommand)).toBe(h);
  });

  it.each<[string, (c: CreateInstanceCommand) => CreateInstanceCommand]>([
    ['the image', (c) => ({ ...c, image: 'orangery/service:2' })],
    ['the ip', (c) => ({ ...c, network: { ...c.network, ip: '198.18.4.21' } })],
    ['the mac', (c) => ({ ...c, network: { ...c.network, mac: '02:00:c6:12:04:15' } })],
    ['the vlan', (c) => ({ ...c, network: { ...c.network, vlan: 101 } })],
    ['the memory', (c) => ({ ...c, resources: { ...c.resources, memoryMb: 2048 } })],
    ['the cpu', (c) => ({ ...c, resources: { ...c.resources, cpu: 2 } })],
    ['the heap', (c) => ({ ...c, resources: { ...c.resources, heapMb: 512 } })],
    ['the disk quota', (c) => ({ ...c, resources: { ...c.resources, diskMb: 4096 } })],
    ['the environment', (c) => ({ ...c, environment: { ...c.environment, TZ: 'Europe/Paris' } })],
    ['the command', (c) => ({ ...c, command: ['java', '-jar', '/other.jar'] })],
  ])('changes with %s', (_what, change) => {
    expect(specHash(change(javaCmd()))).not.toBe(specHash(javaCmd()));
  });

  it.each([true, false])('does not change with the start flag (start: %s)', (start) => {
    expect(specHash({ ...javaCmd(), start })).toBe(specHash(javaCmd()));
  });

  // Regression: the hash used to depend on the order of keys in network and environment.
  it('does not depend on the order of keys in network or environment', () => {
    const c = javaCmd();
    const reordered: CreateInstanceCommand = {
      ...c,
      network: { vlan: c.network.vlan, gateway: c.network.gateway, prefixLength: c.network.prefixLength, mac: c.network.mac, ip: c.network.ip },
      environment: { TZ: 'UTC', JAVA_OPTS: '-Xmx1024m' },
    };
    expect(specHash(reordered)).toBe(specHash(c));
  });
});

// ---- the container plan ----------------------------------------------------------------

describe('planContainer', () => {
  it('labels carry instance id, ip, mac, app, env, slot, vlan, cpu, memory, heap, disk and the spec hash', () => {
    const cmd = javaCmd();
    expect(planContainer(cmd, HOST).labels).toEqual({
      [LABEL.managed]: 'true',
      [LABEL.instanceId]: 'prod:billing:3',
      [LABEL.env]: 'prod',
      [LABEL.app]: 'billing',
      [LABEL.slot]: '3',
      [LABEL.ip]: '198.18.4.20',
      [LABEL.mac]: '02:00:c6:12:04:14',
      [LABEL.vlan]: '100',
      [LABEL.cpu]: '1.5',
      [LABEL.memoryMb]: '1024',
      [LABEL.heapMb]: '1024',
      [LABEL.diskMb]: '2048',
      [LABEL.specHash]: specHash(cmd),
    });
  });

  it('leaves out the heap and disk labels when the command has none', () => {
    const labels = planContainer(cmdOf(), HOST).labels;
    expect(labels).not.toHaveProperty(LABEL.heapMb);
    expect(labels).not.toHaveProperty(LABEL.diskMb);
    expect(labels[LABEL.vlan]).toBe('0');
  });

  it('passes the extra environment, then the ORANGERY_* variables (which a caller cannot override)', () => {
    expect(planContainer(javaCmd(), HOST).env).toEqual([
      'JAVA_OPTS=-Xmx1024m',
      'TZ=UTC',
      'ORANGERY_INSTANCE_ID=prod:billing:3',
      'ORANGERY_APP=billing',
      'ORANGERY_ENV=prod',
      'ORANGERY_SLOT=3',
      'ORANGERY_IP=198.18.4.20',
      'ORANGERY_HEAP_MB=1024',
    ]);
    expect(planContainer(cmdOf(), HOST).env).toEqual([
      'ORANGERY_INSTANCE_ID=prod:web:0',
      'ORANGERY_APP=web',
      'ORANGERY_ENV=prod',
      'ORANGERY_SLOT=0',
      'ORANGERY_IP=198.18.0.10',
    ]);
  });

  it('names the container and host after the instance and carries image, command, ip and mac', () => {
    const plan = planContainer(javaCmd(), HOST);
    expect(plan).toMatchObject({
      name: 'orangery-prod-billing-3',
      hostname: 'billing-3',
      image: 'orangery/service:1',
      cmd: ['java', '-jar', '/app.jar'],
      ip: '198.18.4.20',
      macAddress: '02:00:c6:12:04:14',
    });
    expect(plan.name).toBe(containerName('prod:billing:3'));
    expect(planContainer(cmdOf(), HOST).cmd).toBeUndefined();
  });

  it('keeps the hostname within 63 characters', () => {
    const app = 'a'.repeat(63);
    expect(planContainer(cmdOf({ instanceId: `prod:${app}:9999`, app, slot: 9999 }), HOST).hostname).toHaveLength(63);
  });

  it.each<[string, Partial<CreateInstanceCommand['resources']>, number]>([
    ['no heap: the memory asked', { memoryMb: 512 }, 512],
    ['a heap: raised to heap + head room', { memoryMb: 1024, heapMb: 1024 }, 1280],
    ['memory above heap + head room: kept', { memoryMb: 4096, heapMb: 1024 }, 4096],
  ])('memory limit, %s, in MiB and bytes', (_what, resources, mb) => {
    const plan = planContainer(cmdOf({ resources: { cpu: 1, memoryMb: 512, ...resources } }), HOST);
    expect(plan.memoryMb).toBe(mb);
    expect(plan.memoryBytes).toBe(mb * MiB);
  });

  it.each<[string, { totalCpus: number; reservedCpus: number }, number, number, string]>([
    ['1 CPU of 3 usable', HOST, 1, 1e9, '1-3'],
    ['a fraction', HOST, 0.25, 0.25e9, '1-3'],
    ['all 3 usable', HOST, 3, 3e9, '1-3'],
    ['more than the usable cores: capped at 3', HOST, 8, 3e9, '1-3'],
    ['more than the one usable core of 2: capped at 1', { totalCpus: 2, reservedCpus: 1 }, 2, 1e9, '1'],
    ['on 8 cores with 2 reserved', { totalCpus: 8, reservedCpus: 2 }, 4, 4e9, '2-7'],
  ])('cpu quota, %s', (_what, host, cpu, nanoCpus, cpuset) => {
    const plan = planContainer(cmdOf({ resources: { cpu, memoryMb: 512 } }), host);
    expect(plan.nanoCpus).toBe(nanoCpus);
    expect(plan.cpusetCpus).toBe(cpuset);
  });

  it.each<[number, number]>([
    [1, 1024],
    [1.5, 1536],
    [0.5, 512],
    [0.001, 2],
    [16, 16_384],
  ])("cpu %d: %i CPU shares (at least 2, docker's minimum)", (cpu, shares) => {
    expect(planContainer(cmdOf({ resources: { cpu, memoryMb: 512 } }), { totalCpus: 32, reservedCpus: 1 }).cpuShares).toBe(shares);
  });

  it('throws when the host keeps every core', () => {
    expect(() => planContainer(cmdOf(), { totalCpus: 2, reservedCpus: 2 })).toThrow(/leaves none/);
  });

  // The engine restarts nothing (RestartPolicy 'no' in the docker adapter): retries are the
  // agent's (AgentService.restartAfterFailure, tested in agent.service.spec.ts), so the plan
  // has no restart field to test.
});

// ---- disk ------------------------------------------------------------------------------

describe('diskLevel', () => {
  it.each<[string, DiskLevel, number, number | undefined]>([
    ['no quota', 'ok', 50 * 1024 * MiB, undefined],
    ['a quota of 0 is no quota', 'ok', 50 * 1024 * MiB, 0],
    ['empty', 'ok', 0, 100],
    ['half full', 'ok', 50 * MiB, 100],
    ['at exactly 80%', 'ok', 80 * MiB, 100],
    ['one byte above 80%', 'warning', 80 * MiB + 1, 100],
    ['at exactly 100%', 'warning', 100 * MiB, 100],
    ['one byte above 100%', 'exceeded', 100 * MiB + 1, 100],
    ['at twice the quota', 'exceeded', 200 * MiB, 100],
    ['at exactly 80% of a 1000 MiB quota', 'ok', 800 * MiB, 1000],
    ['one byte above 80% of a 1000 MiB quota', 'warning', 800 * MiB + 1, 1000],
  ])('%s: %s', (_what, level, usedBytes, quotaMb) => {
    expect(diskLevel(usedBytes, quotaMb)).toBe(level);
  });
});

// ---- confinement -----------------------------------------------------------------------

describe('planContainer: confinement (no-new-privileges, PIDs limit, capabilities)', () => {
  it('by default: no-new-privileges, the default PIDs limit (4096), NET_RAW and the other unneeded defaults dropped', () => {
    expect(DEFAULT_PIDS_LIMIT).toBe(4096);
    expect(planContainer(javaCmd(), HOST).security).toEqual({
      noNewPrivileges: true,
      pidsLimit: 4096,
      capDrop: ['NET_RAW', 'MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SYS_CHROOT'],
    });
  });

  it("the host's ORANGERY_PIDS_LIMIT is every container's limit", () => {
    expect(planContainer(cmdOf(), { ...HOST, pidsLimit: 512 }).security.pidsLimit).toBe(512);
  });

  it('keeps what a Java service needs: chown/setuid for entrypoints that drop root, binding low ports, signals', () => {
    const dropped = planContainer(cmdOf(), HOST).security.capDrop;
    for (const kept of ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'SETUID', 'SETGID', 'SETPCAP', 'NET_BIND_SERVICE', 'KILL']) {
      expect(dropped).not.toContain(kept);
    }
  });

  it("relaxations from the command's security (the env record): each one alone", () => {
    const plan = (security: CreateInstanceCommand['security']) => planContainer(cmdOf({ security }), { ...HOST, pidsLimit: 512 }).security;
    expect(plan({ allowPrivilegeEscalation: true })).toEqual({
      noNewPrivileges: false,
      pidsLimit: 512,
      capDrop: ['NET_RAW', 'MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SYS_CHROOT'],
    });
    expect(plan({ allowPrivilegeEscalation: false })).toMatchObject({ noNewPrivileges: true });
    expect(plan({ pidsLimit: 65_536 })).toMatchObject({ noNewPrivileges: true, pidsLimit: 65_536 });
    expect(plan({ pidsLimit: 64 })).toMatchObject({ pidsLimit: 64 }); // tighter is allowed too
    expect(plan({ addCapabilities: ['NET_RAW'] }).capDrop).toEqual(['MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SYS_CHROOT']);
    expect(plan({ addCapabilities: ['SYS_CHROOT', 'NET_RAW', 'MKNOD', 'AUDIT_WRITE', 'SETFCAP'] }).capDrop).toEqual([]);
    expect(plan({})).toEqual(plan(undefined));
  });

  it('a relaxation changes the spec hash; none keeps it (containers made before v1.1 are the same spec)', () => {
    const base = planContainer(cmdOf(), HOST).labels[LABEL.specHash];
    expect(planContainer(cmdOf({ security: {} }), HOST).labels[LABEL.specHash]).toBe(base);
    expect(planContainer(cmdOf(), { ...HOST, pidsLimit: 100 }).labels[LABEL.specHash]).toBe(base);
    expect(planContainer(cmdOf({ security: { pidsLimit: 100 } }), HOST).labels[LABEL.specHash]).not.toBe(base);
  });
});

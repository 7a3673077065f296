import { describe, expect, it } from 'vitest';
import { OrangeryError, type VmCreateCommand } from '@orangery/contracts';
import { esxiHost, FakeVcenter, RecordingEvents } from './testing/fake-vcenter';
import { HostLimiter } from './host-limiter';
import { VmwareAgentService, type VmwareAgentSettings } from './vmware-agent.service';
import { hostIdFromName, LABEL } from './vm-spec';

const H1 = 'esx01-lab-local';
const H2 = 'esx02-lab-local';

function world(settings: Partial<VmwareAgentSettings> = {}) {
  const vc = new FakeVcenter();
  const events = new RecordingEvents();
  const agent = new VmwareAgentService(vc, events, {
    extraConfig: { 'RUN.container': '["--ip","{ip}"]' },
    guestIpTimeoutMs: 200,
    stopTimeoutSeconds: 1,
    tasksPerHost: 2,
    queuePerHost: 2,
    pollMs: 5,
    ...settings,
  });
  agent.setHosts(new Map(vc.hostList.map((h) => [hostIdFromName(h.name), h])));
  return { vc, events, agent };
}

let n = 0;
const cmd = (slot = 0, over: Partial<VmCreateCommand> = {}): VmCreateCommand => {
  const ip = `198.18.9.${++n}`;
  return {
    instanceId: `prod:pay:${slot}`,
    env: 'prod',
    app: 'pay',
    slot,
    template: 'centos7-jdk8',
    resources: { cpu: 2, memoryMb: 1024, diskMb: 2048 },
    network: { ip, mac: `02:4f:c6:12:09:${n.toString(16).padStart(2, '0')}`, prefixLength: 24, gateway: '198.18.9.254', vlan: 100 },
    ...over,
  };
};

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: unknown) => (e instanceof OrangeryError ? e.code : String(e)),
  );

describe('VmwareAgentService.create', () => {
  it('clones, powers on and answers running once the guest reports its IP', async () => {
    const { vc, agent } = world();
    vc.guestIpAfterReads = 3;
    const c = cmd();
    const inst = await agent.create(H1, c);
    expect(inst).toMatchObject({
      instanceId: 'prod:pay:0',
      hostId: H1,
      backend: 'vmware',
      state: 'running',
      ip: c.network.ip,
      mac: c.network.mac,
      template: 'centos7-jdk8',
    });
    const vm = [...vc.vmsByRef.values()][0]!;
    expect(vm.hostRef).toBe('host-esx01.lab.local');
    expect(vm.plan).toMatchObject({ name: 'orangery-prod-pay-0', numCpus: 2, memoryMb: 1024, mac: c.network.mac });
    expect(vm.extraConfig['RUN.container']).toBe(`["--ip","${c.network.ip}"]`);
    expect(vc.calls.filter((m) => m === 'vm').length).toBeGreaterThanOrEqual(3);
  });

  it('polls a starting VM for its power state and guest IP only, and keeps its labels (index and answer)', async () => {
    const { vc, agent } = world();
    vc.guestIpAfterReads = 3;
    const c = cmd();
    const inst = await agent.create(H1, c);
    expect(inst).toMatchObject({ state: 'running', ip: c.network.ip, instanceId: 'prod:pay:0' });
    // issue 17: no extraConfig read while waiting for the guest (the labels are known)
    expect(vc.vmReads.length).toBeGreaterThanOrEqual(3);
    expect(vc.vmReads.every((f) => f === 'power')).toBe(true);
    const indexed = agent.index.list().find((v) => v.guestIp === c.network.ip)!;
    expect(indexed.extraConfig['guestinfo.orangery.ip'] ?? Object.values(indexed.extraConfig).join(' ')).toContain(c.network.ip);
    // the next command finds it by its labels, from the index
    expect((await agent.create(H1, c)).state).toBe('running');
  });

  it('answers running after the guest-IP timeout when the guest never reports (power on is enough)', async () => {
    const { vc, agent } = world({ guestIpTimeoutMs: 30 });
    vc.guestIpAfterReads = -1;
    expect((await agent.create(H1, cmd())).state).toBe('running');
  });

  it('start: false clones and leaves the VM off', async () => {
    const { vc, agent } = world();
    expect((await agent.create(H1, cmd(0, { start: false }))).state).toBe('stopped');
    expect(vc.calls).not.toContain('powerOn');
  });

  it('is idempotent: the same spec twice is one VM; a stopped one is started', async () => {
    const { vc, agent } = world();
    const c = cmd();
    const a = await agent.create(H1, c);
    const b = await agent.create(H1, c);
    expect(b).toEqual(a);
    expect(vc.vmsByRef.size).toBe(1);
    await agent.stop(H1, { instanceId: c.instanceId });
    expect((await agent.create(H1, c)).state).toBe('running');
    expect(vc.calls.filter((m) => m === 'clone')).toHaveLength(1);
  });

  it('two concurrent creates of one instance make one VM', async () => {
    const { vc, agent } = world();
    const c = cmd();
    const [a, b] = await Promise.all([agent.create(H1, c), agent.create(H1, c)]);
    expect(a.state).toBe('running');
    expect(b.state).toBe('running');
    expect(vc.vmsByRef.size).toBe(1);
  });

  it('another spec for the same instance id is INSTANCE_CONFLICT, also on another host', async () => {
    const { agent } = world();
    const c = cmd();
    await agent.create(H1, c);
    expect(await codeOf(agent.create(H1, { ...c, resources: { cpu: 4, memoryMb: 1024 } }))).toBe('INSTANCE_CONFLICT');
    expect(await codeOf(agent.create(H2, c))).toBe('INSTANCE_CONFLICT');
  });

  it('an address held by another running Orangery VM, a foreign VM, or a create in flight is IP_IN_USE_ON_WIRE', async () => {
    const { vc, agent, events } = world();
    const first = cmd(0);
    await agent.create(H1, first);
    const err = await agent.create(H2, { ...cmd(1), network: first.network }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'IP_IN_USE_ON_WIRE', details: { ip: first.network.ip, holder: 'prod:pay:0' } });
    expect(events.instances.at(-1)).toMatchObject({ what: 'failed', instanceId: 'prod:pay:1', data: { code: 'IP_IN_USE_ON_WIRE' } });
    vc.addForeignVm('legacy-db', '198.18.9.200');
    const foreign = await agent.create(H2, { ...cmd(2), network: { ...cmd(2).network, ip: '198.18.9.200' } }).catch((e: unknown) => e);
    expect(foreign).toMatchObject({ code: 'IP_IN_USE_ON_WIRE', details: { holder: 'VM legacy-db' } });
    // a stopped holder does not count: its address is off the wire
    await agent.stop(H1, { instanceId: 'prod:pay:0' });
    expect((await agent.create(H2, { ...cmd(3), network: first.network })).state).toBe('running');
    // and then starting the old one again is refused
    expect(await codeOf(agent.start(H1, 'prod:pay:0'))).toBe('IP_IN_USE_ON_WIRE');
  });

  it('two creates racing for one address: one wins, the other is refused', async () => {
    const { agent } = world();
    const a = cmd(0);
    const b = { ...cmd(1), network: a.network };
    const codes = await Promise.all([codeOf(agent.create(H1, a)), codeOf(agent.create(H2, b))]);
    expect(codes.sort()).toEqual(['IP_IN_USE_ON_WIRE', 'ok']);
  });

  it('unknown template is TEMPLATE_NOT_FOUND with an instance.failed event; no VM', async () => {
    const { vc, agent, events } = world();
    const err = await agent.create(H1, cmd(0, { template: 'nope' })).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'TEMPLATE_NOT_FOUND', details: { template: 'nope' } });
    expect(events.instances).toEqual([expect.objectContaining({ what: 'failed', hostId: H1, data: expect.objectContaining({ code: 'TEMPLATE_NOT_FOUND' }) })]);
    expect(vc.vmsByRef.size).toBe(0);
  });

  it('no port group for the VLAN on that host is INVALID_REQUEST naming network.vlan', async () => {
    const { agent } = world();
    const err = await agent.create(H1, cmd(0, { network: { ...cmd().network, vlan: 300 } })).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'network.vlan', vlan: 300, hostId: H1 } });
  });

  it('unknown or disconnected hosts are refused', async () => {
    const { vc, agent } = world();
    expect(await codeOf(agent.create('esx09', cmd()))).toBe('NOT_FOUND');
    agent.setHosts(new Map([[H1, esxiHost('esx01.lab.local', { connectionState: 'disconnected' })]]));
    expect(await codeOf(agent.create(H1, cmd()))).toBe('UNAVAILABLE');
    expect(vc.vmsByRef.size).toBe(0);
  });

  it('vCenter faults pass through with their code; a failed power-on leaves no VM behind', async () => {
    const { vc, agent } = world();
    vc.failNext('clone', new OrangeryError('UNAVAILABLE', 'cloning: vCenter unreachable', { retryable: true }));
    expect(await codeOf(agent.create(H1, cmd(0)))).toBe('UNAVAILABLE');
    vc.failNext('powerOn', new OrangeryError('INSUFFICIENT_CAPACITY', 'powering on: InsufficientMemoryResourcesFault'));
    expect(await codeOf(agent.create(H1, cmd(1)))).toBe('INSUFFICIENT_CAPACITY');
    expect(vc.vmsByRef.size).toBe(0);
    // and the agent serves the next one
    expect((await agent.create(H1, cmd(2))).state).toBe('running');
  });

  it('vCenter unreachable: the command is run again from the top within the retry budget, then UNAVAILABLE', async () => {
    const { vc, agent } = world({ unavailableRetryMs: 3_000 });
    const down = () => new OrangeryError('UNAVAILABLE', 'cloning: vCenter at x unreachable: connection lost', { vcenter: 'x', retryable: true });
    vc.failNext('clone', down());
    const t0 = Date.now();
    expect((await agent.create(H1, cmd(0))).state).toBe('running');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(vc.vmsByRef.size).toBe(1);
    const realVms = vc.vms.bind(vc);
    vc.vms = async () => Promise.reject(down());
    const err = await agent.start(H1, 'prod:pay:0').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(/still after 3 s of retries/) });
    vc.vms = realVms;
    // a full host queue is answered at once
    expect(
      await codeOf(
        new VmwareAgentService(vc, new RecordingEvents(), {
          extraConfig: {},
          guestIpTimeoutMs: 10,
          stopTimeoutSeconds: 1,
          tasksPerHost: 1,
          queuePerHost: 0,
          unavailableRetryMs: 3_000,
        }).create('nope', cmd(1)),
      ),
    ).toBe('NOT_FOUND');
  }, 10_000);

  it('a VM the guest powers off right after power-on is START_FAILED', async () => {
    const { vc, agent } = world();
    const realPowerOn = vc.powerOn.bind(vc);
    vc.powerOn = async (ref: string) => {
      await realPowerOn(ref);
      vc.vmsByRef.get(ref)!.powerState = 'poweredOff';
    };
    expect(await codeOf(agent.create(H1, cmd()))).toBe('START_FAILED');
  });
});

describe('VmwareAgentService with the change-stream index', () => {
  it('creates read the index (no listing) once it is in sync, and keep it current themselves', async () => {
    const { vc, agent } = world();
    agent.index.reset(await vc.vms());
    vc.calls.length = 0;
    const c = cmd();
    const first = await agent.create(H1, c);
    expect(vc.calls).not.toContain('vms');
    // written through: a second create finds the VM before any change event came
    expect(await agent.create(H1, c)).toEqual(first);
    expect(vc.vmsByRef.size).toBe(1);
    expect(await codeOf(agent.create(H2, { ...cmd(1), network: c.network }))).toBe('IP_IN_USE_ON_WIRE');
    await agent.remove(H1, c.instanceId);
    expect(agent.index.list()).toEqual([]);
  });

  it('a stale index (power state behind vCenter) does not mislead a repeated create', async () => {
    const { vc, agent } = world();
    agent.index.reset(await vc.vms());
    const c = cmd();
    const first = await agent.create(H1, c);
    // the clone's `enter` (powered off) arriving after the agent's own write
    agent.index.patch(first['vmId' as keyof typeof first] as string, { powerState: 'poweredOff' });
    expect(await agent.create(H1, c)).toEqual(first);
    expect(vc.calls.filter((m) => m === 'powerOn')).toHaveLength(1);
  });

  it("start, stop, get and remove read the instance's VM only, not the whole of vCenter, once the index is in sync", async () => {
    const { vc, agent } = world();
    agent.index.reset(await vc.vms());
    for (let i = 0; i < 5; i++) vc.addForeignVm(`other-${i}`, `198.18.99.${i + 1}`);
    const c = cmd();
    await agent.create(H1, c);
    vc.calls.length = 0;
    expect((await agent.stop(H1, { instanceId: c.instanceId, timeoutSeconds: 0 })).state).toBe('stopped');
    expect((await agent.get(H1, c.instanceId)).state).toBe('stopped');
    expect((await agent.start(H1, c.instanceId)).state).toBe('running');
    expect((await agent.remove(H1, c.instanceId)).state).toBe('removed');
    expect(vc.calls).not.toContain('vms');
    expect(vc.calls).toContain('vm');
  });

  it('finds a VM the index does not know yet (its clone event not arrived) with one listing; a wrong host is NOT_FOUND', async () => {
    const { vc, agent } = world();
    const c = cmd();
    await agent.create(H1, c);
    // the index came in sync before the clone was seen
    agent.index.reset([]);
    vc.calls.length = 0;
    expect((await agent.get(H1, c.instanceId)).instanceId).toBe(c.instanceId);
    expect(vc.calls).toEqual(['vms']);
    expect(await codeOf(agent.get(H2, c.instanceId))).toBe('NOT_FOUND');
  });

  it('lists vCenter again when the stream broke', async () => {
    const { vc, agent } = world();
    agent.index.reset([]);
    agent.index.invalidate();
    await agent.create(H1, cmd());
    expect(vc.calls).toContain('vms');
  });
});

describe('VmwareAgentService stop, start, remove, get, list', () => {
  it('stop asks the guest first, powers off after the grace period, and is idempotent', async () => {
    const { vc, agent } = world();
    const c = cmd();
    await agent.create(H1, c);
    expect((await agent.stop(H1, { instanceId: c.instanceId })).state).toBe('stopped');
    expect(vc.calls).toContain('shutdownGuest');
    expect(vc.calls).not.toContain('powerOff');
    expect(agent.expectedStops.size).toBe(1);
    await agent.start(H1, c.instanceId);
    vc.guestIgnoresShutdown = true;
    const t0 = Date.now();
    expect((await agent.stop(H1, { instanceId: c.instanceId, timeoutSeconds: 1 })).state).toBe('stopped');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(vc.calls).toContain('powerOff');
    expect((await agent.stop(H1, { instanceId: c.instanceId })).state).toBe('stopped');
  });

  it('timeoutSeconds 0 powers off at once', async () => {
    const { vc, agent } = world();
    await agent.create(H1, cmd());
    await agent.stop(H1, { instanceId: 'prod:pay:0', timeoutSeconds: 0 });
    expect(vc.calls).not.toContain('shutdownGuest');
    expect(vc.calls).toContain('powerOff');
  });

  it('remove powers off and destroys; removing again, or what never was, is `removed`', async () => {
    const { vc, agent } = world();
    await agent.create(H1, cmd());
    expect((await agent.remove(H1, 'prod:pay:0')).state).toBe('removed');
    expect(vc.vmsByRef.size).toBe(0);
    expect((await agent.remove(H1, 'prod:pay:0')).state).toBe('removed');
    expect(await codeOf(agent.get(H1, 'prod:pay:0'))).toBe('NOT_FOUND');
    expect(await codeOf(agent.start(H1, 'prod:pay:0'))).toBe('NOT_FOUND');
    expect(await codeOf(agent.stop(H1, { instanceId: 'prod:pay:0' }))).toBe('NOT_FOUND');
  });

  it('list and get see only the host the instance was placed on; allocated sums its labels', async () => {
    const { vc, agent } = world();
    await agent.create(H1, cmd(0));
    await agent.create(H1, cmd(1, { resources: { cpu: 1, memoryMb: 512, heapMb: 1024 } }));
    await agent.create(H2, cmd(2));
    expect((await agent.list(H1)).instances.map((i) => i.instanceId)).toEqual(['prod:pay:0', 'prod:pay:1']);
    expect((await agent.list(H2)).instances.map((i) => i.instanceId)).toEqual(['prod:pay:2']);
    expect(await codeOf(agent.get(H2, 'prod:pay:0'))).toBe('NOT_FOUND');
    // heap 1024 needs 1024 + 256 head room: 1280, above the 512 asked
    expect(agent.allocated(await vc.vms(), H1)).toEqual({ amounts: { cpu: 3, memoryMb: 1024 + 1280, diskMb: 2048 }, count: 2 });
  });

  it('a restarted agent (new service, same vCenter) knows every instance from the labels alone', async () => {
    const { vc, agent } = world();
    await agent.create(H1, cmd(0));
    const again = new VmwareAgentService(vc, new RecordingEvents(), {
      extraConfig: {},
      guestIpTimeoutMs: 10,
      stopTimeoutSeconds: 1,
      tasksPerHost: 1,
      queuePerHost: 1,
    });
    again.setHosts(new Map(vc.hostList.map((h) => [hostIdFromName(h.name), h])));
    const listed = (await again.list(H1)).instances;
    expect(listed).toEqual((await agent.list(H1)).instances);
    expect([...vc.vmsByRef.values()][0]!.extraConfig[LABEL.specHash]).toBeTruthy();
  });
});

describe('HostLimiter', () => {
  it('runs at most N per host, queues M more, refuses beyond with UNAVAILABLE; hosts are independent', async () => {
    const limiter = new HostLimiter(2, 1);
    let running = 0;
    let peak = 0;
    const gates: (() => void)[] = [];
    const task = () =>
      limiter.run('h1', async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise<void>((r) => gates.push(r));
        running--;
      });
    const ps = [task(), task(), task()];
    await new Promise((r) => setTimeout(r, 5));
    expect(limiter.load('h1')).toEqual({ running: 2, waiting: 1 });
    await expect(task()).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { retryable: true } });
    await expect(limiter.run('h2', async () => 'other host')).resolves.toBe('other host');
    while (gates.length > 0 || running > 0) {
      gates.shift()?.();
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(ps);
    expect(peak).toBe(2);
    expect(limiter.load('h1')).toEqual({ running: 0, waiting: 0 });
  });

  it('a failing task frees its slot', async () => {
    const limiter = new HostLimiter(1, 0);
    await expect(limiter.run('h', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await expect(limiter.run('h', async () => 1)).resolves.toBe(1);
  });
});

describe('the agent destroys or powers off nothing on its own (v1.1 failure semantics)', () => {
  const noAnswer = () =>
    new OrangeryError('UNAVAILABLE', 'powering on: no answer from vCenter within 60000 ms', { vcenter: 'x', cause: 'timeout', retryable: true });

  it('a create cut off by vCenter after the power-on left (no answer) leaves the VM as it is: not powered off, not destroyed; the retry finds it running', async () => {
    const { vc, agent } = world({ unavailableRetryMs: 3_000 });
    const realPowerOn = vc.powerOn.bind(vc);
    let cut = true;
    // vCenter runs the power-on, but its answer never comes back (frozen, then a timeout)
    vc.powerOn = async (ref: string) => {
      await realPowerOn(ref);
      if (cut) {
        cut = false;
        throw noAnswer();
      }
    };
    const done = await agent.create(H1, cmd(0));
    expect(done.state).toBe('running');
    expect(vc.vmsByRef.size).toBe(1);
    expect(vc.calls.filter((m) => m === 'clone')).toHaveLength(1);
    expect(vc.powerChanges.filter((c) => !c.startsWith('powerOn'))).toEqual([]);
  }, 10_000);

  it('a create answered UNAVAILABLE in the end still leaves its VM: the next create adopts it, nothing is cloned twice', async () => {
    const { vc, agent } = world();
    const c = cmd(0);
    vc.failNext('vm', noAnswer()); // the first read after the power-on
    expect(await codeOf(agent.create(H1, c))).toBe('UNAVAILABLE');
    expect([...vc.vmsByRef.values()].map((v) => v.powerState)).toEqual(['poweredOn']);
    expect(vc.calls).not.toContain('destroy');
    expect(vc.calls).not.toContain('powerOff');
    const again = await agent.create(H1, c);
    expect(again).toMatchObject({ state: 'running', vmId: [...vc.vmsByRef.keys()][0] });
    expect(vc.calls.filter((m) => m === 'clone')).toHaveLength(1);
  });

  it("a leftover (a copy no record places there) is powered off on the scheduler's stop and kept; only remove destroys", async () => {
    const { vc, agent } = world();
    await agent.create(H1, cmd(0));
    const [ref] = [...vc.vmsByRef.keys()];
    await agent.stop(H1, { instanceId: 'prod:pay:0', timeoutSeconds: 0 });
    expect(vc.vmsByRef.get(ref!)?.powerState).toBe('poweredOff');
    expect(vc.calls).not.toContain('destroy');
    await agent.remove(H1, 'prod:pay:0');
    expect(vc.powerChanges).toEqual([`powerOn ${ref}`, `powerOff ${ref}`, `destroy ${ref}`]);
  });

  it('a restarted agent adopts: every VM reported as it is, no power change, nothing destroyed, nothing started', async () => {
    const { vc, agent } = world();
    await agent.create(H1, cmd(0));
    await agent.create(H2, cmd(1));
    await agent.create(H2, cmd(2, { start: false })); // e.g. a leftover kept off
    vc.addForeignVm('not-ours', '198.18.9.250');
    vc.powerChanges.length = 0;
    const events = new RecordingEvents();
    const restarted = new VmwareAgentService(vc, events, { extraConfig: {}, guestIpTimeoutMs: 10, stopTimeoutSeconds: 1, tasksPerHost: 1, queuePerHost: 1 });
    const adopted = await restarted.adopt();
    expect(adopted.map((v) => [v.labels.instanceId, v.powerState])).toEqual([
      ['prod:pay:0', 'poweredOn'],
      ['prod:pay:1', 'poweredOn'],
      ['prod:pay:2', 'poweredOff'],
    ]);
    expect(events.instances.map((e) => [e.what, e.instanceId, e.data['adopted']])).toEqual([
      ['running', 'prod:pay:0', true],
      ['running', 'prod:pay:1', true],
      ['stopped', 'prod:pay:2', true],
    ]);
    expect(vc.powerChanges).toEqual([]);
    expect(vc.vmsByRef.size).toBe(4);
  });
});

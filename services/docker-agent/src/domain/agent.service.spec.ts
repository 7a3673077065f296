import { afterEach, beforeEach, describe, it, expect, vi } from 'vitest';
import { AgentInstanceList, decode, OrangeryError, type ContainerCreateCommand as CreateInstanceCommand } from '@orangery/contracts';
import { AgentService, type AgentSettings } from './agent.service';
import { LABEL, planContainer } from './container-spec';
import { deferred, FakeArpProbe, FakeEngine, RecordingEvents } from './testing/fake-engine';
import { ArpingProbe, type ProbeChild } from '../adapters/arp-probe';
import { EventEmitter } from 'node:events';

// ---- factories -------------------------------------------------------------------------

const IMAGE = 'orangery/service:1';

/** srv-1: 4 cores, 1 kept for the host (3 usable), uplink eth1, 3 restarts at most. */
const SETTINGS: AgentSettings = {
  hostId: 'srv-1',
  uplink: 'eth1',
  reservedCpus: 1,
  totalCpus: 4,
  restartMaxRetries: 3,
  stopTimeoutSeconds: 10,
};

const hex = (n: number) => n.toString(16).padStart(2, '0');

/** prod:<app>:<slot> on 198.18.0.<10 + slot>/24, untagged, 1 CPU and 512 MiB. */
const cmdOf = (over: Partial<CreateInstanceCommand> = {}, app = 'web', slot = 0): CreateInstanceCommand => ({
  instanceId: `prod:${app}:${slot}`,
  env: 'prod',
  app,
  slot,
  image: IMAGE,
  resources: { cpu: 1, memoryMb: 512 },
  network: { ip: `198.18.0.${10 + slot}`, mac: `02:00:c6:12:00:${hex(10 + slot)}`, prefixLength: 24, gateway: '198.18.0.1', vlan: 0 },
  ...over,
});
const web = (slot: number, over: Partial<CreateInstanceCommand> = {}) => cmdOf(over, 'web', slot);
const withIp = (cmd: CreateInstanceCommand, ip: string): CreateInstanceCommand => ({ ...cmd, network: { ...cmd.network, ip } });

function setup(opts: { settings?: Partial<AgentSettings>; probeSeesInterfaces?: boolean } = {}) {
  const journal: string[] = [];
  const engine = new FakeEngine({ images: [IMAGE], interfaces: ['eth1'], journal });
  const probe = new FakeArpProbe({ journal, ...(opts.probeSeesInterfaces ? { interfaces: engine.interfaces } : {}) });
  const events = new RecordingEvents();
  const agent = new AgentService(engine, probe, events, { ...SETTINGS, ...opts.settings });
  return { engine, probe, events, agent, journal };
}

/** The OrangeryError `p` rejects with, checked for `code` and (some) `details`. */
async function expectError(p: Promise<unknown>, code: string, details?: Record<string, unknown>): Promise<OrangeryError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(OrangeryError);
  const err = e as OrangeryError;
  expect(err.code).toBe(code);
  if (details) expect(err.details).toMatchObject(details);
  return err;
}

// ---- create ----------------------------------------------------------------------------

describe('create', () => {
  it('makes the network, creates the container from the plan, probes the wire, starts it', async () => {
    const { agent, engine, probe } = setup();
    const cmd = web(0);
    const out = await agent.create(cmd);

    expect(out).toEqual({
      instanceId: 'prod:web:0',
      env: 'prod',
      app: 'web',
      slot: 0,
      hostId: 'srv-1',
      backend: 'docker',
      state: 'running',
      ip: '198.18.0.10',
      mac: '02:00:c6:12:00:0a',
      image: IMAGE,
      containerId: 'c001',
      resources: { cpu: 1, memoryMb: 512 },
    });
    expect([...engine.networks.values()]).toEqual([{ name: 'orangery-v0-198.18.0.0_24', parent: 'eth1', subnet: '198.18.0.0/24', gateway: '198.18.0.1' }]);
    const c = engine.byInstance('prod:web:0')!;
    expect(c.plan).toEqual(planContainer(cmd, { totalCpus: 4, reservedCpus: 1 }));
    expect(c.network).toBe('orangery-v0-198.18.0.0_24');
    expect(probe.calls).toEqual([{ iface: 'eth1', ip: '198.18.0.10' }]);
    expect(engine.calls).toMatchObject({ create: 1, start: 1, remove: 0 });
  });

  it("creates with the agent's PIDs limit and the command's relaxations", async () => {
    const { agent, engine } = setup({ settings: { pidsLimit: 1024 } });
    await agent.create(web(0));
    await agent.create(web(1, { security: { allowPrivilegeEscalation: true, addCapabilities: ['NET_RAW'] } }));
    expect(engine.byInstance('prod:web:0')!.plan?.security).toEqual({
      noNewPrivileges: true,
      pidsLimit: 1024,
      capDrop: ['NET_RAW', 'MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SYS_CHROOT'],
    });
    expect(engine.byInstance('prod:web:1')!.plan?.security).toEqual({
      noNewPrivileges: false,
      pidsLimit: 1024,
      capDrop: ['MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SYS_CHROOT'],
    });
  });

  it('does not start the container before the wire probe said the address is free', async () => {
    const { agent, journal } = setup();
    await agent.create(web(0));
    expect(journal.indexOf('probe eth1 198.18.0.10')).toBeGreaterThanOrEqual(0);
    expect(journal.indexOf('probe eth1 198.18.0.10')).toBeLessThan(journal.indexOf('start c001'));
  });

  it('is idempotent: the same command twice gives one container, one probe and one start', async () => {
    const { agent, engine, probe } = setup();
    const first = await agent.create(web(0));
    const second = await agent.create(web(0));
    expect(second).toEqual(first);
    expect(engine.containers.size).toBe(1);
    expect(engine.calls).toMatchObject({ create: 1, start: 1 });
    expect(probe.calls).toHaveLength(1);
  });

  it('the same command again for a stopped instance starts its container again (probe first), creating nothing', async () => {
    const { agent, engine, probe } = setup();
    const first = await agent.create(web(0));
    await agent.stop({ instanceId: 'prod:web:0' });
    const again = await agent.create(web(0));
    expect(again).toMatchObject({ state: 'running', containerId: first.containerId });
    expect(engine.calls).toMatchObject({ create: 1, start: 2 });
    expect(probe.calls).toHaveLength(2);
  });

  it('reuses the network of a (VLAN, subnet) for the next instance', async () => {
    const { agent, engine } = setup();
    await agent.create(web(0));
    await agent.create(web(1));
    expect(engine.networks.size).toBe(1);
    expect(engine.byInstance('prod:web:1')!.network).toBe(engine.byInstance('prod:web:0')!.network);
  });

  it('on VLAN 100 hangs the network off <uplink>.100 and probes the wire there', async () => {
    const { agent, engine, probe } = setup();
    await agent.create(web(0, { network: { ...web(0).network, vlan: 100 } }));
    expect([...engine.networks.values()]).toEqual([
      { name: 'orangery-v100-198.18.0.0_24', parent: 'eth1.100', subnet: '198.18.0.0/24', gateway: '198.18.0.1' },
    ]);
    expect(probe.calls).toEqual([{ iface: 'eth1.100', ip: '198.18.0.10' }]);
  });

  it('on a VLAN whose network already exists, the probe finds <uplink>.<vlan> and the instance starts', async () => {
    const { agent, engine } = setup({ probeSeesInterfaces: true });
    await engine.ensureNetwork({ name: 'orangery-v100-198.18.0.0_24', parent: 'eth1.100', subnet: '198.18.0.0/24', gateway: '198.18.0.1' });
    const out = await agent.create(web(0, { network: { ...web(0).network, vlan: 100 } }));
    expect(out.state).toBe('running');
  });

  // Regression: the probe used to start before the VLAN's network (and so <uplink>.<vlan>) existed.
  it('probes a new VLAN only once its network (and <uplink>.<vlan>) exists: the first instance on it starts', async () => {
    const { agent, engine, probe } = setup({ probeSeesInterfaces: true });
    const out = await agent.create(web(0, { network: { ...web(0).network, vlan: 100 } }));
    expect(out.state).toBe('running');
    expect(engine.interfaces.has('eth1.100')).toBe(true);
    expect(probe.calls).toEqual([{ iface: 'eth1.100', ip: '198.18.0.10' }]);
  });

  it.each<[string, (c: CreateInstanceCommand) => CreateInstanceCommand]>([
    ['another image', (c) => ({ ...c, image: 'orangery/service:2' })],
    ['another ip', (c) => withIp(c, '198.18.0.99')],
    ['more memory', (c) => ({ ...c, resources: { ...c.resources, memoryMb: 1024 } })],
  ])('with %s for an existing instance id: INSTANCE_CONFLICT, and nothing changes', async (_what, change) => {
    const { agent, engine, probe, events } = setup();
    await agent.create(web(0));
    const before = engine.snapshot();
    const calls = { ...engine.calls };
    await expectError(agent.create(change(web(0))), 'INSTANCE_CONFLICT', { instanceId: 'prod:web:0', ip: '198.18.0.10' });
    expect(engine.snapshot()).toEqual(before);
    expect(engine.calls).toEqual({ ...calls });
    expect(probe.calls).toHaveLength(1);
    expect(events.instances).toEqual([]);
  });

  it('refuses an IP that answers ARP: IP_IN_USE_ON_WIRE, nothing started or left behind, instance.failed with the reason', async () => {
    const { agent, engine, probe, events } = setup();
    probe.onWire.add('198.18.0.10');
    await expectError(agent.create(web(0)), 'IP_IN_USE_ON_WIRE', { ip: '198.18.0.10', iface: 'eth1' });
    expect(engine.containers.size).toBe(0);
    expect(engine.calls).toMatchObject({ create: 1, remove: 1, start: 0 });
    expect(events.instances).toEqual([
      {
        what: 'failed',
        instanceId: 'prod:web:0',
        data: { code: 'IP_IN_USE_ON_WIRE', ip: '198.18.0.10', reason: expect.stringContaining('198.18.0.10 answers ARP on eth1') },
      },
    ]);
  });

  describe('with the 300 ms ARP probe (ArpingProbe, arping faked): a holder answering at any moment of the window', () => {
    /** arping in DAD mode as far as the probe sees it: exit 1 on a reply, 0 on SIGTERM without one. */
    class Arping extends EventEmitter implements ProbeChild {
      readonly stderr = null;
      done = false;
      kill(): boolean {
        setImmediate(() => this.end(0));
        return true;
      }
      end(code: number): void {
        if (this.done) return;
        this.done = true;
        this.emit('close', code, null);
      }
    }
    beforeEach(() => vi.useFakeTimers());
    afterEach(() => vi.useRealTimers());

    it.each([0, 40, 120, 210, 295])('answering %i ms after the first probe: IP_IN_USE_ON_WIRE, never started, nothing left behind', async (at) => {
      const journal: string[] = [];
      const engine = new FakeEngine({ images: [IMAGE], interfaces: ['eth1'], journal });
      const arpings: Arping[] = [];
      const probe = new ArpingProbe({ windowMs: 300 }, () => {
        const a = new Arping();
        arpings.push(a);
        return a;
      });
      const events = new RecordingEvents();
      const agent = new AgentService(engine, probe, events, SETTINGS);
      const result = agent.create(web(0)).then(
        () => 'started',
        (e: unknown) => (e instanceof OrangeryError ? e.code : String(e)),
      );
      // until the first probe is out (the engine's calls before it are immediate here)
      for (let i = 0; i < 100 && arpings.length === 0; i++) await vi.advanceTimersByTimeAsync(0);
      expect(arpings).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(at);
      arpings.find((a) => !a.done)!.end(1); // the holder's reply
      let outcome: string | undefined;
      void result.then((r) => (outcome = r));
      for (let i = 0; i < 200 && outcome === undefined; i++) await vi.advanceTimersByTimeAsync(5);
      expect(outcome).toBe('IP_IN_USE_ON_WIRE');
      expect(engine.calls.start ?? 0).toBe(0);
      expect(engine.containers.size).toBe(0);
      expect(events.instances.map((e) => e.what)).toEqual(['failed']);
    });

    it('nobody answering during the window: started once the window closed', async () => {
      const engine = new FakeEngine({ images: [IMAGE], interfaces: ['eth1'] });
      const probe = new ArpingProbe({ windowMs: 300 }, () => new Arping());
      const agent = new AgentService(engine, probe, new RecordingEvents(), SETTINGS);
      let state: string | undefined;
      void agent.create(web(0)).then((i) => (state = i.state));
      for (let i = 0; i < 200 && state === undefined; i++) await vi.advanceTimersByTimeAsync(5);
      expect(state).toBe('running');
      expect(engine.calls.start).toBe(1);
    });
  });

  it('after an ARP refusal the same command succeeds once the address is free', async () => {
    const { agent, probe } = setup();
    probe.onWire.add('198.18.0.10');
    await expectError(agent.create(web(0)), 'IP_IN_USE_ON_WIRE');
    probe.onWire.clear();
    expect((await agent.create(web(0))).state).toBe('running');
  });

  it('removes the container it created when the engine cannot start it', async () => {
    const { agent, engine } = setup();
    engine.hooks.beforeStart = () => {
      throw new Error('OCI runtime create failed');
    };
    await expect(agent.create(web(0))).rejects.toThrow('OCI runtime create failed');
    expect(engine.containers.size).toBe(0);
  });

  it('refuses an image the engine does not have: IMAGE_NOT_FOUND, instance.failed, no container, no probe', async () => {
    const { agent, engine, probe, events } = setup();
    await expectError(agent.create(web(0, { image: 'orangery/missing:1' })), 'IMAGE_NOT_FOUND', { image: 'orangery/missing:1' });
    expect(engine.calls).toMatchObject({ create: 0, start: 0, ensureNetwork: 0 });
    expect(engine.containers.size).toBe(0);
    expect(probe.calls).toEqual([]);
    expect(events.instances).toEqual([
      {
        what: 'failed',
        instanceId: 'prod:web:0',
        data: { code: 'IMAGE_NOT_FOUND', ip: '198.18.0.10', reason: expect.stringContaining('orangery/missing:1') },
      },
    ]);
  });

  it.each<[string, { engineState: string; exitCode?: number }]>([
    ['running', { engineState: 'running' }],
    ['restarting', { engineState: 'restarting' }],
    ['created, not started', { engineState: 'created' }],
  ])('refuses an IP held by another instance on this host (%s): IP_IN_USE_ON_WIRE naming it, without probing the wire', async (_what, state) => {
    const { agent, engine, probe } = setup();
    engine.seed({ instanceId: 'prod:api:0', ip: '198.18.0.10', ...state });
    await expectError(agent.create(web(0)), 'IP_IN_USE_ON_WIRE', { ip: '198.18.0.10', holder: 'prod:api:0' });
    expect(probe.calls).toEqual([]);
    expect(engine.calls).toMatchObject({ create: 0, start: 0 });
  });

  it.each<[string, number]>([
    ['stopped', 143],
    ['failed', 1],
  ])('an IP held by a %s instance on this host does not block a new one', async (_what, exitCode) => {
    const { agent, engine } = setup();
    engine.seed({ instanceId: 'prod:api:0', ip: '198.18.0.10', engineState: 'exited', exitCode });
    expect((await agent.create(web(0))).state).toBe('running');
  });

  it('then the old holder cannot start again while the new instance holds the IP', async () => {
    const { agent, engine, probe } = setup();
    engine.seed({ instanceId: 'prod:api:0', ip: '198.18.0.10', engineState: 'exited', exitCode: 143 });
    await agent.create(web(0));
    await expectError(agent.start('prod:api:0'), 'IP_IN_USE_ON_WIRE', { holder: 'prod:web:0' });
    expect(engine.stateOfInstance('prod:api:0')).toBe('exited');
    expect(probe.calls).toHaveLength(1);
  });

  it.each<[number, string]>([
    [3.5, 'INSUFFICIENT_CAPACITY'],
    [4, 'INSUFFICIENT_CAPACITY'],
    [64, 'INSUFFICIENT_CAPACITY'],
  ])('asks %d CPUs of 3 usable: %s, nothing created', async (cpu, code) => {
    const { agent, engine, probe } = setup();
    await expectError(agent.create(web(0, { resources: { cpu, memoryMb: 512 } })), code, { cpu, available: 3 });
    expect(engine.calls.create).toBe(0);
    expect(probe.calls).toEqual([]);
  });

  it('accepts exactly the usable cores', async () => {
    const { agent, engine } = setup();
    expect((await agent.create(web(0, { resources: { cpu: 3, memoryMb: 512 } }))).state).toBe('running');
    expect(engine.byInstance('prod:web:0')!.plan!.nanoCpus).toBe(3e9);
  });

  it('with start: false creates the container without probing or starting it', async () => {
    const { agent, engine, probe } = setup();
    const out = await agent.create(web(0, { start: false }));
    expect(out).toMatchObject({ state: 'created', containerId: 'c001' });
    expect(probe.calls).toEqual([]);
    expect(engine.calls).toMatchObject({ create: 1, start: 0 });
  });

  it('with start: false, even an IP that answers ARP is not probed yet: the start will', async () => {
    const { agent, probe, engine } = setup();
    probe.onWire.add('198.18.0.10');
    expect((await agent.create(web(0, { start: false }))).state).toBe('created');
    await expectError(agent.start('prod:web:0'), 'IP_IN_USE_ON_WIRE');
    expect(engine.stateOfInstance('prod:web:0')).toBe('created');
  });

  it('the same command with start: true later starts the created container (the start flag is not part of the spec)', async () => {
    const { agent, engine, probe } = setup();
    await agent.create(web(0, { start: false }));
    const out = await agent.create(web(0, { start: true }));
    expect(out.state).toBe('running');
    expect(engine.calls).toMatchObject({ create: 1, start: 1 });
    expect(probe.calls).toHaveLength(1);
  });
});

// ---- start / stop / remove -------------------------------------------------------------

describe('start', () => {
  it('an unknown instance: NOT_FOUND', async () => {
    const { agent } = setup();
    await expectError(agent.start('prod:web:0'), 'NOT_FOUND', { instanceId: 'prod:web:0' });
  });

  it('a running instance: no probe, no second start', async () => {
    const { agent, engine, probe } = setup();
    await agent.create(web(0));
    expect((await agent.start('prod:web:0')).state).toBe('running');
    expect(engine.calls.start).toBe(1);
    expect(probe.calls).toHaveLength(1);
  });

  it('a stopped instance: probes the wire, then starts it', async () => {
    const { agent, journal } = setup();
    await agent.create(web(0));
    await agent.stop({ instanceId: 'prod:web:0' });
    journal.length = 0;
    expect((await agent.start('prod:web:0')).state).toBe('running');
    expect(journal).toEqual(['probe eth1 198.18.0.10', 'start c001']);
  });

  it('a stopped instance whose IP now answers ARP: IP_IN_USE_ON_WIRE, stays stopped, instance.failed', async () => {
    const { agent, engine, probe, events } = setup();
    await agent.create(web(0));
    await agent.stop({ instanceId: 'prod:web:0' });
    probe.onWire.add('198.18.0.10');
    await expectError(agent.start('prod:web:0'), 'IP_IN_USE_ON_WIRE');
    expect(engine.stateOfInstance('prod:web:0')).toBe('exited');
    expect(engine.calls.start).toBe(1);
    expect(events.instances.map((e) => [e.what, e.instanceId, e.data.code])).toEqual([['failed', 'prod:web:0', 'IP_IN_USE_ON_WIRE']]);
  });
});

describe('stop', () => {
  it('an unknown instance: NOT_FOUND', async () => {
    const { agent } = setup();
    await expectError(agent.stop({ instanceId: 'prod:web:0' }), 'NOT_FOUND', { instanceId: 'prod:web:0' });
  });

  it('a running instance: stopped with the default timeout, its container id recorded as an expected stop', async () => {
    const { agent, engine } = setup();
    const { containerId } = await agent.create(web(0));
    const out = await agent.stop({ instanceId: 'prod:web:0' });
    expect(out).toMatchObject({ state: 'stopped', containerId, exitCode: 143 });
    expect(agent.expectedStops.has(containerId!)).toBe(true);
    expect(engine.journal).toContain(`stop ${containerId} 10`);
  });

  it('passes the timeout of the command', async () => {
    const { agent, engine } = setup();
    await agent.create(web(0));
    await agent.stop({ instanceId: 'prod:web:0', timeoutSeconds: 0 });
    expect(engine.journal).toContain('stop c001 0');
  });

  it.each<[string, Partial<CreateInstanceCommand>, 'stopped' | 'created']>([
    ['a stopped instance', {}, 'stopped'],
    ['a created, never started instance', { start: false }, 'created'],
  ])('%s: no engine call, no expected stop', async (_what, over, state) => {
    const { agent, engine } = setup();
    await agent.create(web(0, over));
    if (state === 'stopped') await agent.stop({ instanceId: 'prod:web:0' });
    agent.expectedStops.clear();
    const stops = engine.calls.stop;
    expect((await agent.stop({ instanceId: 'prod:web:0' })).state).toBe(state);
    expect(engine.calls.stop).toBe(stops);
    expect(agent.expectedStops.size).toBe(0);
  });
});

describe('remove', () => {
  it('removes a running instance; removing it again is fine and answers state removed', async () => {
    const { agent, engine } = setup();
    const { containerId } = await agent.create(web(0));
    const first = await agent.remove('prod:web:0');
    expect(first).toMatchObject({ instanceId: 'prod:web:0', state: 'removed', containerId, ip: '198.18.0.10' });
    expect(engine.containers.size).toBe(0);
    expect(agent.expectedStops.has(containerId!)).toBe(true);

    const second = await agent.remove('prod:web:0');
    expect(second).toEqual({
      instanceId: 'prod:web:0',
      env: 'prod',
      app: 'web',
      slot: 0,
      hostId: 'srv-1',
      backend: 'docker',
      state: 'removed',
      ip: '',
      mac: '',
      image: '',
    });
    expect(engine.calls.remove).toBe(1);
  });

  it('an instance this host never had: state removed, no engine call', async () => {
    const { agent, engine } = setup();
    expect(await agent.remove('test:api:12')).toMatchObject({ instanceId: 'test:api:12', env: 'test', app: 'api', slot: 12, state: 'removed' });
    expect(engine.calls.remove).toBe(0);
  });

  it('frees the instance id and its IP: the same id can be created again with another spec', async () => {
    const { agent } = setup();
    await agent.create(web(0));
    await agent.remove('prod:web:0');
    expect((await agent.create(withIp(web(0), '198.18.0.99'))).ip).toBe('198.18.0.99');
    expect((await agent.create(withIp(web(1), '198.18.0.10'))).state).toBe('running');
  });
});

// ---- get / list ------------------------------------------------------------------------

describe('get and list', () => {
  it('get: an unknown instance is NOT_FOUND', async () => {
    const { agent } = setup();
    await expectError(agent.get('prod:web:0'), 'NOT_FOUND', { instanceId: 'prod:web:0' });
  });

  it('get: what the labels say, with heap and disk when the instance has them', async () => {
    const { agent } = setup();
    await agent.create(web(0, { resources: { cpu: 0.5, memoryMb: 1024, heapMb: 768, diskMb: 2048 } }));
    expect(await agent.get('prod:web:0')).toMatchObject({
      instanceId: 'prod:web:0',
      state: 'running',
      resources: { cpu: 0.5, memoryMb: 1024, heapMb: 768, diskMb: 2048 },
    });
  });

  it.each<[string, number, boolean, Record<string, unknown>]>([
    ['exits by itself with 0: stopped, with the exit code', 0, false, { state: 'stopped', exitCode: 0 }],
    ['crashes: failed, with the exit code', 3, false, { state: 'failed', exitCode: 3 }],
    ['is OOM-killed: failed, with the reason', 137, true, { state: 'failed', exitCode: 137, reason: 'killed by the kernel: out of memory' }],
  ])('get: a container that %s', async (_what, exitCode, oom, expected) => {
    const { agent, engine } = setup();
    const { containerId } = await agent.create(web(0));
    engine.crash(containerId!, exitCode, oom);
    expect(await agent.get('prod:web:0')).toMatchObject(expected);
  });

  it('a running instance shows no exit code nor reason', async () => {
    const { agent } = setup();
    const out = await agent.get((await agent.create(web(0))).instanceId);
    expect(out).not.toHaveProperty('exitCode');
    expect(out).not.toHaveProperty('reason');
  });

  it('list: every managed instance of the host with its state, in the contract shape', async () => {
    const { agent, engine } = setup();
    await agent.create(web(0));
    await agent.create(web(1, { start: false }));
    await agent.create(web(2));
    await agent.stop({ instanceId: 'prod:web:2' });
    engine.seed({ instanceId: 'prod:other:0', ip: '198.18.0.50', labels: { [LABEL.managed]: 'false' } });

    const list = await agent.list();
    expect(list.hostId).toBe('srv-1');
    expect(list.instances.map((i) => [i.instanceId, i.state])).toEqual([
      ['prod:web:0', 'running'],
      ['prod:web:1', 'created'],
      ['prod:web:2', 'stopped'],
    ]);
    expect(() => decode(AgentInstanceList, list)).not.toThrow();
  });

  it('list: an empty host', async () => {
    const { agent } = setup();
    expect(await agent.list()).toEqual({ hostId: 'srv-1', instances: [] });
  });
});

// ---- host-wide -------------------------------------------------------------------------

describe('stopAll (self-fence)', () => {
  it('stops every running instance, returns their ids and records their stops as expected', async () => {
    const { agent, engine } = setup();
    const a = await agent.create(web(0));
    await agent.create(web(1, { start: false }));
    await agent.create(web(2));
    const c = await agent.create(web(3));
    await agent.stop({ instanceId: 'prod:web:2' });
    agent.expectedStops.clear();
    const stops = engine.calls.stop;

    expect((await agent.stopAll(2)).stopped.sort()).toEqual(['prod:web:0', 'prod:web:3']);
    expect(engine.calls.stop - stops).toBe(2);
    expect(engine.journal).toEqual(expect.arrayContaining([`stop ${a.containerId} 2`, `stop ${c.containerId} 2`]));
    expect([...agent.expectedStops].sort()).toEqual([a.containerId, c.containerId].sort());
    expect((await agent.list()).instances.filter((i) => i.state === 'running')).toEqual([]);
  });

  it('nothing running: stops nothing and returns no ids', async () => {
    const { agent, engine } = setup();
    await agent.create(web(0, { start: false }));
    expect(await agent.stopAll(2)).toEqual({ stopped: [], stillRunning: [] });
    expect(engine.calls.stop).toBe(0);
  });

  it('one failing stop does not keep the others running', async () => {
    const { agent, engine } = setup();
    const a = await agent.create(web(0));
    await agent.create(web(1));
    engine.hooks.beforeStop = (id) => {
      if (id === a.containerId) throw new Error('engine timeout');
    };
    await agent.stopAll(2);
    expect(engine.stateOfInstance('prod:web:1')).toBe('exited');
  });

  // Regression: a stop that failed used to be reported as stopped (host.fenced and
  // instance.stopped for an instance still on the wire).
  it('does not report as stopped an instance whose stop failed', async () => {
    const { agent, engine } = setup();
    const a = await agent.create(web(0));
    await agent.create(web(1));
    engine.hooks.beforeStop = (id) => {
      if (id === a.containerId) throw new Error('engine timeout');
    };
    const result = await agent.stopAll(2);
    expect(engine.stateOfInstance('prod:web:0')).toBe('running');
    expect(result).toEqual({ stopped: ['prod:web:1'], stillRunning: ['prod:web:0'] });
  });

  // Regression (race): a create waiting for its ARP probe when the fence fired used to start
  // its container afterwards, on a fenced host.
  it('an instance whose create is in flight when the fence stops everything does not end up running', async () => {
    const { agent, engine, probe } = setup();
    const hold = deferred();
    probe.gate = () => hold.promise;
    const creating = agent.create(web(0)).catch(() => undefined);
    await vi.waitFor(() => expect(probe.calls).toHaveLength(1));
    const stopped = agent.stopAll(2);
    hold.resolve();
    await Promise.all([creating, stopped]);
    expect(engine.stateOfInstance('prod:web:0')).not.toBe('running');
  });
});

describe('adopt (agent start)', () => {
  it('reports every container as it is and starts, stops or probes nothing: a stopped copy stays stopped', async () => {
    const { engine, probe, events, agent } = setup();
    engine.seed({ instanceId: 'prod:web:0', ip: '198.18.0.10' });
    engine.seed({ instanceId: 'prod:web:1', ip: '198.18.0.11', engineState: 'exited', exitCode: 143 });
    engine.seed({ instanceId: 'prod:web:2', ip: '198.18.0.12', engineState: 'exited', exitCode: 1 });
    engine.seed({ instanceId: 'prod:web:3', ip: '198.18.0.13', engineState: 'created' });
    const before = engine.snapshot();
    const r = await agent.adopt();
    expect(r.instances).toBe(4);
    expect(r.running.map((c) => c.labels[LABEL.instanceId])).toEqual(['prod:web:0']);
    expect(events.instances.map((e) => [e.instanceId, e.what, e.data['adopted']])).toEqual([
      ['prod:web:0', 'running', true],
      ['prod:web:1', 'stopped', true],
      ['prod:web:2', 'failed', true],
      ['prod:web:3', 'stopped', true],
    ]);
    expect(engine.calls).toMatchObject({ create: 0, start: 0, stop: 0, remove: 0 });
    expect(probe.calls).toEqual([]);
    expect(engine.snapshot()).toEqual(before);
  });
});

describe('upgrade to confined containers (v1.1)', () => {
  // 'a6ed60573d16346a' is the spec-hash label a pre-v1.1 agent put on web(0)'s container
  // (pinned in libs/contracts spec-hash.spec.ts): no-new-privileges, PIDs limit and CapDrop
  // did not exist then, and are not part of the spec.
  it('a container made before the upgrade is the same spec: adopted, and a create returns it as is (not recreated)', async () => {
    const { engine, agent, events } = setup({ settings: { pidsLimit: 2048 } });
    const old = engine.seed({
      instanceId: 'prod:web:0',
      ip: '198.18.0.10',
      image: IMAGE,
      labels: { [LABEL.mac]: '02:00:c6:12:00:0a', [LABEL.cpu]: '1', [LABEL.memoryMb]: '512', [LABEL.specHash]: 'a6ed60573d16346a' },
    });
    await agent.adopt();
    expect(events.instances.map((e) => [e.instanceId, e.what])).toEqual([['prod:web:0', 'running']]);
    const out = await agent.create(web(0));
    expect(out).toMatchObject({ containerId: old, state: 'running' });
    expect(engine.calls).toMatchObject({ create: 0, start: 0, stop: 0, remove: 0 });
    // the same instance with a relaxation from its env record is another spec
    await expectError(agent.create(web(0, { security: { addCapabilities: ['NET_RAW'] } })), 'INSTANCE_CONFLICT');
  });
});

describe('allocated', () => {
  it('sums cpu, memory limits and disk from the labels of every managed container, whatever its state', async () => {
    const { agent, engine } = setup();
    await agent.create(web(0, { resources: { cpu: 0.1, memoryMb: 512, diskMb: 1024 } }));
    await agent.create(web(1, { resources: { cpu: 0.2, memoryMb: 256, heapMb: 1024 }, start: false }));
    await agent.create(web(2, { resources: { cpu: 2, memoryMb: 2048, diskMb: 4096 } }));
    await agent.stop({ instanceId: 'prod:web:2' });
    engine.seed({ instanceId: 'prod:other:0', ip: '198.18.0.50', labels: { [LABEL.managed]: 'false', [LABEL.cpu]: '8' } });

    // web-1's limit is raised by its heap's head room: 1024 + 256
    expect(await agent.allocated()).toEqual({ amounts: { cpu: 2.3, memoryMb: 512 + 1280 + 2048, diskMb: 1024 + 4096 }, count: 3 });
  });

  it('an empty host: zeros', async () => {
    const { agent } = setup();
    expect(await agent.allocated()).toEqual({ amounts: { cpu: 0, memoryMb: 0, diskMb: 0 }, count: 0 });
  });

  it('counts containers an earlier agent left (adopted from labels alone)', async () => {
    const { agent, engine } = setup();
    engine.seed({
      instanceId: 'prod:api:0',
      ip: '198.18.0.40',
      labels: { [LABEL.cpu]: '1.5', [LABEL.memoryMb]: '1024', [LABEL.diskMb]: '500' },
    });
    expect(await agent.allocated()).toEqual({ amounts: { cpu: 1.5, memoryMb: 1024, diskMb: 500 }, count: 1 });
  });
});

// ---- one instance at a time, instances in parallel --------------------------------------

describe('command ordering', () => {
  it('two concurrent creates of one instance: one container, one start, the same answer', async () => {
    const { agent, engine, probe } = setup();
    const hold = deferred();
    probe.gate = () => hold.promise;
    const first = agent.create(web(0));
    const second = agent.create(web(0));
    await vi.waitFor(() => expect(probe.calls).toHaveLength(1));
    hold.resolve();
    const [a, b] = await Promise.all([first, second]);
    expect(b).toEqual(a);
    expect(engine.calls).toMatchObject({ create: 1, start: 1 });
    expect(probe.calls).toHaveLength(1);
  });

  it('a create then a stop sent at once run in that order', async () => {
    const { agent } = setup();
    const [created, stopped] = await Promise.all([agent.create(web(0)), agent.stop({ instanceId: 'prod:web:0' })]);
    expect(created.state).toBe('running');
    expect(stopped.state).toBe('stopped');
  });

  it('a command that fails does not block the next one for the same instance', async () => {
    const { agent } = setup();
    const [bad, good] = await Promise.allSettled([agent.create(web(0, { image: 'orangery/missing:1' })), agent.create(web(0))]);
    expect(bad.status).toBe('rejected');
    expect(good).toMatchObject({ status: 'fulfilled', value: { state: 'running' } });
  });

  it('different instances run in parallel: one held in the engine does not hold the other', async () => {
    const { agent, engine } = setup();
    const hold = deferred();
    const reached = deferred();
    engine.hooks.beforeCreate = (plan) => {
      if (plan.labels[LABEL.instanceId] !== 'prod:web:0') return;
      reached.resolve();
      return hold.promise;
    };
    let firstDone = false;
    const first = agent.create(web(0)).then((r) => ((firstDone = true), r));
    await reached.promise;
    expect((await agent.create(web(1))).state).toBe('running');
    expect(firstDone).toBe(false);
    hold.resolve();
    expect((await first).state).toBe('running');
  });

  it('two instances asking for one IP at once: never both running', async () => {
    const { agent, engine } = setup();
    await Promise.allSettled([agent.create(web(0)), agent.create(withIp(web(1), '198.18.0.10'))]);
    const running = [...engine.containers.values()].filter((c) => c.engineState === 'running');
    expect(running.length).toBeLessThanOrEqual(1);
  });
});

// ---- restarts ---------------------------------------------------------------------------

describe('restartAfterFailure', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A running prod:web:0 whose process just crashed. */
  async function crashed(opts: Parameters<typeof setup>[0] = {}) {
    const s = setup(opts);
    const { containerId } = await s.agent.create(web(0));
    s.engine.crash(containerId!, 1);
    return { ...s, id: containerId! };
  }

  it('restarts a failed instance after a 500 ms backoff, probing the wire first', async () => {
    const { agent, engine, probe, id } = await crashed();
    const restarted = agent.restartAfterFailure(id, 'prod:web:0', () => false);
    await vi.advanceTimersByTimeAsync(499);
    expect(engine.calls.start).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(await restarted).toBe(true);
    expect(engine.stateOfInstance('prod:web:0')).toBe('running');
    expect(engine.calls.start).toBe(2);
    expect(probe.calls).toHaveLength(2);
  });

  it('restarts at most restartMaxRetries times, backing off 500, 1000, 2000 ms', async () => {
    const { agent, engine, id } = await crashed();
    for (const backoff of [500, 1000, 2000]) {
      const restarted = agent.restartAfterFailure(id, 'prod:web:0', () => false);
      await vi.advanceTimersByTimeAsync(backoff - 1);
      expect(engine.stateOfInstance('prod:web:0')).toBe('exited');
      await vi.advanceTimersByTimeAsync(1);
      expect(await restarted).toBe(true);
      expect(engine.stateOfInstance('prod:web:0')).toBe('running');
      engine.crash(id, 1);
    }
    const starts = engine.calls.start;
    expect(await agent.restartAfterFailure(id, 'prod:web:0', () => false)).toBe(false);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(engine.calls.start).toBe(starts);
    expect(engine.stateOfInstance('prod:web:0')).toBe('exited');
  });

  it('follows the configured number of retries (0: never)', async () => {
    const { agent, engine, id } = await crashed({ settings: { restartMaxRetries: 0 } });
    expect(await agent.restartAfterFailure(id, 'prod:web:0', () => false)).toBe(false);
    expect(engine.calls.start).toBe(1);
  });

  it('a start command gives the instance its retries back', async () => {
    const { agent, engine, id } = await crashed({ settings: { restartMaxRetries: 1 } });
    const once = agent.restartAfterFailure(id, 'prod:web:0', () => false);
    await vi.advanceTimersByTimeAsync(500);
    expect(await once).toBe(true);
    engine.crash(id, 1);
    expect(await agent.restartAfterFailure(id, 'prod:web:0', () => false)).toBe(false);
    await agent.start('prod:web:0');
    engine.crash(id, 1);
    const again = agent.restartAfterFailure(id, 'prod:web:0', () => false);
    await vi.advanceTimersByTimeAsync(500);
    expect(await again).toBe(true);
    expect(engine.stateOfInstance('prod:web:0')).toBe('running');
  });

  it('never restarts on a fenced host', async () => {
    const { agent, engine, id } = await crashed();
    expect(await agent.restartAfterFailure(id, 'prod:web:0', () => true)).toBe(false);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(engine.calls.start).toBe(1);
  });

  it('gives up when the host fences during the backoff', async () => {
    const { agent, engine, id } = await crashed();
    let fenced = false;
    const restarted = agent.restartAfterFailure(id, 'prod:web:0', () => fenced);
    fenced = true;
    await vi.advanceTimersByTimeAsync(500);
    expect(await restarted).toBe(false);
    expect(engine.calls.start).toBe(1);
  });

  it('does not restart a container stopped on purpose, nor one that was replaced or removed', async () => {
    const { agent, engine, id } = await crashed();
    agent.expectedStops.add(id);
    const onPurpose = agent.restartAfterFailure(id, 'prod:web:0', () => false);
    await vi.advanceTimersByTimeAsync(500);
    await onPurpose;
    expect(engine.calls.start).toBe(1);

    agent.expectedStops.clear();
    await agent.remove('prod:web:0');
    const gone = agent.restartAfterFailure(id, 'prod:web:0', () => false);
    await vi.advanceTimersByTimeAsync(1000);
    await gone;
    expect(engine.calls.start).toBe(1);
    expect(engine.containers.size).toBe(0);
  });

  it('a restart refused by the wire probe leaves the instance down and reports it failed', async () => {
    const { agent, engine, probe, events, id } = await crashed();
    probe.onWire.add('198.18.0.10');
    const outcome = agent
      .restartAfterFailure(id, 'prod:web:0', () => false)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    await vi.advanceTimersByTimeAsync(500);
    expect(await outcome).toMatchObject({ code: 'IP_IN_USE_ON_WIRE' });
    expect(engine.stateOfInstance('prod:web:0')).toBe('exited');
    expect(events.instances.map((e) => e.what)).toEqual(['failed']);
  });
});

describe('forgetGone', () => {
  it('forgets the stops it asked for and the restart counts of containers missing from two listings in a row', async () => {
    const w = setup();
    await w.agent.create(web(0));
    await w.agent.create(web(1));
    const [c0, c1] = [...w.engine.containers.keys()];
    await w.agent.stop({ instanceId: 'prod:web:0' });
    await w.agent.remove('prod:web:0');
    await w.agent.stop({ instanceId: 'prod:web:1' });
    expect(w.agent.trackedContainers()).toBe(2);
    const present = new Set([c1!]);
    // missing once: kept (its `die` may still be on its way)
    w.agent.forgetGone(present);
    expect(w.agent.expectedStops.has(c0!)).toBe(true);
    w.agent.forgetGone(present);
    expect(w.agent.expectedStops.has(c0!)).toBe(false);
    expect(w.agent.expectedStops.has(c1!)).toBe(true);
    expect(w.agent.trackedContainers()).toBe(1);
  });
});

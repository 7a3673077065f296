import { describe, it, expect } from 'vitest';
import type { ContainerCreateCommand as CreateInstanceCommand } from '@orangery/contracts';
import { LABEL, planContainer } from '../container-spec';
import { stateOf } from '../ports';
import { FakeArpProbe, FakeEngine } from './fake-engine';

// The test double must keep the port contracts, or the service tests prove nothing.

const IMAGE = 'orangery/service:1';
const NET = { name: 'orangery-v0-198.18.0.0_24', parent: 'eth1', subnet: '198.18.0.0/24', gateway: '198.18.0.1' };

const planOf = (instanceId = 'prod:web:0', ip = '198.18.0.10') => {
  const [env = '', app = '', slot = '0'] = instanceId.split(':');
  const cmd: CreateInstanceCommand = {
    instanceId,
    env,
    app,
    slot: Number(slot),
    image: IMAGE,
    resources: { cpu: 1, memoryMb: 512 },
    network: { ip, mac: '02:00:c6:12:00:0a', prefixLength: 24, gateway: '198.18.0.1', vlan: 0 },
  };
  return planContainer(cmd, { totalCpus: 4, reservedCpus: 1 });
};

async function engineWithNetwork() {
  const engine = new FakeEngine({ images: [IMAGE], interfaces: ['eth1'] });
  await engine.ensureNetwork(NET);
  return engine;
}

describe('FakeEngine', () => {
  it('creates a container in state created with the plan labels, and finds it by instance id', async () => {
    const engine = await engineWithNetwork();
    const id = await engine.create(planOf(), NET.name);
    const found = await engine.findByInstance('prod:web:0');
    expect(found).toEqual({ id, image: IMAGE, labels: planOf().labels, engineState: 'created', exitCode: undefined, oomKilled: false });
    expect(stateOf(found)).toBe('created');
    expect(await engine.findByInstance('prod:web:1')).toBeUndefined();
  });

  it('refuses a second container with the same name, like docker (409)', async () => {
    const engine = await engineWithNetwork();
    await engine.create(planOf(), NET.name);
    await expect(engine.create(planOf(), NET.name)).rejects.toMatchObject({ statusCode: 409 });
    expect(engine.containers.size).toBe(1);
  });

  it('refuses a missing network or image (404)', async () => {
    const engine = await engineWithNetwork();
    await expect(engine.create(planOf(), 'nope')).rejects.toMatchObject({ statusCode: 404 });
    await expect(engine.create({ ...planOf(), image: 'missing:1' }, NET.name)).rejects.toMatchObject({ statusCode: 404 });
  });

  it('start -> running; stop -> a stop (exit 143); stop and remove are no-ops on what is stopped or gone', async () => {
    const engine = await engineWithNetwork();
    const id = await engine.create(planOf(), NET.name);
    await engine.start(id);
    expect(stateOf(await engine.findByInstance('prod:web:0'))).toBe('running');
    await engine.stop(id, 10);
    expect(stateOf(await engine.findByInstance('prod:web:0'))).toBe('stopped');
    await engine.stop(id, 10);
    await engine.remove(id);
    await engine.remove(id);
    expect(await engine.findByInstance('prod:web:0')).toBeUndefined();
  });

  it('events: follows from the call on, as the engine stream does (start, die with the exit code, oom before die, destroy), until aborted', async () => {
    const engine = await engineWithNetwork();
    const following = new AbortController();
    const id2 = await engine.create(planOf(), NET.name);
    const live = engine.events(following.signal);
    const reading = (async () => {
      const out: string[] = [];
      for await (const e of live) out.push(`${e.kind}${e.kind === 'die' ? ` ${e.exitCode}` : ''}`);
      return out;
    })();
    await engine.start(id2);
    await engine.stop(id2, 10);
    await engine.start(id2);
    engine.crash(id2, 137, true);
    await engine.start(id2);
    await engine.remove(id2);
    await new Promise((r) => setTimeout(r, 0));
    following.abort();
    expect(await reading).toEqual(['start', 'die 143', 'start', 'oom', 'die 137', 'start', 'die 137', 'destroy']);
  });

  it('returns copies: changing what it returned changes nothing inside', async () => {
    const engine = await engineWithNetwork();
    await engine.create(planOf(), NET.name);
    const c = (await engine.findByInstance('prod:web:0'))!;
    c.labels[LABEL.ip] = '198.18.0.99';
    c.engineState = 'running';
    expect((await engine.listManaged())[0]).toMatchObject({ engineState: 'created', labels: { [LABEL.ip]: '198.18.0.10' } });
  });

  it('lists only managed containers, with their size when asked', async () => {
    const engine = await engineWithNetwork();
    engine.seed({ instanceId: 'prod:api:0', ip: '198.18.0.40', sizeRw: 4096 });
    engine.seed({ instanceId: 'prod:x:0', ip: '198.18.0.41', labels: { [LABEL.managed]: 'false' } });
    expect((await engine.listManaged()).map((c) => [c.labels[LABEL.instanceId], c.sizeRw])).toEqual([['prod:api:0', undefined]]);
    expect((await engine.listManaged(true)).map((c) => c.sizeRw)).toEqual([4096]);
  });

  it('a macvlan network brings its parent interface, once per name', async () => {
    const engine = new FakeEngine({ interfaces: ['eth1'] });
    const vlan = { ...NET, name: 'orangery-v100-198.18.0.0_24', parent: 'eth1.100' };
    await engine.ensureNetwork(vlan);
    await engine.ensureNetwork(vlan);
    expect(engine.networks.size).toBe(1);
    expect([...engine.interfaces]).toEqual(['eth1', 'eth1.100']);
  });

  it('listNetworks: the networks made, with their parent and gateway (as the adapter reads them from IPAM)', async () => {
    const engine = new FakeEngine({ interfaces: ['eth1'] });
    await engine.ensureNetwork({ ...NET, name: 'orangery-v100-198.18.0.0_24', parent: 'eth1.100', gateway: '198.18.0.254' });
    expect(await engine.listNetworks()).toEqual([{ name: 'orangery-v100-198.18.0.0_24', parent: 'eth1.100', gateway: '198.18.0.254' }]);
  });
});

describe('FakeArpProbe', () => {
  it('answers for the addresses on the wire and records every probe', async () => {
    const probe = new FakeArpProbe();
    probe.onWire.add('198.18.0.10');
    expect(await probe.inUse('eth1', '198.18.0.10')).toBe(true);
    expect(await probe.inUse('eth1', '198.18.0.11')).toBe(false);
    expect(probe.calls).toEqual([
      { iface: 'eth1', ip: '198.18.0.10' },
      { iface: 'eth1', ip: '198.18.0.11' },
    ]);
  });

  it('given the interfaces, fails on one that does not exist, like arping', async () => {
    const probe = new FakeArpProbe({ interfaces: new Set(['eth1']) });
    await expect(probe.inUse('eth1.100', '198.18.0.10')).rejects.toThrow(/arping on eth1.100 failed/);
  });
});

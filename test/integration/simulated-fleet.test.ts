import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decode, Heartbeat, memoryLimitMb } from '@orangery/contracts';
import { ContractClient, HarnessDir, NatsServer, SimulatedFleet, waitFor } from '@orangery/testing';

// The simulated fleet on a real nats-server: what the scheduler's tests and benchmark will
// talk to instead of a thousand docker-agents, so it must answer like one.
const dir = new HarnessDir('simulated-fleet');
let nats: NatsServer;
let client: ContractClient;
let fleet: SimulatedFleet;
const HOSTS = 12;
const silentHosts = new Set<string>();

const BROKEN_APP = 'broken';

let nextAddress = 1;
function command(app: string, slot: number, extra: Record<string, unknown> = {}) {
  const n = nextAddress++;
  return {
    instanceId: `test:${app}:${slot}`,
    env: 'test',
    app,
    slot,
    image: 'registry.example/web:1.0',
    resources: { cpu: 0.5, memoryMb: 512, heapMb: 1024, diskMb: 100 },
    network: {
      ip: `198.18.${n >> 8}.${n & 255}`,
      mac: `02:4f:c6:12:${(n >> 8).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`,
      prefixLength: 16,
      gateway: '198.18.0.1',
      vlan: 100,
    },
    ...extra,
  };
}

const req = (hostId: string, what: string, body: unknown, timeoutMs = 5_000) => client.request(`orangery.agent.${hostId}.instance.${what}`, body, timeoutMs);

/** The next heartbeat of `hostId` published after now. */
function nextHeartbeat(hostId: string, timeoutMs = 5_000): Promise<Heartbeat> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sub.unsubscribe();
      reject(new Error(`no heartbeat from ${hostId} in ${timeoutMs} ms`));
    }, timeoutMs);
    const sub = client.nc.subscribe(`orangery.hb.${hostId}`, {
      callback: (_e, m) => {
        clearTimeout(timer);
        sub.unsubscribe();
        resolve(m.json<Heartbeat>());
      },
    });
  });
}

const eventsOf = async (what: string, subject: string) => (await client.events(`orangery.evt.${what}`)).filter((e) => e.subject === subject);

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  client = await ContractClient.connect(nats.url);
  fleet = await SimulatedFleet.start({
    natsUrl: nats.url,
    hosts: HOSTS,
    idPrefix: 'sim-',
    capacity: { cpu: 8, memoryMb: 32_768, diskMb: 500_000 },
    labels: (i) => ({ rack: `r${i % 3}` }),
    heartbeatSeconds: 1,
    fenceAfterSeconds: 2,
    fail: (_host, cmd, instanceId) =>
      cmd === 'create' && instanceId.startsWith(`test:${BROKEN_APP}:`)
        ? { code: 'IMAGE_NOT_FOUND', message: 'image registry.example/web:1.0 is not on the engine' }
        : undefined,
    silent: (hostId) => silentHosts.has(hostId),
  });
}, 60_000);

afterAll(async () => {
  await fleet?.stop();
  await client?.close();
  await dir.cleanup();
});

describe('simulated fleet', () => {
  it('registers every host and every host heartbeats with the Heartbeat schema', async () => {
    expect(fleet.hostIds).toHaveLength(HOSTS);
    expect(fleet.hostIds[0]).toBe('sim-0001');
    const seen = new Map<string, Heartbeat>();
    const sub = client.nc.subscribe('orangery.hb.*', {
      callback: (_e, m) => {
        seen.set(m.subject.split('.')[2]!, decode(Heartbeat, m.json()));
      },
    });
    try {
      await waitFor('a heartbeat from every host', () => seen.size === HOSTS, 5_000);
    } finally {
      sub.unsubscribe();
    }
    expect(seen.get('sim-0002')).toMatchObject({
      hostId: 'sim-0002',
      backend: 'docker',
      labels: { rack: 'r1' },
      capacity: { cpu: 8, memoryMb: 32_768, diskMb: 500_000 },
      total: { cpu: 9, memoryMb: 33_792 },
      allocated: { cpu: 0, memoryMb: 0, diskMb: 0 },
      fenced: false,
    });
    const registered = (await client.events('orangery.evt.host.registered')).map((e) => e.subject);
    expect(new Set(registered)).toEqual(new Set(fleet.hostIds));
    // issue 13: each host's facts on its own subject, exactly the HostFacts fields
    const facts = await client.request('orangery.agent.sim-0002.host.get', {});
    expect(facts).toEqual({
      ok: true,
      data: {
        hostId: 'sim-0002',
        backend: 'docker',
        capacity: { cpu: 8, memoryMb: 32_768, diskMb: 500_000 },
        total: seen.get('sim-0002')!['total'],
        reserved: seen.get('sim-0002')!['reserved'],
        labels: { rack: 'r1' },
        vlans: 'any',
      },
    });
    expect(await client.request('orangery.agent.sim-0002.host.get', { extra: 1 })).toMatchObject({ ok: false, error: { code: 'INVALID_REQUEST' } });
  });

  it('creates, gets, lists and removes an instance, with its events and its allocation', async () => {
    const host = 'sim-0001';
    const cmd = command('web', 0);
    const created = await req(host, 'create', cmd);
    expect(created.ok, JSON.stringify(created)).toBe(true);
    expect(created.data).toMatchObject({
      instanceId: 'test:web:0',
      hostId: host,
      backend: 'docker',
      state: 'running',
      ip: cmd.network.ip,
      mac: cmd.network.mac,
    });
    expect(created.data.containerId).toMatch(/^[0-9a-f]{64}$/);

    expect((await req(host, 'get', { instanceId: 'test:web:0' })).data).toEqual(created.data);
    const list = await req(host, 'list', {});
    expect(list.data).toEqual({ hostId: host, instances: [created.data] });
    expect(fleet.instances(host)).toEqual([created.data]);

    // The heap's head room counts: the agent's memory limit, as the scheduler reserves it.
    const hb = await nextHeartbeat(host);
    expect(hb.allocated).toEqual({ cpu: 0.5, memoryMb: memoryLimitMb(512, 1024), diskMb: 100 });
    expect(hb.usage).toEqual(hb.allocated);
    expect(hb.instances).toBe(1);

    const removed = await req(host, 'remove', { instanceId: 'test:web:0' });
    expect(removed.data).toMatchObject({ instanceId: 'test:web:0', state: 'removed', containerId: created.data.containerId });
    expect((await req(host, 'get', { instanceId: 'test:web:0' })).error).toMatchObject({ code: 'NOT_FOUND', details: { instanceId: 'test:web:0' } });
    // Removing what is not there is not an error.
    expect((await req(host, 'remove', { instanceId: 'test:web:0' })).data).toMatchObject({ state: 'removed', ip: '', image: '' });

    await waitFor('running, stopped and removed events', async () => {
      const events = await client.events('orangery.evt.instance.>');
      const mine = events.filter((e) => e.subject === 'test:web:0').map((e) => e.type);
      return mine.length === 3 ? events.filter((e) => e.subject === 'test:web:0') : undefined;
    });
    const events = (await client.events('orangery.evt.instance.>')).filter((e) => e.subject === 'test:web:0');
    expect(events.map((e) => e.type)).toEqual(['io.orangery.instance.running', 'io.orangery.instance.stopped', 'io.orangery.instance.removed']);
    expect(events[0]).toMatchObject({
      specversion: '1.0',
      source: `orangery/docker-agent/${host}`,
      data: { instanceId: 'test:web:0', hostId: host, backend: 'docker', containerId: created.data.containerId, ip: cmd.network.ip },
    });
  });

  it('a repeated create returns the same instance; another spec is INSTANCE_CONFLICT', async () => {
    const host = 'sim-0002';
    const cmd = command('idem', 0);
    const first = await req(host, 'create', cmd);
    const again = await req(host, 'create', cmd);
    expect(again).toEqual(first);
    const other = await req(host, 'create', { ...cmd, image: 'registry.example/web:2.0' });
    expect(other.error).toMatchObject({ code: 'INSTANCE_CONFLICT', details: { instanceId: cmd.instanceId, ip: cmd.network.ip } });
    expect(fleet.instances(host).filter((i) => i.instanceId === cmd.instanceId)).toHaveLength(1);
  });

  it('create with start: false leaves the instance created; stop and start move it', async () => {
    const host = 'sim-0003';
    const cmd = command('manual', 0, { start: false });
    expect((await req(host, 'create', cmd)).data.state).toBe('created');
    expect((await req(host, 'start', { instanceId: cmd.instanceId })).data.state).toBe('running');
    const stopped = await req(host, 'stop', { instanceId: cmd.instanceId, timeoutSeconds: 5 });
    expect(stopped.data).toMatchObject({ state: 'stopped', exitCode: 143 });
    expect((await req(host, 'start', { instanceId: cmd.instanceId })).data.state).toBe('running');
    expect((await req(host, 'stop', { instanceId: 'test:nobody:0' })).error.code).toBe('NOT_FOUND');
  });

  it('bad commands are INVALID_REQUEST naming the field', async () => {
    const host = 'sim-0001';
    expect((await req(host, 'create', 'not json')).error.code).toBe('INVALID_REQUEST');
    const { resources: _r, ...noResources } = command('bad', 0);
    expect((await req(host, 'create', noResources)).error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'resources' } });
    expect((await req(host, 'create', { ...command('bad', 0), colour: 'red' })).error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'colour' } });
    expect((await req(host, 'get', { instanceId: 'not-an-id' })).error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'instanceId' } });
    expect((await req(host, 'list', { all: true })).error.code).toBe('INVALID_REQUEST');
    expect(fleet.instances(host).filter((i) => i.app === 'bad')).toEqual([]);
  });

  it('an injected failure refuses the create, leaves nothing and publishes instance.failed', async () => {
    const cmd = command(BROKEN_APP, 0);
    const reply = await req('sim-0004', 'create', cmd);
    expect(reply.error).toMatchObject({ code: 'IMAGE_NOT_FOUND', details: { instanceId: cmd.instanceId } });
    expect(fleet.instances('sim-0004')).toEqual([]);
    const failed = await waitFor('instance.failed', async () => (await eventsOf('instance.failed', cmd.instanceId))[0]);
    expect(failed.data).toMatchObject({ code: 'IMAGE_NOT_FOUND', ip: cmd.network.ip, hostId: 'sim-0004' });
  });

  it('too many CPUs is INSUFFICIENT_CAPACITY; an address running elsewhere is IP_IN_USE_ON_WIRE', async () => {
    const big = await req('sim-0005', 'create', command('big', 0, { resources: { cpu: 9, memoryMb: 512 } }));
    expect(big.error).toMatchObject({ code: 'INSUFFICIENT_CAPACITY', details: { cpu: 9, available: 8 } });
    const a = command('dup', 0);
    expect((await req('sim-0005', 'create', a)).ok).toBe(true);
    const b = await req('sim-0006', 'create', { ...command('dup', 1), network: a.network });
    expect(b.error).toMatchObject({ code: 'IP_IN_USE_ON_WIRE', details: { ip: a.network.ip } });
    // stopped, the old copy no longer answers ARP: the address may start elsewhere
    await req('sim-0005', 'stop', { instanceId: a.instanceId });
    expect((await req('sim-0006', 'create', { ...command('dup', 1), network: a.network })).data.state).toBe('running');
  });

  it('failInstance marks it failed and publishes instance.failed', async () => {
    const cmd = command('crashy', 0);
    await req('sim-0007', 'create', cmd);
    fleet.failInstance(cmd.instanceId, 'exited with code 1');
    expect((await req('sim-0007', 'get', { instanceId: cmd.instanceId })).data).toMatchObject({ state: 'failed', exitCode: 1, reason: 'exited with code 1' });
    const failed = await waitFor('instance.failed', async () => (await eventsOf('instance.failed', cmd.instanceId))[0]);
    expect(failed.data).toMatchObject({ exitCode: 1, hostId: 'sim-0007', ip: cmd.network.ip });
    expect(() => fleet.failInstance('test:nothing:0')).toThrow();
  });

  it('a silent (dead) host stops heartbeating and answering, loses its instances, and re-registers when back', async () => {
    const host = 'sim-0008';
    const cmd = command('lonely', 0);
    await req(host, 'create', cmd);
    silentHosts.add(host);
    await expect(nextHeartbeat(host, 2_500)).rejects.toThrow(/no heartbeat/);
    await expect(req(host, 'get', { instanceId: cmd.instanceId }, 1_000)).rejects.toThrow();
    // dead for fenceAfterSeconds: what ran there is down
    await waitFor('its instances down', () => fleet.instances(host)[0]?.state === 'stopped', 5_000);
    expect(await eventsOf('instance.stopped', cmd.instanceId)).toEqual([]);

    silentHosts.delete(host);
    const hb = await nextHeartbeat(host, 3_000);
    expect(hb.instances).toBe(1);
    expect(await eventsOf('host.fenced', host)).toEqual([]);
    const again = await waitFor('re-registration', async () => (await eventsOf('host.registered', host)).find((e) => e.data.reregistered));
    expect(again.data.fencedAt).toEqual(expect.any(String));
    const stops = await waitFor('instance.stopped', async () => {
      const evs = await eventsOf('instance.stopped', cmd.instanceId);
      return evs.length > 0 ? evs : undefined;
    });
    expect(stops.map((e) => e.data.reason)).toEqual(['the host was down (simulated)']);
    expect((await req(host, 'get', { instanceId: cmd.instanceId })).data.state).toBe('stopped');
  });

  it('answers a burst of creates across the fleet (counts only)', async () => {
    const before = fleet.commandCounts()['create'] ?? 0;
    const N = 2_000;
    const replies = await Promise.all(Array.from({ length: N }, (_, i) => req(fleet.hostIds[i % HOSTS]!, 'create', command('burst', i), 30_000)));
    expect(replies.filter((r) => r.ok && r.data.state === 'running')).toHaveLength(N);
    expect((fleet.commandCounts()['create'] ?? 0) - before).toBe(N);
    expect(fleet.instances().filter((i) => i.app === 'burst')).toHaveLength(N);
    await waitFor('every running event stored', () => fleet.pendingEvents() === 0, 30_000);
    expect((await client.events('orangery.evt.instance.running')).filter((e) => e.data.instanceId.startsWith('test:burst:'))).toHaveLength(N);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Subscription } from '@nats-io/nats-core';
import { SUBJECTS } from '@orangery/contracts';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, SimulatedFleet, waitFor } from '@orangery/testing';

// Swarm slots (issue 16) end to end: the built scheduler, ipam and migrator on real NATS
// (JetStream) and MariaDB, a SimulatedFleet of 3 swarm nodes of one cluster (answering
// SwarmCreateInstanceCommand with addresses of each node's own range, and moving tasks as
// swarm does) and 2 simulated docker hosts. The scheduler records what the swarm-agent
// answers, follows tasks swarm moves, replaces nothing of a silent node, and the migrator
// refuses any move that would change a swarm task's IP.
const dir = new HarnessDir('scheduler-swarm');
let nats: NatsServer;
let client: ContractClient;
let scale: ScaleWatcher;
let swarm: SimulatedFleet;
let docker: SimulatedFleet;
let runningEvents: Subscription;
const followed: Record<string, unknown>[] = [];
const silenced = new Set<string>();
const NODES = 3;

const common = (dbUrl: string) => ({
  ORANGERY_NATS_URL: nats.url,
  ORANGERY_DB_URL: dbUrl,
  ORANGERY_HEARTBEAT_SECONDS: '1',
  ORANGERY_LOST_AFTER_SECONDS: '3',
  ORANGERY_FENCE_AFTER_SECONDS: '3',
  ORANGERY_FENCE_MARGIN_SECONDS: '1',
  ORANGERY_AGENT_TIMEOUT_SECONDS: '10',
});

const request = (app: string, replicas: number, backend: 'swarm' | 'docker') => ({
  env: 'test',
  app,
  replicas,
  resources: { cpu: 0.5, memoryMb: 256, heapMb: 128 },
  image: 'svc:1',
  backend,
  pool: 'sim',
  spread: 'none' as const,
});

interface Instance {
  id: string;
  state: string;
  host: string;
  ip: string;
  mac: string;
  backend: string;
}

async function instances(app: string): Promise<Instance[]> {
  const r = await client.requestWithRetry('orangery.scheduler.instances.list', { env: 'test', app });
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return (r.data.instances as Instance[]).sort((a, b) => (a.id < b.id ? -1 : 1));
}

async function hostState(id: string): Promise<string | undefined> {
  const r = await client.requestWithRetry('orangery.scheduler.hosts.list', {});
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return (r.data.hosts as { id: string; state: string }[]).find((h) => h.id === id)?.state;
}

async function scaleAndWait(data: ReturnType<typeof request>) {
  const out = await scale.outcome(await scale.publish(data), 60_000);
  expect(out.type, JSON.stringify(out.data)).toBe('io.orangery.scale.completed');
  return out.data as { instances: { id: string; ip: string; host: string }[] };
}

/** What the swarm fleet runs, as the records should show it: id -> node and address. */
const swarmTasks = () =>
  Object.fromEntries(
    swarm
      .instances()
      .filter((i) => i.state === 'running')
      .map((i) => [i.instanceId, { host: i.hostId, ip: i.ip, mac: i.mac }]),
  );
const recorded = (list: Instance[]) => Object.fromEntries(list.map((i) => [i.id, { host: i.host, ip: i.ip, mac: i.mac }]));

beforeAll(async () => {
  nats = await NatsServer.start(dir);
  const dbUrl = await freshDatabase('scheduler_swarm');
  client = await ContractClient.connect(nats.url);
  scale = new ScaleWatcher(client.nc);
  runningEvents = client.nc.subscribe(SUBJECTS.event('instance', 'running'), {
    callback: (_e, msg) => {
      const ev = JSON.parse(new TextDecoder().decode(msg.data)) as { source: string; data: Record<string, unknown> };
      if (ev.source.includes('scheduler')) followed.push(ev.data);
    },
  });
  await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
  const pool = await client.request('orangery.ipam.pool.create', { name: 'sim', cidr: '198.19.0.0/16', gateway: '198.19.0.1', cooldownSeconds: 0 });
  expect(pool.ok, JSON.stringify(pool)).toBe(true);
  swarm = await SimulatedFleet.start({
    natsUrl: nats.url,
    hosts: NODES,
    idPrefix: 'lab-n',
    backend: 'swarm',
    cluster: 'lab',
    capacity: { cpu: 8, memoryMb: 16_384, diskMb: 100_000 },
    heartbeatSeconds: 1,
    silent: (h) => silenced.has(h),
  });
  docker = await SimulatedFleet.start({ natsUrl: nats.url, hosts: 2, idPrefix: 'dk-', heartbeatSeconds: 1 });
  const scheduler = await ServiceProcess.start(dir, 'scheduler', {
    ...common(dbUrl),
    ORANGERY_FAILED_GRACE_SECONDS: '1',
    ORANGERY_RECONCILE_SECONDS: '1',
    ORANGERY_ANTI_ENTROPY_SECONDS: '2',
  });
  await scheduler.waitForLog('leading: consuming scale requests', 60_000);
  await ServiceProcess.start(dir, 'migrator', { ...common(dbUrl), ORANGERY_MIGRATION_LEASE_SECONDS: '3' });
  await waitFor(
    'the swarm nodes and docker hosts ready',
    async () => {
      const res = await client.request('orangery.scheduler.hosts.list', {});
      return res.ok && res.data.hosts.filter((h: { state: string }) => h.state === 'ready').length === NODES + 2;
    },
    20_000,
  );
}, 120_000);

afterAll(async () => {
  runningEvents?.unsubscribe();
  scale?.close();
  await swarm?.stop();
  await docker?.stop();
  await client?.close();
  await dir.cleanup();
});

describe('scheduler on swarm (simulated swarm-agent)', () => {
  it("scales 6 on swarm: 6 running with the agent's addresses and nodes, no address allocated by the scheduler", async () => {
    const hosts = await client.requestWithRetry('orangery.scheduler.hosts.list', {});
    expect(hosts.data.hosts.filter((h: { backend: string }) => h.backend === 'swarm')).toHaveLength(NODES);
    const done = await scaleAndWait(request('web', 6, 'swarm'));
    const list = await instances('web');
    expect(list).toHaveLength(6);
    for (const i of list) expect(i).toMatchObject({ state: 'running', backend: 'swarm', host: expect.stringMatching(/^lab-n/) });
    // the records are what the fleet runs: node, IP (from the node's own range) and MAC
    expect(recorded(list)).toEqual(swarmTasks());
    for (const i of list) expect(i.ip).toMatch(/^198\.19\.1\d\d\./);
    expect(new Set(list.map((i) => i.ip)).size).toBe(6);
    // scale.completed shows the task's ip
    expect(Object.fromEntries(done.instances.map((i) => [i.id, [i.host, i.ip]]))).toEqual(Object.fromEntries(list.map((i) => [i.id, [i.host, i.ip]])));
    expect(swarm.commandCounts().create).toBe(6);
    // no address of the pool is the scheduler's: a swarm task's is its agent's to bind
    const usage = await client.request('orangery.ipam.pool.get', { name: 'sim' });
    expect(usage.ok, JSON.stringify(usage)).toBe(true);
    expect(usage.data.used).toBe(0);
  });

  it('follows 2 tasks swarm moves to another node: the records take the new node and IP, nothing removed or recreated', async () => {
    const before = await instances('web');
    const counts = swarm.commandCounts();
    const target = 'lab-n0003';
    const moving = before.filter((i) => i.host !== target).slice(0, 2);
    expect(moving).toHaveLength(2);
    const moved = moving.map((i) => swarm.moveTask(i.id, target));
    await waitFor(
      'instances.list to follow the moved tasks',
      async () => {
        const now = await instances('web');
        return moved.every((m) => now.some((i) => i.id === m.instanceId && i.host === target && i.ip === m.ip)) ? now : undefined;
      },
      20_000,
    );
    const after = await instances('web');
    expect(recorded(after)).toEqual(swarmTasks());
    expect(after.every((i) => i.state === 'running')).toBe(true);
    const now = swarm.commandCounts();
    expect(now.create).toBe(counts.create);
    expect(now.remove).toBe(counts.remove);
    expect(now.stop).toBe(counts.stop);
    expect(swarm.instances().filter((i) => i.state === 'running')).toHaveLength(6);
    // announced by the scheduler with the task's new address
    for (const m of moved) expect(followed).toContainEqual(expect.objectContaining({ instanceId: m.instanceId, hostId: target, ip: m.ip, backend: 'swarm' }));
  });

  it('refuses migrations into, out of and within swarm, and a drain of a swarm node, with IP_WOULD_CHANGE; nothing moves', async () => {
    await scaleAndWait(request('api', 1, 'docker'));
    const [api] = await instances('api');
    const [web] = await instances('web');
    const counts = { swarm: swarm.commandCounts(), docker: docker.commandCounts() };
    const refusals = [
      await client.request('orangery.migrator.migrate', { instanceId: web!.id }),
      await client.request('orangery.migrator.migrate', { instanceId: web!.id, toBackend: 'docker' }),
      await client.request('orangery.migrator.migrate', { instanceId: web!.id, toHost: 'lab-n0002' }),
      await client.request('orangery.migrator.migrate', { instanceId: api!.id, toBackend: 'swarm' }),
      await client.request('orangery.migrator.migrate', { instanceId: api!.id, toHost: 'lab-n0001' }),
      await client.request('orangery.migrator.drain', { hostId: 'lab-n0001' }),
    ];
    for (const r of refusals) {
      expect(r.ok, JSON.stringify(r)).toBe(false);
      expect(r.error.code, JSON.stringify(r)).toBe('IP_WOULD_CHANGE');
    }
    expect(refusals[5].error.message).toMatch(/docker node update --availability drain/);
    expect(await instances('api')).toEqual([api]);
    expect((await instances('web')).find((i) => i.id === web!.id)).toEqual(web);
    expect(await hostState('lab-n0001')).toBe('ready');
    expect(swarm.commandCounts()).toEqual(counts.swarm);
    expect(docker.commandCounts().create).toBe(counts.docker.create);
    expect(docker.commandCounts().stop).toBe(counts.docker.stop);
  });

  it('a silent swarm node is unknown in hosts.list and nothing of it is created elsewhere', async () => {
    const node = 'lab-n0003';
    const on = (await instances('web')).filter((i) => i.host === node);
    expect(on.length).toBeGreaterThan(0);
    const creates = swarm.commandCounts().create;
    silenced.add(node);
    await waitFor('the silent node to be unknown', async () => (await hostState(node)) === 'unknown', 15_000);
    // past lostAfter + fenceAfter + margin, several sweeps: still unknown, nothing replaced
    await new Promise((r) => setTimeout(r, 8_000));
    expect(await hostState(node)).toBe('unknown');
    expect(swarm.commandCounts().create).toBe(creates);
    expect(docker.commandCounts().create).toBe(1);
    const now = await instances('web');
    for (const i of on) expect(now.find((x) => x.id === i.id)).toMatchObject({ host: node, ip: i.ip, state: 'running' });
  });

  it('scales to 0: every service removed (through a live node for the silent one), the records gone', async () => {
    const creates = swarm.commandCounts().create;
    await scaleAndWait(request('web', 0, 'swarm'));
    expect(await instances('web')).toEqual([]);
    expect(swarm.instances().filter((i) => i.env === 'test' && i.app === 'web')).toEqual([]);
    expect(swarm.commandCounts().create).toBe(creates);
    expect(swarm.commandCounts().remove).toBeGreaterThanOrEqual(6);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SUBJECTS } from '@orangery/contracts';
import { waitFor, type ContractClient, type ServiceProcess } from '@orangery/testing';
import { ArpWatcher, LAB_IMAGES, SVC_INDEX, SVC_PORT, type Lab, type LabSwarm } from '../lab';
import { LabCluster } from './fixtures/lab-cluster';

// Issue 16 end to end, all real: env records in the scheduler; env `test` runs only on a
// Docker Swarm of 2 lab nodes (a swarm-agent), env `prod` only on docker and vmware (a
// docker-agent on a lab server, a vmware-agent on the lab's vCenter); all take addresses
// from one pool. 6 swarm replicas get 6 distinct addresses from the nodes' ipam blocks,
// bound in ipam and reachable from a legacy VM; a node drained in swarm moves its tasks
// and ipam follows; and an ARP watcher on the fabric (every address of the swarm blocks
// from their reservation on, every other instance address from its creation on) sees no
// address answered by two holders: swarm tasks, containers and VMs in one pool never
// share an IP.
const POOL = 'lab-net';
const CLUSTER = 'lsw';
const BLOCK_SIZE = 16;
const hostOf = (hostname: string) => `${CLUSTER}-${hostname}`;
/** the lab vCenter's ESXi hosts (vcsim), the vmware-agent's hosts */
const ESXI = ['esx01-lab-local', 'esx02-lab-local', 'esx03-lab-local'];

let cluster: LabCluster;
let lab: Lab;
let swarm: LabSwarm;
let client: ContractClient;
let watcher: ArpWatcher;
let swarmAgent: ServiceProcess;
const seenIps = new Set<string>();

const request = (env: string, app: string, replicas: number, extra: Record<string, unknown> = {}) => ({
  env,
  app,
  replicas,
  resources: { cpu: 0.1, memoryMb: 32, diskMb: 10 },
  image: LAB_IMAGES.svc,
  pool: POOL,
  ...extra,
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

const ipamGet = async (q: Record<string, unknown>): Promise<Json> => {
  const r = await client.requestWithRetry(SUBJECTS.ipam.get, q);
  return r.ok ? r.data : { error: r.error };
};

const blocks = async (): Promise<Json[]> => {
  const r = await client.requestWithRetry(SUBJECTS.ipam.blockList, { pool: POOL });
  if (!r.ok) throw new Error(`block.list: ${JSON.stringify(r)}`);
  return r.data.blocks;
};

const toInt = (ip: string) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
const inBlock = (ip: string, b: Json) => toInt(ip) >= toInt(b.first) && toInt(ip) <= toInt(b.last);

/** Every address we have seen in use is watched from then on. */
const watch = (ips: readonly string[]) => {
  for (const ip of ips) {
    if (seenIps.has(ip)) continue;
    seenIps.add(ip);
    watcher.add(ip);
  }
};

beforeAll(async () => {
  cluster = await LabCluster.start({ label: 'swarm-lab', lab: { servers: 1, legacyVms: 1, vcenter: true } });
  ({ lab, client } = cluster);
  swarm = await lab.addSwarm({ nodes: 2 });
  watcher = await ArpWatcher.start([]);
  await cluster.startIpam(POOL);
  await cluster.startDockerAgent(lab.servers[0]!);
  await cluster.startVmwareAgent();
  swarmAgent = await cluster.startService('swarm-agent', {
    ORANGERY_NATS_URL: cluster.nats.url,
    ORANGERY_SWARM_MANAGER: swarm.managerUrl,
    ORANGERY_SWARM_CLUSTER: CLUSTER,
    ORANGERY_SWARM_UPLINK: swarm.uplink,
    ORANGERY_SWARM_NODE_ENGINES: swarm.nodeEngines,
    ORANGERY_SWARM_BLOCK_SIZE: String(BLOCK_SIZE),
    ORANGERY_RESERVED_CPUS: '0',
    ORANGERY_RESERVED_MEMORY_MB: '512',
    ORANGERY_HEARTBEAT_SECONDS: '1',
    ORANGERY_SWARM_INVENTORY_SECONDS: '2',
  });
  await cluster.startScheduler({ ORANGERY_ANTI_ENTROPY_SECONDS: '2', ORANGERY_RECONCILE_SECONDS: '2' }, { leading: true });
  await cluster.waitHostsReady(3 + ESXI.length, { timeoutMs: 60_000 });
  for (const env of [
    { name: 'test', backends: ['swarm'] },
    { name: 'prod', backends: ['docker', 'vmware'] },
  ]) {
    const r = await client.request(SUBJECTS.scheduler.envsPut, env);
    expect(r.ok, JSON.stringify(r)).toBe(true);
  }
}, 300_000);

afterAll(async () => {
  await watcher?.stop().catch(() => undefined);
  await cluster?.close();
}, 180_000);

describe('environments and Docker Swarm in the lab', () => {
  it('reports each swarm node as a host of the cluster, beside the docker and ESXi hosts', async () => {
    const r = await client.request(SUBJECTS.scheduler.hostsList, {});
    expect(r.ok).toBe(true);
    const hosts = (r.data.hosts as Json[]).map((h) => [h.id, h.backend, h.state]).sort();
    expect(hosts).toEqual(
      [
        [hostOf('olab-sw1'), 'swarm', 'ready'],
        [hostOf('olab-sw2'), 'swarm', 'ready'],
        ...ESXI.map((h) => [h, 'vmware', 'ready']),
        ['olab-s1', 'docker', 'ready'],
      ].sort(),
    );
  });

  it('env test: 6 replicas land on swarm over both nodes, 6 distinct addresses from the nodes blocks, bound, reachable', async () => {
    const done = await cluster.scaleAndWait(request('test', 'web', 6), 240_000);
    expect(done.type, JSON.stringify(done.data)).toBe('io.orangery.scale.completed');
    const list = await cluster.instances('test', 'web');
    expect(list.map((i: Json) => i.state)).toEqual(Array(6).fill('running'));
    expect(new Set(list.map((i: Json) => i.ip)).size).toBe(6);
    expect(new Set(list.map((i: Json) => i.host))).toEqual(new Set([hostOf('olab-sw1'), hostOf('olab-sw2')]));
    watch(list.map((i: Json) => i.ip));
    const bs = await blocks();
    expect(bs.map((b) => b.host).sort()).toEqual([hostOf('olab-sw1'), hostOf('olab-sw2')]);
    for (const b of bs) expect(b.size).toBe(BLOCK_SIZE);
    // From now on every address of both blocks is on the watch (whoever may answer for it).
    for (const b of bs) for (let n = toInt(b.first); n <= toInt(b.last); n++) watch([[n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')]);
    for (const i of list) {
      const own = bs.find((b) => b.host === i.host);
      expect(own && inBlock(i.ip, own), `${i.ip} in the block of ${i.host}`).toBe(true);
      const a = await ipamGet({ ip: i.ip });
      expect([a.state, a.backend, a.host, a.instanceId, a.owner]).toEqual(['bound', 'swarm', i.host, i.id, { env: 'test', app: 'web', slot: i.slot }]);
      const body = await waitFor(`${i.ip} answers the legacy VM`, async () => (await lab.vmHttpGet(lab.vms[0]!, i.ip, SVC_PORT)) ?? undefined, 20_000, 250);
      expect(body).toBe(SVC_INDEX);
    }
    // swarm runs exactly these: one service per slot, each task on the node the record names
    const tasks = (await lab.swarmTasks()).filter((t) => t.desired === 'running' && t.state === 'running');
    expect(tasks).toHaveLength(6);
    expect(tasks.map((t) => `${hostOf(t.node!)} ${Object.values(t.ips)[0]}`).sort()).toEqual(list.map((i: Json) => `${i.host} ${i.ip}`).sort());
  }, 300_000);

  it('env prod: a request lands on the docker host, addresses outside every swarm block; backend swarm is POLICY_VIOLATION', async () => {
    const done = await cluster.scaleAndWait(request('prod', 'api', 4), 180_000);
    expect(done.type, JSON.stringify(done.data)).toBe('io.orangery.scale.completed');
    const list = await cluster.instances('prod', 'api');
    expect(list.map((i: Json) => [i.host, i.state])).toEqual(Array(4).fill(['olab-s1', 'running']));
    watch(list.map((i: Json) => i.ip));
    const bs = await blocks();
    for (const i of list) {
      expect(
        bs.some((b) => inBlock(i.ip, b)),
        `${i.ip} outside every swarm block`,
      ).toBe(false);
      expect((await ipamGet({ ip: i.ip })).backend).toBe('docker');
    }
    const refused = await cluster.scaleAndWait(request('prod', 'api2', 1, { backend: 'swarm' }));
    expect(refused.type).toBe('io.orangery.scale.rejected');
    expect(refused.data['reason']).toMatchObject({ code: 'POLICY_VIOLATION' });
    const refused2 = await cluster.scaleAndWait(request('test', 'web2', 1, { backend: 'docker' }));
    expect(refused2.type).toBe('io.orangery.scale.rejected');
    expect(refused2.data['reason']).toMatchObject({ code: 'POLICY_VIOLATION' });
    expect(await cluster.instances('prod', 'api2')).toEqual([]);
    expect(await cluster.instances('test', 'web2')).toEqual([]);
  }, 240_000);

  it('env prod: a request with a VM template lands on vmware, its address outside every swarm block', async () => {
    const vmReq = request('prod', 'legacy', 1, { image: undefined, template: 'centos7-jdk8' });
    const done = await cluster.scaleAndWait(vmReq, 180_000);
    expect(done.type, JSON.stringify(done.data)).toBe('io.orangery.scale.completed');
    const [vm] = await cluster.instances('prod', 'legacy');
    expect([vm.backend, ESXI.includes(vm.host), vm.state]).toEqual(['vmware', true, 'running']);
    watch([vm.ip]);
    expect((await blocks()).some((b) => inBlock(vm.ip, b))).toBe(false);
    expect((await ipamGet({ ip: vm.ip })).backend).toBe('vmware');
    expect(await waitFor(`${vm.ip} answers`, async () => (await lab.vmHttpGet(lab.vms[0]!, vm.ip, SVC_PORT)) ?? undefined, 30_000, 250)).toBe(SVC_INDEX);
    // a VM template in env test (swarm only) is refused by policy
    const refused = await cluster.scaleAndWait(request('test', 'legacy', 1, { image: undefined, template: 'centos7-jdk8', backend: 'vmware' }));
    expect(refused.data['reason']).toMatchObject({ code: 'POLICY_VIOLATION' });
    expect((await cluster.scaleAndWait({ ...vmReq, replicas: 0 }, 180_000)).type).toBe('io.orangery.scale.completed');
  }, 240_000);

  it('a node drained in swarm: its tasks move to the other node, ipam and the records follow, old addresses released', async () => {
    const before = await cluster.instances('test', 'web');
    const drained = 'olab-sw2';
    const moving = before.filter((i: Json) => i.host === hostOf(drained));
    expect(moving.length).toBeGreaterThan(0);
    await lab.setNodeAvailability(drained, 'drain');
    try {
      // swarm moves them (the manager's view) ...
      await waitFor(
        'swarm ran every task off the drained node',
        async () => {
          const run = (await lab.swarmTasks()).filter((t) => t.desired === 'running' && t.state === 'running');
          return run.length === 6 && run.every((t) => t.node !== drained);
        },
        90_000,
        500,
      );
      // ... and the scheduler's records follow
      const after = await waitFor(
        'records on the other node',
        async () => {
          const l = await cluster.instances('test', 'web');
          return l.length === 6 && l.every((i: Json) => i.host === hostOf('olab-sw1') && i.state === 'running') ? l : undefined;
        },
        90_000,
        500,
      );
      watch(after.map((i: Json) => i.ip));
      expect(new Set(after.map((i: Json) => i.ip)).size).toBe(6);
      const own = (await blocks()).find((b) => b.host === hostOf('olab-sw1'));
      for (const i of after) {
        expect(inBlock(i.ip, own), `${i.ip} in the block of olab-sw1`).toBe(true);
        await waitFor(
          `ipam binds ${i.ip} to ${i.id} on olab-sw1`,
          async () => {
            const a = await ipamGet({ ip: i.ip });
            return a.state === 'bound' && a.instanceId === i.id && a.host === hostOf('olab-sw1');
          },
          30_000,
          500,
        );
        expect(await waitFor(`${i.ip} answers`, async () => (await lab.vmHttpGet(lab.vms[0]!, i.ip, SVC_PORT)) ?? undefined, 20_000, 250)).toBe(SVC_INDEX);
      }
      // the moved slots' old addresses are no longer bound to anybody, and nothing answers them
      const now = new Set(after.map((i: Json) => i.ip));
      for (const i of moving) {
        if (now.has(i.ip)) continue;
        await waitFor(
          `${i.ip} released`,
          async () => {
            const a = await ipamGet({ ip: i.ip });
            return a.error?.code === 'NOT_FOUND' || a.state !== 'bound';
          },
          30_000,
          500,
        );
        expect(await lab.arpProbe(i.ip)).toBe(false);
      }
    } finally {
      await lab.setNodeAvailability(drained, 'active');
    }
  }, 300_000);

  it('throughout: no address answered by two holders on the fabric, and no address held by a swarm task and a container', async () => {
    await watcher.settled();
    const rep = watcher.report();
    expect(Object.keys(rep.ips).length).toBeGreaterThanOrEqual(10);
    expect(rep.duplicates, JSON.stringify(Object.values(rep.ips).filter((r) => r.duplicates > 0))).toBe(0);
    const swarmIps = new Set((await cluster.instances('test', 'web')).map((i: Json) => i.ip));
    const dockerIps = (await cluster.instances('prod', 'api')).map((i: Json) => i.ip);
    expect(dockerIps.filter((ip: string) => swarmIps.has(ip))).toEqual([]);
    expect(swarmAgent.hasLog('no engine for this swarm node')).toBe(false);
  });

  it('scale to 0 on both: swarm services and containers gone, addresses unbound', async () => {
    const last = [...(await cluster.instances('test', 'web')), ...(await cluster.instances('prod', 'api'))];
    for (const [env, app] of [
      ['test', 'web'],
      ['prod', 'api'],
    ] as const) {
      const done = await cluster.scaleAndWait(request(env, app, 0), 180_000);
      expect(done.type, JSON.stringify(done.data)).toBe('io.orangery.scale.completed');
    }
    expect((await lab.swarmDocker(['service', 'ls', '-q'])).trim()).toBe('');
    for (const i of last) {
      await waitFor(
        `${i.ip} unbound`,
        async () => {
          const a = await ipamGet({ ip: i.ip });
          return a.error?.code === 'NOT_FOUND' || a.state !== 'bound';
        },
        30_000,
        500,
      );
    }
  }, 240_000);
});

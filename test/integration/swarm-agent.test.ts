import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ServiceProcess, waitFor } from '@orangery/testing';
import { ArpWatcher, formatReport, Lab, LAB_GATEWAY, LAB_IMAGES, LAB_SUBNET, type LabSwarm } from '../lab';

// The swarm-agent (built, a real process) on the lab's 2-node swarm (a dockerd each in its
// own network namespace on the fabric), with the real ipam (its block calls), NATS and
// MariaDB. Run under `flock /tmp/orangery-lab.lock`. An ARP watcher on the fabric sees every
// task address throughout: never two holders.
const dir = new HarnessDir('swarm-agent');
const POOL = 'swarm-lab';
const CLUSTER = 'lab';
const host = (hostname: string) => `${CLUSTER}-${hostname}`;
const ipInt = (ip: string) => ip.split('.').reduce((n, b) => n * 256 + Number(b), 0);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyReply = any;

let lab: Lab;
let swarm: LabSwarm;
let nats: NatsServer;
let client: ContractClient;
let agent: ServiceProcess;
let watcher: ArpWatcher | undefined;
const hosts: string[] = [];

const ok = (r: AnyReply) => {
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return r.data;
};
const req = (subject: string, body: unknown, timeoutMs = 90_000): Promise<AnyReply> => client.request(subject, body, timeoutMs);
const create = (hostId: string, slot: number) =>
  req(`orangery.agent.${hostId}.instance.create`, {
    instanceId: `test:web:${slot}`,
    env: 'test',
    app: 'web',
    slot,
    image: LAB_IMAGES.svc,
    resources: { cpu: 0.1, memoryMb: 64, heapMb: 32 },
    pool: POOL,
  });
const blocks = async (): Promise<Record<string, { first: string; last: string }>> =>
  Object.fromEntries(ok(await req('orangery.ipam.block.list', { pool: POOL })).blocks.map((b: AnyReply) => [b.host, b]));
const inBlock = (ip: string, b: { first: string; last: string }) => ipInt(ip) >= ipInt(b.first) && ipInt(ip) <= ipInt(b.last);
const instances = async () => {
  const out: AnyReply[] = [];
  for (const h of hosts) out.push(...ok(await req(`orangery.agent.${h}.instance.list`, {})).instances);
  return out.sort((a, b) => a.slot - b.slot);
};

beforeAll(async () => {
  lab = await Lab.setup({ servers: 0, legacyVms: 1 });
  swarm = await lab.addSwarm({ nodes: 2 });
  nats = await NatsServer.start(dir);
  const dbUrl = await freshDatabase('swarm_agent');
  await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl, ORANGERY_OBSERVE_ADDR: '' });
  client = await ContractClient.connect(nats.url);
  // the lab's own addresses (gateway, VMs, swarm nodes, watcher tags) stay out of every block
  ok(await client.requestWithRetry('orangery.ipam.pool.create', { name: POOL, cidr: LAB_SUBNET, gateway: LAB_GATEWAY, reserved: ['198.18.0.2-198.18.0.255'] }));
  agent = await ServiceProcess.start(dir, 'swarm-agent', {
    ORANGERY_NATS_URL: nats.url,
    // Only the contract's variables: the manager by its hostname's socket, and no
    // ORANGERY_SWARM_NODE_ENGINES, so the agent derives the other nodes' engines from it (each
    // checked to be its node). swarm-lab.test.ts gives them explicitly as pairs.
    ORANGERY_SWARM_MANAGER: swarm.manager.engineByHostname,
    ORANGERY_SWARM_CLUSTER: CLUSTER,
    ORANGERY_SWARM_UPLINK: swarm.uplink,
    ORANGERY_SWARM_BLOCK_SIZE: '16',
    ORANGERY_RESERVED_MEMORY_MB: '64',
    ORANGERY_OBSERVE_ADDR: '',
  });
  hosts.push(...swarm.nodes.map((n) => host(n.hostname)));
}, 300_000);

afterAll(async () => {
  const report = await watcher?.stop();
  if (report) console.info(formatReport(report));
  await client?.close();
  await dir.cleanup();
  await lab?.teardown();
}, 180_000);

describe('swarm-agent on the lab swarm (2 nodes), real ipam', () => {
  it('reports every node as a host: backend swarm, its cluster, heartbeats', async () => {
    for (const h of hosts) {
      const facts = ok(await req(`orangery.agent.${h}.host.get`, {}));
      expect(facts).toMatchObject({ hostId: h, backend: 'swarm', cluster: CLUSTER, vlans: 'any' });
      expect(facts.capacity.cpu).toBeGreaterThan(0);
    }
    const seen = new Set<string>();
    const sub = client.nc.subscribe('orangery.hb.*', { callback: (_e, m) => void seen.add(m.json<{ hostId: string }>().hostId) });
    try {
      await waitFor('a heartbeat from every node', () => hosts.every((h) => seen.has(h)), 20_000);
    } finally {
      sub.unsubscribe();
    }
    const registered = await client.events('orangery.evt.host.registered');
    expect(registered.map((e) => e.subject).sort()).toEqual([...hosts].sort());
  });

  it('6 slots: 6 distinct addresses inside their nodes blocks, all bound in ipam, reachable from a legacy VM', async () => {
    const replies = [];
    for (let slot = 0; slot < 6; slot++) replies.push(ok(await create(hosts[slot % 2]!, slot)));
    const ips = replies.map((r) => r.ip);
    expect(new Set(ips).size).toBe(6);
    watcher = await ArpWatcher.start(ips);
    const b = await blocks();
    expect(Object.keys(b).sort()).toEqual([...hosts].sort());
    for (const r of replies) {
      expect(r).toMatchObject({ backend: 'swarm', state: 'running' });
      expect(hosts).toContain(r.hostId);
      expect(inBlock(r.ip, b[r.hostId]!), `${r.ip} in ${r.hostId}'s block`).toBe(true);
      const a = ok(await req('orangery.ipam.get', { ip: r.ip }));
      expect(a).toMatchObject({ state: 'bound', backend: 'swarm', host: r.hostId, instanceId: r.instanceId, owner: { env: 'test', app: 'web', slot: r.slot } });
    }
    // swarm spread them over both nodes
    expect(new Set(replies.map((r) => r.hostId)).size).toBe(2);
    for (const ip of ips) expect(await lab.vmPing(lab.vms[0]!, ip), `ping ${ip}`).toBe(true);
    // a create again is the same instance
    expect(ok(await create(hosts[1]!, 0)).ip).toBe(replies[0].ip);
  });

  it('a killed task: swarm replaces it, ipam follows (bound to the new task on its node), events failed then running', async () => {
    const before = (await instances()).find((i) => i.slot === 0);
    const node = swarm.nodes.find((n) => host(n.hostname) === before.hostId)!;
    await lab.docker(node, ['rm', '-f', before.containerId]);
    const after = await waitFor(
      'slot 0 running again in a new container',
      async () => {
        const i = ok(await req(`orangery.agent.${hosts[0]}.instance.get`, { instanceId: 'test:web:0' }));
        return i.state === 'running' && i.containerId !== before.containerId ? i : undefined;
      },
      60_000,
    );
    watcher!.add(after.ip);
    await waitFor(
      'ipam bound to the new task',
      async () => {
        const a = ok(await req('orangery.ipam.get', { owner: { env: 'test', app: 'web', slot: 0 } }));
        return a.ip === after.ip && a.state === 'bound' && a.host === after.hostId ? a : undefined;
      },
      20_000,
    );
    expect(await lab.vmPing(lab.vms[0]!, after.ip)).toBe(true);
    const evts = (await client.events('orangery.evt.instance.>')).filter((e) => e.subject === 'test:web:0').map((e) => e.type);
    expect(evts).toContain('io.orangery.instance.failed');
    expect(evts.lastIndexOf('io.orangery.instance.running')).toBeGreaterThan(evts.indexOf('io.orangery.instance.failed'));
  });

  it('a drained node: its tasks move, new bindings in the other node block, the old addresses released', async () => {
    const [keep, drain] = hosts;
    const before = await instances();
    const moving = before.filter((i) => i.hostId === drain);
    expect(moving.length).toBeGreaterThan(0);
    await lab.setNodeAvailability(swarm.nodes[1]!, 'drain');
    const after = await waitFor(
      `every slot running on ${keep}`,
      async () => {
        const all = await instances();
        return all.length === 6 && all.every((i) => i.hostId === keep && i.state === 'running') ? all : undefined;
      },
      90_000,
    );
    for (const i of after) watcher!.add(i.ip);
    const b = await blocks();
    await waitFor(
      'ipam follows every moved slot',
      async () => {
        for (const i of after) {
          const a = ok(await req('orangery.ipam.get', { owner: { env: 'test', app: 'web', slot: i.slot } }));
          if (a.ip !== i.ip || a.state !== 'bound' || a.host !== keep) return undefined;
        }
        return true;
      },
      30_000,
    );
    for (const i of after) expect(inBlock(i.ip, b[keep]!)).toBe(true);
    for (const m of moving) {
      const a = await req('orangery.ipam.get', { ip: m.ip });
      // released (or never held again by anyone): not bound to a task that is gone
      if (a.ok) expect(a.data.state === 'released' || a.data.instanceId !== m.instanceId).toBe(true);
    }
    for (const i of after) expect(await lab.vmPing(lab.vms[0]!, i.ip), `ping ${i.ip}`).toBe(true);
    await lab.setNodeAvailability(swarm.nodes[1]!, 'active');
  });

  it('remove: the service is gone, the address unbound', async () => {
    const all = await instances();
    for (const i of all) expect(ok(await req(`orangery.agent.${i.hostId}.instance.remove`, { instanceId: i.instanceId })).state).toBe('removed');
    expect(await instances()).toEqual([]);
    for (const i of all) {
      const a = await req('orangery.ipam.get', { ip: i.ip });
      if (a.ok) expect(a.data.state).toBe('released');
    }
    expect((await lab.swarmTasks()).filter((t) => t.state === 'running')).toEqual([]);
    const gone = await req(`orangery.agent.${hosts[0]}.instance.get`, { instanceId: 'test:web:0' });
    expect(gone.error.code).toBe('NOT_FOUND');
  });

  it('the ARP watcher saw no address answered by two holders at once', async () => {
    const report = watcher!.report();
    expect(report.duplicates, formatReport(report)).toBe(0);
    expect(agent.stderr).not.toMatch(/ERROR|Unhandled/);
  });
});

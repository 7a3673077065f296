import { describe, expect, it } from 'vitest';
import { OrangeryError, type SwarmCreateInstanceCommand } from '@orangery/contracts';
import { ipv4ToInt } from '@orangery/netaddr';
import type { DomainLog, EventSink, InstanceEventKind } from './ports';
import { SwarmAgentService } from './swarm-agent.service';
import { SwarmNodes } from './swarm-nodes';
import { TaskWatch } from './task-watch';
import { FakeBlockIpam, FakeSwarm, swarmEngineOf } from './testing/fake-swarm';

class Events implements EventSink {
  readonly list: { hostId: string; area: string; what: string; subject: string; data: Record<string, unknown> }[] = [];
  instance(hostId: string, what: InstanceEventKind, instanceId: string, data: Record<string, unknown>): void {
    this.list.push({ hostId, area: 'instance', what, subject: instanceId, data });
  }
  host(hostId: string, what: string, data: Record<string, unknown>): void {
    this.list.push({ hostId, area: 'host', what, subject: hostId, data });
  }
  of(what: string, subject?: string) {
    return this.list.filter((e) => e.what === what && (subject === undefined || e.subject === subject));
  }
}

const log: DomainLog = { info: () => undefined, warn: () => undefined, error: () => undefined };

function world(opts: { nodes?: { name: string; engine?: boolean }[]; blockSize?: number; retentionMs?: number } = {}) {
  const swarm = new FakeSwarm();
  for (const n of opts.nodes ?? [{ name: 'sw1' }, { name: 'sw2' }]) swarm.addNode(n.name, { engine: n.engine });
  const ipam = new FakeBlockIpam({ lab: { cidr: '198.18.0.0/24', gateway: '198.18.0.1' } });
  const events = new Events();
  const engine = swarmEngineOf(swarm);
  const clock = { ms: 0 };
  const nodes = new SwarmNodes(
    { swarm: engine, engines: swarm, ipam, events, log, engineVersion: 'fake', now: () => clock.ms },
    {
      cluster: 'lab',
      uplink: 'eth0',
      reservedCpus: 1,
      reservedMemoryMb: 1024,
      blockSize: opts.blockSize ?? 16,
      nodeDiskMb: 102_400,
      leftoverRetentionMs: opts.retentionMs ?? 0,
    },
  );
  const watch = new TaskWatch({ swarm: engine, engines: swarm, ipam, nodes, events, log });
  let t = 0;
  const agent = new SwarmAgentService(
    { swarm: engine, nodes, watch, events, log, sleep: async (ms) => void (t += ms), now: () => t },
    { cluster: 'lab', pidsLimit: 4096, startTimeoutMs: 5_000, stopTimeoutMs: 5_000, pollMs: 100 },
  );
  const sync = async () => {
    nodes.inventory(await engine.nodes());
    await nodes.refreshNetworks();
    await watch.pass();
  };
  return { swarm, ipam, events, nodes, watch, agent, sync, clock, engine };
}

const cmd = (slot: number, over: Partial<SwarmCreateInstanceCommand> = {}): SwarmCreateInstanceCommand => ({
  instanceId: `test:web:${slot}`,
  env: 'test',
  app: 'web',
  slot,
  image: 'olab/app:1',
  resources: { cpu: 0.5, memoryMb: 256, heapMb: 512 },
  pool: 'lab',
  ...over,
});

async function refusal(p: Promise<unknown>): Promise<OrangeryError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(Error);
  return e as OrangeryError;
}

describe('swarm nodes as hosts', () => {
  it('reports every node as a host <cluster>-<hostname> with backend swarm, its cluster, and capacity less the reservations', async () => {
    const w = world({ nodes: [{ name: 'SW1.lab' }, { name: 'sw2' }] });
    await w.sync();
    expect(w.nodes.hostIds.sort()).toEqual(['lab-sw1-lab', 'lab-sw2']);
    const facts = w.nodes.factsOf('lab-sw2');
    expect(facts).toMatchObject({ backend: 'swarm', cluster: 'lab', total: { cpu: 4, memoryMb: 8192 }, capacity: { cpu: 3, memoryMb: 7168 } });
    expect(
      w.events
        .of('registered')
        .map((e) => e.hostId)
        .sort(),
    ).toEqual(['lab-sw1-lab', 'lab-sw2']);
  });

  it('sends heartbeats for ready nodes only, with what their orangery tasks were given', async () => {
    const w = world();
    await w.sync();
    await w.agent.create('lab-sw1', cmd(0));
    await w.watch.pass();
    w.swarm.setState('sw2', 'down');
    w.nodes.inventory(await swarmEngineOf(w.swarm).nodes());
    const hbs = w.nodes.heartbeats(w.watch.allocatedByHost(), new Date());
    const running = w.watch.find('test:web:0')!.hostId;
    expect(hbs.map((h) => h.hostId)).toEqual(running === 'lab-sw1' ? ['lab-sw1'] : []);
    if (running === 'lab-sw1') expect(hbs[0]).toMatchObject({ instances: 1, allocated: { cpu: 0.5, memoryMb: 768 } });
  });

  it('a host id that does not exist is NOT_FOUND', async () => {
    const w = world();
    await w.sync();
    expect((await refusal(Promise.resolve().then(() => w.nodes.factsOf('lab-nope')))).code).toBe('NOT_FOUND');
  });
});

describe('networks: one ipam block per node and pool', () => {
  it('gives each node its own block as the config network range, labels it ready, and builds the swarm network from them', async () => {
    const w = world();
    await w.sync();
    await w.agent.create('lab-sw1', cmd(0));
    const ranges = w.swarm.nodes.map((n) => w.swarm.configNetworks.get(n.id)?.get('orangery-swcfg-lab')?.ipRange);
    expect(ranges.every((r) => r !== undefined)).toBe(true);
    expect(new Set(ranges).size).toBe(2);
    expect(w.ipam.blocks.map((b) => b.host).sort()).toEqual(['lab-sw1', 'lab-sw2']);
    expect(w.swarm.nodes.every((n) => n.labels['orangery.net.lab'] === '1')).toBe(true);
    expect(w.swarm.swarmNetworks.get('orangery-sw-lab')).toMatchObject({ configFrom: 'orangery-swcfg-lab' });
  });

  it('a node whose engine the agent cannot reach gets no block, no label, and so no task', async () => {
    const w = world({ nodes: [{ name: 'sw1' }, { name: 'sw2', engine: false }] });
    await w.sync();
    for (let slot = 0; slot < 3; slot++) await w.agent.create('lab-sw1', cmd(slot));
    expect(w.ipam.blocks.map((b) => b.host)).toEqual(['lab-sw1']);
    expect(w.swarm.nodes.find((n) => n.hostname === 'sw2')!.labels['orangery.net.lab']).toBeUndefined();
    expect(new Set(w.swarm.runningAddresses().map((a) => a.nodeId))).toEqual(new Set([w.swarm.nodes[0]!.id]));
  });

  it("a node whose configured engine is another node's gets no network there, no block, no label, no task; once right, it does", async () => {
    const w = world({ nodes: [{ name: 'sw1' }, { name: 'sw2' }] });
    const [sw1, sw2] = w.swarm.nodes;
    // ORANGERY_SWARM_NODE_ENGINES sends sw2's engine calls to sw1's engine.
    w.swarm.wrongEngine.set('sw2', sw1!.id);
    await w.sync();
    for (let slot = 0; slot < 3; slot++) await w.agent.create('lab-sw1', cmd(slot));
    expect(w.ipam.blocks.map((b) => b.host)).toEqual(['lab-sw1']);
    expect(w.swarm.configNetworks.get(sw2!.id)).toBeUndefined();
    expect([...(w.swarm.configNetworks.get(sw1!.id)?.values() ?? [])].map((n) => n.ipRange)).toHaveLength(1);
    expect(sw2!.labels['orangery.net.lab']).toBeUndefined();
    expect(new Set(w.swarm.runningAddresses().map((a) => a.nodeId))).toEqual(new Set([sw1!.id]));
    w.swarm.wrongEngine.delete('sw2');
    await w.sync();
    expect(w.ipam.blocks.map((b) => b.host).sort()).toEqual(['lab-sw1', 'lab-sw2']);
    expect(sw2!.labels['orangery.net.lab']).toBe('1');
  });

  it('a create for a pool ipam does not know is POOL_NOT_FOUND and creates no service', async () => {
    const w = world();
    await w.sync();
    const e = await refusal(w.agent.create('lab-sw1', cmd(0, { pool: 'nope' })));
    expect(e.code).toBe('POOL_NOT_FOUND');
    expect(w.swarm.services.size).toBe(0);
  });

  it("a node that leaves the swarm returns its block once its tasks' addresses are unbound", async () => {
    const w = world();
    await w.sync();
    await w.agent.create('lab-sw1', cmd(0));
    await w.agent.create('lab-sw1', cmd(1));
    w.swarm.leave('sw2');
    await w.sync();
    await w.sync();
    expect(w.ipam.blocks.map((b) => b.host)).toEqual(['lab-sw1']);
    expect(w.nodes.hostIds).toEqual(['lab-sw1']);
  });
});

describe('instances as swarm services', () => {
  it('6 slots over 2 nodes get 6 distinct addresses, each inside its node block and bound in ipam to its instance', async () => {
    const w = world();
    await w.sync();
    const replies = [];
    for (let slot = 0; slot < 6; slot++) replies.push(await w.agent.create('lab-sw1', cmd(slot)));
    expect(new Set(replies.map((r) => r.ip)).size).toBe(6);
    for (const r of replies) {
      expect(r).toMatchObject({ backend: 'swarm', state: 'running' });
      const block = w.ipam.blocks.find((b) => b.host === r.hostId)!;
      expect(ipv4ToInt(r.ip)).toBeGreaterThanOrEqual(ipv4ToInt(block.first));
      expect(ipv4ToInt(r.ip)).toBeLessThanOrEqual(ipv4ToInt(block.last));
      expect(w.ipam.boundIps().get(r.ip)).toBe(r.instanceId);
    }
    expect(new Set(replies.map((r) => r.hostId))).toEqual(new Set(['lab-sw1', 'lab-sw2']));
  });

  it('the service carries the resources and hardening swarm supports, and is constrained to nodes with the pool network', async () => {
    const w = world();
    await w.sync();
    await w.agent.create('lab-sw1', cmd(0, { security: { addCapabilities: ['NET_RAW'], pidsLimit: 100 } }));
    const plan = [...w.swarm.services.values()][0]!.plan;
    expect(plan).toMatchObject({
      name: 'orangery-test-web-0',
      memoryMb: 768,
      nanoCpus: 5e8,
      pidsLimit: 100,
      replicas: 1,
      constraints: ['node.labels.orangery.net.lab==1'],
      network: 'orangery-sw-lab',
    });
    expect(plan.capDrop).not.toContain('NET_RAW');
    expect(plan.capDrop).toContain('MKNOD');
    expect(plan.labels).toMatchObject({
      'io.orangery.app': 'web',
      'io.orangery.env': 'test',
      'io.orangery.slot': '0',
      'io.orangery.instance-id': 'test:web:0',
    });
  });

  it('a create is idempotent per instance id; another spec for it is INSTANCE_CONFLICT', async () => {
    const w = world();
    await w.sync();
    const a = await w.agent.create('lab-sw1', cmd(0));
    const b = await w.agent.create('lab-sw2', cmd(0));
    expect(b.ip).toBe(a.ip);
    expect(w.swarm.services.size).toBe(1);
    expect((await refusal(w.agent.create('lab-sw1', cmd(0, { image: 'olab/app:2' })))).code).toBe('INSTANCE_CONFLICT');
  });

  it('a missing image is IMAGE_NOT_FOUND with an instance.failed event, and leaves no service behind', async () => {
    const w = world();
    await w.sync();
    w.swarm.missingImages.add('olab/none:1');
    const e = await refusal(w.agent.create('lab-sw1', cmd(0, { image: 'olab/none:1' })));
    expect(e.code).toBe('IMAGE_NOT_FOUND');
    expect(w.swarm.services.size).toBe(0);
    expect(w.events.of('failed', 'test:web:0')).toHaveLength(1);
  });

  it('a task that never runs is START_FAILED after the bounded wait, and leaves no service behind', async () => {
    const w = world();
    await w.sync();
    w.swarm.autoSettle = false;
    const e = await refusal(w.agent.create('lab-sw1', cmd(0)));
    expect(e.code).toBe('START_FAILED');
    expect(w.swarm.services.size).toBe(0);
  });

  it('stop scales to 0 and unbinds; start runs it again and binds its (new) address; remove unbinds and is gone', async () => {
    const w = world();
    await w.sync();
    const a = await w.agent.create('lab-sw1', cmd(0));
    const stopped = await w.agent.stop(a.hostId, { instanceId: 'test:web:0' });
    expect(stopped.state).toBe('stopped');
    expect(w.ipam.boundIps().size).toBe(0);
    const started = await w.agent.start(a.hostId, 'test:web:0');
    expect(started.state).toBe('running');
    expect(w.ipam.boundIps().get(started.ip)).toBe('test:web:0');
    const removed = await w.agent.remove(started.hostId, 'test:web:0');
    expect(removed.state).toBe('removed');
    expect(w.swarm.services.size).toBe(0);
    expect(w.ipam.boundIps().size).toBe(0);
    expect(w.events.of('removed', 'test:web:0')).toHaveLength(1);
    expect((await refusal(w.agent.get('lab-sw1', 'test:web:0'))).code).toBe('NOT_FOUND');
  });

  it('list answers the instances whose task runs on that node', async () => {
    const w = world();
    await w.sync();
    for (let slot = 0; slot < 4; slot++) await w.agent.create('lab-sw1', cmd(slot));
    await w.watch.pass();
    const l1 = w.agent.list('lab-sw1').instances;
    const l2 = w.agent.list('lab-sw2').instances;
    expect(l1.length + l2.length).toBe(4);
    expect(l1.every((i) => i.hostId === 'lab-sw1')).toBe(true);
    expect(l2.every((i) => i.hostId === 'lab-sw2')).toBe(true);
  });
});

describe('the watch keeps ipam true as swarm moves tasks', () => {
  it('a killed task is replaced: instance.failed then instance.running, ipam follows to the new address', async () => {
    const w = world();
    await w.sync();
    const a = await w.agent.create('lab-sw1', cmd(0));
    await w.watch.pass();
    w.swarm.kill('test:web:0');
    await w.watch.pass();
    const now = w.watch.find('test:web:0')!;
    expect(now.state).toBe('running');
    expect(w.events.of('failed', 'test:web:0')).toHaveLength(1);
    expect(w.events.of('running', 'test:web:0').length).toBeGreaterThanOrEqual(2);
    expect([...w.ipam.boundIps()]).toEqual([[now.ip, 'test:web:0']]);
    expect(a.ip).toBeDefined();
  });

  it('a drained node: its tasks move, new addresses in the other node block are bound, the old ones released', async () => {
    const w = world();
    await w.sync();
    for (let slot = 0; slot < 6; slot++) await w.agent.create('lab-sw1', cmd(slot));
    await w.watch.pass();
    const onSw2 = w.watch.instances.filter((o) => o.hostId === 'lab-sw2').map((o) => o.ip);
    expect(onSw2.length).toBeGreaterThan(0);
    w.swarm.drain('sw2');
    await w.watch.pass();
    const bound = w.ipam.boundIps();
    expect(bound.size).toBe(6);
    const sw1 = w.ipam.blocks.find((b) => b.host === 'lab-sw1')!;
    for (const ip of bound.keys()) expect(ipv4ToInt(ip) >= ipv4ToInt(sw1.first) && ipv4ToInt(ip) <= ipv4ToInt(sw1.last)).toBe(true);
    for (const ip of onSw2) expect(bound.has(ip!)).toBe(false);
    expect(w.watch.instances.every((o) => o.hostId === 'lab-sw1' && o.state === 'running')).toBe(true);
  });

  it('ipam unreachable: nothing is stopped or removed, the bindings are made once it answers again', async () => {
    const w = world();
    await w.sync();
    await w.agent.create('lab-sw1', cmd(0));
    await w.watch.pass();
    w.ipam.available = false;
    w.swarm.kill('test:web:0');
    await w.watch.pass();
    await w.watch.pass();
    expect(w.swarm.services.size).toBe(1);
    const now = w.watch.find('test:web:0')!;
    expect(now.state).toBe('running');
    w.ipam.available = true;
    await w.watch.pass();
    expect([...w.ipam.boundIps()]).toEqual([[now.ip, 'test:web:0']]);
  });

  it('an address Docker hands to a new task before the old binding went is re-bound to the new instance', async () => {
    const w = world();
    await w.sync();
    const a = await w.agent.create('lab-sw1', cmd(0));
    // the old holder's binding is left in ipam (as after an agent restart), then the slot is removed behind the agent's back
    w.swarm.services.clear();
    for (const t of [...w.swarm.taskList]) w.swarm.taskList.splice(w.swarm.taskList.indexOf(t), 1);
    w.swarm.containers.clear();
    const b = await w.agent.create(a.hostId, cmd(7));
    expect(b.ip).toBe(a.ip);
    expect(w.ipam.boundIps().get(b.ip)).toBe('test:web:7');
  });

  it('removed behind the agent: instance.removed and the address unbound', async () => {
    const w = world();
    await w.sync();
    await w.agent.create('lab-sw1', cmd(0));
    await w.watch.pass();
    await swarmEngineOf(w.swarm).removeService([...w.swarm.services.keys()][0]!);
    await w.watch.pass();
    expect(w.events.of('removed', 'test:web:0')).toHaveLength(1);
    expect(w.ipam.boundIps().size).toBe(0);
  });

  it("a command's bind during a pass that read the instance before it ran is never undone by that pass", async () => {
    const w = world();
    await w.sync();
    w.swarm.autoSettle = false;
    const engine = swarmEngineOf(w.swarm);
    await w.nodes.ensurePool('lab');
    const { planService } = await import('./service-spec');
    await engine.createService(planService(cmd(3), { pidsLimit: 4096, cluster: 'lab' }));
    let commandBind: Promise<boolean> | undefined;
    // the pass reads slot 3 not running yet, then asks ipam what its owner holds; meanwhile
    // the task runs and the create's bind goes through
    w.ipam.beforeHeld = async () => {
      w.swarm.settle();
      commandBind = w.watch.observeService('test:web:3').then((o) => w.watch.bindNow(o!));
      await Promise.race([commandBind, new Promise((r) => setTimeout(r, 50))]);
    };
    await w.watch.pass();
    expect(await commandBind).toBe(true);
    await w.watch.pass();
    const running = w.watch.find('test:web:3')!;
    expect(running.state).toBe('running');
    expect(w.ipam.boundIps().get(running.ip!)).toBe('test:web:3');
  });

  it('no two running tasks ever share an address, whatever moves', async () => {
    const w = world({ blockSize: 8 });
    await w.sync();
    for (let slot = 0; slot < 6; slot++) await w.agent.create('lab-sw1', cmd(slot));
    for (let i = 0; i < 6; i++) {
      w.swarm.kill(`test:web:${i}`);
      await w.watch.pass();
      const ips = w.swarm.runningAddresses().map((x) => x.ip);
      expect(new Set(ips).size).toBe(ips.length);
    }
  });
});

describe("a departed node's block is held while its containers may still be on the wire", () => {
  const HOUR = 3_600_000;

  it('a node that rejoins under the same hostname keeps its block, whatever was queued', async () => {
    const w = world();
    await w.sync();
    await w.agent.create('lab-sw1', cmd(0));
    const before = w.ipam.blocks.find((b) => b.host === 'lab-sw2')!;
    expect(before).toBeDefined();
    w.swarm.leave('sw2');
    // the departure seen, then the node back before any release pass
    w.nodes.inventory(await w.engine.nodes());
    w.swarm.addNode('sw2');
    w.nodes.inventory(await w.engine.nodes());
    await w.sync();
    await w.sync();
    expect(w.nodes.hostIds.sort()).toEqual(['lab-sw1', 'lab-sw2']);
    expect(w.ipam.blocks.find((b) => b.host === 'lab-sw2')).toBe(before);
  });

  it('a rejoin during the retention drops the pending release: the block is never released later', async () => {
    const w = world({ retentionMs: HOUR });
    await w.sync();
    await w.agent.create('lab-sw1', cmd(0));
    const before = w.ipam.blocks.find((b) => b.host === 'lab-sw2')!;
    expect(before).toBeDefined();
    w.swarm.leave('sw2');
    await w.sync();
    w.swarm.addNode('sw2');
    await w.sync();
    w.clock.ms = 2 * HOUR;
    await w.sync();
    expect(w.ipam.blocks.find((b) => b.host === 'lab-sw2')).toBe(before);
  });

  it('a departed node keeps its block until ORANGERY_LEFTOVER_RETENTION_HOURS passed since it was first seen gone, then it goes back', async () => {
    const w = world({ retentionMs: 24 * HOUR });
    await w.sync();
    await w.agent.create('lab-sw1', cmd(0));
    await w.agent.create('lab-sw1', cmd(1));
    w.clock.ms = 10 * HOUR;
    w.swarm.leave('sw2');
    await w.sync();
    await w.sync();
    expect(w.nodes.hostIds).toEqual(['lab-sw1']);
    expect(w.ipam.blocks.map((b) => b.host).sort()).toEqual(['lab-sw1', 'lab-sw2']);
    w.clock.ms = 34 * HOUR - 1;
    await w.sync();
    expect(w.ipam.blocks.map((b) => b.host).sort()).toEqual(['lab-sw1', 'lab-sw2']);
    w.clock.ms = 34 * HOUR;
    await w.sync();
    expect(w.ipam.blocks.map((b) => b.host)).toEqual(['lab-sw1']);
  });
});

describe("the env's hostLabels on swarm", () => {
  it('become placement constraints (node labels, node/role as hostname/role); the task runs only where they hold', async () => {
    const w = world();
    w.swarm.nodes[1]!.labels['zone'] = 'b';
    await w.sync();
    const r = await w.agent.create('lab-sw1', cmd(0, { hostLabels: { zone: 'b', role: 'worker', node: 'sw2', cluster: 'lab' } }));
    const plan = [...w.swarm.services.values()][0]!.plan;
    expect(plan.constraints).toEqual(['node.labels.orangery.net.lab==1', 'node.hostname==sw2', 'node.role==worker', 'node.labels.zone==b']);
    expect(r.hostId).toBe('lab-sw2');
  });

  it.each([[{ zone: 'a,node.role==manager' }], [{ 'zone==a': 'b' }], [{ zone: 'a!' }], [{ 'zo ne': 'a' }], [{ zone: 'a\n' }], [{ cluster: 'other' }]])(
    '%o is INVALID_REQUEST (field hostLabels) and creates nothing',
    async (hostLabels) => {
      const w = world();
      await w.sync();
      const e = await refusal(w.agent.create('lab-sw1', cmd(0, { hostLabels })));
      expect(e).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'hostLabels' } });
      expect(w.swarm.services.size).toBe(0);
    },
  );

  it('are part of the spec: other hostLabels for an existing instance are INSTANCE_CONFLICT; none keeps the hash of before', async () => {
    const { swarmSpecHash } = await import('./service-spec');
    expect(swarmSpecHash(cmd(0, { hostLabels: {} }))).toBe(swarmSpecHash(cmd(0)));
    const w = world();
    await w.sync();
    await w.agent.create('lab-sw1', cmd(0, { hostLabels: { role: 'worker' } }));
    expect((await w.agent.create('lab-sw1', cmd(0, { hostLabels: { role: 'worker' } }))).state).toBe('running');
    expect((await refusal(w.agent.create('lab-sw1', cmd(0, { hostLabels: { role: 'manager' } })))).code).toBe('INSTANCE_CONFLICT');
  });
});

describe('bindings the watch leaves alone', () => {
  const restarted = (w: ReturnType<typeof world>, engineDown: boolean) =>
    new TaskWatch({
      swarm: w.engine,
      engines: {
        forNode: (h, id) => {
          const e = w.swarm.forNode(h, id);
          return e && engineDown
            ? {
                ...e,
                containerAddress: async () => {
                  throw new Error('node engine down');
                },
              }
            : e;
        },
      },
      ipam: w.ipam,
      nodes: w.nodes,
      events: w.events,
      log,
    });

  it('a running task whose address cannot be read yet (agent restarted, node engine down) keeps its binding', async () => {
    const w = world();
    await w.sync();
    const a = await w.agent.create('lab-sw1', cmd(0));
    for (const t of w.swarm.taskList) t.addresses = {};
    const watch = restarted(w, true);
    await watch.pass();
    await watch.pass();
    expect(watch.find('test:web:0')).toMatchObject({ addressUnknown: true });
    expect(w.ipam.boundIps().get(a.ip)).toBe('test:web:0');
    expect(w.ipam.unbinds).toEqual([]);
  });

  it('every unbind names its instance', async () => {
    const w = world();
    await w.sync();
    const a = await w.agent.create('lab-sw1', cmd(0));
    await w.agent.stop(a.hostId, { instanceId: 'test:web:0' });
    await w.agent.start(a.hostId, 'test:web:0');
    w.swarm.kill('test:web:0');
    await w.watch.pass();
    await w.agent.remove(a.hostId, 'test:web:0');
    expect(w.ipam.unbinds.length).toBeGreaterThan(0);
    expect(w.ipam.unbinds.every((u) => u.instanceId === 'test:web:0')).toBe(true);
  });

  it("a leftover binding is dropped only when its host is one of this agent's nodes", async () => {
    const w = world();
    await w.sync();
    const a = await w.agent.create('lab-sw1', cmd(0));
    await w.agent.stop(a.hostId, { instanceId: 'test:web:0' });
    const owner = { env: 'test', app: 'web', slot: 0 };
    w.ipam.allocations.set('198.18.0.200', { ip: '198.18.0.200', pool: 'lab', owner, state: 'bound', instanceId: 'test:web:0', host: 'other-sw9' });
    await restarted(w, false).pass();
    expect(w.ipam.boundIps().get('198.18.0.200')).toBe('test:web:0');
    w.ipam.allocations.set('198.18.0.200', { ip: '198.18.0.200', pool: 'lab', owner, state: 'bound', instanceId: 'test:web:0', host: 'lab-sw2' });
    await restarted(w, false).pass();
    expect(w.ipam.boundIps().get('198.18.0.200')).toBeUndefined();
  });
});

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '@orangery/testing';
import { cleanLabLeftovers, Lab, LAB_GATEWAY, LAB_IMAGES, LAB_SUBNET, labResidue, SVC_INDEX, SVC_PORT, SWARM_SOCKET_DIR, type LabSwarm } from '../lab';

// The lab's Docker Swarm, proven on the wire: two nodes (a dockerd each in its own network
// namespace) form a swarm over the fabric; a swarm-scoped macvlan network made from one
// config-only network per node (each with its own --ip-range) carries a service whose
// tasks reach a legacy VM; teardown leaves nothing of it.
const CFG = 'olab-swcfg';
const NET = 'olab-swnet';
const SVC = 'olab-swsvc';
/** Node i's range of the lab segment: 198.18.200.0/26, 198.18.200.64/26. */
const block = (i: number) => `198.18.200.${(i - 1) * 64}/26`;
const inBlock = (ip: string, i: number) => {
  const m = /^198\.18\.200\.(\d+)$/.exec(ip);
  return m !== null && Number(m[1]) >= (i - 1) * 64 && Number(m[1]) < i * 64;
};

describe('the lab swarm: 2 nodes in their own namespaces, one legacy VM', () => {
  let lab: Lab;
  let swarm: LabSwarm;

  beforeAll(async () => {
    lab = await Lab.setup({ servers: 0, legacyVms: 1 });
    swarm = await lab.addSwarm({ nodes: 2 });
    console.info(`lab setup ${lab.timings.setupMs} ms, swarm ${lab.timings.swarmMs} ms`);
  }, 240_000);

  afterAll(async () => {
    await lab?.teardown();
  });

  it('forms a swarm over the fabric: every node Ready, its own hostname, netns and address', async () => {
    expect(swarm.nodes.map((n) => [n.hostname, n.netns, n.address, n.uplink, n.dockerHost])).toEqual([
      ['olab-sw1', 'olab-sw1', '198.18.0.201', 'eth0', 'unix:///run/olab/s18/docker.sock'],
      ['olab-sw2', 'olab-sw2', '198.18.0.202', 'eth0', 'unix:///run/olab/s19/docker.sock'],
    ]);
    expect(swarm.managerUrl).toBe('unix:///run/olab/s18/docker.sock');
    expect(swarm.nodeEngines).toBe('olab-sw1=unix:///run/olab/s18/docker.sock,olab-sw2=unix:///run/olab/s19/docker.sock');
    const states = await lab.swarmNodeStates();
    expect(Object.keys(states).sort()).toEqual(['olab-sw1', 'olab-sw2']);
    for (const s of Object.values(states)) expect([s.state, s.availability]).toEqual(['ready', 'active']);
    for (const n of swarm.nodes) {
      const info = JSON.parse(await lab.docker(n, ['info', '--format', '{{json .}}'])) as {
        Name: string;
        DockerRootDir: string;
        Swarm: { LocalNodeState: string; NodeAddr: string; ControlAvailable: boolean };
      };
      expect(info.Name).toBe(n.hostname);
      expect(info.DockerRootDir).toBe(n.dataRoot);
      expect([info.Swarm.LocalNodeState, info.Swarm.NodeAddr, info.Swarm.ControlAvailable]).toEqual(['active', n.address, n === swarm.manager]);
      // The engine is also reachable by hostname (the template the agent may use).
      const byName = execFileSync('/usr/bin/docker', ['-H', swarm.nodeEngineTemplate.replace('{hostname}', n.hostname), 'info', '--format', '{{.Name}}'], {
        encoding: 'utf8',
      });
      expect(byName.trim()).toBe(n.hostname);
      const images = await lab.docker(n, ['images', '--format', '{{.Repository}}:{{.Tag}}']);
      expect(images.split('\n').filter(Boolean).sort()).toEqual([LAB_IMAGES.busybox, LAB_IMAGES.svc]);
      // The node's eth0 is in its namespace, not in the root namespace.
      const addrs = JSON.parse(execFileSync('ip', ['-n', n.netns, '-j', 'addr', 'show', 'dev', 'eth0'], { encoding: 'utf8' })) as {
        addr_info: { family: string; local: string }[];
      }[];
      expect(addrs[0]!.addr_info.filter((a) => a.family === 'inet').map((a) => a.local)).toEqual([n.address]);
    }
  });

  it('a service on a swarm macvlan network (one config-only network per node) gets each node its own range and reaches a legacy VM', async () => {
    for (const n of swarm.nodes) {
      await lab.docker(n, [
        'network',
        'create',
        '--config-only',
        '--subnet',
        LAB_SUBNET,
        '--gateway',
        LAB_GATEWAY,
        '--ip-range',
        block(n.node),
        '-o',
        `parent=${swarm.uplink}`,
        CFG,
      ]);
    }
    await lab.swarmDocker(['network', 'create', '-d', 'macvlan', '--scope', 'swarm', '--config-from', CFG, NET]);
    await lab.swarmDocker([
      'service',
      'create',
      '-d',
      '--name',
      SVC,
      '--replicas',
      '2',
      '--replicas-max-per-node',
      '1',
      '--network',
      NET,
      '--no-resolve-image',
      LAB_IMAGES.svc,
    ]);
    await waitFor(
      'both tasks running',
      async () => (await lab.swarmTasks(SVC)).filter((t) => t.desired === 'running' && t.state === 'running').length === 2,
      60_000,
      250,
    );
    const tasks = (await lab.swarmTasks(SVC)).filter((t) => t.state === 'running');
    console.info(tasks.map((t) => `${t.node} ${t.ips[NET]} ${t.macs[NET]}`).join('; '));
    expect(tasks.map((t) => t.node).sort()).toEqual(['olab-sw1', 'olab-sw2']);
    for (const t of tasks) {
      const node = lab.swarmNode(t.node!);
      const ip = t.ips[NET]!;
      expect(inBlock(ip, node.node), `${ip} in ${block(node.node)}`).toBe(true);
      await waitFor(`vm -> ${ip}`, () => lab.vmPing(lab.vms[0]!, ip), 15_000, 200);
      expect(await lab.vmHttpGet(lab.vms[0]!, ip, SVC_PORT)).toBe(SVC_INDEX);
      expect(await lab.arpProbe(ip)).toBe(true);
      // The task's container is on that node's engine.
      expect((await lab.docker(node, ['ps', '-q', '--no-trunc'])).split('\n')).toContain(t.containerId);
    }
  }, 120_000);

  it('drain moves a task to the other node with an address from that node range; active takes tasks again', async () => {
    await lab.swarmDocker(['service', 'update', '-d', '--replicas-max-per-node', '2', SVC]);
    await waitFor('update applied', async () => (await lab.swarmTasks(SVC)).filter((t) => t.state === 'running').length === 2, 60_000, 250);
    await lab.setNodeAvailability('olab-sw2', 'drain');
    await waitFor(
      'both tasks on olab-sw1',
      async () => {
        const run = (await lab.swarmTasks(SVC)).filter((t) => t.desired === 'running' && t.state === 'running');
        return run.length === 2 && run.every((t) => t.node === 'olab-sw1');
      },
      60_000,
      250,
    );
    const run = (await lab.swarmTasks(SVC)).filter((t) => t.state === 'running');
    for (const t of run) expect(inBlock(t.ips[NET]!, 1)).toBe(true);
    expect((await lab.swarmNodeStates())['olab-sw2']!.availability).toBe('drain');
    await lab.setNodeAvailability('olab-sw2', 'active');
    expect((await lab.swarmNodeStates())['olab-sw2']!.availability).toBe('active');
  }, 120_000);

  it('teardown leaves nothing: no engine, namespace, interface, mount, cgroup or directory', async () => {
    await lab.teardown();
    expect(lab.tornDown).toBe(true);
    const left = await labResidue([lab.labDir]);
    expect(left).toEqual({ interfaces: [], netns: [], processes: [], mounts: [], cgroups: [], dirs: [] });
    expect(existsSync(SWARM_SOCKET_DIR)).toBe(false);
  }, 120_000);
});

describe('a crashed run with a swarm', () => {
  it('is swept by the next cleanup: services, tasks, engines in their namespaces, all gone', async () => {
    const lab = await Lab.setup({ servers: 0, legacyVms: 0 });
    try {
      const swarm = await lab.addSwarm({ nodes: 2 });
      for (const n of swarm.nodes) {
        await lab.docker(n, [
          'network',
          'create',
          '--config-only',
          '--subnet',
          LAB_SUBNET,
          '--gateway',
          LAB_GATEWAY,
          '--ip-range',
          block(n.node),
          '-o',
          `parent=${swarm.uplink}`,
          CFG,
        ]);
      }
      await lab.swarmDocker(['network', 'create', '-d', 'macvlan', '--scope', 'swarm', '--config-from', CFG, NET]);
      await lab.swarmDocker(['service', 'create', '-d', '--name', SVC, '--replicas', '2', '--network', NET, '--no-resolve-image', LAB_IMAGES.svc]);
      await waitFor('tasks running', async () => (await lab.swarmTasks(SVC)).filter((t) => t.state === 'running').length === 2, 60_000, 250);
      // The process loses track of its lab (as if it had crashed): no teardown, engines and tasks alive.
      lab.supersede();
      expect((await labResidue([lab.labDir])).processes.length).toBeGreaterThan(0);
      const report = await cleanLabLeftovers(lab.labDir);
      expect(report.netns).toEqual(expect.arrayContaining(['olab-sw1', 'olab-sw2']));
      expect(await labResidue([lab.labDir])).toEqual({ interfaces: [], netns: [], processes: [], mounts: [], cgroups: [], dirs: [] });
      expect(existsSync(SWARM_SOCKET_DIR)).toBe(false);
    } finally {
      await cleanLabLeftovers(lab.labDir).catch(() => undefined);
    }
  }, 180_000);
});

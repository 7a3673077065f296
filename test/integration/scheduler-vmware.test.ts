import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, waitFor } from '@orangery/testing';
import { Lab, LAB_GATEWAY, LAB_IMAGES, SVC_INDEX, SVC_PORT } from '../lab';

// Both backends behind one scheduler, all real: scale requests on JetStream -> scheduler ->
// ipam -> docker-agent (one lab server) or vmware-agent (vcsim's 3 ESXi hosts, VMs backed by
// containers on the fabric) -> instances reachable from a legacy VM by their IPs.
const dir = new HarnessDir('scheduler-vmware');
let lab: Lab;
let nats: NatsServer;
let dbUrl: string;
let client: ContractClient;
let scale: ScaleWatcher;
let dockerAgent: ServiceProcess;
let vmwareAgent: ServiceProcess;

const totalMemoryMb = Math.floor(Number(/MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))![1]) / 1024);
const ESXI = ['esx01-lab-local', 'esx02-lab-local', 'esx03-lab-local'];

/** `roomMb`: what the docker host offers instances (the rest is reserved for the host). */
const dockerEnv = (roomMb: number): Record<string, string> => {
  const s = lab.servers[0]!;
  return {
    ORANGERY_NATS_URL: nats.url,
    ORANGERY_HOST_ID: s.id,
    DOCKER_HOST: s.dockerHost,
    ORANGERY_UPLINK: s.uplink,
    ORANGERY_HEARTBEAT_SECONDS: '1',
    ORANGERY_RESERVED_CPUS: '0',
    ORANGERY_RESERVED_MEMORY_MB: String(Math.max(0, totalMemoryMb - roomMb)),
  };
};

/** `reservedMb`: memory each ESXi host keeps back (vcsim's hosts have 4 GiB). */
const vmwareEnv = (reservedMb: number): Record<string, string> => {
  const vc = lab.vcenter!;
  return {
    ORANGERY_NATS_URL: nats.url,
    ORANGERY_VCENTER_URL: vc.url,
    ORANGERY_VCENTER_USER: vc.user,
    ORANGERY_VCENTER_PASSWORD: vc.password,
    ORANGERY_VCENTER_EXTRA_CONFIG: JSON.stringify({
      'RUN.container': JSON.stringify(['--tmpfs', '/sys/class', '--network', vc.macvlanNetwork, '--ip', '{ip}', '--mac-address', '{mac}', LAB_IMAGES.svc]),
    }),
    ORANGERY_HEARTBEAT_SECONDS: '1',
    ORANGERY_VCENTER_RESERVED_MEMORY_MB: String(reservedMb),
  };
};

const request = (app: string, replicas: number, extra: Record<string, unknown> = {}) => ({
  env: 'lab',
  app,
  replicas,
  resources: { cpu: 0.5, memoryMb: 512, diskMb: 100 },
  image: LAB_IMAGES.svc,
  template: 'centos7-jdk8',
  backend: 'auto' as const,
  pool: 'lab-net',
  spread: 'host' as const,
  ...extra,
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function instances(app: string): Promise<any[]> {
  const r = await client.requestWithRetry('orangery.scheduler.instances.list', { env: 'lab', app });
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return r.data.instances;
}

async function scaleAndWait(data: ReturnType<typeof request>, timeoutMs = 120_000) {
  const id = await scale.publish(data);
  return scale.outcome(id, timeoutMs);
}

/** Waits until the scheduler sees every host ready with the capacity the agents now report. */
async function hostsReady(check: (hosts: { hostId: string; backend: string; state: string; capacity: { memoryMb: number } }[]) => boolean) {
  await waitFor('the scheduler to see the fleet', async () => {
    const r = await client.request('orangery.scheduler.hosts.list', {});
    return r.ok && r.data.hosts.filter((h: { state: string }) => h.state === 'ready').length === 4 && check(r.data.hosts);
  }, 30_000, 250);
}

async function reachable(list: { ip: string }[]) {
  const vm = lab.vms[0]!;
  for (const i of list) await waitFor(`${i.ip} answers HTTP`, async () => (await lab.vmHttpGet(vm, i.ip, SVC_PORT)) === SVC_INDEX, 15_000, 250);
}

beforeAll(async () => {
  [lab, nats, dbUrl] = await Promise.all([Lab.setup({ servers: 1, legacyVms: 1, vcenter: true }), NatsServer.start(dir), freshDatabase('scheduler_vmware')]);
  client = await ContractClient.connect(nats.url);
  scale = new ScaleWatcher(client.nc);
  await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
  const pool = await client.request('orangery.ipam.pool.create', {
    name: 'lab-net',
    cidr: '198.18.0.0/16',
    gateway: LAB_GATEWAY,
    reserved: ['198.18.0.2-198.18.0.255', '198.18.255.0-198.18.255.254'],
    cooldownSeconds: 0,
  });
  expect(pool.ok, JSON.stringify(pool)).toBe(true);
  [dockerAgent, vmwareAgent] = await Promise.all([
    ServiceProcess.start(dir, 'docker-agent', dockerEnv(256)),
    ServiceProcess.start(dir, 'vmware-agent', vmwareEnv(0)),
  ]);
  const scheduler = await ServiceProcess.start(dir, 'scheduler', {
    ORANGERY_NATS_URL: nats.url,
    ORANGERY_DB_URL: dbUrl,
    ORANGERY_HEARTBEAT_SECONDS: '1',
    ORANGERY_LOST_AFTER_SECONDS: '4',
    ORANGERY_RECONCILE_SECONDS: '2',
    ORANGERY_ANTI_ENTROPY_SECONDS: '5',
  });
  await waitFor('a leader', () => scheduler.hasLog('leading: consuming scale requests'), 30_000);
  await hostsReady(() => true);
}, 300_000);

afterAll(async () => {
  scale?.close();
  await client?.close();
  await dir.cleanup();
  await lab?.teardown();
}, 120_000);

describe('scheduler with docker and vmware hosts in the lab', () => {
  it('backend vmware: 3 replicas become VMs spread over the ESXi hosts, reachable from a legacy VM; scaling to 0 removes them', async () => {
    const done = await scaleAndWait(request('vmapp', 3, { backend: 'vmware', image: undefined }));
    expect(done.type, JSON.stringify(done.data)).toBe('io.orangery.scale.completed');
    const list = await instances('vmapp');
    expect(list.map((i) => [i.state, i.backend])).toEqual(Array(3).fill(['running', 'vmware']));
    expect(list.map((i) => i.host).sort()).toEqual(ESXI);
    await reachable(list);
    for (const i of list) {
      const a = await client.request('orangery.ipam.get', { ip: i.ip });
      expect(a.data).toMatchObject({ state: 'bound', backend: 'vmware', host: i.host });
    }
    expect((await scaleAndWait(request('vmapp', 0, { backend: 'vmware', image: undefined }))).type).toBe('io.orangery.scale.completed');
    for (const i of list) await waitFor(`${i.ip} off the wire`, async () => !(await lab.vmPing(lab.vms[0]!, i.ip)), 15_000, 250);
    const vms = await client.request(`orangery.agent.${ESXI[0]}.instance.list`, {});
    expect(vms.data.instances).toEqual([]);
  });

  it('backend auto, docker host full: the instances become VMs', async () => {
    // the docker host offers 256 MiB: a 512 MiB instance fits only on the ESXi hosts
    const done = await scaleAndWait(request('autovm', 2));
    expect(done.type, JSON.stringify(done.data)).toBe('io.orangery.scale.completed');
    const list = await instances('autovm');
    expect(list.map((i) => i.backend)).toEqual(['vmware', 'vmware']);
    await reachable(list);
    expect((await scaleAndWait(request('autovm', 0))).type).toBe('io.orangery.scale.completed');
  });

  it('backend auto, ESXi hosts full: the instances become containers', async () => {
    // now the ESXi hosts keep all but 256 MiB and the docker host has room
    await Promise.all([dockerAgent.terminate(), vmwareAgent.terminate()]);
    [dockerAgent, vmwareAgent] = await Promise.all([
      ServiceProcess.start(dir, 'docker-agent', dockerEnv(4096)),
      ServiceProcess.start(dir, 'vmware-agent', vmwareEnv(4096 - 256)),
    ]);
    await hostsReady((hosts) => hosts.every((h) => (h.backend === 'vmware' ? h.capacity.memoryMb <= 256 : h.capacity.memoryMb >= 4096)));
    const done = await scaleAndWait(request('autoctr', 2, { spread: 'none' }));
    if (done.type !== 'io.orangery.scale.completed') console.info(dockerAgent.lines.filter((l) => /"level":[456]0/.test(l)).join('\n'));
    expect(done.type, JSON.stringify(done.data)).toBe('io.orangery.scale.completed');
    const list = await instances('autoctr');
    expect(list.map((i) => [i.backend, i.host])).toEqual([
      ['docker', lab.servers[0]!.id],
      ['docker', lab.servers[0]!.id],
    ]);
    await reachable(list);
    expect((await scaleAndWait(request('autoctr', 0))).type).toBe('io.orangery.scale.completed');
  });

  it('vcsim killed mid-clone: the scheduler retries once vCenter is back, the request completes, no IP leaked', async () => {
    // back to roomy ESXi hosts and a full docker host, then a vCenter whose clones take 3 s
    await Promise.all([dockerAgent.terminate(), vmwareAgent.terminate()]);
    const port = Number(new URL(lab.vcenter!.url).port);
    await lab.stopVcenter();
    await lab.startVcenter({ port, methodDelayMs: { CloneVM_Task: 3_000 } });
    [dockerAgent, vmwareAgent] = await Promise.all([
      ServiceProcess.start(dir, 'docker-agent', dockerEnv(256)),
      ServiceProcess.start(dir, 'vmware-agent', vmwareEnv(0)),
    ]);
    await hostsReady((hosts) => hosts.every((h) => (h.backend === 'vmware' ? h.capacity.memoryMb > 1024 : h.capacity.memoryMb <= 256)));
    const id = await scale.publish(request('crashvc', 2, { backend: 'vmware', image: undefined }));
    await new Promise((r) => setTimeout(r, 1_500));
    await lab.stopVcenter('SIGKILL');
    await new Promise((r) => setTimeout(r, 1_000));
    await lab.startVcenter({ port });
    const out = await scale.outcome(id, 180_000);
    expect(out.type, JSON.stringify(out.data)).toBe('io.orangery.scale.completed');
    expect(scale.seen(id)).toHaveLength(1);
    const list = await instances('crashvc');
    expect(list.map((i) => [i.slot, i.state, i.backend])).toEqual([
      [0, 'running', 'vmware'],
      [1, 'running', 'vmware'],
    ]);
    await reachable(list);
    for (const i of list) {
      const a = await client.request('orangery.ipam.get', { owner: { env: 'lab', app: 'crashvc', slot: i.slot } });
      expect(a.data).toMatchObject({ ip: i.ip, state: 'bound', backend: 'vmware', host: i.host });
    }
    // exactly the two VMs in vCenter, nothing left over from the killed clones
    const vms: string[] = [];
    for (const h of ESXI) vms.push(...(await client.request(`orangery.agent.${h}.instance.list`, {})).data.instances.map((i: { instanceId: string }) => i.instanceId));
    expect(vms.sort()).toEqual(['lab:crashvc:0', 'lab:crashvc:1']);
    expect(vmwareAgent.child.exitCode).toBeNull();
  });
});

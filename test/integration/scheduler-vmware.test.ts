import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor, type ContractClient, type ScaleWatcher, type ServiceProcess } from '@orangery/testing';
import { LAB_IMAGES, SVC_INDEX, SVC_PORT, type Lab } from '../lab';
import { HOST_MEMORY_MB, LabCluster, type HostView } from './fixtures/lab-cluster';

// Both backends behind one scheduler, all real: scale requests on JetStream -> scheduler ->
// ipam -> docker-agent (one lab server) or vmware-agent (vcsim's 3 ESXi hosts, VMs backed by
// containers on the fabric) -> instances reachable from a legacy VM by their IPs.
let cluster: LabCluster;
let lab: Lab;
let client: ContractClient;
let scale: ScaleWatcher;
let dockerAgent: ServiceProcess;
let vmwareAgent: ServiceProcess;
const ESXI = ['esx01-lab-local', 'esx02-lab-local', 'esx03-lab-local'];

/** `roomMb`: what the docker host offers instances (the rest is reserved for the host). */
const startDockerAgent = (roomMb: number) =>
  cluster.startDockerAgent(lab.servers[0]!, { ORANGERY_RESERVED_MEMORY_MB: String(Math.max(0, HOST_MEMORY_MB - roomMb)) });

/** `reservedMb`: memory each ESXi host keeps back (vcsim's hosts have 4 GiB). */
const startVmwareAgent = (reservedMb: number) => cluster.startVmwareAgent({ ORANGERY_VCENTER_RESERVED_MEMORY_MB: String(reservedMb) });

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
const instances = (app: string): Promise<any[]> => cluster.instances('lab', app);

const scaleAndWait = (data: ReturnType<typeof request>, timeoutMs = 120_000) => cluster.scaleAndWait(data, timeoutMs);

/** Waits until the scheduler sees every host ready with the capacity the agents now report. */
const hostsReady = (check: (hosts: HostView[]) => boolean) => cluster.waitHostsReady(4, { check });

async function reachable(list: { ip: string }[]) {
  const vm = lab.vms[0]!;
  for (const i of list) await waitFor(`${i.ip} answers HTTP`, async () => (await lab.vmHttpGet(vm, i.ip, SVC_PORT)) === SVC_INDEX, 15_000, 250);
}

beforeAll(async () => {
  cluster = await LabCluster.start({ label: 'scheduler-vmware', lab: { servers: 1, legacyVms: 1, vcenter: true } });
  ({ lab, client, scale } = cluster);
  await cluster.startIpam('lab-net');
  [dockerAgent, vmwareAgent] = await Promise.all([startDockerAgent(256), startVmwareAgent(0)]);
  await cluster.startScheduler({ ORANGERY_LOST_AFTER_SECONDS: '4', ORANGERY_RECONCILE_SECONDS: '2', ORANGERY_ANTI_ENTROPY_SECONDS: '5' }, { leading: true });
  await hostsReady(() => true);
}, 300_000);

afterAll(async () => {
  await cluster?.close();
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
    [dockerAgent, vmwareAgent] = await Promise.all([startDockerAgent(4096), startVmwareAgent(4096 - 256)]);
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
    [dockerAgent, vmwareAgent] = await Promise.all([startDockerAgent(256), startVmwareAgent(0)]);
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
    for (const h of ESXI)
      vms.push(...(await client.request(`orangery.agent.${h}.instance.list`, {})).data.instances.map((i: { instanceId: string }) => i.instanceId));
    expect(vms.sort()).toEqual(['lab:crashvc:0', 'lab:crashvc:1']);
    expect(vmwareAgent.child.exitCode).toBeNull();
  });
});

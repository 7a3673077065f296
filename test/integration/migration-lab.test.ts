import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor, type ContractClient, type ScaleWatcher } from '@orangery/testing';
import { LAB_IMAGES, SVC_INDEX, SVC_PORT, type Lab } from '../lab';
import { HOST_MEMORY_MB, LabCluster } from './fixtures/lab-cluster';

// The seed's promise, all real: one instance moves container -> VM (vcsim, its VM a real
// endpoint on the fabric) -> container through the migrator, keeping its IP and MAC at every
// step, and a legacy VM reaches it afterwards.
let cluster: LabCluster;
let lab: Lab;
let client: ContractClient;
let scale: ScaleWatcher;
const SECRET = 'lab-s3cret-of-the-bank';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function instance(): Promise<any> {
  const r = await client.requestWithRetry('orangery.scheduler.instances.list', { env: 'lab', app: 'mover' });
  return r.data.instances[0];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function migrate(body: Record<string, unknown>): Promise<any> {
  const r = await client.requestWithRetry('orangery.migrator.migrate', body, 5, 10_000);
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return waitFor(
    `migration ${r.data.migrationId} to end`,
    async () => {
      const m = await client.request('orangery.migrator.migrations.get', { migrationId: r.data.migrationId });
      return m.ok && m.data.state !== 'running' ? m.data : undefined;
    },
    120_000,
    250,
  );
}

async function answers(ip: string): Promise<string | undefined> {
  return waitFor(`${ip} answers the legacy VM`, async () => (await lab.vmHttpGet(lab.vms[0]!, ip, SVC_PORT)) ?? undefined, 30_000, 250);
}

beforeAll(async () => {
  cluster = await LabCluster.start({ label: 'migration-lab', lab: { servers: 1, legacyVms: 1, vcenter: true } });
  ({ lab, client, scale } = cluster);
  await cluster.startIpam('lab-net');
  await Promise.all([
    cluster.startDockerAgent(lab.servers[0]!, { ORANGERY_RESERVED_MEMORY_MB: String(Math.max(0, HOST_MEMORY_MB - 2048)) }),
    cluster.startVmwareAgent(),
  ]);
  await cluster.startScheduler({ ORANGERY_LOST_AFTER_SECONDS: '4', ORANGERY_ANTI_ENTROPY_SECONDS: '5' }, { leading: true });
  await cluster.startMigrator({ ORANGERY_LOST_AFTER_SECONDS: '4' });
  await cluster.waitHostsReady(4); // 1 docker, 3 ESXi
}, 300_000);

afterAll(async () => {
  await cluster?.close();
}, 120_000);

describe('migration between backends in the lab', () => {
  it('container -> VM -> container: IP and MAC identical at every step, reachable afterwards, nothing left behind', async () => {
    const id = await scale.publish({
      env: 'lab',
      app: 'mover',
      replicas: 1,
      resources: { cpu: 0.5, memoryMb: 256 },
      image: LAB_IMAGES.svc,
      template: 'centos7-jdk8',
      backend: 'docker',
      pool: 'lab-net',
      spread: 'host',
      environment: { LAB_SECRET: SECRET },
    });
    // backend docker first; the app has a template too, so it may move to a VM
    expect((await scale.outcome(id, 120_000)).type).toBe('io.orangery.scale.completed');
    const first = await instance();
    expect(first).toMatchObject({ backend: 'docker', host: lab.servers[0]!.id, state: 'running' });
    expect(await answers(first.ip)).toBe(SVC_INDEX);

    const toVm = await migrate({ instanceId: first.id, toBackend: 'vmware' });
    expect(toVm.state, JSON.stringify(toVm)).toBe('completed');
    const onVm = await instance();
    expect(onVm).toMatchObject({ backend: 'vmware', ip: first.ip, mac: first.mac, state: 'running' });
    expect(await answers(first.ip)).toBe(SVC_INDEX);
    const bound = await client.request('orangery.ipam.get', { ip: first.ip });
    expect(bound.data).toMatchObject({ state: 'bound', backend: 'vmware', host: onVm.host, mac: first.mac });
    // the container is gone from the docker server
    const left = await lab.docker(lab.servers[0]!, ['ps', '-a', '--filter', 'label=io.orangery.app=mover', '--format', '{{.Names}}']);
    expect(left.trim()).toBe('');

    const back = await migrate({ instanceId: first.id, toBackend: 'docker' });
    expect(back.state, JSON.stringify(back)).toBe('completed');
    const again = await instance();
    expect(again).toMatchObject({ backend: 'docker', host: lab.servers[0]!.id, ip: first.ip, mac: first.mac, state: 'running' });
    expect(await answers(first.ip)).toBe(SVC_INDEX);
    expect((await client.request('orangery.ipam.get', { ip: first.ip })).data).toMatchObject({ backend: 'docker', host: lab.servers[0]!.id });
    const mac = await lab.docker(lab.servers[0]!, ['inspect', '-f', '{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}', 'orangery-lab-mover-0']);
    expect(mac.trim()).toBe(first.mac);
    const vms = await client.request(`orangery.agent.${onVm.host}.instance.list`, {});
    expect(vms.data.instances.filter((i: { instanceId: string }) => i.instanceId === first.id)).toEqual([]);
    // issue 13: the container the migration made (the scheduler sent its create) has the app's environment...
    const env = await lab.docker(lab.servers[0]!, ['inspect', '-f', '{{json .Config.Env}}', 'orangery-lab-mover-0']);
    expect(JSON.parse(env) as string[]).toContain(`LAB_SECRET=${SECRET}`);
    // ...which no reply or event showed on the way
    const slot = await client.request('orangery.scheduler.slot.get', { instanceId: first.id });
    expect(slot.ok, JSON.stringify(slot)).toBe(true);
    for (const seen of [slot, await client.request('orangery.scheduler.instances.list', {}), vms, toVm, back, await client.events('orangery.evt.>')]) {
      expect(JSON.stringify(seen)).not.toContain(SECRET);
    }
  });

  it('a migrate request for an unknown instance or to a backend the app cannot use: clear error, nothing moves', async () => {
    const unknown = await client.request('orangery.migrator.migrate', { instanceId: 'lab:nope:0' });
    expect(unknown.error.code).toBe('NOT_FOUND');
    const before = await instance();
    const noHost = await client.request('orangery.migrator.migrate', { instanceId: before.id, toHost: 'no-such-host' });
    expect(noHost.ok).toBe(false);
    expect(await instance()).toMatchObject({ host: before.host, ip: before.ip, state: 'running' });
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ContractClient, ScaleWatcher, ServiceProcess } from '@orangery/testing';
import { waitFor } from '@orangery/testing';
import { LAB_IMAGES, SVC_INDEX, SVC_PORT, type Lab } from '../lab';
import { HOST_MEMORY_MB, LabCluster } from './fixtures/lab-cluster';

// The whole path for containers, all real: upstream scale request on JetStream -> scheduler
// (two replicas) -> ipam -> docker-agents -> dockerd on the lab's servers -> containers with
// their IPs on the fabric, reachable from a legacy VM.
let cluster: LabCluster;
let lab: Lab;
let client: ContractClient;
let scale: ScaleWatcher;
const schedulers: ServiceProcess[] = [];

const SCHEDULER_ENV = { ORANGERY_LOST_AFTER_SECONDS: '4', ORANGERY_RECONCILE_SECONDS: '2', ORANGERY_ANTI_ENTROPY_SECONDS: '5' };

// Server 2 keeps all but 1 GiB for itself: a 2 GiB instance only fits on server 1.
const SMALL_HOST_CAPACITY_MB = 1024;

const request = (app: string, replicas: number, extra: Record<string, unknown> = {}) => ({
  env: 'lab',
  app,
  replicas,
  resources: { cpu: 0.1, memoryMb: 64, diskMb: 50 },
  image: LAB_IMAGES.svc,
  backend: 'docker' as const,
  pool: 'lab-net',
  spread: 'host' as const,
  ...extra,
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const instances = (app: string): Promise<any[]> => cluster.instances('lab', app);

/** Containers of an app on each lab engine, by the agent's labels. */
async function containersOf(app: string): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const s of lab.servers) {
    const ids = (await lab.docker(s, ['ps', '-a', '--filter', `label=io.orangery.app=${app}`, '--format', '{{.Names}}'])).split('\n').filter((l) => l !== '');
    out.set(s.id, ids);
  }
  return out;
}

const scaleAndWait = (data: ReturnType<typeof request>, timeoutMs = 120_000) => cluster.scaleAndWait(data, timeoutMs);

beforeAll(async () => {
  cluster = await LabCluster.start({ label: 'scheduler-lab', lab: { servers: 2, legacyVms: 1 } });
  ({ lab, client, scale } = cluster);
  await cluster.startIpam('lab-net');
  await Promise.all(
    lab.servers.map((s) =>
      cluster.startDockerAgent(s, {
        ORANGERY_HOST_LABELS: `rack=r${s.index}`,
        ORANGERY_RESERVED_MEMORY_MB: String(s.index === 2 ? HOST_MEMORY_MB - SMALL_HOST_CAPACITY_MB : 512),
      }),
    ),
  );
  schedulers.push(...(await Promise.all([0, 1].map(() => cluster.startScheduler(SCHEDULER_ENV)))));
  await waitFor('a leader', () => schedulers.some((s) => s.hasLog('leading: consuming scale requests')), 30_000);
  await cluster.waitHostsReady(2, { timeoutMs: 20_000 });
}, 300_000);

afterAll(async () => {
  await cluster?.close();
}, 120_000);

describe('scheduler in the lab', () => {
  it('places 4 replicas with spread as 2 + 2, each with its own IP, reachable from a legacy VM', async () => {
    const done = await scaleAndWait(request('pay', 4));
    expect(done.type, JSON.stringify(done.data)).toBe('io.orangery.scale.completed');
    const list = await instances('pay');
    expect(list.map((i) => i.state)).toEqual(['running', 'running', 'running', 'running']);
    const perHost = new Map<string, number>();
    for (const i of list) perHost.set(i.host, (perHost.get(i.host) ?? 0) + 1);
    expect([...perHost.values()]).toEqual([2, 2]);
    expect(new Set(list.map((i) => i.ip)).size).toBe(4);
    const vm = lab.vms[0]!;
    // `running` means the process runs; the service in it may need a moment to listen
    for (const i of list) {
      const got = await waitFor(`${i.ip} answers the legacy VM`, async () => (await lab.vmHttpGet(vm, i.ip, SVC_PORT)) ?? undefined, 15_000, 200);
      expect(got).toBe(SVC_INDEX);
    }
    const containers = await containersOf('pay');
    expect([...containers.values()].map((c) => c.length)).toEqual([2, 2]);
  });

  it('scales to 6 then to 2: slots 0-1 keep their IPs and hosts, removed slots release theirs and leave the wire', async () => {
    const before = (await instances('pay')).slice(0, 2);
    expect((await scaleAndWait(request('pay', 6))).type).toBe('io.orangery.scale.completed');
    const six = await instances('pay');
    expect(six.length).toBe(6);
    expect(six.slice(0, 2).map((i) => i.ip)).toEqual(before.map((i) => i.ip));
    expect((await scaleAndWait(request('pay', 2))).type).toBe('io.orangery.scale.completed');
    const two = await instances('pay');
    expect(two.map((i) => [i.slot, i.ip, i.host])).toEqual(before.map((i) => [i.slot, i.ip, i.host]));
    for (const slot of [2, 3, 4, 5]) {
      const a = await client.request('orangery.ipam.get', { owner: { env: 'lab', app: 'pay', slot } });
      expect(a.data.state).toBe('released');
    }
    const containers = [...(await containersOf('pay')).values()].flat();
    expect(containers.length).toBe(2);
    const vm = lab.vms[0]!;
    for (const i of two) expect(await lab.vmPing(vm, i.ip)).toBe(true);
    for (const i of six.slice(2)) expect(await lab.vmPing(vm, i.ip)).toBe(false);
  });

  it('avoids a host too small for the instance, and rejects what fits nowhere with the shortfall', async () => {
    const big = await scaleAndWait(request('big', 1, { resources: { cpu: 0.1, memoryMb: 2048 } }));
    expect(big.type, JSON.stringify(big.data)).toBe('io.orangery.scale.completed');
    expect((await instances('big'))[0].host).toBe('olab-s1');
    const huge = await scaleAndWait(request('huge', 1, { resources: { cpu: 0.1, memoryMb: HOST_MEMORY_MB * 4 } }));
    expect(huge.type).toBe('io.orangery.scale.rejected');
    expect(huge.data['reason']).toMatchObject({ code: 'INSUFFICIENT_CAPACITY', details: { shortfall: { memoryMb: expect.any(Number) } } });
    expect((huge.data['reason'] as { details: { shortfall: { memoryMb: number } } }).details.shortfall.memoryMb).toBeGreaterThan(0);
    expect(await instances('huge')).toEqual([]);
    expect((await scaleAndWait(request('big', 0))).type).toBe('io.orangery.scale.completed');
  });

  it('a malformed request is rejected, and the next good one is served', async () => {
    await scale.publishRaw('orangery.scale.lab.web', '{"specversion":"1.0",');
    const bad = await scale.publish({ env: 'lab', app: 'web', replicas: -1 } as never);
    const good = await scale.publish(request('web', 1));
    expect((await scale.outcome(bad)).data['reason']).toMatchObject({ code: 'INVALID_REQUEST' });
    expect((await scale.outcome(good, 120_000)).type).toBe('io.orangery.scale.completed');
  });

  it('two replicas under a burst of 20 apps: no slot placed twice, every container unique', async () => {
    const ids = await Promise.all(Array.from({ length: 20 }, (_, n) => scale.publish(request(`b${n}`, 1, { spread: 'none' }))));
    const outs = await Promise.all(ids.map((id) => scale.outcome(id, 240_000)));
    expect(
      outs.map((o) => o.type),
      JSON.stringify(outs.map((o) => o.data['reason'])),
    ).toEqual(Array(20).fill('io.orangery.scale.completed'));
    const names: string[] = [];
    for (const s of lab.servers)
      names.push(...(await lab.docker(s, ['ps', '-a', '--format', '{{.Names}}'])).split('\n').filter((l) => /orangery-lab-b\d+-0/.test(l)));
    expect(names.sort()).toEqual(Array.from({ length: 20 }, (_, n) => `orangery-lab-b${n}-0`).sort());
    const down = await Promise.all(Array.from({ length: 20 }, (_, n) => scale.publish(request(`b${n}`, 0))));
    for (const id of down) expect((await scale.outcome(id, 120_000)).type).toBe('io.orangery.scale.completed');
  });

  it('the leader killed mid-scale: the request completes, no orphan container, no leaked IP', async () => {
    const leader = schedulers.find((s) => s.child.exitCode === null && s.hasLog('leading: consuming scale requests'))!;
    const id = await scale.publish(request('crash', 4));
    await waitFor('a first container', async () => [...(await containersOf('crash')).values()].flat().length > 0, 60_000, 100);
    await leader.kill9();
    const out = await scale.outcome(id, 180_000);
    expect(out.type, JSON.stringify(out.data)).toBe('io.orangery.scale.completed');
    expect(scale.seen(id)).toHaveLength(1);
    const list = await instances('crash');
    expect(list.map((i) => i.state)).toEqual(['running', 'running', 'running', 'running']);
    const containers = await containersOf('crash');
    expect([...containers.values()].flat().sort()).toEqual(['orangery-lab-crash-0', 'orangery-lab-crash-1', 'orangery-lab-crash-2', 'orangery-lab-crash-3']);
    for (const i of list) {
      const a = await client.request('orangery.ipam.get', { owner: { env: 'lab', app: 'crash', slot: i.slot } });
      expect(a.data).toMatchObject({ ip: i.ip, state: 'bound', host: i.host });
    }
    // the killed replica comes back as a follower and changes nothing
    schedulers.push(await cluster.startScheduler(SCHEDULER_ENV));
    expect((await instances('crash')).map((i) => i.ip)).toEqual(list.map((i) => i.ip));
  });
});

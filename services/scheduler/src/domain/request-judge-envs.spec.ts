import { describe, expect, it, vi } from 'vitest';
import type { Amounts, Backend, InstancePlacedData, ScaleRejectedData } from '@orangery/contracts';
import { applyEnvPolicy, checkEnvPut, normalizeEnv, type EnvPolicy } from './env-policy';
import { HostBook } from './host-book';
import { RequestJudge, RetryLater } from './request-judge';
import { SchedulerEvents } from './scheduler-events';
import { SlotBook } from './slot-book';
import { createCommandOf, slotViewOf, swarmCreateCommandOf } from './slot-records';
import { heartbeat, scaleData, scaleMessage } from './testing/factories';
import { FakeIpam, InMemorySchedulerStore, MemoryLog } from './testing/fakes';

/**
 * Environments (docs/scheduler.md "Environments"): the judge reads the env's record when it
 * judges a request and applies it: POLICY_VIOLATION, defaults, hostLabels, containerSecurity,
 * all snapshot into the app's spec. Without a record, the rules of before (ORANGERY_ENV_BACKENDS).
 */

interface HostSpec {
  id: string;
  backend?: Backend;
  labels?: Record<string, string>;
  capacity?: Amounts;
}

function world(hostSpecs: HostSpec[], envBackends: Record<string, Backend[]> = {}) {
  const store = new InMemorySchedulerStore();
  const ipam = new FakeIpam().addPool('prod-pool', 100).addPool('test-pool', 200);
  const hosts = new HostBook(
    3_600_000,
    () => 0,
    () => 0,
  );
  for (const h of hostSpecs) {
    hosts.heartbeat(
      heartbeat(h.id, {
        backend: h.backend ?? 'docker',
        labels: h.labels ?? {},
        ...(h.capacity ? { capacity: h.capacity } : {}),
        ...(h.backend === 'vmware' ? { vlans: [100, 200] } : {}),
      }),
    );
  }
  const book = new SlotBook(store, hosts, () => undefined);
  const records = new Map<string, EnvPolicy>();
  const envs = vi.fn(async (env: string) => records.get(env));
  const judge = new RequestJudge(
    book,
    hosts,
    new SchedulerEvents('test'),
    { store, ipam, log: new MemoryLog(), kick: () => undefined, envs },
    { policy: 'binpack', envBackends: (env) => envBackends[env] },
  );
  const put = (p: Parameters<typeof normalizeEnv>[0]) => records.set(p.name, normalizeEnv(p));
  const rejections = () => store.eventsOf<ScaleRejectedData>('scale', 'rejected').map((e) => e.data);
  const placements = () => store.eventsOf<InstancePlacedData>('instance', 'placed').map((e) => e.data);
  const hostsOf = () =>
    book
      .slotList()
      .map((s) => [s.slot, s.hostId])
      .sort((x, y) => Number(x[0]) - Number(y[0]));
  return { store, hosts, book, judge, envs, records, put, rejections, placements, hostsOf };
}

const fleet: HostSpec[] = [
  { id: 'dock-1', labels: { tier: 'prod' } },
  { id: 'dock-2', labels: { tier: 'test' } },
  { id: 'esx-1', backend: 'vmware', labels: { tier: 'prod' } },
  { id: 'swarm-1', backend: 'swarm', labels: { tier: 'test' } },
];

describe('RequestJudge with env records', () => {
  it('rejects an explicit backend the env does not allow: POLICY_VIOLATION with field and allowed, nothing placed', async () => {
    const w = world(fleet);
    await w.book.load();
    w.put({ name: 'prod', backends: ['vmware', 'docker'] });
    await w.judge.handleScale(scaleMessage(1, { backend: 'swarm' }));
    expect(w.rejections()).toEqual([
      {
        requestId: 'req-1',
        env: 'prod',
        app: 'web',
        reason: {
          code: 'POLICY_VIOLATION',
          message: "env 'prod' does not allow backend 'swarm' (allowed: docker, vmware)",
          details: { field: 'backend', allowed: ['docker', 'vmware'] },
        },
      },
    ]);
    expect(w.book.slotList()).toEqual([]);
    expect(w.book.app('prod:web')).toBeUndefined();
    expect(w.envs).toHaveBeenCalledWith('prod');
    w.judge.stop();
  });

  it('rejects a pool outside the env pools: POLICY_VIOLATION field pool', async () => {
    const w = world(fleet);
    await w.book.load();
    w.put({ name: 'prod', backends: ['docker'], pools: ['test-pool'] });
    await w.judge.handleScale(scaleMessage(1, { pool: 'prod-pool' }));
    expect(w.rejections().map((r) => r.reason)).toEqual([
      {
        code: 'POLICY_VIOLATION',
        message: "env 'prod' does not allow pool 'prod-pool' (allowed: test-pool)",
        details: { field: 'pool', allowed: ['test-pool'] },
      },
    ]);
    expect(w.book.slotList()).toEqual([]);
    // the allowed pool is accepted
    await w.judge.handleScale(scaleMessage(2, { pool: 'test-pool' }));
    expect(w.book.app('prod:web')).toMatchObject({ requestId: 'req-2', outcome: 'pending', spec: { pool: 'test-pool', vlan: 200 } });
    w.judge.stop();
  });

  it('auto chooses only among the env backends', async () => {
    const w = world([{ id: 'dock-1' }, { id: 'swarm-1', backend: 'swarm' }, { id: 'swarm-2', backend: 'swarm' }]);
    await w.book.load();
    w.put({ name: 'test', backends: ['swarm'] });
    await w.judge.handleScale(scaleMessage(1, { env: 'test', replicas: 2 }, { subject: 'orangery.scale.test.web' }));
    expect(w.rejections()).toEqual([]);
    expect(w.book.app('test:web')?.spec.backends).toEqual(['swarm']);
    expect(w.placements().map((p) => p.hostId)).toEqual(['swarm-1', 'swarm-2']);
    w.judge.stop();
  });

  it('takes defaults.backend and defaults.spread for a request that leaves them out, and not over what it asks', async () => {
    const w = world(fleet);
    await w.book.load();
    w.put({ name: 'prod', backends: ['docker', 'vmware'], defaults: { backend: 'vmware', spread: 'none' } });
    await w.judge.handleScale(scaleMessage(1, { replicas: 2, template: 'centos-9' }));
    const app = w.book.app('prod:web')!;
    expect(app.backend).toBe('vmware');
    expect(app.spec).toMatchObject({ backends: ['vmware'], spread: 'none' });
    expect(w.placements().map((p) => p.hostId)).toEqual(['esx-1', 'esx-1']);
    // a request naming its backend and spread keeps them
    await w.judge.handleScale(scaleMessage(2, { app: 'api', backend: 'docker', spread: 'host', replicas: 1 }, { subject: 'orangery.scale.prod.api' }));
    expect(w.book.app('prod:api')).toMatchObject({ backend: 'docker', spec: { backends: ['docker'], spread: 'host' } });
    w.judge.stop();
  });

  it('says so when the env default backend cannot take the request artifact', async () => {
    const w = world(fleet);
    await w.book.load();
    w.put({ name: 'prod', backends: ['docker', 'vmware'], defaults: { backend: 'vmware' } });
    await w.judge.handleScale(scaleMessage(1)); // an image, no template
    expect(w.rejections()[0]!.reason).toMatchObject({
      code: 'INVALID_REQUEST',
      message: "field 'data.template': backend vmware needs a template (vmware is the default backend of env 'prod')",
    });
    w.judge.stop();
  });

  it('without a record behaves as before: ORANGERY_ENV_BACKENDS rules, INVALID_REQUEST, no labels, default spread host', async () => {
    const w = world(fleet, { prod: ['vmware'] });
    await w.book.load();
    await w.judge.handleScale(scaleMessage(1, { backend: 'docker' }));
    expect(w.rejections().map((r) => r.reason)).toEqual([
      {
        code: 'INVALID_REQUEST',
        message: "field 'data.backend': env 'prod' allows only vmware",
        details: { field: 'data.backend', reason: "env 'prod' allows only vmware" },
      },
    ]);
    // no policy at all for another env: auto over docker and vmware (never swarm; an image: docker), spread host
    await w.judge.handleScale(scaleMessage(2, { env: 'dev', replicas: 2 }, { subject: 'orangery.scale.dev.web' }));
    const app = w.book.app('dev:web')!;
    expect(app.spec).toMatchObject({ backends: ['docker'], spread: 'host' });
    expect(app.spec.hostLabels).toBeUndefined();
    expect(app.spec.security).toBeUndefined();
    expect(w.placements().map((p) => p.hostId)).toEqual(['dock-1', 'dock-2']);
    w.judge.stop();
  });

  it('places only on hosts carrying every hostLabels pair; none eligible: INSUFFICIENT_CAPACITY naming the labels', async () => {
    const w = world(fleet);
    await w.book.load();
    w.put({ name: 'prod', backends: ['docker', 'vmware'], hostLabels: { tier: 'prod' } });
    await w.judge.handleScale(scaleMessage(1, { replicas: 3, spread: 'none' }));
    expect(w.rejections()).toEqual([]);
    expect(new Set(w.placements().map((p) => p.hostId))).toEqual(new Set(['dock-1']));
    w.put({ name: 'prod', backends: ['docker'], hostLabels: { tier: 'perf' } });
    await w.judge.handleScale(scaleMessage(2, { app: 'api', replicas: 1 }, { subject: 'orangery.scale.prod.api' }));
    const r = w.rejections()[0]!.reason;
    expect(r.code).toBe('INSUFFICIENT_CAPACITY');
    expect(r.message).toContain("env 'prod' admits only hosts labelled tier=perf");
    expect(r.details).toMatchObject({ filtered: { 'labels-mismatch': 2, 'backend-not-allowed': 2 }, hostLabels: { tier: 'perf' } });
    w.judge.stop();
  });

  it('snapshots the policy: a changed record moves nothing; the next request follows it', async () => {
    const w = world(fleet);
    await w.book.load();
    w.put({ name: 'prod', backends: ['docker'], hostLabels: { tier: 'prod' } });
    await w.judge.handleScale(scaleMessage(1, { replicas: 2, spread: 'none' }));
    expect(w.hostsOf()).toEqual([
      [0, 'dock-1'],
      [1, 'dock-1'],
    ]);
    // the record changes: the running app's reconcile neither moves nor rejects anything
    w.put({ name: 'prod', backends: ['swarm'], hostLabels: { tier: 'test' } });
    const commits = w.store.commits.length;
    await w.judge.reconcileApp('prod:web');
    expect(w.hostsOf()).toEqual([
      [0, 'dock-1'],
      [1, 'dock-1'],
    ]);
    expect(w.store.commits.length).toBe(commits);
    expect(w.rejections()).toEqual([]);
    expect(w.book.app('prod:web')?.spec).toMatchObject({ backends: ['docker'], hostLabels: { tier: 'prod' } });
    // the next request follows the new record: its new slot on a swarm node labelled tier=test
    await w.judge.handleScale(scaleMessage(2, { replicas: 3, spread: 'none' }));
    expect(w.hostsOf()).toEqual([
      [0, 'dock-1'],
      [1, 'dock-1'],
      [2, 'swarm-1'],
    ]);
    expect(w.book.app('prod:web')?.spec).toMatchObject({ backends: ['swarm'], hostLabels: { tier: 'test' } });
    w.judge.stop();
  });

  it('snapshots containerSecurity into the slots: containers get it as security, VMs and the slot view never', async () => {
    const w = world(fleet);
    await w.book.load();
    const security = { allowPrivilegeEscalation: true, pidsLimit: 8192 };
    w.put({ name: 'prod', backends: ['docker', 'vmware'], containerSecurity: security });
    await w.judge.handleScale(scaleMessage(1, { replicas: 1, backend: 'docker' }));
    const slot = w.book.slotList()[0]!;
    expect(slot.spec.security).toEqual(security);
    const alloc = { ip: '198.18.0.10', mac: '02:00:c6:12:00:0a', prefixLength: 24, gateway: '198.18.0.1', vlan: 100 };
    expect(createCommandOf(slot, alloc, 'docker').security).toEqual(security);
    expect(swarmCreateCommandOf(slot).security).toEqual(security);
    expect(createCommandOf({ ...slot, spec: { ...slot.spec, template: 'centos-9' } }, alloc, 'vmware')).not.toHaveProperty('security');
    expect(JSON.stringify(slotViewOf(slot))).not.toContain('pidsLimit');
    // nor any event
    expect(JSON.stringify(w.store.commits.flatMap((c) => c.events ?? []))).not.toContain('pidsLimit');
    w.judge.stop();
  });

  it('cannot read the record (database away): the request is judged later, nothing decided', async () => {
    const w = world(fleet);
    await w.book.load();
    w.envs.mockRejectedValueOnce(new Error('connect ECONNREFUSED'));
    await expect(w.judge.handleScale(scaleMessage(1))).rejects.toBeInstanceOf(RetryLater);
    expect(w.rejections()).toEqual([]);
    expect(await w.store.requestSeen('req-1')).toBe(false);
    w.judge.stop();
  });
});

describe('env records', () => {
  it('refuse a default backend outside the env backends (INVALID_REQUEST naming the field)', () => {
    expect(() => checkEnvPut({ name: 'prod', backends: ['docker'], defaults: { backend: 'vmware' } })).toThrow(
      expect.objectContaining({ code: 'INVALID_REQUEST', details: expect.objectContaining({ field: 'defaults.backend', allowed: ['auto', 'docker'] }) }),
    );
    expect(() => checkEnvPut({ name: 'prod', backends: ['docker'], defaults: { backend: 'auto' } })).not.toThrow();
  });

  it('are normalized: backends in a fixed order, pools and labels sorted, empty optionals dropped', () => {
    expect(
      normalizeEnv({ name: 'p', backends: ['swarm', 'docker'], pools: ['b', 'a'], hostLabels: { z: '1', a: '2' }, defaults: {}, containerSecurity: {} }),
    ).toEqual({
      name: 'p',
      backends: ['docker', 'swarm'],
      pools: ['a', 'b'],
      hostLabels: { a: '2', z: '1' },
    });
    expect(Object.keys(normalizeEnv({ name: 'p', backends: ['docker'], pools: ['b', 'a'], hostLabels: { z: '1', a: '2' } }).hostLabels!)).toEqual(['a', 'z']);
  });

  it('an empty pools list allows no pool', () => {
    const r = applyEnvPolicy(scaleData(), normalizeEnv({ name: 'prod', backends: ['docker'], pools: [] }));
    expect(r).toMatchObject({ ok: false, details: { field: 'pool', allowed: [] } });
  });
});

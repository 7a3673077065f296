import { describe, expect, it } from 'vitest';
import type { MigrationRecord, StepName } from './model';
import { LeaseLostError, silentLog } from './ports';
import { MigrationSaga } from './saga';
import { MigrationService } from './migration.service';
import { MigrationWorker } from './worker';
import { FakeAgents, FakeIpam, FakeLiveness, FakeScheduler, InMemoryMigrationStore, ManualClock, refused, transient, type CallLog } from './testing/fakes';

const ID = 'prod:pay:0';

/** A world with one instance on h1 and room for it on h2. */
function world() {
  const log: CallLog = [];
  const clock = new ManualClock();
  const scheduler = new FakeScheduler(log);
  scheduler.addSlot(ID, 'h1');
  scheduler.hosts.add('h2');
  const agents = new FakeAgents(log);
  scheduler.agents = agents;
  agents.place('h1', ID);
  const ipam = new FakeIpam(log);
  const liveness = new FakeLiveness();
  const store = new InMemoryMigrationStore(clock);
  const saga = new MigrationSaga(
    { scheduler, agents, ipam, store, liveness, clock, log: silentLog },
    { source: 'test', fenceDeadlineMs: 15_000, createAttempts: 3, runningTimeoutMs: 60_000, stepGiveUpMs: 60_000, retryBaseMs: 100, retryMaxMs: 1_000 },
  );
  const accepted: MigrationRecord[] = [];
  const service = new MigrationService({ scheduler, store, clock, log: silentLog, saga }, 'replica-a', { source: 'test', requestRetryMs: 1_000 }, (m) =>
    accepted.push(m),
  );
  return { log, clock, scheduler, agents, ipam, liveness, store, saga, service, accepted };
}

type World = ReturnType<typeof world>;

/** Accepts a migration the way the request does, and returns its record. */
async function accept(w: World, request: { toHost?: string; toBackend?: 'docker' | 'vmware' } = {}): Promise<MigrationRecord> {
  const { migrationId } = await w.service.migrate({ instanceId: ID, ...request });
  return (await w.store.get(migrationId))!;
}

const outside = (log: CallLog) => log.filter((c) => !c.startsWith('scheduler.slotGet') && c !== 'ipam.get');
const eventTypes = (w: World) => w.store.events.map((e) => `${e.area}.${e.what}`);

function expectMovedToH2(w: World): void {
  expect(w.scheduler.slots.get(ID)).toMatchObject({ hostId: 'h2', hold: null });
  expect(w.agents.copy('h1', ID)).toBeUndefined();
  expect(w.agents.copy('h2', ID)).toMatchObject({ state: 'running', ip: '198.18.0.7', mac: '02:00:c6:12:00:07' });
  expect(w.ipam.bound.get('198.18.0.7')).toEqual({ instanceId: ID, backend: 'docker', host: 'h2' });
}

describe('MigrationSaga', () => {
  it('stops and confirms the old copy before creating the new one, then binds, removes the old and commits', async () => {
    const w = world();
    const m = await accept(w);
    await w.saga.run(m, 'replica-a');
    expect(outside(w.log)).toEqual([
      'scheduler.hold',
      'scheduler.reserve',
      'agent.stop h1',
      'agent.create h2',
      'agent.get h2',
      'ipam.bind h2',
      'agent.remove h1',
      'scheduler.commit',
    ]);
    const done = (await w.store.get(m.id))!;
    expect(done).toMatchObject({ state: 'completed', step: 'done', from: { hostId: 'h1' }, to: { hostId: 'h2' }, oldStopped: 'ack' });
    expect(done.steps.map((s) => [s.name, s.state])).toEqual(
      ['hold', 'reserve', 'stop-old', 'create-new', 'await-running', 'bind', 'remove-old', 'commit'].map((n) => [n, 'done']),
    );
    for (const s of done.steps) expect(s.attempts).toBeGreaterThanOrEqual(1);
    expectMovedToH2(w);
    expect(eventTypes(w)).toEqual(['migration.started', 'migration.completed']);
    expect(w.store.events[1]).toMatchObject({
      id: `migration-completed:${m.id}`,
      subject: m.id,
      data: { instanceId: ID, from: { hostId: 'h1' }, to: { hostId: 'h2' } },
    });
  });

  it('rolls back when the target refuses the create: removes the target copy, starts the old one, releases', async () => {
    const w = world();
    w.agents.faults.add(
      (c) => c === 'create h2',
      () => refused('IP_IN_USE_ON_WIRE', '198.18.0.7 answers ARP'),
    );
    const m = await accept(w);
    await w.saga.run(m, 'replica-a');
    expect(outside(w.log).slice(2)).toEqual(['agent.stop h1', 'agent.create h2', 'agent.remove h2', 'agent.start h1', 'scheduler.release']);
    const failed = (await w.store.get(m.id))!;
    expect(failed).toMatchObject({ state: 'failed', error: { code: 'IP_IN_USE_ON_WIRE', message: '198.18.0.7 answers ARP' } });
    expect(failed.steps.map((s) => `${s.name}:${s.state}`)).toEqual([
      'hold:done',
      'reserve:done',
      'stop-old:done',
      'create-new:failed',
      'remove-new:done',
      'start-old:done',
      'release:done',
    ]);
    expect(w.agents.copy('h1', ID)?.state).toBe('running');
    expect(w.agents.copy('h2', ID)).toBeUndefined();
    expect(w.scheduler.slots.get(ID)).toMatchObject({ hostId: 'h1', hold: null });
    expect(w.ipam.bound.size).toBe(0);
    expect(eventTypes(w)).toEqual(['migration.started', 'migration.failed']);
    expect(w.store.events[1]!.data).toMatchObject({ reason: { code: 'IP_IN_USE_ON_WIRE' } });
  });

  it('retries a create that times out, and rolls back after the configured attempts', async () => {
    const w = world();
    w.agents.faults.add(
      (c) => c === 'create h2',
      () => transient('create timed out'),
    );
    const m = await accept(w);
    await w.saga.run(m, 'replica-a');
    expect(w.log.filter((c) => c === 'agent.create h2').length).toBe(3);
    const failed = (await w.store.get(m.id))!;
    expect(failed).toMatchObject({ state: 'failed', error: { code: 'UNAVAILABLE' } });
    expect(failed.steps.find((s) => s.name === 'create-new')).toMatchObject({ state: 'failed', attempts: 3 });
    expect(w.agents.copy('h1', ID)?.state).toBe('running');
    expect(w.scheduler.slots.get(ID)?.hold).toBeNull();
  });

  it('rolls back when the new copy never runs', async () => {
    const w = world();
    w.agents.stateAfterCreate = 'created';
    const m = await accept(w);
    await w.saga.run(m, 'replica-a');
    expect((await w.store.get(m.id))!).toMatchObject({ state: 'failed', error: { code: 'START_FAILED' } });
    expect(w.agents.copy('h2', ID)).toBeUndefined();
    expect(w.agents.copy('h1', ID)?.state).toBe('running');
  });

  it('counts a host the scheduler judged lost (silent AND off the wire) past fenceAfter + margin as confirmed off, and leaves its leftover to the scheduler', async () => {
    const w = world();
    const m = await accept(w);
    w.liveness.silentMs.set('h1', 16_000);
    await w.saga.run(m, 'replica-a');
    expect(outside(w.log)).not.toContain('agent.stop h1');
    expect(outside(w.log)).not.toContain('agent.remove h1');
    const done = (await w.store.get(m.id))!;
    expect(done).toMatchObject({ state: 'completed', oldStopped: 'fenced' });
    expect(done.steps.find((s) => s.name === 'remove-old')).toMatchObject({ state: 'skipped' });
  });

  it('waits for a host that is silent but not yet past the fence deadline', async () => {
    const w = world();
    const m = await accept(w);
    w.liveness.silentMs.set('h1', 5_000);
    w.agents.faults.add(
      (c) => c === 'stop h1',
      () => transient('agent did not answer'),
      2,
    );
    await w.saga.run(m, 'replica-a');
    const done = (await w.store.get(m.id))!;
    expect(done.steps.find((s) => s.name === 'stop-old')).toMatchObject({ state: 'done', attempts: 3 });
    expect(done.state).toBe('completed');
  });

  const resumable: StepName[] = ['stop-old', 'create-new', 'await-running', 'bind', 'remove-old', 'commit'];
  it.each(resumable)('a migrator killed right after %s did its work resumes on another replica and completes once', async (step) => {
    const w = world();
    const m = await accept(w);
    // Killed between the step's effect and its record: the next save that closes it.
    w.store.crashOn = (r) => r.steps.some((s) => s.name === step && s.state === 'done');
    await expect(w.saga.run(m, 'replica-a')).rejects.toThrow('killed');
    w.store.expire(m.id);
    const [claimed] = await w.store.claim('replica-b', 10);
    expect(claimed?.step).toBe(step);
    await w.saga.run(claimed!, 'replica-b');
    expect((await w.store.get(m.id))!.state).toBe('completed');
    expectMovedToH2(w);
    expect(eventTypes(w).filter((t) => t === 'migration.completed').length).toBe(1);
  });

  it("creates the target with the app's environment through the scheduler: the secret never reaches the migrator", async () => {
    const w = world();
    w.scheduler.environments.set(ID, { DB_PASSWORD: 's3cr3t' });
    const m = await accept(w);
    await w.saga.run(m, 'replica-a');
    expect((await w.store.get(m.id))!.state).toBe('completed');
    expect(w.agents.created.get(`h2/${ID}`)).toMatchObject({ instanceId: ID, image: 'svc:1', environment: { DB_PASSWORD: 's3cr3t' } });
    // nothing the migrator stored or announced holds it
    expect(JSON.stringify([...w.store.rows.values()])).not.toContain('s3cr3t');
    expect(JSON.stringify(w.store.events)).not.toContain('s3cr3t');
  });

  it('probes the wire through a live docker-agent before a VM start (the old copy confirmed off first)', async () => {
    const w = world();
    w.liveness.probers = ['d1'];
    w.scheduler.nextTarget = { hostId: 'h2', backend: 'vmware' };
    const m = await accept(w, { toBackend: 'vmware' });
    await w.saga.run(m, 'replica-a');
    const calls = outside(w.log);
    expect(calls.indexOf('agent.stop h1')).toBeLessThan(calls.indexOf('agent.probe d1'));
    expect(calls.indexOf('agent.probe d1')).toBeLessThan(calls.indexOf('agent.create h2'));
    expect((await w.store.get(m.id))!.state).toBe('completed');
  });

  it('never starts a VM while its address answers on the wire: the migration rolls back, the old copy runs again', async () => {
    const w = world();
    w.liveness.probers = ['d1'];
    // something else holds the address (same IP as the instance's)
    w.agents.place('h9', 'prod:intruder:0');
    w.scheduler.nextTarget = { hostId: 'h2', backend: 'vmware' };
    const m = await accept(w, { toBackend: 'vmware' });
    await w.saga.run(m, 'replica-a');
    expect(outside(w.log)).not.toContain('agent.create h2');
    const done = (await w.store.get(m.id))!;
    expect(done.state).toBe('failed');
    expect(w.agents.copy('h1', ID)?.state).toBe('running');
  });

  it('a queued migration (from a drain) holds and reserves in the saga, and resumes from either', async () => {
    for (const step of ['hold', 'reserve'] as const) {
      const w = world();
      await w.service.drain('h1');
      const [m] = await w.store.claim('replica-a', 10);
      w.store.crashOn = (r) => r.steps.some((s) => s.name === step && s.state === 'done');
      await expect(w.saga.run(m!, 'replica-a')).rejects.toThrow('killed');
      w.store.expire(m!.id);
      const [again] = await w.store.claim('replica-b', 10);
      await w.saga.run(again!, 'replica-b');
      expect((await w.store.get(m!.id))!.state).toBe('completed');
      expectMovedToH2(w);
      expect(eventTypes(w)).toEqual(['migration.started', 'migration.completed']);
    }
  });

  it('a replica whose lease was taken over acts no more', async () => {
    const w = world();
    const m = await accept(w);
    w.store.expire(m.id);
    expect((await w.store.claim('replica-b', 10)).map((x) => x.id)).toEqual([m.id]);
    w.log.length = 0;
    await expect(w.saga.run(m, 'replica-a')).rejects.toBeInstanceOf(LeaseLostError);
    expect(w.log).toEqual([]);
  });

  it('two replicas never claim the same migration, and a live lease is not claimed', async () => {
    const w = world();
    const m = await accept(w);
    expect(await w.store.claim('replica-b', 10)).toEqual([]);
    w.store.expire(m.id);
    const [a, b] = await Promise.all([w.store.claim('replica-b', 10), w.store.claim('replica-c', 10)]);
    expect([...a!, ...b!].map((x) => x.id)).toEqual([m.id]);
  });

  it('renew tells the worker which leases it lost, and the saga stops', async () => {
    const w = world();
    const worker = new MigrationWorker({ store: w.store, clock: w.clock, log: silentLog }, w.saga, 'replica-a', { concurrency: 4, source: 'test' });
    const m = await accept(w);
    w.store.expire(m.id);
    await w.store.claim('replica-b', 10);
    expect(await w.store.renew('replica-a', [m.id])).toEqual([m.id]);
    worker.adopt(m);
    await worker.stop(1_000);
    expect(outside(w.log).filter((c) => c.startsWith('agent.'))).toEqual([]);
  });
});

describe('MigrationService', () => {
  it('refuses an unknown instance with NOT_FOUND and records nothing', async () => {
    const w = world();
    await expect(w.service.migrate({ instanceId: 'prod:nope:0' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(w.store.rows.size).toBe(0);
  });

  it('refuses a target without capacity: the hold is released, the record deleted, nothing moves', async () => {
    const w = world();
    w.scheduler.faults.add(
      (c) => c === 'reserve',
      () => refused('INSUFFICIENT_CAPACITY', 'h3 lacks 2 cores'),
    );
    await expect(w.service.migrate({ instanceId: ID, toHost: 'h2' })).rejects.toMatchObject({ code: 'INSUFFICIENT_CAPACITY' });
    expect(w.scheduler.slots.get(ID)).toMatchObject({ hostId: 'h1', hold: null });
    expect(w.store.rows.size).toBe(0);
    expect(w.log.filter((c) => c.startsWith('agent.'))).toEqual([]);
    expect(w.store.events).toEqual([]);
  });

  it('passes on INSTANCE_CONFLICT when another migration holds the slot', async () => {
    const w = world();
    await accept(w);
    await expect(w.service.migrate({ instanceId: ID })).rejects.toMatchObject({ code: 'INSTANCE_CONFLICT' });
  });

  it('waits for a scheduler leader within the request, then answers UNAVAILABLE', async () => {
    const w = world();
    w.scheduler.faults.add(
      (c) => c === 'hold',
      () => transient(),
      2,
    );
    expect((await w.service.migrate({ instanceId: ID })).migrationId).toMatch(/^m-/);
    const x = world();
    x.scheduler.faults.add(
      (c) => c === 'hold',
      () => transient(),
    );
    await expect(x.service.migrate({ instanceId: ID })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(x.store.rows.size).toBe(0);
  });

  it('drains one instance of an app at a time and ends with host.drained', async () => {
    const w = world();
    w.scheduler.addSlot('prod:pay:1', 'h1');
    w.agents.place('h1', 'prod:pay:1');
    w.scheduler.addSlot('prod:web:0', 'h1');
    w.agents.place('h1', 'prod:web:0');
    const { migrationIds } = await w.service.drain('h1');
    expect(migrationIds.length).toBe(3);
    expect(w.scheduler.drained.has('h1')).toBe(true);
    // First round: pay:0 and web:0 are free to start, pay:1 waits for pay:0.
    const first = await w.store.claim('replica-a', 10);
    expect(first.map((m) => m.instanceId).sort()).toEqual(['prod:pay:0', 'prod:web:0']);
    for (const m of first) await w.saga.run(m, 'replica-a');
    const second = await w.store.claim('replica-a', 10);
    expect(second.map((m) => m.instanceId)).toEqual(['prod:pay:1']);
    await w.saga.run(second[0]!, 'replica-a');
    const worker = new MigrationWorker({ store: w.store, clock: w.clock, log: silentLog }, w.saga, 'replica-a', { concurrency: 4, source: 'test' });
    await worker.finishDrains();
    await worker.finishDrains();
    const drained = w.store.events.filter((e) => e.area === 'host');
    expect(drained).toMatchObject([{ what: 'drained', subject: 'h1', data: { hostId: 'h1', migrationIds } }]);
    expect(w.agents.hosts.get('h1')?.size).toBe(0);
  });

  it('refuses to drain an unknown host with NOT_FOUND', async () => {
    const w = world();
    await expect(w.service.drain('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

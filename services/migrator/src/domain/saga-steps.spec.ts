import { describe, expect, it } from 'vitest';
import type { MigrationReason } from '@orangery/contracts';
import type { SagaStep, StepName } from './model';
import { silentLog } from './ports';
import { MigrationSaga } from './saga';
import { STEPS } from './saga-steps';
import { MigrationService } from './migration.service';
import { FakeAgents, FakeIpam, FakeLiveness, FakeScheduler, InMemoryMigrationStore, ManualClock, refused, transient, type CallLog } from './testing/fakes';

const ID = 'prod:pay:0';
const reason = (code: MigrationReason['code']): MigrationReason => ({ code, message: code });
const rollbackOf = (step: SagaStep, r: MigrationReason = reason('INTERNAL')): StepName => {
  const to = STEPS[step].rollback;
  return typeof to === 'function' ? to(r) : to;
};

function walk(from: StepName, next: (s: SagaStep) => StepName): StepName[] {
  const path: StepName[] = [];
  for (let s = from; s !== 'done'; s = next(s as SagaStep)) path.push(s);
  return path;
}

describe('the saga table', () => {
  it('walks forward from hold to commit, each step once, and ends', () => {
    expect(walk('hold', (s) => STEPS[s].next)).toEqual(['hold', 'reserve', 'stop-old', 'create-new', 'await-running', 'bind', 'remove-old', 'commit']);
  });

  it.each([
    ['hold', 'release'],
    ['reserve', 'release'],
    ['stop-old', 'remove-new'],
    ['create-new', 'remove-new'],
    ['await-running', 'remove-new'],
    ['bind', 'remove-new'],
    ['remove-old', 'remove-new'],
    ['commit', 'remove-new'],
  ] as const)('a failed %s rolls back from %s (undo only what may have happened)', (step, first) => {
    expect(rollbackOf(step)).toBe(first);
  });

  it('a rollback goes on through its steps whether they succeed or fail, and ends', () => {
    expect(walk('remove-new', (s) => STEPS[s].next)).toEqual(['remove-new', 'start-old', 'release']);
    expect(walk('remove-new', (s) => rollbackOf(s))).toEqual(['remove-new', 'start-old', 'release']);
  });

  it("a hold refused because the slot is another migration's or gone ends without a rollback", () => {
    expect(rollbackOf('hold', reason('INSTANCE_CONFLICT'))).toBe('done');
    expect(rollbackOf('hold', reason('NOT_FOUND'))).toBe('done');
    expect(rollbackOf('hold', reason('UNAVAILABLE'))).toBe('release');
  });

  it('only the steps the scheduler cleans up after may be skipped, and only commit and release retry for ever', () => {
    const names = Object.keys(STEPS) as SagaStep[];
    expect(names.filter((s) => STEPS[s].giveUp === 'skip')).toEqual(['remove-old', 'remove-new', 'start-old']);
    expect(names.filter((s) => STEPS[s].retries === 'forever')).toEqual(['commit', 'release']);
    expect(names.filter((s) => STEPS[s].announces === 'started')).toEqual(['reserve']);
  });
});

function world() {
  const log: CallLog = [];
  const clock = new ManualClock();
  const scheduler = new FakeScheduler(log);
  scheduler.addSlot(ID, 'h1');
  scheduler.hosts.add('h2');
  const agents = new FakeAgents(log);
  scheduler.agents = agents;
  agents.place('h1', ID);
  const store = new InMemoryMigrationStore(clock);
  const saga = new MigrationSaga(
    { scheduler, agents, ipam: new FakeIpam(log), store, liveness: new FakeLiveness(), clock, log: silentLog },
    { source: 'test', fenceDeadlineMs: 15_000, createAttempts: 3, runningTimeoutMs: 60_000, stepGiveUpMs: 60_000, retryBaseMs: 100, retryMaxMs: 1_000 },
  );
  const service = new MigrationService(
    { scheduler, store, clock, log: silentLog, saga },
    'replica-a',
    { source: 'test', requestRetryMs: 1_000 },
    () => undefined,
  );
  return { log, scheduler, store, saga, service };
}

describe('migrate runs hold and reserve through the saga', () => {
  it('records both steps as the saga does, each retry of a missing leader an attempt, and migration.started once', async () => {
    const w = world();
    w.scheduler.faults.add(
      (c) => c === 'hold',
      () => transient(),
      2,
    );
    const { migrationId } = await w.service.migrate({ instanceId: ID });
    const m = (await w.store.get(migrationId))!;
    expect(m.step).toBe('stop-old');
    expect(m.steps.map((s) => [s.name, s.state, s.attempts])).toEqual([
      ['hold', 'done', 3],
      ['reserve', 'done', 1],
    ]);
    expect(w.store.events.map((e) => `${e.area}.${e.what}`)).toEqual(['migration.started']);
  });

  it('a refused reserve is the reply: the hold released, the record gone, no event', async () => {
    const w = world();
    w.scheduler.faults.add(
      (c) => c === 'reserve',
      () => refused('INSUFFICIENT_CAPACITY', 'no room'),
    );
    await expect(w.service.migrate({ instanceId: ID })).rejects.toMatchObject({ code: 'INSUFFICIENT_CAPACITY' });
    expect(w.scheduler.slots.get(ID)?.hold).toBeNull();
    expect(w.store.rows.size).toBe(0);
    expect(w.store.events).toEqual([]);
  });
});

describe('a rollback step that cannot succeed', () => {
  it('a release refused for good (the slot unreadable) ends the migration failed instead of running on', async () => {
    const w = world();
    const { migrationId } = await w.service.migrate({ instanceId: ID });
    const m = (await w.store.get(migrationId))!;
    m.rollingBack = true;
    m.failure = reason('START_FAILED');
    m.step = 'release';
    w.scheduler.faults.add(
      (c) => c === 'release' || c === 'slotGet',
      () => refused('INVALID_REQUEST', 'no'),
    );
    await w.saga.run(m, 'replica-a');
    expect((await w.store.get(migrationId))!).toMatchObject({ state: 'failed', step: 'done', error: { code: 'START_FAILED' } });
  });
});

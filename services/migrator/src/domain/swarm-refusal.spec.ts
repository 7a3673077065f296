import { describe, expect, it } from 'vitest';
import type { MigrationRecord } from './model';
import { silentLog } from './ports';
import { MigrationSaga } from './saga';
import { MigrationService } from './migration.service';
import { FakeAgents, FakeIpam, FakeLiveness, FakeScheduler, InMemoryMigrationStore, ManualClock, refused, type CallLog } from './testing/fakes';

/** issue 16: a move into, out of or within swarm cannot keep the IP; refused with IP_WOULD_CHANGE, nothing changed. */
function world() {
  const log: CallLog = [];
  const clock = new ManualClock();
  const scheduler = new FakeScheduler(log);
  scheduler.addSlot('test:web:0', 'swarm-n1', 'swarm', '198.18.4.5');
  scheduler.addSlot('prod:pay:0', 'h1', 'docker');
  scheduler.hosts.add('h2');
  scheduler.hosts.add('swarm-n2');
  const agents = new FakeAgents(log);
  scheduler.agents = agents;
  agents.place('h1', 'prod:pay:0');
  const store = new InMemoryMigrationStore(clock);
  const saga = new MigrationSaga(
    { scheduler, agents, ipam: new FakeIpam(log), store, liveness: new FakeLiveness(), clock, log: silentLog },
    { source: 'test', fenceDeadlineMs: 15_000, createAttempts: 3, runningTimeoutMs: 60_000, stepGiveUpMs: 60_000, retryBaseMs: 100, retryMaxMs: 1_000 },
  );
  const accepted: MigrationRecord[] = [];
  const service = new MigrationService({ scheduler, store, clock, log: silentLog, saga }, 'replica-a', { source: 'test', requestRetryMs: 1_000 }, (m) =>
    accepted.push(m),
  );
  return { log, scheduler, agents, store, service, accepted };
}

type World = ReturnType<typeof world>;

function expectNothingChanged(w: World): void {
  expect(w.store.rows.size).toBe(0);
  expect(w.store.events).toEqual([]);
  expect(w.accepted).toEqual([]);
  expect(w.log.filter((c) => c.startsWith('agent.'))).toEqual([]);
  for (const s of w.scheduler.slots.values()) expect(s.hold).toBeNull();
  expect(w.scheduler.slots.get('test:web:0')).toMatchObject({ hostId: 'swarm-n1', backend: 'swarm', ip: '198.18.4.5' });
  expect(w.scheduler.slots.get('prod:pay:0')).toMatchObject({ hostId: 'h1', backend: 'docker' });
}

describe('MigrationService and swarm', () => {
  it('refuses to migrate an instance that runs on swarm (IP_WOULD_CHANGE) before holding anything', async () => {
    const w = world();
    for (const request of [{}, { toHost: 'h2' }, { toBackend: 'docker' as const }, { toHost: 'swarm-n2' }]) {
      const err = await w.service.migrate({ instanceId: 'test:web:0', ...request }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'IP_WOULD_CHANGE' });
      expect((err as Error).message).toMatch(/node's ipam block/);
      expect((err as Error).message).toMatch(/docker node update --availability drain/);
    }
    expect(w.log.filter((c) => c !== 'scheduler.slotGet')).toEqual([]);
    expectNothingChanged(w);
  });

  it('refuses toBackend swarm (IP_WOULD_CHANGE) before holding anything', async () => {
    const w = world();
    await expect(w.service.migrate({ instanceId: 'prod:pay:0', toBackend: 'swarm' })).rejects.toMatchObject({
      code: 'IP_WOULD_CHANGE',
      details: { instanceId: 'prod:pay:0', toBackend: 'swarm' },
    });
    expect(w.log.filter((c) => c !== 'scheduler.slotGet')).toEqual([]);
    expectNothingChanged(w);
  });

  it("passes on the scheduler's IP_WOULD_CHANGE for a swarm node as toHost: the hold is released, nothing recorded", async () => {
    const w = world();
    w.scheduler.faults.add(
      (c) => c === 'reserve',
      () => refused('IP_WOULD_CHANGE', 'the target swarm-n2 is a swarm node'),
    );
    await expect(w.service.migrate({ instanceId: 'prod:pay:0', toHost: 'swarm-n2' })).rejects.toMatchObject({ code: 'IP_WOULD_CHANGE' });
    expect(w.log).toContain('scheduler.release');
    expectNothingChanged(w);
  });

  it("passes on the scheduler's refusal to drain a swarm node: no migration queued", async () => {
    const w = world();
    w.scheduler.faults.add(
      (c) => c === 'hostDrain',
      () => refused('IP_WOULD_CHANGE', 'swarm-n1 is a swarm node: drain it in swarm (docker node update --availability drain <node>)'),
    );
    await expect(w.service.drain('swarm-n1')).rejects.toMatchObject({ code: 'IP_WOULD_CHANGE', message: expect.stringMatching(/availability drain/) });
    expect(w.scheduler.drained.size).toBe(0);
    expectNothingChanged(w);
  });
});

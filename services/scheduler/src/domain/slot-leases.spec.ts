import { describe, expect, it, vi } from 'vitest';
import { isRetryable, OrangeryError, type Amounts } from '@orangery/contracts';
import { HostBook } from './host-book';
import type { AppRecord, SlotRecord } from './model';
import { SlotBook } from './slot-book';
import { SlotLeases } from './slot-leases';
import { heartbeat } from './testing/factories';
import { FakeAgents, InMemorySchedulerStore, MemoryLog } from './testing/fakes';
import { appRecord, runningSlot } from './testing/records';

/**
 * The migrator's slot API on its own: a journal holding one running slot of prod/web on
 * host a, ready 8-CPU docker hosts a, b, c, and the slot's worker replaced by two probes
 * (kicks are counted, "a step is running" is a switch).
 */

const FULL: Amounts = { cpu: 8, memoryMb: 16_384, diskMb: 102_400 };

async function leaseWorld(opts: { slots?: SlotRecord[]; app?: AppRecord; hosts?: string[] } = {}) {
  const store = new InMemorySchedulerStore();
  const app = opts.app ?? appRecord();
  store.apps.set('prod:web', app);
  for (const s of opts.slots ?? [runningSlot(0, 'a')]) store.slots.set(s.id, s);
  const hosts = new HostBook(
    3_600_000,
    () => 0,
    () => 0,
  );
  for (const h of opts.hosts ?? ['a', 'b', 'c']) hosts.heartbeat(heartbeat(h));
  const book = new SlotBook(store, hosts, () => undefined);
  await book.load();
  const kick = vi.fn<(id: string) => void>();
  let running = false;
  const agents = new FakeAgents();
  const leases = new SlotLeases(book, hosts, { log: new MemoryLog(), kick, agents, isRunning: () => running }, 'binpack');
  const free = (h: string) => hosts.inventory().free(h);
  return { store, hosts, book, leases, kick, agents, free, setRunning: (r: boolean) => (running = r) };
}

/** The domain error a call fails with, as { code, transient (retryable), details }. */
async function refusal(p: Promise<unknown>): Promise<{ code: string; transient: boolean; details: unknown }> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(OrangeryError);
  const oe = e as OrangeryError;
  return { code: oe.code, transient: isRetryable(oe), details: oe.details };
}

describe('SlotLeases.hold', () => {
  it('holds a running slot for a migration, journaled, and answers the same holder again without a write', async () => {
    const w = await leaseWorld();
    const view = await w.leases.hold('prod:web:0', 'mig-1');
    expect(view).toMatchObject({ id: 'prod:web:0', hostId: 'a', state: 'running', hold: { by: 'mig-1' } });
    expect(w.store.slots.get('prod:web:0')?.hold).toEqual({ by: 'mig-1' });
    const commits = w.store.commits.length;
    expect(await w.leases.hold('prod:web:0', 'mig-1')).toEqual(view);
    expect(w.store.commits.length).toBe(commits);
  });

  it('refuses another migration, naming the holder', async () => {
    const w = await leaseWorld();
    await w.leases.hold('prod:web:0', 'mig-1');
    expect(await refusal(w.leases.hold('prod:web:0', 'mig-2'))).toEqual({ code: 'INSTANCE_CONFLICT', transient: false, details: { heldBy: 'mig-1' } });
  });

  it('is busy (retryable) while the slot has a phase or its worker runs a step', async () => {
    const w = await leaseWorld({ slots: [runningSlot(0, 'a', { phase: 'replace' })] });
    expect(await refusal(w.leases.hold('prod:web:0', 'mig-1'))).toMatchObject({ code: 'UNAVAILABLE', transient: true, details: { phase: 'replace' } });
    const v = await leaseWorld();
    v.setRunning(true);
    expect(await refusal(v.leases.hold('prod:web:0', 'mig-1'))).toMatchObject({ code: 'UNAVAILABLE', transient: true });
    expect(v.store.commits).toEqual([]);
  });

  it('refuses a slot that does not run (nothing to move) and an unknown one', async () => {
    const w = await leaseWorld({ slots: [runningSlot(0, 'a', { state: 'failed' })] });
    expect(await refusal(w.leases.hold('prod:web:0', 'mig-1'))).toMatchObject({ code: 'INSTANCE_CONFLICT', details: { state: 'failed' } });
    expect(await refusal(w.leases.hold('prod:web:9', 'mig-1'))).toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('SlotLeases.reserveTarget', () => {
  it('needs the hold first', async () => {
    const w = await leaseWorld();
    expect(await refusal(w.leases.reserveTarget('prod:web:0', 'mig-1', {}))).toMatchObject({ code: 'INSTANCE_CONFLICT', details: { heldBy: null } });
  });

  it('places the target off the current host and takes its capacity there, once', async () => {
    const w = await leaseWorld();
    await w.leases.hold('prod:web:0', 'mig-1');
    const target = await w.leases.reserveTarget('prod:web:0', 'mig-1', {});
    expect(target.hostId).not.toBe('a');
    expect(target.backend).toBe('docker');
    expect(w.free(target.hostId).cpu).toBe(7);
    expect(w.free('a').cpu).toBe(7); // the old copy still runs there
    expect(w.store.slots.get('prod:web:0')?.hold).toEqual({ by: 'mig-1', target });
    // again: the same target, nothing taken twice
    expect(await w.leases.reserveTarget('prod:web:0', 'mig-1', { toHost: 'c' })).toEqual(target);
    expect(w.free(target.hostId).cpu).toBe(7);
  });

  it('goes only to toHost when given, and never to an excluded host', async () => {
    const w = await leaseWorld();
    await w.leases.hold('prod:web:0', 'mig-1');
    expect(await w.leases.reserveTarget('prod:web:0', 'mig-1', { toHost: 'c' })).toEqual({ hostId: 'c', backend: 'docker' });
    const v = await leaseWorld();
    await v.leases.hold('prod:web:0', 'mig-1');
    expect(await v.leases.reserveTarget('prod:web:0', 'mig-1', { exclude: ['b'] })).toEqual({ hostId: 'c', backend: 'docker' });
  });

  it.each([
    ['an unknown toHost', { toHost: 'nowhere' }, 'NOT_FOUND'],
    ['toHost being the current host', { toHost: 'a' }, 'INSUFFICIENT_CAPACITY'],
    ['a backend the slot has no artifact for', { toBackend: 'vmware' as const }, 'INVALID_REQUEST'],
    ['every other host excluded', { exclude: ['b', 'c'] }, 'INSUFFICIENT_CAPACITY'],
  ])('refuses %s and reserves nothing', async (_what, opts, code) => {
    const w = await leaseWorld();
    await w.leases.hold('prod:web:0', 'mig-1');
    expect((await refusal(w.leases.reserveTarget('prod:web:0', 'mig-1', opts))).code).toBe(code);
    for (const h of ['b', 'c']) expect(w.free(h)).toEqual(FULL);
    expect(w.book.slot('prod:web:0')?.hold).toEqual({ by: 'mig-1' });
  });

  it("refuses a toBackend the app's env record did not allow (POLICY_VIOLATION), even with an artifact for it; an allowed one reserves", async () => {
    const base = appRecord();
    const spec = { ...base.spec, template: 'centos7', backends: ['docker' as const], envBackends: ['docker' as const] };
    const w = await leaseWorld({ app: { ...base, spec, stable: spec } });
    await w.leases.hold('prod:web:0', 'mig-1');
    const r = await refusal(w.leases.reserveTarget('prod:web:0', 'mig-1', { toBackend: 'vmware' }));
    expect(r).toMatchObject({ code: 'POLICY_VIOLATION', details: { field: 'toBackend', allowed: ['docker'] } });
    for (const h of ['b', 'c']) expect(w.free(h)).toEqual(FULL);
    expect(await w.leases.reserveTarget('prod:web:0', 'mig-1', { toBackend: 'docker' })).toMatchObject({ backend: 'docker' });
  });

  it('gives the target back when the journal write fails', async () => {
    const w = await leaseWorld();
    await w.leases.hold('prod:web:0', 'mig-1');
    w.store.failCommits(1);
    await expect(w.leases.reserveTarget('prod:web:0', 'mig-1', {})).rejects.toThrow('database connection lost');
    for (const h of ['b', 'c']) expect(w.free(h)).toEqual(FULL);
    expect(w.book.slot('prod:web:0')?.hold).toEqual({ by: 'mig-1' });
  });
});

describe('SlotLeases.commitTarget', () => {
  it('moves the record to the target, ends the hold and frees the old host', async () => {
    const w = await leaseWorld();
    await w.leases.hold('prod:web:0', 'mig-1');
    const target = await w.leases.reserveTarget('prod:web:0', 'mig-1', { toHost: 'b' });
    const view = await w.leases.commitTarget('prod:web:0', 'mig-1');
    expect(view).toMatchObject({ hostId: 'b', backend: target.backend, state: 'running', phase: null, hold: null, ip: '10.0.0.10' });
    expect(w.store.slots.get('prod:web:0')).toMatchObject({ hostId: 'b', movedBy: 'mig-1', hold: null });
    expect(w.free('a')).toEqual(FULL);
    expect(w.free('b').cpu).toBe(7);
    expect([...w.hosts.get('b')!.placed.keys()]).toEqual(['prod:web:0']);
  });

  it('answers a repeated commit of the same migration without a write', async () => {
    const w = await leaseWorld();
    await w.leases.hold('prod:web:0', 'mig-1');
    await w.leases.reserveTarget('prod:web:0', 'mig-1', { toHost: 'b' });
    const first = await w.leases.commitTarget('prod:web:0', 'mig-1');
    const commits = w.store.commits.length;
    expect(await w.leases.commitTarget('prod:web:0', 'mig-1')).toEqual(first);
    expect(w.store.commits.length).toBe(commits);
  });

  it('refuses a commit without a reserved target, or by another migration', async () => {
    const w = await leaseWorld();
    await w.leases.hold('prod:web:0', 'mig-1');
    expect(await refusal(w.leases.commitTarget('prod:web:0', 'mig-1'))).toMatchObject({ code: 'INSTANCE_CONFLICT' });
    expect(await refusal(w.leases.commitTarget('prod:web:0', 'mig-2'))).toMatchObject({ code: 'INSTANCE_CONFLICT', details: { heldBy: 'mig-1' } });
  });
});

describe('SlotLeases.releaseHold', () => {
  it('drops the target reservation and hands the slot back to its worker', async () => {
    const w = await leaseWorld();
    await w.leases.hold('prod:web:0', 'mig-1');
    await w.leases.reserveTarget('prod:web:0', 'mig-1', { toHost: 'b' });
    const view = await w.leases.releaseHold('prod:web:0', 'mig-1');
    expect(view).toMatchObject({ hostId: 'a', hold: null });
    expect(w.free('b')).toEqual(FULL);
    expect(w.free('a').cpu).toBe(7);
    expect(w.kick).toHaveBeenCalledWith('prod:web:0');
  });

  it('is a no-op on a free slot, refused for another migration', async () => {
    const w = await leaseWorld();
    expect(await w.leases.releaseHold('prod:web:0', 'mig-1')).toMatchObject({ hold: null });
    expect(w.store.commits).toEqual([]);
    await w.leases.hold('prod:web:0', 'mig-1');
    expect(await refusal(w.leases.releaseHold('prod:web:0', 'mig-2'))).toMatchObject({ code: 'INSTANCE_CONFLICT', details: { heldBy: 'mig-1' } });
  });
});

describe('SlotLeases.setDrain', () => {
  it('journals the drain, then takes the host out of placement; and back', async () => {
    const w = await leaseWorld();
    expect(await w.leases.setDrain('b', true)).toEqual({ hostId: 'b', state: 'draining' });
    expect(w.store.commits.at(-1)?.hostDrains).toEqual([expect.objectContaining({ hostId: 'b', drain: true, backend: 'docker' })]);
    expect(await w.leases.setDrain('b', false)).toEqual({ hostId: 'b', state: 'ready' });
  });

  it('leaves the host as it was when the journal write fails, and refuses an unknown host', async () => {
    const w = await leaseWorld();
    w.store.failCommits(1);
    await expect(w.leases.setDrain('b', true)).rejects.toThrow();
    expect(w.hosts.stateOf(w.hosts.get('b')!)).toBe('ready');
    expect(await refusal(w.leases.setDrain('nowhere', true))).toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('slot view and SlotLeases.createOnTarget (issue 13: the environment never reaches the migrator)', () => {
  const SECRET = { DB_PASSWORD: 's3cr3t', API_TOKEN: 'tok-123' };
  const NET = { ip: '10.0.0.10', mac: '02:00:0a:00:00:0a', prefixLength: 24, gateway: '10.0.0.1', vlan: 100 };
  const withSecret = () =>
    runningSlot(0, 'a', { spec: { resources: { cpu: 1, memoryMb: 1024 }, image: 'web:1.0', pool: 'prod-pool', vlan: 100, environment: SECRET } });

  it('slot.get, hold and commit answer the spec without its environment', async () => {
    const w = await leaseWorld({ slots: [withSecret()] });
    const views = [w.leases.slotView('prod:web:0'), await w.leases.hold('prod:web:0', 'mig-1')];
    await w.leases.reserveTarget('prod:web:0', 'mig-1', { toHost: 'b' });
    views.push(await w.leases.commitTarget('prod:web:0', 'mig-1'));
    for (const v of views) {
      expect(v.spec).not.toHaveProperty('environment');
      expect(JSON.stringify(v)).not.toContain('s3cr3t');
    }
    // the record keeps it: the scheduler's own creates still need it
    expect(w.book.slot('prod:web:0')?.spec.environment).toEqual(SECRET);
  });

  it("sends the create with the app's environment to the reserved target's agent", async () => {
    const w = await leaseWorld({ slots: [withSecret()] });
    await w.leases.hold('prod:web:0', 'mig-1');
    await w.leases.reserveTarget('prod:web:0', 'mig-1', { toHost: 'c' });
    const inst = await w.leases.createOnTarget('prod:web:0', 'mig-1', NET);
    expect(inst).toMatchObject({ instanceId: 'prod:web:0', hostId: 'c', state: 'running', ip: NET.ip });
    expect(w.agents.created.get('c/prod:web:0')).toEqual({
      instanceId: 'prod:web:0',
      env: 'prod',
      app: 'web',
      slot: 0,
      image: 'web:1.0',
      resources: { cpu: 1, memoryMb: 1024 },
      network: NET,
      environment: SECRET,
    });
    expect(w.agents.callsOf('create').map((c) => c.hostId)).toEqual(['c']);
  });

  it.each([
    ['another migration', 'mig-2', NET, 'INSTANCE_CONFLICT'],
    ['another address', 'mig-1', { ...NET, ip: '10.0.0.99' }, 'INVALID_REQUEST'],
    ['another MAC', 'mig-1', { ...NET, mac: '02:00:0a:00:00:63' }, 'INVALID_REQUEST'],
    ['another VLAN', 'mig-1', { ...NET, vlan: 200 }, 'INVALID_REQUEST'],
  ])('refuses %s and sends no command', async (_what, by, network, code) => {
    const w = await leaseWorld({ slots: [withSecret()] });
    await w.leases.hold('prod:web:0', 'mig-1');
    await w.leases.reserveTarget('prod:web:0', 'mig-1', { toHost: 'b' });
    expect((await refusal(w.leases.createOnTarget('prod:web:0', by, network))).code).toBe(code);
    expect(w.agents.callsOf('create')).toEqual([]);
  });

  it('refuses a slot that is not held, or held without a target', async () => {
    const w = await leaseWorld({ slots: [withSecret()] });
    expect((await refusal(w.leases.createOnTarget('prod:web:0', 'mig-1', NET))).code).toBe('INSTANCE_CONFLICT');
    await w.leases.hold('prod:web:0', 'mig-1');
    expect(await refusal(w.leases.createOnTarget('prod:web:0', 'mig-1', NET))).toMatchObject({ code: 'INSTANCE_CONFLICT', transient: false });
    expect(w.agents.callsOf('create')).toEqual([]);
  });
});

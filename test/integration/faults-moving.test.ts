import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '@orangery/testing';
import { SVC_INDEX, SVC_PORT, type LabServer } from '../lab';
import { containerName, FaultLab, MAX_GAP_S, type EngineContainer, type InstanceView } from './fixtures/fault-lab';

// Failure semantics v1.1 (CONTRACT.md), the faults where instances must move, and move only
// on evidence, never leaving two holders of an IP on the wire:
// - a host cut from the fabric while its agent keeps NATS: the agent fences (stops its
//   instances, host.isolated), the scheduler starts them on the other server with the same
//   IPs and MACs once they are confirmed stopped; when the host is back on the fabric, its
//   stopped copies stay stopped;
// - a dead host (agent killed, engine stopped, uplink cut): silent AND off the wire past
//   fenceAfter + margin, so `lost`, its instances replaced with the same IPs; when it returns,
//   its copies are never started and are reported `instance.orphaned`.
// The ARP watcher asks every instance IP every 200 ms throughout: never two replies to one
// request; the instances that do not move are untouched and never silent for more than 3 s.
let fl: FaultLab;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

beforeAll(async () => {
  fl = await FaultLab.start({ label: 'faults-moving' });
}, 300_000);

afterAll(async () => {
  await fl?.close();
}, 120_000);

/** Waits until every instance in `moving` runs on `to` (scheduler says running, engine too). */
async function movedTo(moving: InstanceView[], to: LabServer, timeoutMs: number): Promise<InstanceView[]> {
  return waitFor(
    `${moving.map((i) => i.id).join(', ')} running on ${to.id}`,
    async () => {
      const snap = await fl.snapshot();
      const now = moving.map((m) => snap.instances.find((i) => i.id === m.id));
      return now.every((i) => i && i.host === to.id && i.state === 'running' && i.running) ? (now as InstanceView[]) : undefined;
    },
    timeoutMs,
    500,
  );
}

/** Samples one engine every 200 ms: every orangery container seen running there. */
function sampleRunning(s: LabServer): { stop: () => Promise<string[]> } {
  const seen = new Set<string>();
  let on = true;
  const loop = (async () => {
    while (on) {
      const out = await fl.lab.docker(s, ['ps', '--filter', 'name=^/orangery-', '--format', '{{.Names}}'], { timeoutMs: 5_000 }).catch(() => '');
      out
        .split('\n')
        .filter(Boolean)
        .forEach((n) => seen.add(n));
      await sleep(200);
    }
  })();
  return {
    stop: async () => {
      on = false;
      await loop;
      return [...seen];
    },
  };
}

const byName = (cs: EngineContainer[], server: string, id: string) => cs.find((c) => c.server === server && c.name === containerName(id));

describe('moving faults: only on evidence, same IPs, never two holders', () => {
  it('a host cut from the fabric with its agent on NATS: it fences (host.isolated), its instances run on the other server with the same IPs', async () => {
    await fl.waitHostsReady();
    const before = await fl.snapshot();
    const [victim, other] = [fl.lab.servers[0]!, fl.lab.servers[1]!];
    const moving = before.instances.filter((i) => i.host === victim.id);
    const staying = before.instances.filter((i) => i.host !== victim.id);
    expect(moving.length, 'the victim runs instances').toBeGreaterThan(0);
    const t0 = Date.now();
    await fl.cutUplink(victim);
    let moved: InstanceView[] = [];
    let failure = '';
    try {
      moved = await movedTo(moving, other, 60_000);
      for (const i of moved) {
        const got = await waitFor(
          `${i.ip} answers the legacy VM`,
          async () => (await fl.lab.vmHttpGet(fl.lab.vms[0]!, i.ip, SVC_PORT)) ?? undefined,
          20_000,
          200,
        );
        expect(got).toBe(SVC_INDEX);
      }
    } catch (e) {
      failure = String(e);
    }
    // back on the fabric: its copies must stay stopped (the watcher would see a second holder)
    await fl.restoreUplink(victim);
    await sleep(8_000);
    const wire = await fl.wire(t0 - 1_000);
    const after = await fl.snapshot();
    const isolated = fl.eventsSince(t0).filter((e) => e.subject === 'orangery.evt.host.isolated' && e.data?.hostId === victim.id);
    const violations = [
      ...(failure ? [failure] : []),
      ...(isolated.length === 0 ? [`no host.isolated event from ${victim.id}`] : []),
      ...FaultLab.wireViolations(wire, null),
      ...FaultLab.wireViolationsOf(
        wire,
        staying.map((i) => i.ip),
        MAX_GAP_S,
      ),
      ...FaultLab.unchangedOnly(
        before,
        after,
        staying.map((i) => i.id),
      ),
    ];
    for (const m of moving) {
      const a = after.instances.find((i) => i.id === m.id);
      if (!a || a.host !== other.id || a.state !== 'running') violations.push(`${m.id}: not running on ${other.id} (${a?.host}/${a?.state})`);
      else if (a.ip !== m.ip || a.mac !== m.mac) violations.push(`${m.id}: ${m.ip}/${m.mac} -> ${a.ip}/${a.mac}`);
      const old = byName(after.containers, victim.id, m.id);
      const neu = byName(after.containers, other.id, m.id);
      if (old?.running) violations.push(`${m.id}: the old copy runs again on ${victim.id}`);
      // break before make: the new copy started after the old one stopped
      if (old && neu && Date.parse(neu.startedAt) < Date.parse(old.finishedAt))
        violations.push(`${m.id}: new copy started ${neu.startedAt} before the old stopped ${old.finishedAt}`);
    }
    const o = fl.outcome(`${victim.id} cut from the fabric`, t0, (Date.now() - t0) / 1000, before, after, wire, violations);
    console.info(`isolated host: moved ${o.moves}, max gap ${o.maxGap.toFixed(1)} s, duplicates ${o.duplicates}`);
    expect(violations, o.details).toEqual([]);
  }, 180_000);

  it('a dead host (agent killed, engine stopped, uplink cut) is replaced with the same IPs; back, its copies stay stopped and are reported orphaned', async () => {
    await fl.waitHostsReady(60_000);
    const before = await fl.snapshot();
    // the server that runs the most instances dies
    const count = (s: LabServer) => before.instances.filter((i) => i.host === s.id).length;
    const [victim, other] =
      count(fl.lab.servers[0]!) >= count(fl.lab.servers[1]!) ? [fl.lab.servers[0]!, fl.lab.servers[1]!] : [fl.lab.servers[1]!, fl.lab.servers[0]!];
    const moving = before.instances.filter((i) => i.host === victim.id);
    const staying = before.instances.filter((i) => i.host !== victim.id);
    expect(moving.length).toBeGreaterThan(0);
    const t0 = Date.now();
    await fl.killHost(victim);
    const violations: string[] = [];
    try {
      const moved = await movedTo(moving, other, 60_000);
      for (const i of moved) {
        const got = await waitFor(
          `${i.ip} answers the legacy VM`,
          async () => (await fl.lab.vmHttpGet(fl.lab.vms[0]!, i.ip, SVC_PORT)) ?? undefined,
          20_000,
          200,
        );
        if (got !== SVC_INDEX) violations.push(`${i.ip} answered ${got}`);
        const m = moving.find((x) => x.id === i.id)!;
        if (i.ip !== m.ip || i.mac !== m.mac) violations.push(`${i.id}: ${m.ip}/${m.mac} -> ${i.ip}/${i.mac}`);
      }
    } catch (e) {
      violations.push(String(e));
    }
    const replacedAt = Date.now();
    // the host returns: uplink, engine, agent; its copies must never run again
    const tBack = Date.now();
    const sampler = sampleRunning(victim);
    await fl.reviveHost(victim);
    const orphaned = await waitFor(
      `instance.orphaned for ${moving.map((m) => m.id).join(', ')}`,
      () => {
        const evs = fl.eventsSince(tBack).filter((e) => e.subject === 'orangery.evt.instance.orphaned' && e.data?.host === victim.id);
        return moving.every((m) => evs.some((e) => e.data?.instanceId === m.id)) ? evs : undefined;
      },
      30_000,
      250,
    ).catch((e: unknown) => {
      violations.push(String(e));
      return [];
    });
    await sleep(6_000);
    const ranOnVictim = await sampler.stop();
    const wire = await fl.wire(t0 - 1_000);
    const after = await fl.snapshot();
    violations.push(...FaultLab.wireViolations(wire, null));
    violations.push(
      ...FaultLab.wireViolationsOf(
        wire,
        staying.map((i) => i.ip),
        MAX_GAP_S,
      ),
    );
    for (const n of ranOnVictim) if (moving.some((m) => containerName(m.id) === n)) violations.push(`${n} ran again on the returning ${victim.id}`);
    for (const m of moving) {
      const a = after.instances.find((i) => i.id === m.id);
      if (a?.host !== other.id || a.state !== 'running') violations.push(`${m.id}: ${a?.host}/${a?.state} after the return (expected running on ${other.id})`);
      const left = byName(after.containers, victim.id, m.id);
      // kept, stopped, never started since it died with the engine
      if (!left) violations.push(`${m.id}: its copy on ${victim.id} was removed (v1.1: stopped and kept for the retention period)`);
      else if (left.running || left.startedAt !== m.startedAt)
        violations.push(`${m.id}: its copy on ${victim.id} was started again (StartedAt ${m.startedAt} -> ${left.startedAt})`);
      // break before make: the replacement started after the old copy died with its engine
      const neu = byName(after.containers, other.id, m.id);
      if (left && neu && Date.parse(neu.startedAt) < Date.parse(left.finishedAt))
        violations.push(`${m.id}: replacement started ${neu.startedAt} before the old copy stopped ${left.finishedAt}`);
    }
    violations.push(
      ...FaultLab.unchangedOnly(
        before,
        after,
        staying.map((i) => i.id),
      ),
    );
    const o = fl.outcome(`${victim.id} dead, then back`, t0, (replacedAt - t0) / 1000, before, after, wire, violations);
    console.info(`dead host: moved ${o.moves}, max gap ${o.maxGap.toFixed(1)} s, duplicates ${o.duplicates}, orphaned events ${orphaned.length}`);
    expect(violations, o.details).toEqual([]);
  }, 240_000);
});

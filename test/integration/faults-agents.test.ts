import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultLab } from './fixtures/fault-lab';

// Failure semantics v1.1 (CONTRACT.md), one server's agent or engine in trouble while its
// instances serve: the agent killed, the agent frozen (SIGSTOP) and resumed, dockerd frozen.
// The host may become `unknown` (silent, but its instances answer ARP): nothing is replaced.
// Each must change nothing: no instance stopped, restarted, re-created or moved, no instance
// IP silent for more than 3 s, never two replies to one ARP request (watcher on the fabric,
// every instance IP every 200 ms), watched until fenceAfter + margin + 2 s after recovery.
let fl: FaultLab;

beforeAll(async () => {
  fl = await FaultLab.start({ label: 'faults-agents' });
}, 300_000);

afterAll(async () => {
  await fl?.close();
}, 120_000);

describe('agent and engine faults: nothing stops, nothing moves, the wire never goes silent', () => {
  it('a docker-agent killed (SIGKILL) for 30 s, then restarted: it adopts its instances', async () => {
    const s = fl.lab.servers[0]!;
    const o = await fl.observe(`docker-agent of ${s.id} killed 30 s`, () => fl.agentKilled(s, 30));
    expect(o.violations, o.details).toEqual([]);
  }, 150_000);

  it('a docker-agent frozen (SIGSTOP) for 25 s, then resumed (SIGCONT)', async () => {
    const s = fl.lab.servers[1]!;
    const o = await fl.observe(`docker-agent of ${s.id} SIGSTOP 25 s`, () => fl.agentFrozen(s, 25));
    expect(o.violations, o.details).toEqual([]);
  }, 150_000);

  it('dockerd frozen (SIGSTOP) for 20 s, then resumed: its containers keep serving', async () => {
    const s = fl.lab.servers[0]!;
    const o = await fl.observe(`dockerd of ${s.id} SIGSTOP 20 s`, () => fl.engineFrozen(s, 20));
    expect(o.violations, o.details).toEqual([]);
  }, 150_000);
});

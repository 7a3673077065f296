import { describe, expect, it } from 'vitest';
import type { HostFacts, ProbeWireResult } from '@orangery/contracts';
import type { AgentService } from '../domain/agent.service';
import { WireProbeService } from '../domain/wire-probe';
import { FakeArpProbe, FakeEngine } from '../domain/testing/fake-engine';
import { agentRoutes } from './host-runtime';

const ctx = (subject: string) => ({ subject, headers: undefined, actor: undefined });

const FACTS: HostFacts = {
  hostId: 'srv-1',
  backend: 'docker',
  capacity: { cpu: 7, memoryMb: 15_360, diskMb: 100_000 },
  total: { cpu: 8, memoryMb: 16_384, diskMb: 100_000 },
  reserved: { cpu: 1, memoryMb: 1024, diskMb: 0 },
  labels: { rack: 'r1' },
  vlans: 'any',
};

describe('agentRoutes: wire.probe', () => {
  const engine = new FakeEngine({ interfaces: ['eth1'] });
  const probe = new FakeArpProbe();
  probe.onWire.add('198.18.0.9');
  const wire = new WireProbeService(
    engine,
    probe,
    { exists: async (i) => engine.interfaces.has(i) },
    { hostId: 'srv-1', uplink: 'eth1', concurrency: 4, engineTimeoutMs: 100 },
  );
  const route = agentRoutes('srv-1', {} as AgentService, wire, () => FACTS).find((r) => r.subject === 'orangery.agent.srv-1.wire.probe');

  it('is served on orangery.agent.<hostId>.wire.probe and answers the probe', async () => {
    expect(route).toBeDefined();
    const r = (await route!.handler({ vlan: 0, ips: ['198.18.0.9', '198.18.0.10'] }, ctx(route!.subject))) as ProbeWireResult;
    expect(r.results).toEqual([
      { ip: '198.18.0.9', answered: true },
      { ip: '198.18.0.10', answered: false },
    ]);
  });

  it('decodes at the edge: a bad body is INVALID_REQUEST and probes nothing', async () => {
    const before = probe.calls.length;
    await expect(route!.handler({ vlan: 0 }, ctx(route!.subject))).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    await expect(route!.handler({ vlan: 0, ips: ['198.18.0.9'], all: true }, ctx(route!.subject))).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    expect(probe.calls.length).toBe(before);
  });
});

describe('agentRoutes: host.get (issue 13)', () => {
  const route = agentRoutes('srv-1', {} as AgentService, { probeWire: async () => Promise.reject(new Error('unused')) }, () => ({
    ...FACTS,
    // a heartbeat's extra fields never leak into the facts
    ...({ seq: 4, usage: { cpu: 1, memoryMb: 1, diskMb: 1 } } as object),
  })).find((r) => r.subject === 'orangery.agent.srv-1.host.get');

  it("is served on the host's own bound subject and answers exactly the host's facts", async () => {
    expect(route).toBeDefined();
    await expect(route!.handler({}, ctx(route!.subject))).resolves.toEqual(FACTS);
  });

  it('decodes at the edge: an unknown field is INVALID_REQUEST', async () => {
    await expect(route!.handler({ hostId: 'srv-2' }, ctx(route!.subject))).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
  });
});

import { describe, expect, it } from 'vitest';
import type { ProbeWireResult } from '@orangery/contracts';
import type { AgentService } from '../domain/agent.service';
import { WireProbeService } from '../domain/wire-probe';
import { FakeArpProbe, FakeEngine } from '../domain/testing/fake-engine';
import { agentRoutes } from './host-runtime';

const ctx = (subject: string) => ({ subject, headers: undefined, actor: undefined });

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
  const route = agentRoutes('srv-1', {} as AgentService, wire).find((r) => r.subject === 'orangery.agent.srv-1.wire.probe');

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

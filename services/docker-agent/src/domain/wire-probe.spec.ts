import { describe, expect, it } from 'vitest';
import { decode, OrangeryError, ProbeWireCommand, type ProbeWireResult } from '@orangery/contracts';
import { WireProbeService } from './wire-probe';
import { deferred, FakeArpProbe, FakeEngine } from './testing/fake-engine';

const SETTINGS = { hostId: 'srv-1', uplink: 'eth1', concurrency: 4, engineTimeoutMs: 100 };

function setup(interfaces = ['eth1', 'eth1.100']) {
  const engine = new FakeEngine({ interfaces });
  const probe = new FakeArpProbe({ interfaces: engine.interfaces });
  const link = { exists: async (iface: string) => engine.interfaces.has(iface) };
  const wire = new WireProbeService(engine, probe, link, SETTINGS);
  return { engine, probe, wire };
}

const answered = (r: ProbeWireResult) => Object.fromEntries(r.results.map((x) => [x.ip, x.answered]));

describe('wire.probe', () => {
  it('reports which addresses answer ARP on the VLAN, in the order asked, from <uplink>.<vlan>', async () => {
    const { probe, wire } = setup();
    probe.onWire.add('198.18.100.7');
    const r = await wire.probeWire({ vlan: 100, ips: ['198.18.100.8', '198.18.100.7'] });
    expect(r).toEqual({
      hostId: 'srv-1',
      vlan: 100,
      iface: 'eth1.100',
      results: [
        { ip: '198.18.100.8', answered: false },
        { ip: '198.18.100.7', answered: true },
      ],
    });
    expect(probe.calls.every((c) => c.iface === 'eth1.100')).toBe(true);
  });

  it("this host's running containers answer without a probe (a macvlan parent cannot see its children); stopped ones and other VLANs are probed", async () => {
    const { engine, probe, wire } = setup();
    engine.seed({ instanceId: 'prod:web:0', ip: '198.18.0.10' });
    engine.seed({ instanceId: 'prod:web:1', ip: '198.18.0.11', engineState: 'exited', exitCode: 143 });
    engine.seed({ instanceId: 'prod:web:2', ip: '198.18.0.12', labels: { 'io.orangery.vlan': '100' } });
    const r = await wire.probeWire({ vlan: 0, ips: ['198.18.0.10', '198.18.0.11', '198.18.0.12'] });
    expect(answered(r)).toEqual({ '198.18.0.10': true, '198.18.0.11': false, '198.18.0.12': false });
    expect(probe.calls.map((c) => c.ip).sort()).toEqual(['198.18.0.11', '198.18.0.12']);
  });

  it('no interface for the VLAN on this host: UNAVAILABLE with a clear message, nothing probed', async () => {
    const { probe, wire } = setup(['eth1']);
    const e = await wire.probeWire({ vlan: 200, ips: ['198.18.200.7'] }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OrangeryError);
    expect(e).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('no interface eth1.200'), details: { iface: 'eth1.200', vlan: 200 } });
    expect(probe.calls).toEqual([]);
  });

  it('a failing probe fails the request: an uncertain address is never reported silent', async () => {
    const { engine } = setup();
    const probe = new FakeArpProbe();
    probe.inUse = async () => {
      throw new Error('arping on eth1 failed: exit 2');
    };
    const w = new WireProbeService(engine, probe, { exists: async () => true }, SETTINGS);
    await expect(w.probeWire({ vlan: 0, ips: ['198.18.0.7'] })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('an engine that does not answer: UNAVAILABLE (its own addresses cannot be told), not a guess', async () => {
    const { engine, probe, wire } = setup();
    engine.listManaged = () => new Promise(() => undefined);
    await expect(wire.probeWire({ vlan: 0, ips: ['198.18.0.7'] })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(probe.calls).toEqual([]);
  });

  it('probes at most `concurrency` addresses at once, all of them in the end', async () => {
    const { probe, wire } = setup();
    let inFlight = 0;
    let peak = 0;
    const gate = deferred();
    probe.gate = async () => {
      peak = Math.max(peak, ++inFlight);
      await gate.promise;
      inFlight--;
    };
    const ips = Array.from({ length: 20 }, (_, i) => `198.18.0.${100 + i}`);
    const p = wire.probeWire({ vlan: 0, ips });
    await new Promise((r) => setTimeout(r, 10));
    expect(peak).toBe(SETTINGS.concurrency);
    gate.resolve();
    expect((await p).results).toHaveLength(20);
    expect(probe.calls).toHaveLength(20);
  });

  it('the route decodes at the edge: bad bodies are INVALID_REQUEST before any probe', () => {
    const bad: unknown[] = [
      {},
      { vlan: 0, ips: [] },
      { vlan: 4095, ips: ['198.18.0.7'] },
      { vlan: 0, ips: ['not-an-ip'] },
      { vlan: 0, ips: ['198.18.0.7', '198.18.0.7'] },
      { vlan: 0, ips: Array.from({ length: 257 }, (_, i) => `198.18.${i >> 8}.${i & 255}`) },
      { vlan: 0, ips: ['198.18.0.7'], extra: 1 },
    ];
    for (const body of bad)
      expect(() => decode(ProbeWireCommand, body), JSON.stringify(body).slice(0, 80)).toThrow(expect.objectContaining({ code: 'INVALID_REQUEST' }));
  });
});

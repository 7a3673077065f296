import { describe, expect, it } from 'vitest';
import type { VmCreateCommand } from '@orangery/contracts';
import { esxiHost, FakeVcenter, RecordingEvents } from './testing/fake-vcenter';
import { HeartbeatSource } from './heartbeats';
import type { EsxiHost } from './ports';
import { VmIndex } from './vm-index';
import { VmwareAgentService } from './vmware-agent.service';
import { hostIdFromName } from './vm-spec';

const H1 = 'esx01-lab-local';
const H2 = 'esx02-lab-local';
const H3 = 'esx03-lab-local';

function world(readTimeoutMs = 100) {
  const vc = new FakeVcenter([esxiHost('esx01.lab.local'), esxiHost('esx02.lab.local'), esxiHost('esx03.lab.local', { cluster: undefined })]);
  const index = new VmIndex();
  const agent = new VmwareAgentService(
    vc,
    new RecordingEvents(),
    { extraConfig: {}, guestIpTimeoutMs: 10, stopTimeoutSeconds: 0, tasksPerHost: 2, queuePerHost: 2, pollMs: 1 },
    index,
  );
  // the runtime's inventory: its own copies, refreshed on a slower loop
  const hosts = new Map<string, EsxiHost>(vc.hostList.map((h) => [hostIdFromName(h.name), { ...h }]));
  agent.setHosts(hosts);
  let clock = Date.parse('2030-01-01T00:00:00Z');
  const source = new HeartbeatSource(vc, agent, { reservedCpus: 1, reservedMemoryMb: 1024, readTimeoutMs }, () => clock);
  return { vc, agent, index, hosts, source, tick: (ms: number) => (clock += ms) };
}

const create = (slot: number, ip: string): VmCreateCommand => ({
  instanceId: `prod:web:${slot}`,
  env: 'prod',
  app: 'web',
  slot,
  template: 'centos7-jdk8',
  resources: { cpu: 2, memoryMb: 1024 },
  network: { ip, mac: '02:4f:c6:12:09:01', prefixLength: 24, gateway: '198.18.9.254', vlan: 100 },
});

describe("HeartbeatSource: heartbeats from vCenter's view", () => {
  it('every ESXi host heartbeats with connectionState, maintenance and haProtected as vCenter says them now', async () => {
    const { vc, agent, hosts, source } = world();
    await agent.create(H1, create(0, '198.18.9.1'));
    vc.hostList[0]!.haProtected = true;
    vc.hostList[1]!.haProtected = true;
    vc.hostList[1]!.inMaintenanceMode = true;
    const round = (await source.round(hosts))!;
    expect(round.heartbeats.map((hb) => [hb.hostId, hb.connectionState, hb.maintenance, hb.haProtected])).toEqual([
      [H1, 'connected', false, true],
      [H2, 'connected', true, true],
      [H3, 'connected', false, false],
    ]);
    expect(round.heartbeats[0]).toMatchObject({
      backend: 'vmware',
      time: '2030-01-01T00:00:00.000Z',
      seq: 0,
      fenced: false,
      instances: 1,
      allocated: { cpu: 2, memoryMb: 1024, diskMb: 0 },
      reserved: { cpu: 1, memoryMb: 1024, diskMb: 0 },
      labels: { esxi: 'esx01.lab.local', datacenter: 'dc-lab', cluster: 'cluster-a' },
    });
    expect(round.states.map((s) => s.ref)).toEqual(vc.hostList.map((h) => h.ref));
  });

  it('a host vCenter reports notResponding or disconnected keeps heartbeating and says so (the agent is not silent)', async () => {
    const { vc, hosts, source } = world();
    vc.hostList[0]!.connectionState = 'notResponding';
    vc.hostList[2]!.connectionState = 'disconnected';
    const first = (await source.round(hosts))!;
    expect(first.heartbeats.map((hb) => [hb.hostId, hb.connectionState])).toEqual([
      [H1, 'notResponding'],
      [H2, 'connected'],
      [H3, 'disconnected'],
    ]);
    vc.hostList[0]!.connectionState = 'connected';
    const second = (await source.round(hosts))!;
    expect(second.heartbeats.map((hb) => [hb.hostId, hb.connectionState, hb.seq])).toEqual([
      [H1, 'connected', 1],
      [H2, 'connected', 1],
      [H3, 'disconnected', 1],
    ]);
  });

  it('vCenter frozen: the round gives up within its budget and no heartbeat goes out; they resume once it answers, and no VM was touched', async () => {
    const { vc, agent, hosts, source } = world(100);
    await agent.create(H1, create(0, '198.18.9.1'));
    vc.powerChanges.length = 0;
    vc.freeze();
    const t0 = Date.now();
    expect(await source.round(hosts)).toBeUndefined();
    expect(await source.round(hosts)).toBeUndefined();
    expect(Date.now() - t0).toBeLessThan(1_000);
    vc.thaw();
    const back = (await source.round(hosts))!;
    expect(back.heartbeats.map((hb) => [hb.hostId, hb.seq, hb.instances])).toEqual([
      [H1, 0, 1],
      [H2, 0, 0],
      [H3, 0, 0],
    ]);
    expect(vc.powerChanges).toEqual([]);
    expect([...vc.vmsByRef.values()].map((v) => v.powerState)).toEqual(['poweredOn']);
  });

  it('the VM list comes from the change stream when in sync (no call); otherwise one listing within the same budget', async () => {
    const { vc, index, hosts, source } = world(100);
    vc.calls.length = 0;
    await source.round(hosts);
    expect(vc.calls).toEqual(['hostStates', 'vms']);
    index.reset([]);
    vc.calls.length = 0;
    await source.round(hosts);
    expect(vc.calls).toEqual(['hostStates']);
    // a listing that hangs (the stream is out of sync and vCenter froze after the host read) ends the round too
    index.invalidate();
    const realStates = vc.hostStates.bind(vc);
    vc.hostStates = async (ms) => {
      const out = await realStates(ms);
      vc.freeze();
      return out;
    };
    expect(await source.round(hosts)).toBeUndefined();
    vc.thaw();
  });

  it('a host vCenter no longer lists gets no heartbeat (the inventory refresh stops serving it)', async () => {
    const { vc, hosts, source } = world();
    vc.hostList.splice(1, 1);
    const round = (await source.round(hosts))!;
    expect(round.heartbeats.map((hb) => hb.hostId)).toEqual([H1, H3]);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Subscription } from '@nats-io/nats-core';
import { macForIpv4 } from '@orangery/netaddr';
import { ContractClient, freePort, HarnessDir, NatsServer, observeGet, promValue, scrape, ServiceProcess, waitFor } from '@orangery/testing';
import { MoRef, VsphereClient } from '@orangery/vsphere';
import { Lab, LAB_IMAGES, SVC_INDEX, SVC_PORT } from '../lab';
import { vmwareAgentEnv } from './fixtures/lab-cluster';

// The vmware-agent as a real process against vcsim in the lab: its VMs run as containers on
// the lab's ESXi engine (extraConfig RUN.container, filled from ORANGERY_VCENTER_EXTRA_CONFIG),
// so each VM holds its IP and MAC on the fabric, reachable from a legacy VM.
const dir = new HarnessDir('vmware-agent');
let lab: Lab;
let nats: NatsServer;
let client: ContractClient;
let agent: ServiceProcess;
let hbSub: Subscription;
let observePort = 0;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const heartbeats = new Map<string, any>();
/** when each heartbeat arrived (this process's clock) */
const heartbeatTimes: number[] = [];
const HOSTS = ['esx01-lab-local', 'esx02-lab-local', 'esx03-lab-local'];
const TEMPLATE = 'centos7-jdk8';

const agentEnv = (over: Record<string, string> = {}): Record<string, string> =>
  vmwareAgentEnv(nats.url, lab.vcenter!, {
    ORANGERY_STOP_TIMEOUT_SECONDS: '5',
    ORANGERY_VCENTER_GUEST_IP_TIMEOUT_SECONDS: '10',
    ORANGERY_VCENTER_CALL_TIMEOUT_SECONDS: '20',
    ORANGERY_VCENTER_INVENTORY_SECONDS: '5',
    ORANGERY_VCENTER_RETRY_SECONDS: '3',
    ORANGERY_OBSERVE_ADDR: `127.0.0.1:${observePort}`,
    ...over,
  });

const ipOf = (n: number) => `198.18.20.${n}`;
function command(app: string, slot: number, ipN: number, extra: Record<string, unknown> = {}) {
  const ip = ipOf(ipN);
  return {
    instanceId: `it:${app}:${slot}`,
    env: 'it',
    app,
    slot,
    template: TEMPLATE,
    resources: { cpu: 1, memoryMb: 512, heapMb: 256, diskMb: 1024 },
    network: { ip, mac: macForIpv4(ip), prefixLength: 16, gateway: '198.18.0.1', vlan: 0 },
    ...extra,
  };
}

const req = (hostId: string, what: string, body: unknown, timeoutMs = 30_000) => client.request(`orangery.agent.${hostId}.instance.${what}`, body, timeoutMs);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every instance the agent lists, by id: its VM and state. */
async function listed(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const h of HOSTS) for (const i of (await req(h, 'list', {})).data.instances) out.set(i.instanceId, `${i.vmId} ${i.state}`);
  return out;
}

/** How many instance events of each kind the stream holds (a change shows as a new one). */
async function instanceEventCounts(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const what of ['running', 'stopped', 'removed', 'failed']) out[what] = (await client.events(`orangery.evt.instance.${what}`)).length;
  return out;
}

/** The containers behind the VMs on the ESXi engine: name -> id, state. */
async function vmContainers(): Promise<Map<string, string>> {
  const out = await lab.docker(lab.esxi!, ['ps', '-a', '--filter', 'name=^vcsim-orangery-', '--format', '{{.Names}} {{.ID}} {{.State}}']);
  return new Map(
    out
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [name, id, state] = l.split(' ');
        return [name!, `${id} ${state}`];
      }),
  );
}

async function neighbourMac(ip: string): Promise<string | undefined> {
  const r = await lab.execInVm(lab.vms[0]!, ['ip', 'neigh', 'show', ip]);
  return /lladdr ([0-9a-f:]{17})/.exec(r.stdout)?.[1];
}

beforeAll(async () => {
  [lab, nats] = await Promise.all([Lab.setup({ servers: 0, legacyVms: 1, vcenter: true }), NatsServer.start(dir)]);
  client = await ContractClient.connect(nats.url);
  hbSub = client.nc.subscribe('orangery.hb.*', {
    callback: (_e, m) => {
      heartbeats.set(m.subject.slice('orangery.hb.'.length), m.json());
      heartbeatTimes.push(Date.now());
    },
  });
  observePort = await freePort();
  agent = await ServiceProcess.start(dir, 'vmware-agent', agentEnv());
}, 300_000);

afterAll(async () => {
  hbSub?.unsubscribe();
  await client?.close();
  await dir.cleanup();
  await lab?.teardown();
}, 120_000);

describe('vmware-agent against vcsim in the lab', () => {
  it('registers every ESXi host with backend vmware and heartbeats it with capacity, labels and VLANs', async () => {
    await waitFor('heartbeats of the 3 ESXi hosts', () => HOSTS.every((h) => heartbeats.has(h)), 15_000);
    for (const h of HOSTS) {
      const hb = heartbeats.get(h);
      expect(hb).toMatchObject({ hostId: h, backend: 'vmware', labels: { cluster: 'cluster-a', datacenter: 'dc-lab' }, vlans: [0, 100, 200], fenced: false });
      // v1.1: vCenter's view of the host (vcsim 0.24 has no HA: dasConfig.enabled is unset)
      expect(hb).toMatchObject({ connectionState: 'connected', maintenance: false, haProtected: false });
      expect(hb.capacity.cpu).toBeGreaterThan(0);
      expect(hb.capacity.memoryMb).toBeGreaterThan(1000);
      expect(hb.capacity.diskMb).toBeGreaterThan(0);
    }
    const registered = await client.events('orangery.evt.host.registered');
    expect(registered.map((e) => e.data.hostId).sort()).toEqual(HOSTS);
    expect(registered[0]).toMatchObject({ source: expect.stringMatching(/^orangery\/vmware-agent\/esx0\d-lab-local$/), data: { backend: 'vmware' } });
    // issue 13: each ESXi host's facts on its own bound subject, as the scheduler confirms a registration
    for (const h of HOSTS) {
      const facts = await client.request(`orangery.agent.${h}.host.get`, {});
      expect(facts, JSON.stringify(facts)).toMatchObject({ ok: true, data: { hostId: h, backend: 'vmware', vlans: [0, 100, 200] } });
      expect(facts.data.capacity).toEqual(heartbeats.get(h)!.capacity);
      expect(Object.keys(facts.data).sort()).toEqual(['backend', 'capacity', 'hostId', 'labels', 'reserved', 'total', 'vlans']);
    }
  });

  it('clones 5 VMs with distinct IPs: each running, pingable from a legacy VM and answering ARP with its MAC; a repeated create changes nothing', async () => {
    const cmds = [1, 2, 3, 4, 5].map((n) => command('web', n - 1, n));
    const t0 = Date.now();
    const replies = await Promise.all(cmds.map((c, i) => req(HOSTS[i % 3]!, 'create', c, 60_000)));
    console.info(`5 VMs cloned and running in ${Date.now() - t0} ms`);
    for (const [i, r] of replies.entries()) {
      expect(r.ok, JSON.stringify(r)).toBe(true);
      expect(r.data).toMatchObject({
        instanceId: cmds[i]!.instanceId,
        hostId: HOSTS[i % 3],
        backend: 'vmware',
        state: 'running',
        ip: cmds[i]!.network.ip,
        mac: cmds[i]!.network.mac,
        template: TEMPLATE,
      });
    }
    const vm = lab.vms[0]!;
    for (const c of cmds) {
      await waitFor(`${vm.name} pings ${c.network.ip}`, () => lab.vmPing(vm, c.network.ip), 15_000, 200);
      expect(await neighbourMac(c.network.ip)).toBe(c.network.mac);
      expect(await lab.arpProbe(c.network.ip)).toBe(true);
    }
    expect(await lab.vmHttpGet(vm, cmds[0]!.network.ip, SVC_PORT)).toBe(SVC_INDEX);
    // idempotent: the same create again is the same VM
    const again = await req(HOSTS[0]!, 'create', cmds[0]);
    expect(again.ok, JSON.stringify(again)).toBe(true);
    expect(again.data.vmId).toBe(replies[0].data.vmId);
    const list = await req(HOSTS[0]!, 'list', {});
    expect(list.data.instances.map((i: { instanceId: string }) => i.instanceId).sort()).toEqual(['it:web:0', 'it:web:3']);
    await waitFor('allocated in the heartbeat', () => heartbeats.get(HOSTS[0]!)?.instances === 2, 10_000);
    // memory: the JVM rule (heap 256 + 256 head room) over memoryMb 512 -> 512 each
    expect(heartbeats.get(HOSTS[0]!).allocated).toEqual({ cpu: 2, memoryMb: 1024, diskMb: 2048 });
    expect((await vmContainers()).size).toBe(5);
    // /metrics counts from the change stream's index, /readyz checks NATS and vCenter
    const m = await waitFor('5 running VMs in /metrics', async () => {
      const s = await scrape(observePort);
      return promValue(s, 'orangery_agent_instances', { state: 'running' }) === 5 ? s : undefined;
    });
    expect(promValue(m, 'orangery_requests_total', { code: 'ok' })).toBeGreaterThan(0);
    expect(JSON.parse((await observeGet(observePort, '/readyz')).text)).toEqual({ ready: true, checks: { nats: 'ok', vcenter: 'ok' } });
  });

  it('refuses with the contract codes and changes nothing: conflict, duplicate address, unknown template, bad input', async () => {
    const before = await vmContainers();
    const conflict = await req(HOSTS[0]!, 'create', command('web', 0, 1, { resources: { cpu: 2, memoryMb: 512 } }));
    expect(conflict.error).toMatchObject({ code: 'INSTANCE_CONFLICT', details: { instanceId: 'it:web:0', ip: ipOf(1) } });
    const dup = await req(HOSTS[1]!, 'create', command('other', 0, 2));
    expect(dup.error).toMatchObject({ code: 'IP_IN_USE_ON_WIRE', details: { ip: ipOf(2), holder: 'it:web:1' } });
    const noTemplate = await req(HOSTS[1]!, 'create', command('other', 0, 30, { template: 'no-such-template' }));
    expect(noTemplate.error).toMatchObject({ code: 'TEMPLATE_NOT_FOUND', details: { template: 'no-such-template' } });
    const noVlan = await req(HOSTS[1]!, 'create', command('other', 0, 30, { network: { ...command('other', 0, 30).network, vlan: 300 } }));
    expect(noVlan.error).toMatchObject({ code: 'INVALID_REQUEST', details: { field: 'network.vlan' } });
    const { template: _t, ...noTemplateField } = command('other', 0, 30);
    const bad = [
      noTemplateField,
      { ...noTemplateField, image: LAB_IMAGES.svc },
      command('other', 0, 30, { colour: 'red' }),
      command('other', 0, 30, { network: { ip: '198.18.20.999', mac: 'x', prefixLength: 16, gateway: '198.18.0.1', vlan: 0 } }),
      { instanceId: 'NOT AN ID' },
    ];
    for (const body of bad) expect((await req(HOSTS[1]!, 'create', body)).error.code, JSON.stringify(body)).toBe('INVALID_REQUEST');
    expect((await req(HOSTS[1]!, 'stop', { instanceId: 'it:web:1', extra: 1 })).error.code).toBe('INVALID_REQUEST');
    expect((await req(HOSTS[1]!, 'get', { instanceId: 'it:nope:0' })).error.code).toBe('NOT_FOUND');
    const raw = await client.nc.request(`orangery.agent.${HOSTS[1]}.instance.create`, 'not json', { timeout: 5_000 });
    expect(raw.json<{ error: { code: string } }>().error.code).toBe('INVALID_REQUEST');
    expect(await vmContainers()).toEqual(before);
    expect(agent.child.exitCode).toBeNull();
  });

  it('stop takes the IP off the wire (guest shutdown), start brings it back; both idempotent', async () => {
    const c = command('web', 1, 2);
    const host = HOSTS[1]!;
    const stopped = await req(host, 'stop', { instanceId: c.instanceId });
    expect(stopped.data).toMatchObject({ state: 'stopped', ip: c.network.ip });
    await waitFor(`${c.network.ip} off the wire`, async () => !(await lab.vmPing(lab.vms[0]!, c.network.ip)), 10_000, 200);
    expect(await lab.arpProbe(c.network.ip)).toBe(false);
    expect((await req(host, 'stop', { instanceId: c.instanceId })).data.state).toBe('stopped');
    await waitFor(
      'instance.stopped (on request)',
      async () =>
        (await client.events('orangery.evt.instance.stopped')).some((e) => e.data.instanceId === c.instanceId && e.data.reason === 'stopped on request'),
      10_000,
    );
    const started = await req(host, 'start', { instanceId: c.instanceId });
    expect(started.data).toMatchObject({ state: 'running', vmId: stopped.data.vmId });
    await waitFor(`${c.network.ip} back on the wire`, () => lab.vmPing(lab.vms[0]!, c.network.ip), 15_000, 200);
    expect((await req(host, 'start', { instanceId: c.instanceId })).data.state).toBe('running');
  });

  it('an agent killed and restarted adopts every VM: same VMs, same containers, no power state changed (a stopped one stays off)', async () => {
    // one VM off, as a leftover kept by the scheduler would be: the restarted agent must not start it
    const off = command('web', 3, 4);
    expect((await req(HOSTS[0]!, 'stop', { instanceId: off.instanceId, timeoutSeconds: 0 })).data.state).toBe('stopped');
    await waitFor(`${off.network.ip} off the wire`, async () => !(await lab.vmPing(lab.vms[0]!, off.network.ip)), 10_000, 200);
    const before = await listed();
    expect(before.size).toBe(5);
    expect([...before.values()].filter((v) => v.endsWith(' stopped'))).toHaveLength(1);
    const containersBefore = await vmContainers();
    await sleep(2_000); // let the stop's events land before counting
    const eventsBefore = await instanceEventCounts();
    await agent.kill9();
    await sleep(5_000); // the agent away for a while: nothing in vCenter may notice
    agent = await ServiceProcess.start(dir, 'vmware-agent', agentEnv());
    await waitFor('heartbeats again', () => HOSTS.every((h) => heartbeats.get(h)?.seq === 1), 15_000);
    expect(await listed()).toEqual(before);
    expect(await vmContainers()).toEqual(containersBefore);
    const adopted = (await client.events('orangery.evt.instance.running')).filter((e) => e.data.adopted === true);
    expect(new Set(adopted.map((e) => e.data.instanceId))).toEqual(new Set([...before.keys()].filter((id) => id !== off.instanceId)));
    const adoptedOff = (await client.events('orangery.evt.instance.stopped')).filter((e) => e.data.adopted === true);
    expect(adoptedOff.map((e) => e.data.instanceId)).toEqual([off.instanceId]);
    // nothing but the adoption reports: no power change seen by vCenter's change stream
    const eventsAfter = await instanceEventCounts();
    expect(eventsAfter).toEqual({ ...eventsBefore, running: eventsBefore.running! + 4, stopped: eventsBefore.stopped! + 1 });
    for (const ip of [1, 2, 3, 5].map(ipOf)) expect(await lab.vmPing(lab.vms[0]!, ip)).toBe(true);
    expect(await lab.vmPing(lab.vms[0]!, off.network.ip)).toBe(false);
    // back on for the tests that follow (the scheduler's start, not the agent's own)
    expect((await req(HOSTS[0]!, 'start', { instanceId: off.instanceId })).data.state).toBe('running');
  }, 90_000);

  it('remove powers off and destroys (the container goes), and is idempotent', async () => {
    const c = command('web', 4, 5);
    const host = HOSTS[1]!;
    const removed = await req(host, 'remove', { instanceId: c.instanceId });
    expect(removed.data).toMatchObject({ instanceId: c.instanceId, state: 'removed' });
    expect((await req(host, 'remove', { instanceId: c.instanceId })).data.state).toBe('removed');
    expect((await req(host, 'get', { instanceId: c.instanceId })).error.code).toBe('NOT_FOUND');
    await waitFor(`${c.network.ip} off the wire`, async () => !(await lab.vmPing(lab.vms[0]!, c.network.ip)), 10_000, 200);
    expect([...(await vmContainers()).keys()].some((n) => n.startsWith('vcsim-orangery-it-web-4-'))).toBe(false);
    await waitFor(
      'instance.removed',
      async () => (await client.events('orangery.evt.instance.removed')).some((e) => e.data.instanceId === c.instanceId),
      10_000,
    );
  });

  it("maintenance mode in vCenter shows in the host's heartbeats, and nothing else changes", async () => {
    const vc = lab.vcenter!;
    const admin = await VsphereClient.connect({ url: vc.url, username: vc.user, password: vc.password, keepAliveMs: 0 });
    try {
      const esx02 = (await admin.inventory.hosts()).find((h) => h.name === 'esx02.lab.local')!;
      await admin.runTask('EnterMaintenanceMode_Task', new MoRef('HostSystem', esx02.ref.value), { timeout: 0 });
      await waitFor('maintenance: true in the heartbeat', () => heartbeats.get(HOSTS[1]!)?.maintenance === true, 10_000, 100);
      expect(heartbeats.get(HOSTS[0]!)).toMatchObject({ maintenance: false, connectionState: 'connected' });
      await admin.runTask('ExitMaintenanceMode_Task', new MoRef('HostSystem', esx02.ref.value), { timeout: 0 });
      await waitFor('maintenance: false again', () => heartbeats.get(HOSTS[1]!)?.maintenance === false, 10_000, 100);
    } finally {
      await admin.logout();
    }
  });

  it('vCenter frozen for 30 s (SIGSTOP): VMs keep running and answering, none stopped, re-created or destroyed; heartbeats stop, then resume; the agent stays up', async () => {
    const before = await listed();
    expect([...before.values()].every((v) => v.endsWith(' running'))).toBe(true);
    const containersBefore = await vmContainers();
    const eventsBefore = await instanceEventCounts();
    const ips = [...before.keys()].map((id) => ipOf(Number(id.split(':')[2]) + 1));
    const pid = lab.vcenter!.pid;
    const frozenAt = Date.now();
    process.kill(pid, 'SIGSTOP');
    let thawedAt = 0;
    try {
      while (Date.now() - frozenAt < 30_000) {
        for (const ip of ips) expect(await lab.vmPing(lab.vms[0]!, ip), `${ip} answers while vCenter is frozen`).toBe(true);
        expect(agent.child.exitCode).toBeNull();
        await sleep(3_000);
      }
    } finally {
      process.kill(pid, 'SIGCONT');
      thawedAt = Date.now();
    }
    // The agent knows nothing fresh while vCenter is frozen: after one read budget (2 s) and
    // a round in flight, no heartbeat at all.
    expect(heartbeatTimes.filter((t) => t > frozenAt + 4_000 && t < thawedAt)).toEqual([]);
    await waitFor(
      'heartbeats of every host after vCenter came back',
      () => HOSTS.every((h) => heartbeats.get(h)?.time && Date.parse(heartbeats.get(h).time) > thawedAt),
      30_000,
      200,
    );
    expect(agent.child.exitCode).toBeNull();
    expect(await listed()).toEqual(before);
    expect(await vmContainers()).toEqual(containersBefore);
    await sleep(3_000); // whatever the change stream says after its resync has landed
    expect(await instanceEventCounts()).toEqual(eventsBefore);
    for (const ip of ips) expect(await lab.vmPing(lab.vms[0]!, ip)).toBe(true);
  }, 120_000);

  it('vcsim restarted mid-clone: a clear UNAVAILABLE reply, the agent stays up and serves again', async () => {
    const port = new URL(lab.vcenter!.url).port;
    await lab.stopVcenter();
    await lab.startVcenter({ port: Number(port), methodDelayMs: { CloneVM_Task: 5_000 } });
    const c = command('slow', 0, 40);
    const pending = req(HOSTS[0]!, 'create', c, 60_000);
    await new Promise((r) => setTimeout(r, 1_500));
    await lab.stopVcenter('SIGKILL');
    const reply = await pending;
    expect(reply.ok).toBe(false);
    expect(reply.error.code).toBe('UNAVAILABLE');
    // the agent tried again for ORANGERY_VCENTER_RETRY_SECONDS (3 here) before answering
    expect(reply.error.message).toMatch(/vCenter at http:\/\/127\.0\.0\.1:\d+ unreachable: .*\(still after 3 s of retries\)/);
    expect(reply.error.details).toMatchObject({ retryable: true });
    expect(agent.child.exitCode).toBeNull();
    await lab.startVcenter({ port: Number(port) });
    // a fresh vCenter: the agent logs in again by itself and serves the same commands
    const done: { ok?: boolean; data?: { state: string } } = {};
    await waitFor(
      'a create after vCenter came back',
      async () => {
        Object.assign(done, await req(HOSTS[0]!, 'create', c, 60_000));
        return done.ok === true;
      },
      60_000,
      1_000,
    );
    expect(done.data?.state).toBe('running');
    await waitFor(`${c.network.ip} on the wire`, () => lab.vmPing(lab.vms[0]!, c.network.ip), 15_000, 200);
    expect(agent.child.exitCode).toBeNull();
    expect((await req(HOSTS[0]!, 'remove', { instanceId: c.instanceId })).data.state).toBe('removed');
  });

  it('a wrong password or an unreachable vCenter: exit 2 with one line that does not hold the password', async () => {
    const wrong = 'not-the-password-42';
    const a = ServiceProcess.spawn(dir, 'vmware-agent', agentEnv({ ORANGERY_VCENTER_PASSWORD: wrong }));
    expect(await a.exited()).toBe(2);
    expect(a.stderr.trim().split('\n')).toHaveLength(1);
    expect(a.stderr).toMatch(/wrong user name or password/);
    expect(a.stderr).not.toContain(wrong);
    const b = ServiceProcess.spawn(dir, 'vmware-agent', agentEnv({ ORANGERY_VCENTER_URL: 'http://127.0.0.1:1/sdk' }));
    expect(await b.exited()).toBe(2);
    expect(b.stderr.trim().split('\n')).toHaveLength(1);
    expect(b.stderr).toMatch(/unreachable/);
    const c = ServiceProcess.spawn(dir, 'vmware-agent', agentEnv({ ORANGERY_VCENTER_EXTRA_CONFIG: '{"x":"{nope}"}' }));
    expect(await c.exited()).toBe(2);
    expect(c.stderr).toMatch(/unknown placeholder \{nope\}/);
  });
});

import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { VsphereClient } from './client';
import { VsphereFault, VsphereLoginError, VsphereTaskError, VsphereTimeoutError, VsphereTransportError } from './errors';
import type { SoapRequest, SoapTransport } from './transport';
import { replay, type ReplayStep } from './testing/replay';
import { moRef } from './xml';

// Unit tests on responses recorded from vcsim (test/lab/vcsim/record-fixtures.ts).
const URL_ = 'http://127.0.0.1:8989/sdk';
const PASSWORD = 'fixture-password';
const LOGIN: ReplayStep[] = [
  { method: 'RetrieveServiceContent', reply: 'RetrieveServiceContent-not-authenticated' },
  { method: 'Login', reply: 'Login' },
];

function client(steps: ReplayStep[], logs: string[] = []) {
  const transport = replay(steps);
  const log = (obj: object, msg: string) => logs.push(`${msg} ${JSON.stringify(obj)}`);
  const c = new VsphereClient({
    url: URL_,
    username: 'fixture-user',
    password: PASSWORD,
    transport,
    keepAliveMs: 0,
    logger: { debug: log, info: log, warn: log },
  });
  return { c, transport };
}

describe('VsphereClient on recorded vcsim responses', () => {
  it('logs in: service content, session, cookie sent on later calls', async () => {
    const { c, transport } = client([...LOGIN, { method: 'CurrentTime', reply: 'CurrentTime' }]);
    const session = await c.login();
    expect(session.userName).toBe('fixture-user');
    expect(c.serviceContent.about).toMatchObject({ apiType: 'VirtualCenter', apiVersion: '6.5' });
    expect(c.serviceContent.propertyCollector).toEqual(moRef('PropertyCollector', 'propertyCollector'));
    expect(await c.currentTime()).toMatch(/^\d{4}-/);
    expect(transport.requests[2]!.headers.Cookie).toBe('vmware_soap_session="abc123"');
    expect(transport.requests[2]!.headers.SOAPAction).toBe('"urn:vim25/6.5"');
    expect(transport.requests[1]!.body).toContain('<userName>fixture-user</userName>');
  });

  it('a wrong password is a VsphereLoginError, and no log line or message holds the password', async () => {
    const logs: string[] = [];
    const { c } = client([LOGIN[0]!, { method: 'Login', reply: 'Login-bad-login' }], logs);
    const err = await c.login().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VsphereLoginError);
    expect(err).toMatchObject({ faultName: 'InvalidLogin', method: 'Login' });
    expect((err as Error).message).toBe('vCenter login failed for user "fixture-user": wrong user name or password (InvalidLogin)');
    expect(JSON.stringify(err)).not.toContain(PASSWORD);
    expect(logs.join('\n')).not.toContain(PASSWORD);
    expect(inspect(c, { depth: 5 })).not.toContain(PASSWORD);
  });

  it('NotAuthenticated: logs in again once and repeats the call', async () => {
    const logs: string[] = [];
    const { c, transport } = client(
      [
        ...LOGIN,
        { method: 'CurrentTime', reply: 'CurrentTime-not-authenticated' },
        { method: 'Login', reply: 'Login' },
        { method: 'CurrentTime', reply: 'CurrentTime' },
      ],
      logs,
    );
    await c.login();
    expect(await c.currentTime()).toMatch(/^\d{4}-/);
    expect(c.sessionGeneration).toBe(2);
    expect(transport.left()).toBe(0);
    expect(logs.some((l) => l.startsWith('vCenter session lost'))).toBe(true);
    expect(logs.join('\n')).not.toContain(PASSWORD);
  });

  it('NotAuthenticated before any login is an error, not a login loop', async () => {
    const { c } = client([{ method: 'CurrentTime', reply: 'CurrentTime-not-authenticated' }]);
    const err = await c.currentTime().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VsphereFault);
    expect(err).toMatchObject({ faultName: 'NotAuthenticated', details: { privilegeId: 'System.View' } });
  });

  it('a failed task is a VsphereTaskError naming the fault and its fields', async () => {
    const vm = moRef('VirtualMachine', 'vm-56');
    const { c } = client([
      ...LOGIN,
      { method: 'PowerOnVM_Task', reply: 'PowerOnVM_Task-power-on-again' },
      { method: 'RetrievePropertiesEx', reply: 'RetrievePropertiesEx-power-on-again' },
    ]);
    await c.login();
    const err = await c.vms.powerOn(vm).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VsphereTaskError);
    expect(err).toMatchObject({ faultName: 'InvalidPowerState', task: 'task-58', details: { requestedState: 'poweredOn', existingState: 'poweredOn' } });
    expect((err as Error).message).toBe('PowerOn on vm-56 failed: InvalidPowerState (requestedState=poweredOn, existingState=poweredOn)');
  });

  it('lists hosts with capacity and usage (container view, RetrievePropertiesEx, DestroyView)', async () => {
    const { c, transport } = client([
      ...LOGIN,
      { method: 'CreateContainerView', reply: 'CreateContainerView-hosts' },
      { method: 'RetrievePropertiesEx', reply: 'RetrievePropertiesEx-hosts' },
      { method: 'DestroyView', reply: 'DestroyView-hosts' },
    ]);
    await c.login();
    const hosts = await c.inventory.hosts();
    expect(hosts.map((h) => h.name)).toEqual(['esx01.lab.local', 'esx02.lab.local', 'esx03.lab.local']);
    expect(hosts[0]).toMatchObject({
      connectionState: 'connected',
      powerState: 'poweredOn',
      inMaintenanceMode: false,
      parent: { type: 'ClusterComputeResource' },
    });
    expect(hosts[0]!.cpu.cores).toBeGreaterThan(0);
    expect(hosts[0]!.cpu.totalMhz).toBe(hosts[0]!.cpu.cores * hosts[0]!.cpu.mhzPerCore);
    expect(hosts[0]!.memory.totalMb).toBeGreaterThan(0);
    expect(transport.requests[3]!.body).toContain('<selectSet xsi:type="TraversalSpec"><name>view</name><type>ContainerView</type><path>view</path>');
  });

  it("host states: connection, maintenance and the cluster's HA flag in one retrieval; the view is kept for the next read", async () => {
    const { c, transport } = client([
      ...LOGIN,
      { method: 'CreateContainerView', reply: 'CreateContainerView-host-states' },
      { method: 'RetrievePropertiesEx', reply: 'RetrievePropertiesEx-host-states' },
      // edited by hand from the recording (vcsim 0.24 cannot turn HA on nor disconnect a host)
      { method: 'RetrievePropertiesEx', reply: 'RetrievePropertiesEx-host-states-ha' },
    ]);
    await c.login();
    const first = await c.inventory.hostStates(undefined, { timeoutMs: 2_000 });
    expect(first.map((h) => [h.name, h.connectionState, h.inMaintenanceMode, h.haEnabled])).toEqual([
      ['esx01.lab.local', 'connected', false, false],
      ['esx02.lab.local', 'connected', false, false],
      ['esx03.lab.local', 'connected', false, false],
    ]);
    const second = await c.inventory.hostStates(undefined, { timeoutMs: 2_000 });
    expect(second.map((h) => [h.name, h.connectionState, h.inMaintenanceMode, h.haEnabled])).toEqual([
      ['esx01.lab.local', 'connected', false, true],
      ['esx02.lab.local', 'notResponding', false, true],
      ['esx03.lab.local', 'connected', true, true],
    ]);
    expect(transport.left()).toBe(0);
    expect(transport.requests[3]!.body).toContain('<pathSet>configuration.dasConfig.enabled</pathSet>');
    // every call of the read carries what is left of the 2 s, none the client's 60 s
    for (const r of transport.requests.slice(2)) expect(r.timeoutMs).toBeLessThanOrEqual(2_000);
  });

  it('host states: a view that died with its session is made again, once', async () => {
    const { c, transport } = client([
      ...LOGIN,
      { method: 'CreateContainerView', reply: 'CreateContainerView-host-states' },
      { method: 'RetrievePropertiesEx', reply: 'RetrievePropertiesEx-host-states' },
      { method: 'RetrievePropertiesEx', reply: 'RetrievePropertiesEx-view-gone' },
      { method: 'CreateContainerView', reply: 'CreateContainerView-host-states' },
      { method: 'RetrievePropertiesEx', reply: 'RetrievePropertiesEx-host-states' },
    ]);
    await c.login();
    await c.inventory.hostStates();
    expect(await c.inventory.hostStates()).toHaveLength(3);
    expect(transport.left()).toBe(0);
  });

  it('a read with a budget: a frozen vCenter is a VsphereTimeoutError within it, and a spent budget sends nothing more', async () => {
    const never: SoapTransport = (req) =>
      new Promise((_, reject) => setTimeout(() => reject(new VsphereTimeoutError(`${req.method}: no answer`, req.method)), req.timeoutMs));
    const steps = replay([...LOGIN]);
    const requests: SoapRequest[] = [];
    const t: SoapTransport = (req) => (requests.push(req), steps.left() > 0 ? steps(req) : never(req));
    const c = new VsphereClient({ url: URL_, username: 'fixture-user', password: PASSWORD, transport: t, keepAliveMs: 0 });
    await c.login();
    const t0 = Date.now();
    await expect(c.inventory.hostStates(undefined, { timeoutMs: 200 })).rejects.toBeInstanceOf(VsphereTimeoutError);
    await expect(c.listObjects('VirtualMachine', ['name'], undefined, { timeoutMs: 200 })).rejects.toBeInstanceOf(VsphereTimeoutError);
    expect(Date.now() - t0).toBeLessThan(1_500);
    expect(requests.slice(2).map((r) => [r.method, r.timeoutMs <= 200])).toEqual([
      ['CreateContainerView', true],
      ['CreateContainerView', true],
    ]);
  });

  it('reads a VM: power state, extraConfig, NIC, CPU and memory', async () => {
    const { c } = client([...LOGIN, { method: 'RetrievePropertiesEx', reply: 'RetrievePropertiesEx-vm' }]);
    await c.login();
    const vm = await c.vms.get(moRef('VirtualMachine', 'vm-56'));
    expect(vm).toMatchObject({ name: 'fixture-vm', powerState: 'poweredOff', template: false, numCpu: 2, memoryMb: 4096 });
    expect(vm.extraConfig['guestinfo.orangery.ip']).toBe('198.18.7.20');
    expect(vm.nics).toHaveLength(1);
    expect(vm.nics[0]).toMatchObject({ type: 'VirtualVmxnet3' });
  });

  it('change tracking: WaitForUpdatesEx update sets, version by version', async () => {
    const { c, transport } = client([
      ...LOGIN,
      { method: 'WaitForUpdatesEx', reply: 'WaitForUpdatesEx-initial' },
      { method: 'WaitForUpdatesEx', reply: 'WaitForUpdatesEx-changed' },
    ]);
    await c.login();
    const first = await c.waitForUpdates('', { maxWaitSeconds: 2 });
    expect(first?.filterSets[0]?.objects[0]).toMatchObject({ kind: 'enter', changes: [{ name: 'runtime.powerState', op: 'assign', val: 'poweredOff' }] });
    const next = await c.waitForUpdates(first!.version, { maxWaitSeconds: 2 });
    expect(next?.filterSets[0]?.objects[0]).toMatchObject({ kind: 'modify', changes: [{ name: 'runtime.powerState', val: 'poweredOn' }] });
    expect(transport.requests[3]!.body).toContain(`<version>${first!.version}</version>`);
  });

  it('transport failures are VsphereTransportErrors naming the method', async () => {
    const { c } = client([{ method: 'RetrieveServiceContent', reply: { status: 502, setCookie: [], body: '<html>bad gateway</html>' } }]);
    const err = await c.retrieveServiceContent().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VsphereTransportError);
    expect((err as Error).message).toBe('RetrieveServiceContent: vCenter answered HTTP 502 without a SOAP response');
  });

  it('refuses credentials in the URL and missing passwords', () => {
    expect(() => new VsphereClient({ url: 'http://u:p@127.0.0.1/sdk', username: 'u', password: 'p' })).toThrow(/not in the vCenter URL/);
    expect(() => new VsphereClient({ url: URL_, username: 'u', password: '' })).toThrow(/required/);
  });
});

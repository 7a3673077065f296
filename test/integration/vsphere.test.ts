import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '@orangery/testing';
import { MoRef, VsphereClient, VsphereLoginError, VsphereTaskError, VsphereTransportError, type NetworkInfo } from '@orangery/vsphere';
import { Lab, LAB_IMAGES, labResidue, SVC_INDEX, SVC_PORT } from '../lab';

// The vSphere client against the lab's real vCenter simulator: a VM cloned with
// extraConfig RUN.container runs as a container on the lab's ESXi engine, on the fabric,
// with its IP and MAC, reachable from a legacy VM.
const TEMPLATE = 'centos7-jdk8';
const VM_IP = '198.18.7.10';
const VM_MAC = '02:00:c6:12:07:0a';

describe('libs/vsphere against vcsim in the lab', () => {
  let lab: Lab;
  let client: VsphereClient;
  let folder: MoRef;
  let pool: MoRef;
  let pg100: NetworkInfo;
  const created: MoRef[] = [];

  const connect = () => {
    const vc = lab.vcenter!;
    return VsphereClient.connect({ url: vc.url, username: vc.user, password: vc.password, callTimeoutMs: 30_000 });
  };
  const esxiContainers = async (nameFilter = 'vcsim-') =>
    (await lab.docker(lab.esxi!, ['ps', '-a', '--filter', `name=^${nameFilter}`, '--format', '{{.Names}} {{.State}}'])).split('\n').filter(Boolean);

  beforeAll(async () => {
    lab = await Lab.setup({ servers: 0, legacyVms: 1, vcenter: true });
    console.info(`lab with vcenter: setup ${lab.timings.setupMs} ms (vcsim build ${lab.timings.vcsimBuildMs} ms, start ${lab.timings.vcsimStartMs} ms)`);
    client = await connect();
    folder = (await client.vms.findByInventoryPath('/dc-lab/vm/orangery'))!;
    pool = (await client.inventory.clusters())[0]!.resourcePool!;
    pg100 = (await client.inventory.networks()).find((n) => n.name === 'pg-vlan100')!;
  }, 300_000);

  afterAll(async () => {
    // Best effort: the lab teardown removes vcsim and every container anyway.
    for (const vm of created) {
      await client?.vms.powerOff(vm).catch(() => undefined);
      await client?.vms.destroy(vm).catch(() => undefined);
    }
    await client?.logout();
    await lab?.teardown();
    if (lab) expect(await labResidue([lab.labDir])).toEqual({ interfaces: [], netns: [], processes: [], mounts: [], cgroups: [], dirs: [] });
  }, 120_000);

  it('logs in and reads the service content', async () => {
    expect(client.serviceContent.about.apiType).toBe('VirtualCenter');
    expect(client.session?.userName).toBe(lab.vcenter!.user);
    expect(await client.currentTime()).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('a wrong password is a clear login error that does not echo the password', async () => {
    const vc = lab.vcenter!;
    const wrong = 'not-the-password-42';
    const err = await VsphereClient.connect({ url: vc.url, username: vc.user, password: wrong }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VsphereLoginError);
    expect((err as VsphereLoginError).faultName).toBe('InvalidLogin');
    expect((err as Error).message).toContain('wrong user name or password');
    expect((err as Error).message).not.toContain(wrong);
  });

  it('lists the site: 3 ESXi hosts with capacity, one cluster, a datastore, port groups with VLAN ids', async () => {
    const hosts = await client.inventory.hosts();
    expect(hosts.map((h) => h.name).sort()).toEqual(['esx01.lab.local', 'esx02.lab.local', 'esx03.lab.local']);
    for (const h of hosts) {
      expect(h.cpu.cores).toBeGreaterThan(0);
      expect(h.cpu.totalMhz).toBeGreaterThan(0);
      expect(h.memory.totalMb).toBeGreaterThan(1000);
      expect(h.connectionState).toBe('connected');
    }
    const [cluster] = await client.inventory.clusters();
    expect(cluster).toMatchObject({ name: 'cluster-a', numHosts: 3 });
    expect(cluster!.hosts.map((h) => h.value).sort()).toEqual(hosts.map((h) => h.ref.value).sort());
    const [ds] = await client.inventory.datastores();
    expect(ds).toMatchObject({ name: 'datastore1', accessible: true });
    expect(ds!.freeMb).toBeGreaterThan(0);
    const nets = await client.inventory.networks();
    const vlans = Object.fromEntries(nets.filter((n) => n.kind === 'dvportgroup').map((n) => [n.name, n.vlanId]));
    expect(vlans).toEqual({ vlan0: 0, 'pg-vlan100': 100, 'pg-vlan200': 200 });
    expect(pg100.switchUuid).toBeTruthy();
  });

  it('finds a template by name and by inventory path', async () => {
    const byName = await client.vms.findByName(TEMPLATE);
    const byPath = await client.vms.findByInventoryPath(`/dc-lab/vm/templates/${TEMPLATE}`);
    expect(byName).toBeDefined();
    expect(byPath?.value).toBe(byName!.value);
    const t = await client.vms.get(byName!);
    expect(t).toMatchObject({ template: true, numCpu: 2, memoryMb: 4096 });
    expect(t.nics).toHaveLength(1);
    expect(await client.vms.findByName('no-such-vm')).toBeUndefined();
    expect(await client.vms.findByInventoryPath('/dc-lab/vm/templates/no-such-vm')).toBeUndefined();
  });

  it('clones a VM onto the fabric: pingable with its IP and MAC, tracked, off the wire when powered off, gone when destroyed', async () => {
    const vm1 = lab.vms[0]!;
    const template = (await client.vms.findByName(TEMPLATE))!;
    const name = 'orangery-it-1';
    const progress: number[] = [];
    const t0 = Date.now();
    const vm = await client.vms.clone(template, {
      name,
      folder,
      pool,
      numCPUs: 1,
      memoryMB: 1024,
      extraConfig: {
        'RUN.container': JSON.stringify([
          '--tmpfs',
          '/sys/class',
          '--network',
          lab.vcenter!.macvlanNetwork,
          '--ip',
          VM_IP,
          '--mac-address',
          VM_MAC,
          LAB_IMAGES.svc,
        ]),
        'guestinfo.orangery.instance': 'it:vsphere:0',
      },
      nic: { network: pg100, macAddress: VM_MAC },
      customization: { hostName: name, ip: VM_IP, subnetMask: '255.255.0.0', gateway: '198.18.0.1' },
      customizationMode: 'after-clone',
      powerOn: true,
      onProgress: (p) => progress.push(p),
    });
    created.push(vm);
    const cloneAndPowerOnMs = Date.now() - t0;
    console.info(`clone + power-on: ${cloneAndPowerOnMs} ms`);

    const info = await client.vms.get(vm);
    expect(info).toMatchObject({ name, powerState: 'poweredOn', template: false, numCpu: 1, memoryMb: 1024, ipAddress: VM_IP });
    expect(info.extraConfig['guestinfo.orangery.instance']).toBe('it:vsphere:0');
    expect(info.nics[0]).toMatchObject({ macAddress: VM_MAC, addressType: 'manual', network: pg100.portgroupKey });

    await waitFor(`${vm1.name} pings ${VM_IP}`, () => lab.vmPing(vm1, VM_IP), 15_000, 200);
    expect(await lab.vmHttpGet(vm1, VM_IP, SVC_PORT)).toBe(SVC_INDEX);
    const neigh = await lab.execInVm(vm1, ['ip', 'neigh', 'show', VM_IP]);
    expect(neigh.stdout).toContain(`lladdr ${VM_MAC}`);
    expect(await lab.arpProbe(VM_IP)).toBe(true);
    // guestinfo.* keys reach the "guest" as environment variables (vcsim's RUN.container).
    const [ctr] = await esxiContainers(`vcsim-${name}-`);
    const env = await lab.docker(lab.esxi!, ['exec', ctr!.split(' ')[0]!, 'env']);
    expect(env).toContain('VMX_GUESTINFO_ORANGERY_INSTANCE=it:vsphere:0');

    // Change tracking: a filter on the VM's power state sees the power-off.
    const filter = await client.createFilter({ propSet: [{ type: 'VirtualMachine', pathSet: ['runtime.powerState'] }], objectSet: [{ obj: vm }] });
    const first = await client.waitForUpdates('', { maxWaitSeconds: 5 });
    expect(first?.filterSets[0]?.objects[0]?.changes[0]).toMatchObject({ name: 'runtime.powerState', val: 'poweredOn' });
    await client.vms.powerOff(vm);
    const next = await client.waitForUpdates(first!.version, { maxWaitSeconds: 5 });
    expect(next?.filterSets[0]?.objects[0]).toMatchObject({ kind: 'modify', obj: vm });
    expect(next?.filterSets[0]?.objects[0]?.changes).toContainEqual({ name: 'runtime.powerState', op: 'assign', val: 'poweredOff' });
    await client.destroyFilter(filter);

    await waitFor(`${VM_IP} off the wire`, async () => !(await lab.vmPing(vm1, VM_IP)), 10_000, 200);
    expect(await lab.arpProbe(VM_IP)).toBe(false);
    expect(await client.vms.powerState(vm)).toBe('poweredOff');

    await client.vms.destroy(vm);
    created.splice(created.indexOf(vm), 1);
    expect(await client.vms.findByName(name)).toBeUndefined();
    expect(await esxiContainers(`vcsim-${name}-`)).toEqual([]);
  });

  it('task faults are typed errors that name the fault and its state', async () => {
    const template = (await client.vms.findByName(TEMPLATE))!;
    const vm = await client.vms.clone(template, { name: 'orangery-it-2', folder, pool });
    created.push(vm);
    const err = await client.vms.powerOff(vm).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VsphereTaskError);
    expect(err).toMatchObject({ faultName: 'InvalidPowerState', details: { existingState: 'poweredOff' } });
    expect((err as Error).message).toMatch(/InvalidPowerState.*existingState=poweredOff/);
    // (vcsim 0.24 accepts a second clone with the same name: no DuplicateName fault to test.)
    await client.vms.destroy(vm);
    created.pop();
  });

  it('logs in again by itself when the session is terminated', async () => {
    const admin = await connect();
    try {
      const before = client.sessionGeneration;
      await admin.call('TerminateSession', admin.serviceContent.sessionManager, { sessionId: [client.session!.key] });
      expect((await client.inventory.datastores()).map((d) => d.name)).toEqual(['datastore1']);
      expect(client.sessionGeneration).toBe(before + 1);
    } finally {
      await admin.logout();
    }
  });

  it('vcsim killed mid-clone: a clear transport error at once, no hang; a restarted vcsim is clean', async () => {
    await client.logout();
    await lab.stopVcenter();
    await lab.startVcenter({ methodDelayMs: { CloneVM_Task: 5_000 } });
    client = await connect();
    folder = (await client.vms.findByInventoryPath('/dc-lab/vm/orangery'))!;
    pool = (await client.inventory.clusters())[0]!.resourcePool!;
    const template = (await client.vms.findByName(TEMPLATE))!;
    const cloning = client.vms.clone(template, { name: 'orangery-it-3', folder, pool }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 1_000));
    await lab.stopVcenter('SIGKILL');
    const err = await cloning;
    expect(err).toBeInstanceOf(VsphereTransportError);
    expect((err as Error).message).toMatch(/CloneVM_Task: vCenter at http:\/\/127\.0\.0\.1:\d+ unreachable: connection lost/);
    // no hang: a client waiting for the delayed clone would never get here (the test's timeout)
    const again = await client.inventory.hosts().catch((e: unknown) => e);
    // refused, or reset when a kept-alive socket of the dead vcsim is tried first: vCenter is down either way
    expect(again).toMatchObject({ name: 'VsphereTransportError', code: expect.stringMatching(/^(ECONNREFUSED|ECONNRESET)$/) });
    client.close();

    await lab.startVcenter();
    client = await connect();
    expect(await client.vms.findByName('orangery-it-3')).toBeUndefined();
  });
});

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '@orangery/testing';
import { cleanLabLeftovers, Lab, LAB_GATEWAY, LAB_IMAGES, LAB_SUBNET, labResidue, SVC_INDEX, SVC_PORT, type LabServer } from '../lab';

// The lab itself, proven on the wire: two servers (one dockerd each) and two legacy VMs on
// one fabric; containers on docker macvlan networks reach each other and the VMs by IP.
const NET = 'orangery-lab';
const ctrIp = (s: LabServer) => `198.18.1.${s.index}`;
const ctrMac = (s: LabServer) => `02:4f:c6:12:01:0${s.index}`;

/** Exists and is not a zombie. */
const running = (pid: number) => {
  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

const expectNoResidue = async (lab: Lab) => {
  const left = await labResidue([lab.labDir]);
  expect(left).toEqual({ interfaces: [], netns: [], processes: [], mounts: [], cgroups: [], dirs: [] });
};

describe('the lab: 2 servers, 2 legacy VMs, one fabric', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.setup({ servers: 2, legacyVms: 2 });
    console.info(`lab setup: ${lab.timings.setupMs} ms`);
    for (const s of lab.servers) {
      await lab.docker(s, ['network', 'create', '-d', 'macvlan', '--subnet', LAB_SUBNET, '--gateway', LAB_GATEWAY, '-o', `parent=${s.uplink}`, NET]);
      await lab.docker(s, ['run', '-d', '--name', 'svc', '--network', NET, '--ip', ctrIp(s), '--mac-address', ctrMac(s), LAB_IMAGES.svc]);
    }
  }, 180_000);

  afterAll(async () => {
    await lab?.teardown();
  });

  it('builds what it promises: engines, uplinks, VMs, images', async () => {
    expect(lab.servers.map((s) => [s.id, s.uplink, s.dockerHost])).toEqual([
      ['olab-s1', 'olab-s1u', 'unix:///run/olab/s1/docker.sock'],
      ['olab-s2', 'olab-s2u', 'unix:///run/olab/s2/docker.sock'],
    ]);
    expect(lab.vms.map((v) => [v.name, v.ip])).toEqual([
      ['olab-vm1', '198.18.0.11'],
      ['olab-vm2', '198.18.0.12'],
    ]);
    for (const s of lab.servers) {
      const images = await lab.docker(s, ['images', '--format', '{{.Repository}}:{{.Tag}}']);
      expect(images.split('\n').filter(Boolean).sort()).toEqual([LAB_IMAGES.busybox, LAB_IMAGES.svc]);
      const info = JSON.parse(await lab.docker(s, ['info', '--format', '{{json .}}'])) as { DockerRootDir: string };
      expect(info.DockerRootDir).toBe(s.dataRoot);
    }
    // The fabric and the uplinks carry no IPv4 address: the host itself is not on the lab segment.
    for (const ifname of ['olab-fab', 'olab-s1u', 'olab-s2u']) {
      const [link] = JSON.parse(execFileSync('ip', ['-j', 'addr', 'show', 'dev', ifname], { encoding: 'utf8' })) as {
        addr_info: { family: string }[];
      }[];
      expect(link!.addr_info.filter((a) => a.family === 'inet')).toEqual([]);
    }
    expect((await lab.docker(lab.servers[0]!, ['run', '--rm', '--network', 'none', LAB_IMAGES.busybox, 'echo', 'hi'])).trim()).toBe('hi');
  });

  it('each legacy VM pings both containers and gets their HTTP page', async () => {
    for (const vm of lab.vms) {
      for (const s of lab.servers) {
        await waitFor(`${vm.name} -> ${ctrIp(s)}`, () => lab.vmPing(vm, ctrIp(s)), 15_000, 200);
        expect(await lab.vmHttpGet(vm, ctrIp(s), SVC_PORT)).toBe(SVC_INDEX);
      }
    }
  });

  it('a container on server 1 reaches the container on server 2 and both legacy VMs', async () => {
    const s1 = lab.servers[0]!;
    for (const target of [ctrIp(lab.servers[1]!), ...lab.vms.map((v) => v.ip)]) {
      await waitFor(
        `svc@s1 -> ${target}`,
        async () => {
          await lab.docker(s1, ['exec', 'svc', 'ping', '-c', '1', '-W', '1', target]);
          return true;
        },
        10_000,
        200,
      );
    }
    // and by HTTP, container to container across the fabric
    expect(await lab.docker(s1, ['exec', 'svc', 'wget', '-q', '-O', '-', `http://${ctrIp(lab.servers[1]!)}:${SVC_PORT}/`])).toBe(SVC_INDEX);
  });

  it('arpProbe sees a live container IP on the fabric and not a free one', async () => {
    expect(await lab.arpProbe('198.18.1.1')).toBe(true);
    expect(await lab.arpProbe(lab.vms[0]!.ip)).toBe(true);
    expect(await lab.arpProbe('198.18.1.200')).toBe(false);
    await expect(lab.arpProbe('192.0.2.1')).rejects.toThrow(/not a lab address/);
  });

  it('cutUplink takes a server off the fabric; restoreUplink brings it back', async () => {
    const s1 = lab.servers[0]!;
    await lab.cutUplink(s1);
    const [pings, pages, arp, other] = await Promise.all([
      Promise.all(lab.vms.map((vm) => lab.vmPing(vm, ctrIp(s1)))),
      Promise.all(lab.vms.map((vm) => lab.vmHttpGet(vm, ctrIp(s1), SVC_PORT))),
      lab.arpProbe(ctrIp(s1)),
      lab.vmPing(lab.vms[0]!, ctrIp(lab.servers[1]!)), // server 2 is unaffected
    ]);
    expect({ pings, pages, arp, other }).toEqual({ pings: [false, false], pages: [undefined, undefined], arp: false, other: true });
    await lab.restoreUplink(s1);
    for (const vm of lab.vms) {
      await waitFor(`${vm.name} -> ${ctrIp(s1)} after restore`, () => lab.vmPing(vm, ctrIp(s1)), 10_000, 200);
      expect(await lab.vmHttpGet(vm, ctrIp(s1), SVC_PORT)).toBe(SVC_INDEX);
    }
  });

  it('stopEngine stops the engine and its containers; startEngine brings the engine back', async () => {
    const s2 = lab.servers[1]!;
    const pid = lab.enginePid(s2)!;
    expect(pid).toBeGreaterThan(1);
    await lab.stopEngine(s2);
    expect(lab.enginePid(s2)).toBeUndefined();
    await expect(lab.docker(s2, ['version'], { timeoutMs: 5_000 })).rejects.toThrow();
    expect(await lab.arpProbe(ctrIp(s2))).toBe(false);
    await lab.startEngine(s2);
    expect(lab.enginePid(s2)).not.toBe(pid);
    await lab.docker(s2, ['start', 'svc']);
    await waitFor('svc@s2 back on the wire', () => lab.vmHttpGet(lab.vms[0]!, ctrIp(s2), SVC_PORT), 10_000, 200);
  });

  it('the svc image allocates memory and writes to disk on demand', async () => {
    const s1 = lab.servers[0]!;
    const id = (await lab.docker(s1, ['inspect', '-f', '{{.Id}}', 'svc'])).trim();
    const usage = () => Number(readFileSync(`/sys/fs/cgroup/memory${s1.cgroupParent}/${id}/memory.usage_in_bytes`, 'utf8'));
    const before = usage();
    await lab.docker(s1, ['exec', '-d', 'svc', 'eat-mem', '64', '30']);
    await waitFor('memory usage +64 MiB', () => usage() - before > 60 * 1024 * 1024, 10_000, 100);
    await lab.docker(s1, ['exec', 'svc', 'killall', 'awk']);
    expect((await lab.docker(s1, ['exec', 'svc', 'fill-disk', '20'])).trim()).toBe('wrote 20 MiB to /data/fill');
    const size = await lab.docker(s1, ['ps', '-s', '--filter', 'name=svc', '--format', '{{.Size}}']);
    expect(size).toMatch(/^2\d(\.\d+)?MB/);
    expect((await lab.vmHttpGet(lab.vms[0]!, ctrIp(s1), SVC_PORT, '/cgi-bin/whoami'))?.trim()).toMatch(/^[0-9a-f]{12}$/);
  });

  it('teardown leaves no interface, namespace, process, mount, cgroup or directory', async () => {
    await lab.teardown();
    console.info(`lab teardown: ${lab.timings.teardownMs} ms`);
    expect(lab.tornDown).toBe(true);
    await expectNoResidue(lab);
    await lab.teardown(); // a no-op now (afterAll calls it again)
  });
});

describe('setup after a crashed run', () => {
  let crashed: Lab | undefined;
  let fresh: Lab | undefined;

  afterAll(async () => {
    if (fresh) await fresh.teardown();
    else await cleanLabLeftovers();
  });

  it('removes every leftover: a stray olab interface, engines, orphaned containers, namespaces', async () => {
    execFileSync('ip', ['link', 'add', 'olab-junk', 'type', 'veth', 'peer', 'name', 'olab-junkp']);
    crashed = await Lab.setup({ servers: 2, legacyVms: 1 });
    expect(crashed.leftovers.interfaces).toContain('olab-junk');

    // The "crash": containers running on both engines, engine 2 killed hard (its containerd,
    // shim and container may live on), and no teardown. Then a new junk interface.
    for (const s of crashed.servers) {
      await crashed.docker(s, ['network', 'create', '-d', 'macvlan', '--subnet', LAB_SUBNET, '-o', `parent=${s.uplink}`, NET]);
      await crashed.docker(s, ['run', '-d', '--name', 'svc', '--network', NET, '--ip', ctrIp(s), LAB_IMAGES.svc]);
    }
    await waitFor('svc@s2 on the wire', () => crashed!.arpProbe(ctrIp(crashed!.servers[1]!)), 10_000, 100);
    const enginePids = crashed.servers.map((s) => crashed!.enginePid(s)!);
    process.kill(enginePids[1]!, 'SIGKILL');
    execFileSync('ip', ['link', 'add', 'olab-junk', 'type', 'veth', 'peer', 'name', 'olab-junkp']);
    const before = await labResidue([crashed.labDir]);
    expect(before.netns.sort()).toEqual(['olab-gw', 'olab-probe', 'olab-vm1']);

    fresh = await Lab.setup({ servers: 1, legacyVms: 0 });
    expect(crashed.tornDown).toBe(true); // superseded: its teardown is a no-op now
    expect(fresh.leftovers.interfaces).toEqual(expect.arrayContaining(['olab-junk', 'olab-s2u']));
    expect(fresh.leftovers.netns.sort()).toEqual(['olab-gw', 'olab-probe', 'olab-vm1']);
    expect(fresh.leftovers.processes).toEqual(expect.arrayContaining([enginePids[0]]));
    for (const p of before.processes) expect(running(p)).toBe(false);
    // The fresh lab is whole and the old container IPs are gone from the wire.
    expect(fresh.servers.map((s) => s.id)).toEqual(['olab-s1']);
    expect(await fresh.arpProbe(ctrIp(crashed.servers[0]!))).toBe(false);
    expect(await fresh.docker(fresh.servers[0]!, ['ps', '-aq'])).toBe('');

    await fresh.teardown();
    await expectNoResidue(fresh);
  });
});

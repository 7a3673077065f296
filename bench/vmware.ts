/**
 * vmware-agent benchmark (npm run bench:vmware): clone + power-on until `running` for 20
 * VMs with 1, 4 and 8 in flight, through the agent (create commands over NATS, reply once
 * vCenter reports the guest IP) and, in the same run against the same vcsim, through
 * libs/vsphere directly with the same vCenter work (CloneVM_Task with RUN.container (the
 * agent adds its ~20 guestinfo labels), the same
 * NIC and MAC, CustomizeVM_Task, PowerOnVM_Task, then reading guest.ipAddress every 100 ms,
 * the agent's poll interval). vcsim runs each VM as a container on the lab's ESXi engine
 * (RUN.container), as in the tests. Everything is removed between rounds (not timed); each
 * round starts once the engine has no VM container left, and the order of the two paths
 * alternates between levels. Every level runs REPEATS (>= 3) times, each run raw and agent
 * side by side; the overhead is the median over the runs (spread in brackets).
 * Bounded: 6 x REPEATS rounds of 20 VMs, each create given 60 s.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { macForIpv4 } from '@orangery/netaddr';
import { ContractClient, HarnessDir, NatsServer, ServiceProcess } from '@orangery/testing';
import { MoRef, VsphereClient } from '@orangery/vsphere';
import { Lab, LAB_IMAGES } from '../test/lab';
import { fmtRepeated, machineLine, percentile, repeated, REPEATS, table } from './lib';

const N = Number(process.env['BENCH_VMS'] ?? 20);
const LEVELS = [1, 4, 8];
const HOSTS = ['esx01-lab-local', 'esx02-lab-local', 'esx03-lab-local'];
const log = (m: string) => process.stderr.write(`[bench:vmware] ${m}\n`);

interface Round {
  perVm: number[];
  wallMs: number;
}

/** Runs `n` jobs with `inFlight` at a time; per-job times and the wall time. */
async function pooled(n: number, inFlight: number, job: (i: number) => Promise<void>): Promise<Round> {
  const perVm: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) {
        const i = next++;
        const s = performance.now();
        await job(i);
        perVm.push(performance.now() - s);
      }
    }),
  );
  return { perVm: perVm.sort((a, b) => a - b), wallMs: performance.now() - t0 };
}

const mean = (a: number[]) => a.reduce((s, x) => s + x, 0) / a.length;

async function main(): Promise<void> {
  const dir = new HarnessDir('bench-vmware');
  const lab = await Lab.setup({ servers: 0, legacyVms: 0, vcenter: true });
  const nats = await NatsServer.start(dir);
  const vc = lab.vcenter!;
  const runContainer = (ip: string) =>
    JSON.stringify(['--tmpfs', '/sys/class', '--network', vc.macvlanNetwork, '--ip', ip, '--mac-address', macForIpv4(ip), LAB_IMAGES.svc]);
  let client: ContractClient | undefined;
  let raw: VsphereClient | undefined;
  try {
    await ServiceProcess.start(dir, 'vmware-agent', {
      ORANGERY_NATS_URL: nats.url,
      ORANGERY_VCENTER_URL: vc.url,
      ORANGERY_VCENTER_USER: vc.user,
      ORANGERY_VCENTER_PASSWORD: vc.password,
      ORANGERY_VCENTER_EXTRA_CONFIG: JSON.stringify({
        'RUN.container': JSON.stringify(['--tmpfs', '/sys/class', '--network', vc.macvlanNetwork, '--ip', '{ip}', '--mac-address', '{mac}', LAB_IMAGES.svc]),
      }),
      // 8 in flight over 3 hosts never waits for a slot
      ORANGERY_VCENTER_TASKS_PER_HOST: '8',
    });
    client = await ContractClient.connect(nats.url);
    raw = await VsphereClient.connect({ url: vc.url, username: vc.user, password: vc.password });
    const folder = (await raw.vms.findByInventoryPath('/dc-lab/vm/orangery'))!;
    const pool = (await raw.inventory.clusters())[0]!.resourcePool!;
    const template = (await raw.vms.findByName('centos7-jdk8'))!;
    const network = (await raw.inventory.networks()).find((n) => n.vlanId === 0 && n.kind === 'dvportgroup')!;
    const nic = (await raw.vms.get(template)).nics[0]!;
    const hosts = (await raw.inventory.hosts()).map((h) => h.ref);

    const rawRound = async (inFlight: number, count = N): Promise<Round> => {
      const made: MoRef[] = [];
      const r = await pooled(count, inFlight, async (i) => {
        const ip = `198.18.${40 + inFlight}.${i + 1}`;
        const vm = await raw!.vms.clone(template, {
          name: `raw-${inFlight}-${i}`,
          folder,
          pool,
          host: hosts[i % hosts.length],
          numCPUs: 1,
          memoryMB: 512,
          extraConfig: { 'RUN.container': runContainer(ip), 'guestinfo.orangery.ip': ip },
          nic: { network, macAddress: macForIpv4(ip), device: nic },
          customization: { hostName: `raw-${i}`, ip, subnetMask: '255.255.0.0', gateway: lab.gateway },
          customizationMode: 'after-clone',
          powerOn: true,
          timeoutMs: 60_000,
        });
        made.push(vm);
        const deadline = Date.now() + 60_000;
        while ((await raw!.vms.get(vm)).ipAddress !== ip) {
          if (Date.now() > deadline) throw new Error(`raw VM ${ip} never reported its IP`);
          await new Promise((res) => setTimeout(res, 100));
        }
      });
      for (const vm of made) {
        await raw!.vms.powerOff(vm).catch(() => undefined);
        await raw!.vms.destroy(vm);
      }
      return r;
    };

    const agentRound = async (inFlight: number, count = N): Promise<Round> => {
      const ids: [string, string][] = [];
      const r = await pooled(count, inFlight, async (i) => {
        const ip = `198.18.${50 + inFlight}.${i + 1}`;
        const host = HOSTS[i % HOSTS.length]!;
        const instanceId = `bench:vm${inFlight}:${i}`;
        const res = await client!.request(
          `orangery.agent.${host}.instance.create`,
          {
            instanceId,
            env: 'bench',
            app: `vm${inFlight}`,
            slot: i,
            template: 'centos7-jdk8',
            resources: { cpu: 1, memoryMb: 512 },
            network: { ip, mac: macForIpv4(ip), prefixLength: 16, gateway: lab.gateway, vlan: 0 },
          },
          60_000,
        );
        if (!res.ok || res.data.state !== 'running') throw new Error(`create ${instanceId}: ${JSON.stringify(res)}`);
        ids.push([host, instanceId]);
      });
      for (const [host, instanceId] of ids) {
        const res = await client!.request(`orangery.agent.${host}.instance.remove`, { instanceId }, 60_000);
        if (!res.ok) throw new Error(`remove ${instanceId}: ${JSON.stringify(res)}`);
      }
      return r;
    };

    /** Between rounds: vcsim removes a destroyed VM's container after the call returns; wait until the engine is idle. */
    const settle = async () => {
      const deadline = Date.now() + 60_000;
      while ((await lab.docker(lab.esxi!, ['ps', '-aq', '--filter', 'name=^vcsim-'])).trim() !== '' && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, 250));
      }
      await new Promise((res) => setTimeout(res, 1_000));
    };

    // warm-up: one VM each way (connections, caches, the image's first start)
    await rawRound(2, 2);
    await agentRound(2, 2);
    const rows: (string | number)[][] = [];
    const summary: (string | number)[][] = [];
    const results = new Map<number, { raw: Round[]; agent: Round[] }>(LEVELS.map((l) => [l, { raw: [], agent: [] }]));
    for (let run = 0; run < REPEATS; run++) {
      for (const inFlight of LEVELS) {
        // the order alternates (by level and by run), and each round starts on an idle engine
        const agentFirst = (inFlight === 4) !== (run % 2 === 1);
        for (const path of agentFirst ? ['agent', 'raw'] : ['raw', 'agent']) {
          await settle();
          log(`run ${run + 1}/${REPEATS}: ${N} VMs, ${inFlight} in flight: ${path}`);
          if (path === 'raw') results.get(inFlight)!.raw.push(await rawRound(inFlight));
          else results.get(inFlight)!.agent.push(await agentRound(inFlight));
        }
      }
    }
    const met = (ok: boolean) => (ok ? 'met' : '**not met**');
    for (const inFlight of LEVELS) {
      const { raw: rs, agent: as } = results.get(inFlight)!;
      for (const [path, xs] of [
        ['raw libs/vsphere', rs],
        ['vmware-agent', as],
      ] as const) {
        rows.push([
          inFlight,
          path,
          `${N} x ${xs.length}`,
          fmtRepeated(repeated(xs.map((x) => x.wallMs / 1000)), 2),
          fmtRepeated(repeated(xs.map((x) => (N * 1000) / x.wallMs)), 2),
          fmtRepeated(repeated(xs.map((x) => percentile(x.perVm, 50))), 0),
          fmtRepeated(repeated(xs.map((x) => percentile(x.perVm, 99))), 0),
          fmtRepeated(repeated(xs.map((x) => mean(x.perVm))), 0),
        ]);
      }
      const perVm = repeated(rs.map((r, k) => (mean(as[k]!.perVm) / mean(r.perVm) - 1) * 100));
      const wall = repeated(rs.map((r, k) => (as[k]!.wallMs / r.wallMs - 1) * 100));
      summary.push([inFlight, `${fmtRepeated(perVm, 1)} %`, `${fmtRepeated(wall, 1)} %`, met(perVm.median <= 10)]);
    }
    const out =
      `${machineLine()} Each figure: median of ${REPEATS} runs (smallest-largest).\n\n` +
      `${table(['in flight', 'path', 'VMs x runs', 'wall s', 'VMs/s', 'per-VM p50 ms', 'per-VM p99 ms', 'per-VM mean ms'], rows)}\n\n` +
      `${table(['in flight', 'agent overhead per VM (mean), vs raw in the same run', 'agent overhead wall time', 'target <= 10 %'], summary)}\n`;
    process.stdout.write(`\n${out}`);
    mkdirSync('bench/results', { recursive: true });
    writeFileSync(
      'bench/results/vmware.md',
      `<!-- written by npm run bench:vmware on ${new Date().toISOString()}; ${N} VMs per round, ${REPEATS} runs -->\n${out}`,
    );
    log('done');
  } finally {
    await raw?.logout().catch(() => undefined);
    await client?.close();
    await dir.cleanup();
    await lab.teardown();
  }
}

main().catch((e) => {
  process.stderr.write(`[bench:vmware] failed: ${String(e?.stack ?? e)}\n`);
  process.exit(1);
});

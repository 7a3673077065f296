import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContractClient, freePort, observeGet, promValue, scrape, ServiceProcess, waitFor, type HarnessDir, type NatsServer } from '@orangery/testing';
import { LAB_IMAGES, SVC_INDEX, SVC_PORT, type Lab, type LabServer } from '../lab';
import { dockerAgentEnv, LabCluster } from './fixtures/lab-cluster';
import { agentUser as generatedAgentUser, userEntries } from '../../tools/creds/permissions';

// Two simulated servers (a dockerd and an uplink each) and two legacy VMs on one L2 fabric;
// one docker-agent per server, as real processes, driven over NATS like the scheduler will.
let cluster: LabCluster;
let dir: HarnessDir;
let lab: Lab;
let nats: NatsServer;
let client: ContractClient;
const agents = new Map<string, ServiceProcess>();
const FENCE_AFTER = 4;

// NATS with users: the test client is an operator; each agent has the user `npm run creds`
// generates for its host (tools/creds/permissions.ts, docs/security.md), which may only use
// its own host's subjects.
const agentUser = (hostId: string) => ({ user: `agent-${hostId}`, password: `pw-${hostId}` });
const AUTH = `authorization {
  users = [
    { user: "operator", password: "operator" },
${userEntries(
  ['olab-s1', 'olab-s2', 'olab-x'].map((h) => generatedAgentUser({ name: h, hosts: [h] })),
  (user) => agentUser(user.replace(/^agent-/, '')).password,
)}
  ]
}`;
const operatorUrl = () => nats.urlFor('operator', 'operator');

// The agents' own reservations (1 CPU, 1 GiB: the defaults) are what the registration test checks.
const agentEnv = (s: LabServer): Record<string, string> =>
  dockerAgentEnv(nats.urlFor(agentUser(s.id).user, agentUser(s.id).password), s, {
    ORANGERY_FENCE_AFTER_SECONDS: String(FENCE_AFTER),
    ORANGERY_DISK_CHECK_SECONDS: '1',
    ORANGERY_HOST_LABELS: `rack=r${s.index}`,
    ORANGERY_RESERVED_CPUS: '1',
    ORANGERY_RESERVED_MEMORY_MB: '1024',
    ORANGERY_OBSERVE_ADDR: `127.0.0.1:${observePorts[s.index] ?? 0}`,
  });
/** each server's agent's health and metrics port, by server index */
const observePorts: number[] = [];

// Server 2's agent runs the host shim, so this (root-namespace) process can reach its containers.
const SHIM_IP = '198.18.255.2';

async function startAgent(s: LabServer): Promise<ServiceProcess> {
  const a = await ServiceProcess.start(dir, 'docker-agent', { ...agentEnv(s), ...(s.index === 2 ? { ORANGERY_HOST_SHIM_IP: SHIM_IP } : {}) });
  agents.set(s.id, a);
  return a;
}

let nextIp = 1;
function command(slot: number, extra: Record<string, unknown> = {}) {
  const n = nextIp++;
  const ip = `198.18.1.${n}`;
  return {
    instanceId: `test:web:${slot}`,
    env: 'test',
    app: 'web',
    slot,
    image: LAB_IMAGES.svc,
    resources: { cpu: 0.5, memoryMb: 128, heapMb: 256, diskMb: 20 },
    network: { ip, mac: `02:4f:c6:12:01:${n.toString(16).padStart(2, '0')}`, prefixLength: 16, gateway: '198.18.0.1', vlan: 0 },
    ...extra,
  };
}

const req = (s: LabServer, what: string, body: unknown, timeoutMs = 30_000) => client.request(`orangery.agent.${s.id}.instance.${what}`, body, timeoutMs);

/** The first heartbeat of `hostId` that `pred` accepts. */
function waitForHeartbeat(hostId: string, pred: (hb: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sub = client.nc.subscribe(`orangery.hb.${hostId}`, {
      callback: (_e, m) => {
        const hb = m.json<Record<string, unknown>>();
        if (!pred(hb)) return;
        clearTimeout(timer);
        sub.unsubscribe();
        resolve(hb);
      },
    });
    const timer = setTimeout(() => {
      sub.unsubscribe();
      reject(new Error(`no matching heartbeat of ${hostId} within ${timeoutMs} ms`));
    }, timeoutMs);
  });
}
const nextHeartbeat = (hostId: string, timeoutMs: number) => waitForHeartbeat(hostId, () => true, timeoutMs);

beforeAll(async () => {
  cluster = await LabCluster.start({
    label: 'docker-agent',
    lab: { servers: 2, legacyVms: 2 },
    database: false,
    natsConfig: AUTH,
    clientUrl: (n) => n.urlFor('operator', 'operator'),
  });
  ({ lab, nats, client, dir } = cluster);
  for (const s of lab.servers) observePorts[s.index] = await freePort();
  await Promise.all(lab.servers.map(startAgent));
}, 300_000);

afterAll(async () => {
  await client?.close().catch(() => undefined); // the test reconnects it after a NATS restart
  await cluster?.close();
}, 120_000);

describe('docker-agent in the lab', () => {
  it('registers each host with its capacity after reservations and heartbeats', async () => {
    const hb = await new Promise<Record<string, unknown>>((resolve) => {
      const sub = client.nc.subscribe('orangery.hb.olab-s1', {
        callback: (_e, m) => {
          sub.unsubscribe();
          resolve(m.json());
        },
      });
    });
    expect(hb).toMatchObject({ hostId: 'olab-s1', backend: 'docker', labels: { rack: 'r1' }, fenced: false, isolated: false });
    const total = hb['total'] as { cpu: number; memoryMb: number };
    expect(hb['capacity']).toMatchObject({ cpu: total.cpu - 1, memoryMb: total.memoryMb - 1024 });
    const registered = (await client.events('orangery.evt.host.registered')).map((e) => e.subject);
    expect(registered).toEqual(expect.arrayContaining(['olab-s1', 'olab-s2']));
    // issue 13: the same facts on the host's own bound subject, as the scheduler confirms a registration
    const facts = await client.request('orangery.agent.olab-s1.host.get', {});
    expect(facts, JSON.stringify(facts)).toMatchObject({ ok: true, data: { hostId: 'olab-s1', backend: 'docker', labels: { rack: 'r1' } } });
    expect(facts.data.capacity).toEqual(hb['capacity']);
    expect(Object.keys(facts.data).sort()).toEqual(['backend', 'capacity', 'hostId', 'labels', 'reserved', 'total', 'vlans']);
  });

  it('containers on both servers reach each other and the legacy VMs by IP, and the VMs reach them', async () => {
    const [s1, s2] = lab.servers as [LabServer, LabServer];
    const a = await req(s1, 'create', command(0));
    const b = await req(s2, 'create', command(1));
    expect(a.ok, JSON.stringify(a)).toBe(true);
    expect(b.ok, JSON.stringify(b)).toBe(true);
    expect(a.data).toMatchObject({ state: 'running', hostId: 'olab-s1', ip: '198.18.1.1' });
    for (const vm of lab.vms) {
      expect(await lab.vmPing(vm, a.data.ip)).toBe(true);
      expect(await lab.vmPing(vm, b.data.ip)).toBe(true);
      // `running` means the process runs; the service in it may need a moment to listen
      expect(await waitFor('the service answers', async () => (await lab.vmHttpGet(vm, b.data.ip, SVC_PORT)) ?? undefined, 15_000, 200)).toBe(SVC_INDEX);
    }
    const name = (x: { instanceId: string }) => `orangery-${x.instanceId.replace(/:/g, '-')}`;
    // From inside a container by TCP: ICMP echo needs NET_RAW, which containers no longer
    // have (see the confinement test). A connection refused is the VM's kernel answering.
    const get = (s: LabServer, ctr: string, url: string) =>
      lab.docker(s, ['exec', ctr, 'wget', '-q', '-O', '-', url]).then(
        (out) => out,
        (e: unknown) => String(e),
      );
    expect(await get(s1, name(a.data), `http://${b.data.ip}:${SVC_PORT}/`)).toBe(SVC_INDEX);
    for (const vm of lab.vms) expect(await get(s2, name(b.data), `http://${vm.ip}:1/`)).toMatch(/refused/i);
    // the MAC on the wire is the allocation's
    const mac = await lab.docker(s1, ['inspect', '-f', '{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}', name(a.data)]);
    expect(mac.trim()).toBe(a.data.mac);
  });

  it('serves /readyz (NATS and the engine) and /metrics with its instances by state', async () => {
    const s1 = lab.servers[0]!;
    const port = observePorts[s1.index]!;
    const ready = await observeGet(port, '/readyz');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.text)).toEqual({ ready: true, checks: { nats: 'ok', engine: 'ok' } });
    const listedRunning = (await req(s1, 'list', {})).data.instances.filter((i: { state: string }) => i.state === 'running').length;
    expect(listedRunning).toBeGreaterThan(0);
    const m = await scrape(port);
    expect(promValue(m, 'orangery_agent_instances', { state: 'running' })).toBe(listedRunning);
    expect(promValue(m, 'orangery_requests_total', { code: 'ok' })).toBeGreaterThan(0);
  });

  it("with the host shim, processes on the host reach the host's own macvlan containers", async () => {
    // Only ever contact the container once its /32 route through the shim exists: without
    // it the address would follow the machine's default route out of the lab.
    const { execFile } = await import('node:child_process');
    const routeDev = () => new Promise<string>((res) => execFile('ip', ['-o', 'route', 'show', '198.18.1.2/32'], (_e, out) => res(String(out ?? ''))));
    const dev = await waitFor('the shim route to 198.18.1.2', async () => /dev (osh-[0-9a-f]{6})/.exec(await routeDev())?.[1], 10_000, 200);
    expect(dev).toMatch(/^osh-/);
    const body = await fetch(`http://198.18.1.2:${SVC_PORT}/`, { signal: AbortSignal.timeout(3_000) }).then((r) => r.text());
    expect(body).toBe(SVC_INDEX);
  });

  it('sets the limits: memory above the heap, no swap, reserved cores excluded, visible in inspect and cgroups', async () => {
    const s1 = lab.servers[0]!;
    const inspect = JSON.parse(await lab.docker(s1, ['inspect', 'orangery-test-web-0']))[0];
    expect(inspect.HostConfig.Memory).toBe((256 + 256) * 1024 * 1024);
    expect(inspect.HostConfig.MemorySwap).toBe(inspect.HostConfig.Memory);
    expect(inspect.HostConfig.MemorySwappiness).toBe(0);
    expect(inspect.HostConfig.NanoCpus).toBe(500_000_000);
    expect(inspect.HostConfig.CpusetCpus).not.toContain('0');
    expect(inspect.HostConfig.RestartPolicy.Name).toBe('no'); // the agent keeps the restart policy itself
    expect(inspect.Config.Labels).toMatchObject({ 'io.orangery.instance-id': 'test:web:0', 'io.orangery.ip': '198.18.1.1', 'io.orangery.app': 'web' });
    const cg = (path: string) => lab.docker(s1, ['exec', 'orangery-test-web-0', 'cat', path]).then((s) => s.trim());
    expect(Number(await cg('/sys/fs/cgroup/memory/memory.limit_in_bytes'))).toBe(512 * 1024 * 1024);
    expect(await cg('/sys/fs/cgroup/memory/memory.swappiness')).toBe('0');
    expect(await cg('/sys/fs/cgroup/cpuset/cpuset.cpus')).toBe(inspect.HostConfig.CpusetCpus);
  });

  it('confines containers: no raw sockets (arping EPERM, TCP works), no-new-privileges, a PIDs limit, CapDrop; `security` relaxes them', async () => {
    const [s1, s2] = lab.servers as [LabServer, LabServer];
    // addresses of their own (not from nextIp), so the tests after this one keep theirs
    const at = (slot: number, n: number, extra: Record<string, unknown> = {}) => ({
      ...command(slot, extra),
      network: { ip: `198.18.1.${n}`, mac: `02:4f:c6:12:01:${n.toString(16)}`, prefixLength: 16, gateway: '198.18.0.1', vlan: 0 },
    });
    try {
      const confined = await req(s1, 'create', at(20, 200));
      const relaxed = await req(s2, 'create', at(21, 201, { security: { allowPrivilegeEscalation: true, pidsLimit: 16, addCapabilities: ['NET_RAW'] } }));
      nextIp -= 2;
      expect(confined.ok, JSON.stringify(confined)).toBe(true);
      expect(relaxed.ok, JSON.stringify(relaxed)).toBe(true);
      const [c, r] = ['orangery-test-web-20', 'orangery-test-web-21'];
      const hostConfig = async (s: LabServer, name: string) => JSON.parse(await lab.docker(s, ['inspect', name]))[0].HostConfig;
      const capNames = (caps: string[] | null) => (caps ?? []).map((x) => x.replace(/^CAP_/, ''));
      const hc = await hostConfig(s1, c);
      expect(hc.SecurityOpt).toEqual(['no-new-privileges']);
      expect(hc.PidsLimit).toBe(4096);
      expect(capNames(hc.CapDrop)).toEqual(['NET_RAW', 'MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SYS_CHROOT']);
      expect(hc.CapAdd ?? []).toEqual([]);
      expect(hc.Privileged).toBe(false);
      const hr = await hostConfig(s2, r);
      expect(hr.SecurityOpt ?? []).toEqual([]);
      expect(hr.PidsLimit).toBe(16);
      expect(capNames(hr.CapDrop)).toEqual(['MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SYS_CHROOT']);

      // What the kernel enforces, seen from inside: the process's flags, capabilities and cgroup.
      const exec = (s: LabServer, name: string, argv: string[]) =>
        lab.docker(s, ['exec', name, ...argv]).then(
          (out) => ({ ok: true, out }),
          (e: unknown) => ({ ok: false, out: String(e) }),
        );
      const status = async (s: LabServer, name: string) => (await exec(s, name, ['cat', '/proc/1/status'])).out;
      const field = (text: string, key: string) => new RegExp(`^${key}:\\s*(\\S+)`, 'm').exec(text)?.[1];
      const hasCap = (text: string, bit: number) => (BigInt(`0x${field(text, 'CapBnd')}`) >> BigInt(bit)) & 1n;
      const NET_RAW = 13;
      const sc = await status(s1, c);
      expect(field(sc, 'NoNewPrivs')).toBe('1');
      expect(hasCap(sc, NET_RAW)).toBe(0n);
      expect(hasCap(sc, 0)).toBe(1n); // CHOWN stays
      const sr = await status(s2, r);
      expect(field(sr, 'NoNewPrivs')).toBe('0');
      expect(hasCap(sr, NET_RAW)).toBe(1n);
      expect((await exec(s1, c, ['cat', '/sys/fs/cgroup/pids/pids.max'])).out.trim()).toBe('4096');

      // No raw packets: arping (AF_PACKET) is refused with EPERM; the relaxed one may send them.
      const arpingC = await exec(s1, c, ['arping', '-c', '1', '-w', '2', '-I', 'eth0', '198.18.0.1']);
      expect(arpingC.ok).toBe(false);
      expect(arpingC.out).toMatch(/Operation not permitted/);
      const arpingR = await exec(s2, r, ['arping', '-c', '1', '-w', '2', '-I', 'eth0', '198.18.0.1']);
      expect(arpingR.out).not.toMatch(/Operation not permitted/);
      // TCP works both ways: a legacy VM reaches the confined service, and it reaches the other one.
      const vm = lab.vms[0]!;
      expect(await waitFor('the confined service answers', async () => (await lab.vmHttpGet(vm, '198.18.1.200', SVC_PORT)) ?? undefined, 15_000, 200)).toBe(
        SVC_INDEX,
      );
      const wget = await waitFor(
        'the relaxed service answers the confined one',
        async () => {
          const w = await exec(s1, c, ['wget', '-q', '-O', '-', `http://198.18.1.201:${SVC_PORT}/`]);
          return w.ok ? w.out : undefined;
        },
        15_000,
        200,
      );
      expect(wget).toBe(SVC_INDEX);

      // ICMP echo is a raw socket too here: ping fails without NET_RAW, works with it.
      const pingC = await exec(s1, c, ['ping', '-c', '1', '-W', '2', '198.18.0.1']);
      expect(pingC.ok).toBe(false);
      expect(pingC.out).toMatch(/permission denied|not permitted/i);
      expect((await exec(s2, r, ['ping', '-c', '1', '-W', '2', '198.18.0.1'])).ok).toBe(true);

      // The PIDs limit holds: 16 tasks; a few sleepers fit, 30 cannot be forked.
      expect((await exec(s2, r, ['cat', '/sys/fs/cgroup/pids/pids.max'])).out.trim()).toBe('16');
      expect((await exec(s2, r, ['sh', '-c', 'for i in 1 2 3; do sleep 1 & done; wait'])).ok).toBe(true);
      const forks = await exec(s2, r, ['sh', '-c', 'for i in $(seq 1 30); do sleep 3 & done; wait']);
      expect(forks.ok, forks.out).toBe(false);
    } finally {
      // whatever failed above, the later tests count only their own containers
      for (const [s, id] of [
        [s1, 'test:web:20'],
        [s2, 'test:web:21'],
      ] as const) {
        await req(s, 'remove', { instanceId: id }).catch(() => undefined);
      }
    }
  });

  it('the same create twice is one container; another spec for the same instance is a conflict', async () => {
    const s1 = lab.servers[0]!;
    const before = await req(s1, 'get', { instanceId: 'test:web:0' });
    const again = await req(s1, 'create', { ...command(0), network: { ...command(0).network, ip: '198.18.1.1', mac: before.data.mac } });
    nextIp--;
    expect(again.ok, JSON.stringify(again)).toBe(true);
    expect(again.data.containerId).toBe(before.data.containerId);
    const conflict = await req(s1, 'create', command(0));
    expect(conflict.error.code).toBe('INSTANCE_CONFLICT');
  });

  it('refuses an IP that a legacy VM holds on the wire: nothing starts, instance.failed is published', async () => {
    const s1 = lab.servers[0]!;
    const vmIp = lab.vms[0]!.ip;
    const cmd = { ...command(7), network: { ...command(7).network, ip: vmIp } };
    const r = await req(s1, 'create', cmd);
    expect(r.ok).toBe(false);
    expect(r.error.code).toBe('IP_IN_USE_ON_WIRE');
    expect((await req(s1, 'get', { instanceId: 'test:web:7' })).error.code).toBe('NOT_FOUND');
    expect(await lab.docker(s1, ['ps', '-a', '-q', '--filter', 'label=io.orangery.instance-id=test:web:7'])).toBe('');
    const failed = await waitFor('instance.failed for test:web:7', async () =>
      (await client.events('orangery.evt.instance.failed')).find((e) => e.subject === 'test:web:7' && e.data.code === 'IP_IN_USE_ON_WIRE'),
    );
    // published while serving the command: it continues the command's trace
    expect(failed.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
  });

  it('refuses an IP whose holder comes up during the 300 ms probe window, after the first probe went out: nothing starts', async () => {
    const s1 = lab.servers[0]!;
    const vm = lab.vms[1]!;
    const cmd = command(8);
    const ip = cmd.network.ip;
    const agentPid = agents.get(s1.id)!.pid;
    /** The agent's running DAD arping for `ip`, if any (its children, from /proc). */
    const arpingFor = (): string | undefined => {
      let children: string[];
      try {
        children = readFileSync(`/proc/${agentPid}/task/${agentPid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      } catch {
        return undefined;
      }
      for (const pid of children) {
        try {
          const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
          if (argv.some((a) => a.endsWith('arping')) && argv.includes('-D') && argv.includes(ip)) return pid;
        } catch {
          // gone meanwhile
        }
      }
      return undefined;
    };
    const ipNetns = (argv: string[]) => new Promise<void>((res, rej) => execFile('ip', ['-n', vm.netns, ...argv], (e) => (e ? rej(e) : res())));
    // Free when the command is sent: the first probe goes out to silence.
    expect(arpingFor()).toBeUndefined();
    const created = req(s1, 'create', cmd);
    // The moment the agent's first probe is out, the duplicate comes up (a VM booting with the address).
    await waitFor(`the agent's first ARP probe of ${ip}`, arpingFor, 30_000, 1);
    await ipNetns(['addr', 'add', `${ip}/16`, 'dev', 'eth0']);
    try {
      const r = await created;
      expect(r.ok, JSON.stringify(r)).toBe(false);
      expect(r.error.code).toBe('IP_IN_USE_ON_WIRE');
      expect(r.error.details).toMatchObject({ ip, iface: s1.uplink });
      expect(await lab.docker(s1, ['ps', '-a', '-q', '--filter', 'label=io.orangery.instance-id=test:web:8'])).toBe('');
    } finally {
      await ipNetns(['addr', 'del', `${ip}/16`, 'dev', 'eth0']).catch(() => undefined);
      await req(s1, 'remove', { instanceId: 'test:web:8' }).catch(() => undefined);
    }
  });

  it("publishes instance.running, which comes from the engine's start event, in the trace of the create command", async () => {
    const s2 = lab.servers[1]!;
    const traceId = randomBytes(16).toString('hex');
    const h = natsHeaders();
    h.set('traceparent', `00-${traceId}-${randomBytes(8).toString('hex')}-01`);
    const cmd = command(19);
    const msg = await client.nc.request(`orangery.agent.${s2.id}.instance.create`, JSON.stringify(cmd), { timeout: 30_000, headers: h });
    const r = msg.json<{ ok: boolean }>();
    expect(r.ok, msg.string()).toBe(true);
    try {
      const running = await waitFor('instance.running for test:web:19', async () =>
        (await client.events('orangery.evt.instance.running')).find((e) => e.subject === 'test:web:19'),
      );
      expect(String(running.traceparent).split('-')[1]).toBe(traceId);
    } finally {
      expect((await req(s2, 'remove', { instanceId: 'test:web:19' })).ok).toBe(true);
    }
  });

  it('reports a container whose writable layer outgrows its disk quota', async () => {
    const s2 = lab.servers[1]!;
    const r = await req(s2, 'create', command(2, { resources: { cpu: 0.25, memoryMb: 64, diskMb: 5 } }));
    expect(r.ok, JSON.stringify(r)).toBe(true);
    await lab.docker(s2, ['exec', 'orangery-test-web-2', '/bin/fill-disk', '8']);
    const ev = await waitFor(
      'instance.disk_exceeded',
      async () => (await client.events('orangery.evt.instance.disk_exceeded')).find((e) => e.subject === 'test:web:2'),
      20_000,
    );
    expect(ev.data).toMatchObject({ hostId: 'olab-s2', quotaMb: 5, policy: 'report' });
    expect(ev.data.usedMb).toBeGreaterThan(5); // over the quota (the watcher may catch the write midway)
  });

  it('answers every malformed command with an error and stays up', async () => {
    const s1 = lab.servers[0]!;
    const bad: [string, unknown][] = [
      ['create', 'not json'],
      ['create', {}],
      ['create', { ...command(9), resources: { cpu: -1, memoryMb: 64 } }],
      ['create', { ...command(9), network: { ...command(9).network, mac: 'zz' } }],
      ['create', { ...command(9), image: 'bad image;rm -rf /' }],
      ['create', { ...command(9), extra: true }],
      ['start', { instanceId: 'nope' }],
      ['stop', { instanceId: 'test:web:0', timeoutSeconds: 'soon' }],
      ['remove', []],
      ['list', { all: true }],
    ];
    for (const [what, body] of bad) {
      const r = await req(s1, what, body);
      expect(r.ok, `${what} ${JSON.stringify(body)}`).toBe(false);
      expect(r.error.code).toBe('INVALID_REQUEST');
    }
    const missing = await req(s1, 'create', { ...command(9), image: 'orangery/nothere:1' });
    expect(missing.error.code).toBe('IMAGE_NOT_FOUND');
    expect(agents.get('olab-s1')!.child.exitCode).toBeNull();
    expect((await req(s1, 'list', {})).ok).toBe(true);
  });

  it('kill -9 of the agent and a restart adopt everything: same containers, nothing restarted', async () => {
    const s1 = lab.servers[0]!;
    const before = await lab.docker(s1, ['ps', '-q', '--no-trunc', '--filter', 'label=io.orangery.managed=true']);
    const started = await lab.docker(s1, ['inspect', '-f', '{{.State.StartedAt}}', 'orangery-test-web-0']);
    await agents.get(s1.id)!.kill9();
    const restarted = await startAgent(s1);
    expect(restarted.hasLog('adopted the instances on the engine')).toBe(true);
    expect(await lab.docker(s1, ['ps', '-q', '--no-trunc', '--filter', 'label=io.orangery.managed=true'])).toBe(before);
    expect(await lab.docker(s1, ['inspect', '-f', '{{.State.StartedAt}}', 'orangery-test-web-0'])).toBe(started);
    const list = await req(s1, 'list', {});
    expect(list.data.instances.map((i: { instanceId: string }) => i.instanceId)).toContain('test:web:0');
  });

  it('stop, start and remove are idempotent', async () => {
    const s2 = lab.servers[1]!;
    for (let i = 0; i < 2; i++) expect((await req(s2, 'stop', { instanceId: 'test:web:2', timeoutSeconds: 2 })).data.state).toBe('stopped');
    for (let i = 0; i < 2; i++) expect((await req(s2, 'start', { instanceId: 'test:web:2' })).data.state).toBe('running');
    for (let i = 0; i < 2; i++) expect((await req(s2, 'remove', { instanceId: 'test:web:2' })).data.state).toBe('removed');
    expect((await req(s2, 'get', { instanceId: 'test:web:2' })).error.code).toBe('NOT_FOUND');
  });

  it('restarts a failed instance itself, at most ORANGERY_RESTART_MAX_RETRIES (3) times', async () => {
    const s1 = lab.servers[0]!;
    const r = await req(s1, 'create', command(5, { image: LAB_IMAGES.busybox, command: ['sh', '-c', 'sleep 1; exit 3'] }));
    expect(r.ok, JSON.stringify(r)).toBe(true);
    const runs = async () => (await client.events('orangery.evt.instance.running')).filter((e) => e.subject === 'test:web:5').length;
    await waitFor('the first run and three restarts', async () => (await runs()) >= 4, 30_000, 250);
    await new Promise((res) => setTimeout(res, 6_000));
    expect(await runs()).toBe(4);
    expect((await req(s1, 'get', { instanceId: 'test:web:5' })).data).toMatchObject({ state: 'failed', exitCode: 3 });
    const failed = (await client.events('orangery.evt.instance.failed')).filter((e) => e.subject === 'test:web:5');
    expect(failed.length).toBe(4);
    await req(s1, 'remove', { instanceId: 'test:web:5' });
  });

  it('an engine that restarts starts none of its instances by itself (no old copy after a failover)', async () => {
    const s2 = lab.servers[1]!;
    expect((await req(s2, 'get', { instanceId: 'test:web:1' })).data.state).toBe('running');
    await lab.stopEngine(s2);
    await lab.startEngine(s2);
    await new Promise((res) => setTimeout(res, 2_000));
    const status = await lab.docker(s2, ['inspect', '-f', '{{.State.Status}}', 'orangery-test-web-1']);
    expect(status.trim()).toBe('exited');
    expect(await lab.vmPing(lab.vms[0]!, '198.18.1.2')).toBe(false);
    // the agent follows the engine again: a start through it works
    const started = await waitFor(
      'the agent to reach the engine again',
      async () => {
        const x = await req(s2, 'start', { instanceId: 'test:web:1' });
        return x.ok ? x : undefined;
      },
      30_000,
      500,
    );
    expect(started.data.state).toBe('running');
  });

  it('keeps its containers running with NATS stopped for longer than fenceAfter (no fence on loss of NATS)', async () => {
    const s1 = lab.servers[0]!;
    const ip = '198.18.1.1';
    const startedAt = await lab.docker(s1, ['inspect', '-f', '{{.State.StartedAt}}', 'orangery-test-web-0']);
    expect(await lab.vmPing(lab.vms[0]!, ip)).toBe(true);
    await client.close();
    await nats.stop();
    try {
      // Twice fenceAfter without NATS: the instance answers on the wire all along.
      const until = Date.now() + 2 * FENCE_AFTER * 1000 + 1_000;
      while (Date.now() < until) {
        expect(await lab.arpProbe(ip, { count: 1, timeoutSec: 1 })).toBe(true);
        await new Promise((r) => setTimeout(r, 500));
      }
      expect((await lab.docker(s1, ['inspect', '-f', '{{.State.Status}}', 'orangery-test-web-0'])).trim()).toBe('running');
      expect(await lab.docker(s1, ['inspect', '-f', '{{.State.StartedAt}}', 'orangery-test-web-0'])).toBe(startedAt);
    } finally {
      await nats.start();
      client = await ContractClient.connect(operatorUrl());
    }
    expect(agents.get(s1.id)!.hasLog('self-fencing')).toBe(false);
    // heartbeats resume by themselves, neither fenced nor isolated
    const hb = await nextHeartbeat(s1.id, 15_000);
    expect(hb).toMatchObject({ fenced: false, isolated: false });
  });

  it('an agent that restarts while NATS is away adopts and stops nothing', async () => {
    const s2 = lab.servers[1]!;
    await waitFor('test:web:1 to run', async () => (await req(s2, 'get', { instanceId: 'test:web:1' })).data?.state === 'running', 15_000, 500);
    const startedAt = await lab.docker(s2, ['inspect', '-f', '{{.State.StartedAt}}', 'orangery-test-web-1']);
    await agents.get(s2.id)!.kill9();
    await client.close();
    await nats.stop();
    try {
      const agent = ServiceProcess.spawn(dir, 'docker-agent', agentEnv(s2));
      agents.set(s2.id, agent);
      await agent.waitForLog('connecting to NATS', 15_000);
      await new Promise((r) => setTimeout(r, (FENCE_AFTER + 3) * 1000));
      expect((await lab.docker(s2, ['inspect', '-f', '{{.State.Status}}', 'orangery-test-web-1'])).trim()).toBe('running');
      expect(await lab.docker(s2, ['inspect', '-f', '{{.State.StartedAt}}', 'orangery-test-web-1'])).toBe(startedAt);
      expect(agent.hasLog('self-fencing')).toBe(false);
      await nats.start();
      await agent.waitForLog('ready', 30_000);
    } finally {
      await nats.start().catch(() => undefined);
      client = await ContractClient.connect(operatorUrl());
    }
  });

  it('wire.probe: a live container on the other server answers, a free address does not, in about 300 ms', async () => {
    const [s1, s2] = lab.servers as [LabServer, LabServer];
    const probe = (s: LabServer, body: unknown) => client.request(`orangery.agent.${s.id}.wire.probe`, body, 10_000);
    // warm-up (first use of the subject)
    await probe(s2, { vlan: 0, ips: ['198.18.1.250'] });
    const t0 = performance.now();
    const free = await probe(s2, { vlan: 0, ips: ['198.18.1.251'] });
    const freeMs = performance.now() - t0;
    const t1 = performance.now();
    const live = await probe(s2, { vlan: 0, ips: ['198.18.1.1'] });
    const liveMs = performance.now() - t1;
    expect(free).toEqual({ ok: true, data: { hostId: s2.id, vlan: 0, iface: s2.uplink, results: [{ ip: '198.18.1.251', answered: false }] } });
    expect(live.data.results).toEqual([{ ip: '198.18.1.1', answered: true }]);
    console.log(`wire.probe over NATS: free address ${freeMs.toFixed(0)} ms, answering address ${liveMs.toFixed(0)} ms`);
    expect(freeMs).toBeGreaterThanOrEqual(290);
    expect(freeMs).toBeLessThan(1_000);
    expect(liveMs).toBeLessThan(300);
    // several at once, the legacy VMs and the gateway among them
    const many = await probe(s2, { vlan: 0, ips: ['198.18.1.1', lab.vms[0]!.ip, lab.vms[1]!.ip, lab.gateway, '198.18.1.252', '198.18.1.253'] });
    expect(many.data.results.map((r: { answered: boolean }) => r.answered)).toEqual([true, true, true, true, false, false]);
    // seen from its own host, the container answers too (from the engine: the parent cannot see it)
    expect((await probe(s1, { vlan: 0, ips: ['198.18.1.1'] })).data.results).toEqual([{ ip: '198.18.1.1', answered: true }]);
    // a VLAN this host has no interface for
    const none = await probe(s1, { vlan: 7, ips: ['198.18.1.1'] });
    expect(none.error).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining(`no interface ${s1.uplink}.7`) });
    const bad = await probe(s1, { vlan: 0, ips: ['198.18.1.1', '198.18.1.1'] });
    expect(bad.error.code).toBe('INVALID_REQUEST');
  });

  it('cutting the uplink fences the server (NATS still up): containers stopped, host.isolated; restoring it un-fences and starts nothing', async () => {
    const s1 = lab.servers[0]!;
    const ip = '198.18.1.1';
    expect((await lab.docker(s1, ['inspect', '-f', '{{.State.Status}}', 'orangery-test-web-0'])).trim()).toBe('running');
    const t0 = Date.now();
    await lab.cutUplink(s1);
    try {
      const isolatedHb = await waitForHeartbeat(s1.id, (hb) => hb['isolated'] === true, 5_000);
      expect(isolatedHb['fenced']).toBe(false);
      await waitFor(
        'the container to be stopped',
        async () => (await lab.docker(s1, ['inspect', '-f', '{{.State.Status}}', 'orangery-test-web-0'])).trim() === 'exited',
        (FENCE_AFTER + 6) * 1000,
        200,
      );
      const elapsed = (Date.now() - t0) / 1000;
      expect(elapsed).toBeGreaterThanOrEqual(FENCE_AFTER - 0.5);
      expect(elapsed).toBeLessThanOrEqual(FENCE_AFTER + 4);
      const isolated = await waitFor('host.isolated', async () => (await client.events('orangery.evt.host.isolated')).find((e) => e.subject === s1.id));
      expect(isolated.data).toMatchObject({
        hostId: s1.id,
        backend: 'docker',
        stopped: ['test:web:0'],
        isolationAddresses: [lab.gateway],
        reason: `no carrier on ${s1.uplink}`,
      });
      expect(await waitForHeartbeat(s1.id, (hb) => hb['fenced'] === true, 5_000)).toMatchObject({ isolated: true });
      // nothing starts while fenced
      const refused = await req(s1, 'start', { instanceId: 'test:web:0' });
      expect(refused.error?.code).toBe('UNAVAILABLE');
    } finally {
      await lab.restoreUplink(s1);
    }
    const reregistered = await waitFor(
      'host.registered (reregistered)',
      async () => (await client.events('orangery.evt.host.registered')).find((e) => e.subject === s1.id && e.data.reregistered === true),
      15_000,
    );
    expect(reregistered.data.fencedAt).toBe((await client.events('orangery.evt.host.isolated')).find((e) => e.subject === s1.id)!.data.at);
    await waitForHeartbeat(s1.id, (hb) => hb['fenced'] === false && hb['isolated'] === false, 10_000);
    await new Promise((r) => setTimeout(r, 2_000));
    expect((await lab.docker(s1, ['inspect', '-f', '{{.State.Status}}', 'orangery-test-web-0'])).trim()).toBe('exited');
    expect(await lab.arpProbe(ip, { count: 1, timeoutSec: 1 })).toBe(false);
    // the control plane decides: a start works again
    const started = await req(s1, 'start', { instanceId: 'test:web:0' });
    expect(started.data?.state, JSON.stringify(started)).toBe('running');
  });

  it('the gateway going silent fences every server after fenceAfter; it answering again un-fences them', async () => {
    const running = async (s: LabServer) =>
      (await lab.docker(s, ['ps', '-q', '--filter', 'label=io.orangery.managed=true'])).trim().split('\n').filter(Boolean).length;
    for (const s of lab.servers) expect(await running(s)).toBeGreaterThan(0);
    const before = (await client.events('orangery.evt.host.isolated')).length;
    await lab.isolateGateway();
    try {
      await new Promise((r) => setTimeout(r, (FENCE_AFTER - 1.5) * 1000));
      for (const s of lab.servers) expect(await running(s)).toBeGreaterThan(0); // not before fenceAfter
      for (const s of lab.servers) await waitFor(`${s.id} to fence`, async () => (await running(s)) === 0, 8_000, 200);
      const events = (await client.events('orangery.evt.host.isolated')).slice(before);
      expect(events.map((e) => e.subject).sort()).toEqual(lab.servers.map((s) => s.id).sort());
      for (const e of events) expect(e.data).toMatchObject({ reason: 'no isolation address answered ARP', isolationAddresses: [lab.gateway] });
    } finally {
      await lab.restoreGateway();
    }
    for (const s of lab.servers) await waitForHeartbeat(s.id, (hb) => hb['fenced'] === false, 10_000);
    for (const s of lab.servers) expect(await running(s)).toBe(0);
  });

  it("an agent's NATS user reaches its own host's subjects only", async () => {
    const { user, password } = agentUser('olab-s1');
    const asAgent = await ContractClient.connect(nats.urlFor(user, password));
    try {
      // another host's commands: the server refuses the subscription, nothing arrives
      let received = 0;
      let refusal = '';
      asAgent.nc.subscribe('orangery.agent.olab-s2.instance.list', {
        callback: (err, msg) => {
          if (err) refusal = err.message;
          else if (msg) received++;
        },
      });
      await asAgent.nc.flush();
      await client.request('orangery.agent.olab-s2.instance.list', {});
      await waitFor('the refusal', () => refusal !== '' && refusal, 3_000);
      expect(refusal).toMatch(/permissions violation/i);
      expect(received).toBe(0);
      // another host's heartbeat and commands: publishing is refused
      await expect(asAgent.request('orangery.agent.olab-s2.instance.list', {}, 2_000)).rejects.toThrow();
    } finally {
      await asAgent.close().catch(() => undefined);
    }
  });

  it('refuses to start with an uplink that holds the default route, or one that does not exist', async () => {
    const { stdout } = await import('node:child_process').then(
      (cp) =>
        new Promise<{ stdout: string }>((res, rej) =>
          cp.execFile('ip', ['-4', '-o', 'route', 'show', 'default'], (e, so) => (e ? rej(e) : res({ stdout: so }))),
        ),
    );
    const def = /\bdev\s+(\S+)/.exec(stdout)?.[1];
    if (def) {
      const a = ServiceProcess.spawn(undefined, 'docker-agent', { ...agentEnv(lab.servers[0]!), ORANGERY_UPLINK: def, ORANGERY_HOST_ID: 'olab-x' });
      expect(await a.exited()).toBe(2);
      expect(a.stderr).toMatch(/default route/);
    }
    const b = ServiceProcess.spawn(undefined, 'docker-agent', { ...agentEnv(lab.servers[0]!), ORANGERY_UPLINK: 'olab-none', ORANGERY_HOST_ID: 'olab-x' });
    expect(await b.exited()).toBe(2);
    expect(b.stderr).toMatch(/does not exist/);
    expect(b.stderr.trim().split('\n')).toHaveLength(1);
  });
});

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TSchema } from '@sinclair/typebox';
import { CreateInstanceCommand, ERROR_CODES, InstanceRef, ListInstancesCommand, StopInstanceCommand, SUBJECTS } from '@orangery/contracts';
import {
  adversarialPayload,
  contractViolation,
  rssKb,
  unexpectedErrorLines,
  ContractClient,
  describePayload,
  fieldSweep,
  FuzzSender,
  fuzzSeed,
  HarnessDir,
  NatsServer,
  samplePayloads,
  ServiceProcess,
  waitFor,
} from '@orangery/testing';
import { buildVcsim, ensureLabPackages } from '../lab';
import { VCSIM_DEB_PACKAGES } from '../lab/vcsim';

// The vmware-agent's command subjects (orangery.agent.<esxi host>.instance.*) under the same
// adversarial payloads as fuzz.test.ts, against a real vmware-agent process and vcsim (no lab
// network: no VM here runs a container, so nothing touches the lab and no lock is needed).
// Replay: ORANGERY_FUZZ_SEED=<printed seed>; more payloads: ORANGERY_FUZZ_RUNS.
const SEED = fuzzSeed();
const RUNS = Number(process.env['ORANGERY_FUZZ_RUNS'] ?? 40);
const dir = new HarnessDir('fuzz-vmware');
let nats: NatsServer;
let client: ContractClient;
let sender: FuzzSender;
let agent: ServiceProcess;
let hostId: string;
let rssBefore = 0;

const GHOST = 'fz:ghost:0';
const network = { ip: '198.18.100.250', mac: '02:00:c6:12:64:fa', prefixLength: 24, gateway: '198.18.100.1', vlan: 0 };
/** Valid commands for an instance that does not exist, from a template that does not exist: no mutation can clone a VM. */
const COMMANDS: { what: string; schema: TSchema; example: Record<string, unknown> }[] = [
  {
    what: 'create',
    schema: CreateInstanceCommand,
    example: {
      instanceId: GHOST,
      env: 'fz',
      app: 'ghost',
      slot: 0,
      template: 'fz-no-such-template',
      resources: { cpu: 1, memoryMb: 512, heapMb: 256 },
      network,
      start: false,
      environment: { A: 'b' },
    },
  },
  { what: 'start', schema: InstanceRef, example: { instanceId: GHOST } },
  { what: 'stop', schema: StopInstanceCommand, example: { instanceId: GHOST, timeoutSeconds: 1 } },
  { what: 'remove', schema: InstanceRef, example: { instanceId: GHOST } },
  { what: 'get', schema: InstanceRef, example: { instanceId: GHOST } },
  { what: 'list', schema: ListInstancesCommand, example: {} },
];

const CODES = new Set<string>(ERROR_CODES);

/** vcsim (the lab's build) on loopback, with a datastore of its own under the harness dir. */
async function startVcsim(): Promise<{ url: string; user: string; password: string }> {
  await ensureLabPackages(VCSIM_DEB_PACKAGES);
  const { binary } = await buildVcsim();
  const user = 'fuzz@vsphere.local';
  const password = randomBytes(12).toString('base64url');
  const tmp = dir.sub('vcsim-tmp');
  const child = spawn(binary, ['-listen', '127.0.0.1:0', '-datastore-dir', dir.sub('vcsim-ds'), '-pidfile', join(dir.path, 'vcsim.pid')], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { PATH: '/usr/bin:/bin', HOME: tmp, TMPDIR: tmp, VCSIM_USERNAME: user, VCSIM_PASSWORD: password },
  });
  dir.track(child);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('vcsim did not start within 60 s')), 60_000);
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      resolve((JSON.parse(line) as { url: string }).url);
    });
    child.once('exit', (code) => reject(new Error(`vcsim exited (${code}) at start`)));
  });
  child.stdout?.resume();
  return { url, user, password };
}

async function list(): Promise<unknown> {
  const r = await client.request(SUBJECTS.agent.list(hostId), {});
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return r.data;
}

beforeAll(async () => {
  console.info(`fuzz seed ${SEED} (replay: ORANGERY_FUZZ_SEED=${SEED}), ${RUNS} payloads per subject`);
  nats = await NatsServer.start(dir);
  const vc = await startVcsim();
  client = await ContractClient.connect(nats.url);
  sender = new FuzzSender(client.nc, nats.port);
  const beats = new Set<string>();
  const sub = client.nc.subscribe(SUBJECTS.heartbeatsAll, {
    callback: (_e, m) => {
      beats.add(m.subject.split('.')[2]!);
    },
  });
  agent = await ServiceProcess.start(dir, 'vmware-agent', {
    ORANGERY_NATS_URL: nats.url,
    ORANGERY_VCENTER_URL: vc.url,
    ORANGERY_VCENTER_USER: vc.user,
    ORANGERY_VCENTER_PASSWORD: vc.password,
    ORANGERY_HEARTBEAT_SECONDS: '1',
    ORANGERY_OBSERVE_ADDR: '',
  });
  hostId = await waitFor('a heartbeat from an ESXi host', () => [...beats].sort()[0], 30_000);
  sub.unsubscribe();
  rssBefore = rssKb(agent.pid);
}, 300_000);

afterAll(async () => {
  sender?.close();
  await client?.close();
  await dir.cleanup();
});

describe(`fuzz the vmware-agent's commands (seed ${SEED})`, () => {
  it('answers every adversarial command with the contract envelope, stays up and bounded, and creates nothing', async () => {
    const before = await list();
    const failures: string[] = [];
    let sent = 0;
    for (const [i, c] of COMMANDS.entries()) {
      const subject = `orangery.agent.${hostId}.instance.${c.what}`;
      for (const payload of [...fieldSweep(c.example), ...samplePayloads(adversarialPayload(c.schema, c.example), SEED + i, RUNS)]) {
        const why = contractViolation(await sender.request(subject, payload, 30_000), CODES);
        sent++;
        if (why) failures.push(`${subject} <- ${describePayload(payload)}: ${why}`);
      }
    }
    const rss = rssKb(agent.pid);
    console.info(
      `${sent} commands to ${hostId}, ${failures.length} contract violations; vmware-agent RSS ${Math.round(rssBefore / 1024)} MB before, ${Math.round(rss / 1024)} MB after`,
    );
    // the agent's own account of an INTERNAL goes with the failure (its log has the stack)
    expect([...failures, ...unexpectedErrorLines(agent.lines)], `seed ${SEED}`).toEqual([]);
    expect(agent.child.exitCode, agent.stderr.slice(-500)).toBeNull();
    expect(rss).toBeLessThan(2 * rssBefore + 100 * 1024);
    expect(unexpectedErrorLines(agent.lines)).toEqual([]);
    expect(await list()).toEqual(before);
    expect((await client.request(SUBJECTS.agent.get(hostId), { instanceId: GHOST })).error?.code).toBe('NOT_FOUND');
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TSchema } from '@sinclair/typebox';
import { CreateInstanceCommand, ERROR_CODES, InstanceRef, ListInstancesCommand, ProbeWireCommand, StopInstanceCommand, SUBJECTS } from '@orangery/contracts';
import {
  adversarialPayload,
  contractViolation,
  describePayload,
  fieldSweep,
  FuzzSender,
  fuzzSeed,
  rssKb,
  samplePayloads,
  unexpectedErrorLines,
  type ServiceProcess,
} from '@orangery/testing';
import type { LabServer } from '../lab';
import { LabCluster } from './fixtures/lab-cluster';

// The docker-agent's command subjects (orangery.agent.<host>.instance.*, wire.probe) under the
// same adversarial payloads as fuzz.test.ts, against a real docker-agent on one lab server
// (a real dockerd). Uses the lab: run it under `flock /tmp/orangery-lab.lock`.
// Replay: ORANGERY_FUZZ_SEED=<printed seed>; more payloads: ORANGERY_FUZZ_RUNS.
const SEED = fuzzSeed();
const RUNS = Number(process.env['ORANGERY_FUZZ_RUNS'] ?? 40);
let cluster: LabCluster;
let server: LabServer;
let sender: FuzzSender;
let agent: ServiceProcess;
let rssBefore = 0;

const GHOST = 'fz:ghost:0';
const network = { ip: '198.18.100.250', mac: '02:00:c6:12:64:fa', prefixLength: 16, gateway: '198.18.0.1', vlan: 0 };
/** Valid commands for an instance that does not exist, with an image no engine has: no mutation can start a container. */
const COMMANDS: { what: string; schema: TSchema; example: Record<string, unknown> }[] = [
  {
    what: 'instance.create',
    schema: CreateInstanceCommand,
    example: {
      instanceId: GHOST,
      env: 'fz',
      app: 'ghost',
      slot: 0,
      image: 'orangery-fuzz/no-such-image:0',
      resources: { cpu: 0.5, memoryMb: 128, heapMb: 64 },
      network,
      start: false,
      environment: { A: 'b' },
      command: ['sleep', '1'],
      security: { pidsLimit: 64 },
    },
  },
  { what: 'instance.start', schema: InstanceRef, example: { instanceId: GHOST } },
  { what: 'instance.stop', schema: StopInstanceCommand, example: { instanceId: GHOST, timeoutSeconds: 1 } },
  { what: 'instance.remove', schema: InstanceRef, example: { instanceId: GHOST } },
  { what: 'instance.get', schema: InstanceRef, example: { instanceId: GHOST } },
  { what: 'instance.list', schema: ListInstancesCommand, example: {} },
  { what: 'wire.probe', schema: ProbeWireCommand, example: { vlan: 0, ips: ['198.18.100.250'] } },
];
const CODES = new Set<string>(ERROR_CODES);

async function list(): Promise<unknown> {
  const r = await cluster.client.request(SUBJECTS.agent.list(server.id), {});
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return r.data;
}

beforeAll(async () => {
  console.info(`fuzz seed ${SEED} (replay: ORANGERY_FUZZ_SEED=${SEED}), ${RUNS} payloads per subject`);
  cluster = await LabCluster.start({ label: 'fuzz-docker-agent', lab: { servers: 1 }, database: false });
  server = cluster.lab.servers[0]!;
  sender = new FuzzSender(cluster.client.nc, cluster.nats.port);
  agent = await cluster.startDockerAgent(server, { ORANGERY_OBSERVE_ADDR: '' });
  rssBefore = rssKb(agent.pid);
}, 300_000);

afterAll(async () => {
  sender?.close();
  await cluster?.close();
}, 120_000);

describe(`fuzz the docker-agent's commands (seed ${SEED})`, () => {
  it('answers every adversarial command with the contract envelope, stays up and bounded, and creates nothing', async () => {
    const before = await list();
    const failures: string[] = [];
    let sent = 0;
    for (const [i, c] of COMMANDS.entries()) {
      const subject = `orangery.agent.${server.id}.${c.what}`;
      for (const payload of [...fieldSweep(c.example), ...samplePayloads(adversarialPayload(c.schema, c.example), SEED + i, RUNS)]) {
        const why = contractViolation(await sender.request(subject, payload, 30_000), CODES);
        sent++;
        if (why) failures.push(`${subject} <- ${describePayload(payload)}: ${why}`);
      }
    }
    const rss = rssKb(agent.pid);
    console.info(
      `${sent} commands to ${server.id}, ${failures.length} contract violations; docker-agent RSS ${Math.round(rssBefore / 1024)} MB before, ${Math.round(rss / 1024)} MB after`,
    );
    // the agent's own account of an INTERNAL goes with the failure (its log has the stack)
    expect([...failures, ...unexpectedErrorLines(agent.lines)], `seed ${SEED}`).toEqual([]);
    expect(agent.child.exitCode, agent.stderr.slice(-500)).toBeNull();
    expect(rss).toBeLessThan(2 * rssBefore + 100 * 1024);
    expect(unexpectedErrorLines(agent.lines)).toEqual([]);
    expect(await list()).toEqual(before);
    expect((await cluster.client.request(SUBJECTS.agent.get(server.id), { instanceId: GHOST })).error?.code).toBe('NOT_FOUND');
  });
});

import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, waitFor } from '@orangery/testing';
import { Lab, LAB_GATEWAY, LAB_IMAGES, SVC_INDEX, SVC_PORT, type LabServer } from '../lab';

// Failover with the same IP, all real: docker-agents, engines and containers in the lab, the
// scheduler replacing what a dead or partitioned host ran. Safety first: a replacement never
// starts before the old copy is off (the agent's self-fence), which a watcher checks on the
// engines throughout.
const dir = new HarnessDir('failover-lab');
let lab: Lab;
let nats: NatsServer;
let dbUrl: string;
let client: ContractClient;
let scale: ScaleWatcher;
const agents = new Map<string, ServiceProcess>();
const proxies = new Map<string, NatsProxy>();

const FENCE_AFTER = 4;

/** A TCP relay between one agent and NATS: cutting it is a network partition of that agent alone. */
class NatsProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly target: number) {}

  async open(): Promise<void> {
    this.server = createServer((down) => {
      const up = connect(this.target, '127.0.0.1');
      for (const s of [down, up]) {
        this.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => {
          this.sockets.delete(s);
          down.destroy();
          up.destroy();
        });
      }
      down.pipe(up);
      up.pipe(down);
    });
    await new Promise<void>((r) => this.server!.listen(this.port, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
  }

  async cut(): Promise<void> {
    await new Promise<void>((r) => {
      this.server?.close(() => r());
      for (const s of this.sockets) s.destroy();
    });
  }
}

const agentEnv = (s: LabServer): Record<string, string> => ({
  ORANGERY_NATS_URL: `nats://127.0.0.1:${proxies.get(s.id)!.port}`,
  ORANGERY_HOST_ID: s.id,
  DOCKER_HOST: s.dockerHost,
  ORANGERY_UPLINK: s.uplink,
  ORANGERY_HEARTBEAT_SECONDS: '1',
  ORANGERY_FENCE_AFTER_SECONDS: String(FENCE_AFTER),
  ORANGERY_RESERVED_CPUS: '0',
  ORANGERY_RESERVED_MEMORY_MB: '512',
});

async function startAgent(s: LabServer): Promise<void> {
  agents.set(s.id, await ServiceProcess.start(dir, 'docker-agent', agentEnv(s)));
}

const request = (app: string, replicas: number) => ({
  env: 'fo',
  app,
  replicas,
  resources: { cpu: 0.1, memoryMb: 64 },
  image: LAB_IMAGES.svc,
  backend: 'docker' as const,
  pool: 'fo-net',
  spread: 'host' as const,
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function instances(app: string): Promise<any[]> {
  const r = await client.requestWithRetry('orangery.scheduler.instances.list', { env: 'fo', app });
  return r.data.instances;
}

/** Running containers of an instance on every engine that answers: name -> servers. */
async function runningCopies(instanceId: string): Promise<string[]> {
  const name = `orangery-${instanceId.replace(/:/g, '-')}`;
  const where: string[] = [];
  for (const s of lab.servers) {
    const out = await lab.docker(s, ['ps', '--filter', `name=^/${name}$`, '--format', '{{.Names}}']).catch(() => '');
    if (out.trim() === name) where.push(s.id);
  }
  return where;
}

/** Samples the engines until stopped: the most copies of the instance ever seen running at once. */
function watchCopies(instanceId: string): { stop: () => Promise<number> } {
  let max = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      max = Math.max(max, (await runningCopies(instanceId)).length);
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return max;
    },
  };
}

beforeAll(async () => {
  [lab, nats, dbUrl] = await Promise.all([Lab.setup({ servers: 2, legacyVms: 1 }), NatsServer.start(dir), freshDatabase('failover_lab')]);
  client = await ContractClient.connect(nats.url);
  scale = new ScaleWatcher(client.nc);
  await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
  const pool = await client.request('orangery.ipam.pool.create', {
    name: 'fo-net',
    cidr: '198.18.0.0/16',
    gateway: LAB_GATEWAY,
    reserved: ['198.18.0.2-198.18.0.255', '198.18.255.0-198.18.255.254'],
    cooldownSeconds: 0,
  });
  expect(pool.ok, JSON.stringify(pool)).toBe(true);
  for (const s of lab.servers) {
    const p = new NatsProxy(nats.port);
    await p.open();
    proxies.set(s.id, p);
  }
  await Promise.all(lab.servers.map(startAgent));
  const scheduler = await ServiceProcess.start(dir, 'scheduler', {
    ORANGERY_NATS_URL: nats.url,
    ORANGERY_DB_URL: dbUrl,
    ORANGERY_HEARTBEAT_SECONDS: '1',
    ORANGERY_LOST_AFTER_SECONDS: '3',
    ORANGERY_FENCE_AFTER_SECONDS: String(FENCE_AFTER),
    ORANGERY_FENCE_MARGIN_SECONDS: '2',
    ORANGERY_RECONCILE_SECONDS: '1',
    ORANGERY_ANTI_ENTROPY_SECONDS: '3',
  });
  await scheduler.waitForLog('leading: consuming scale requests', 30_000);
  await waitFor('both hosts ready', async () => {
    const r = await client.request('orangery.scheduler.hosts.list', {});
    return r.ok && r.data.hosts.filter((h: { state: string }) => h.state === 'ready').length === 2;
  }, 20_000);
}, 300_000);

afterAll(async () => {
  scale?.close();
  for (const p of proxies.values()) await p.cut();
  await client?.close();
  await dir.cleanup();
  await lab?.teardown();
}, 120_000);

describe('failover in the lab', () => {
  it('a partitioned agent fences itself first; only then is its instance started elsewhere, same IP, never two copies', async () => {
    const id = await scale.publish(request('pt', 1));
    expect((await scale.outcome(id, 120_000)).type).toBe('io.orangery.scale.completed');
    const [before] = await instances('pt');
    const victim = lab.servers.find((s) => s.id === before.host)!;
    const other = lab.servers.find((s) => s.id !== before.host)!;
    const watcher = watchCopies(before.id);
    const cutAt = Date.now();
    await proxies.get(victim.id)!.cut();
    const moved = await waitFor('pt:0 running on the other server', async () => {
      const [now] = await instances('pt');
      return now?.host === other.id && now.state === 'running' ? now : undefined;
    }, 60_000, 250);
    expect([moved.ip, moved.mac]).toEqual([before.ip, before.mac]);
    const answer = await waitFor('the moved instance answers the legacy VM', async () => (await lab.vmHttpGet(lab.vms[0]!, moved.ip, SVC_PORT)) ?? undefined, 20_000, 200);
    expect(answer).toBe(SVC_INDEX);
    const max = await watcher.stop();
    expect(max).toBe(1);
    // the new copy started after the old one's self-fence, which came fenceAfter after the cut
    const startedAt = Date.parse((await lab.docker(other, ['inspect', '-f', '{{.State.StartedAt}}', `orangery-fo-pt-0`])).trim());
    expect(startedAt - cutAt).toBeGreaterThanOrEqual(FENCE_AFTER * 1000);
    expect(agents.get(victim.id)!.hasLog('self-fenced')).toBe(true);
    // the partition heals: the old copy is removed, never started again
    await proxies.get(victim.id)!.open();
    await waitFor('the leftover removed from the healed server', async () => {
      const names = await lab.docker(victim, ['ps', '-a', '--filter', 'name=orangery-fo-pt-0', '--format', '{{.Names}}']);
      return names.trim() === '';
    }, 30_000, 500);
    expect(await runningCopies(before.id)).toEqual([other.id]);
  });

  it('a server that dies (agent killed, engine stopped, uplink cut): its instance runs on the other with the same IP', async () => {
    await waitFor('both hosts ready again', async () => {
      const r = await client.request('orangery.scheduler.hosts.list', {});
      return r.ok && r.data.hosts.filter((h: { state: string }) => h.state === 'ready').length === 2;
    }, 30_000);
    const id = await scale.publish(request('web', 2));
    expect((await scale.outcome(id, 120_000)).type).toBe('io.orangery.scale.completed');
    const before = await instances('web');
    expect(new Set(before.map((i) => i.host)).size).toBe(2);
    const victim = lab.servers.find((s) => s.id === before[0].host)!;
    await agents.get(victim.id)!.kill9();
    await lab.stopEngine(victim);
    await lab.cutUplink(victim);
    const after = await waitFor('both web instances on the surviving server', async () => {
      const now = await instances('web');
      return now.length === 2 && now.every((i) => i.state === 'running' && i.host !== victim.id) ? now : undefined;
    }, 60_000, 250);
    expect(after.map((i) => [i.slot, i.ip, i.mac])).toEqual(before.map((i) => [i.slot, i.ip, i.mac]));
    // `running` means the process runs; the service in it may need a moment to listen
    for (const i of after) {
      const got = await waitFor(`${i.ip} answers the legacy VM`, async () => (await lab.vmHttpGet(lab.vms[0]!, i.ip, SVC_PORT)) ?? undefined, 20_000, 200);
      expect(got).toBe(SVC_INDEX);
    }
    // the server comes back: what it still holds goes, nothing of it starts
    await lab.restoreUplink(victim);
    await lab.startEngine(victim);
    await startAgent(victim);
    await waitFor('the dead server holds no web container any more', async () => {
      const names = await lab.docker(victim, ['ps', '-a', '--filter', 'label=io.orangery.app=web', '--format', '{{.Names}}']);
      return names.trim() === '';
    }, 30_000, 500);
    for (const i of after) expect(await runningCopies(i.id)).toEqual([i.host]);
  });
});

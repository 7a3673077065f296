import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContractClient, freshDatabase, HarnessDir, NatsServer, ScaleWatcher, ServiceProcess, waitFor } from '@orangery/testing';
import { Lab, LAB_GATEWAY, LAB_IMAGES, SVC_INDEX, SVC_PORT, type LabServer } from '../lab';

// One agent cut from NATS (a TCP relay between it and the server, cut), everything else
// healthy: v1.1 says silence is not death. Its host goes `unknown`, its instance keeps
// serving, nothing is started elsewhere (a watcher samples the engines throughout). The
// moving cases (an isolated host, a dead host) are in faults-moving.test.ts, with the ARP
// watcher on the fabric.
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

describe('an agent partitioned from NATS alone (v1.1: silence is not death)', () => {
  it('its host goes unknown, its instance keeps serving and nothing moves; healed, it is ready and nothing changed', async () => {
    const id = await scale.publish(request('pt', 1));
    expect((await scale.outcome(id, 120_000)).type).toBe('io.orangery.scale.completed');
    const [before] = await instances('pt');
    const victim = lab.servers.find((s) => s.id === before.host)!;
    const startedAt = (await lab.docker(victim, ['inspect', '-f', '{{.State.StartedAt}}', 'orangery-fo-pt-0'])).trim();
    const watcher = watchCopies(before.id);
    await proxies.get(victim.id)!.cut();
    await waitFor('the host is unknown', async () => {
      const r = await client.request('orangery.scheduler.hosts.list', {});
      return r.ok && r.data.hosts.find((h: { id: string }) => h.id === victim.id)?.state === 'unknown';
    }, 30_000, 250);
    // well past fenceAfter + margin: its instance still answers, so nothing is replaced
    await new Promise((r) => setTimeout(r, (FENCE_AFTER + 2 + 6) * 1000));
    const r = await client.request('orangery.scheduler.hosts.list', {});
    expect(r.data.hosts.find((h: { id: string }) => h.id === victim.id)?.state).toBe('unknown');
    const [during] = await instances('pt');
    expect([during.host, during.ip]).toEqual([victim.id, before.ip]);
    expect(await lab.vmHttpGet(lab.vms[0]!, before.ip, SVC_PORT)).toBe(SVC_INDEX);
    const announced = await waitFor('host.unknown stored', async () => {
      const evs = (await client.events('orangery.evt.host.unknown')).filter((e) => e.subject === victim.id);
      return evs.length > 0 ? evs : undefined;
    }, 10_000, 500);
    expect(announced[0].data).toMatchObject({ hostId: victim.id, backend: 'docker' });
    expect(agents.get(victim.id)!.hasLog('self-fenced')).toBe(false);
    // healed: ready again, the same container, never restarted
    await proxies.get(victim.id)!.open();
    await waitFor('the host is ready again', async () => {
      const r2 = await client.request('orangery.scheduler.hosts.list', {});
      return r2.ok && r2.data.hosts.find((h: { id: string }) => h.id === victim.id)?.state === 'ready';
    }, 30_000, 250);
    expect((await lab.docker(victim, ['inspect', '-f', '{{.State.StartedAt}}', 'orangery-fo-pt-0'])).trim()).toBe(startedAt);
    expect(await watcher.stop()).toBe(1);
    expect(await runningCopies(before.id)).toEqual([victim.id]);
  });
});

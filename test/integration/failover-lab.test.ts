import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor, type ContractClient, type ScaleWatcher, type ServiceProcess } from '@orangery/testing';
import { LAB_IMAGES, SVC_INDEX, SVC_PORT, type Lab, type LabServer } from '../lab';
import { LabCluster } from './fixtures/lab-cluster';

// One agent cut from NATS (a TCP relay between it and the server, cut), everything else
// healthy: v1.1 says silence is not death. Its host goes `unknown`, its instance keeps
// serving, nothing is started elsewhere (a watcher samples the engines throughout). The
// moving cases (an isolated host, a dead host) are in faults-moving.test.ts, with the ARP
// watcher on the fabric.
let cluster: LabCluster;
let lab: Lab;
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

async function startAgent(s: LabServer): Promise<void> {
  const viaProxy = `nats://127.0.0.1:${proxies.get(s.id)!.port}`;
  agents.set(s.id, await cluster.startDockerAgent(s, { ORANGERY_NATS_URL: viaProxy, ORANGERY_FENCE_AFTER_SECONDS: String(FENCE_AFTER) }));
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
const instances = (app: string): Promise<any[]> => cluster.instances('fo', app);

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
  cluster = await LabCluster.start({ label: 'failover-lab', lab: { servers: 2, legacyVms: 1 } });
  ({ lab, client, scale } = cluster);
  await cluster.startIpam('fo-net');
  for (const s of lab.servers) {
    const p = new NatsProxy(cluster.nats.port);
    await p.open();
    proxies.set(s.id, p);
  }
  await Promise.all(lab.servers.map(startAgent));
  await cluster.startScheduler(
    {
      ORANGERY_LOST_AFTER_SECONDS: '3',
      ORANGERY_FENCE_AFTER_SECONDS: String(FENCE_AFTER),
      ORANGERY_FENCE_MARGIN_SECONDS: '2',
      ORANGERY_RECONCILE_SECONDS: '1',
      ORANGERY_ANTI_ENTROPY_SECONDS: '3',
    },
    { leading: true },
  );
  await cluster.waitHostsReady(2, { timeoutMs: 20_000 });
}, 300_000);

afterAll(async () => {
  for (const p of proxies.values()) await p.cut();
  await cluster?.close();
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
    await waitFor(
      'the host is unknown',
      async () => {
        const r = await client.request('orangery.scheduler.hosts.list', {});
        return r.ok && r.data.hosts.find((h: { id: string }) => h.id === victim.id)?.state === 'unknown';
      },
      30_000,
      250,
    );
    // well past fenceAfter + margin: its instance still answers, so nothing is replaced
    await new Promise((r) => setTimeout(r, (FENCE_AFTER + 2 + 6) * 1000));
    const r = await client.request('orangery.scheduler.hosts.list', {});
    expect(r.data.hosts.find((h: { id: string }) => h.id === victim.id)?.state).toBe('unknown');
    const [during] = await instances('pt');
    expect([during.host, during.ip]).toEqual([victim.id, before.ip]);
    expect(await lab.vmHttpGet(lab.vms[0]!, before.ip, SVC_PORT)).toBe(SVC_INDEX);
    const announced = await waitFor(
      'host.unknown stored',
      async () => {
        const evs = (await client.events('orangery.evt.host.unknown')).filter((e) => e.subject === victim.id);
        return evs.length > 0 ? evs : undefined;
      },
      10_000,
      500,
    );
    expect(announced[0].data).toMatchObject({ hostId: victim.id, backend: 'docker' });
    expect(agents.get(victim.id)!.hasLog('self-fenced')).toBe(false);
    // healed: ready again, the same container, never restarted
    await proxies.get(victim.id)!.open();
    await waitFor(
      'the host is ready again',
      async () => {
        const r2 = await client.request('orangery.scheduler.hosts.list', {});
        return r2.ok && r2.data.hosts.find((h: { id: string }) => h.id === victim.id)?.state === 'ready';
      },
      30_000,
      250,
    );
    expect((await lab.docker(victim, ['inspect', '-f', '{{.State.StartedAt}}', 'orangery-fo-pt-0'])).trim()).toBe(startedAt);
    expect(await watcher.stop()).toBe(1);
    expect(await runningCopies(before.id)).toEqual([victim.id]);
  });
});

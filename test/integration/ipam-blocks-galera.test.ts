import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContractClient, GaleraCluster, HarnessDir, NatsServer, ServiceProcess } from '@orangery/testing';

// Swarm nodes' blocks on MariaDB Galera (docs/ipam.md "Blocks", "On MariaDB Galera"): three
// ipam replicas, each on its own Galera node, so row locks do not span them and only
// certification of the rows each transaction writes keeps two blocks apart. Costs about a
// minute on 2 cores (Galera's start ~15 s).
const dir = new HarnessDir('ipam-blocks-galera');
let nats: NatsServer;
let galera: GaleraCluster;
const clients: ContractClient[] = [];
const replicas: ServiceProcess[] = [];

const owner = (app: string, slot: number, env = 'test') => ({ env, app, slot });
const ipInt = (ip: string) => ip.split('.').reduce((n, b) => n * 256 + Number(b), 0);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyReply = any;
const req = (subject: string, body: unknown, i = 0): Promise<AnyReply> => clients[i % clients.length]!.request(subject, body, 60_000);
const ok = (r: AnyReply) => {
  expect(r.ok, JSON.stringify(r)).toBe(true);
  return r.data;
};

beforeAll(async () => {
  [nats, galera] = await Promise.all([NatsServer.start(dir), GaleraCluster.start(dir, 3, 'blk-galera')]);
  // One after the other: the first runs the migrations, the others find them done.
  for (let i = 0; i < 3; i++) {
    replicas.push(
      await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: galera.urlOf(i), ORANGERY_OBSERVE_ADDR: '' }, 90_000),
    );
  }
  for (let i = 0; i < 3; i++) clients.push(await ContractClient.connect(nats.url));
}, 180_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  for (const r of replicas) await r.terminate();
  await galera?.stop();
  await dir.cleanup();
});

describe('blocks on Galera, one ipam replica per node', () => {
  it('24 hosts reserving (each twice) and 200 singles at once: no overlap, no single in a block, every node agrees', async () => {
    ok(await req('orangery.ipam.pool.create', { name: 'g-race', cidr: '198.18.32.0/22', gateway: '198.18.32.1' }));
    const sizes = [4, 8, 16, 32];
    const hosts = Array.from({ length: 24 }, (_, i) => ({ host: `gsw-n${i}`, size: sizes[i % sizes.length]! }));
    const [reserved, allocated] = await Promise.all([
      Promise.all([...hosts, ...hosts].map((h, i) => req('orangery.ipam.block.reserve', { pool: 'g-race', ...h }, i))),
      Promise.all(Array.from({ length: 200 }, (_, i) => req('orangery.ipam.allocate', { pool: 'g-race', owner: owner('gsingle', i, 'prod') }, i))),
    ]);
    const blocks = reserved.map(ok);
    hosts.forEach((h, i) => expect(blocks[i + hosts.length], h.host).toEqual(blocks[i]));
    const ranges = blocks.slice(0, hosts.length).map((b: AnyReply) => ({ host: b.host, first: ipInt(b.first), last: ipInt(b.last) }));
    const sorted = [...ranges].sort((a, b) => a.first - b.first);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.first, `${sorted[i - 1]!.host} / ${sorted[i]!.host}`).toBeGreaterThan(sorted[i - 1]!.last);
    const singles = allocated.map(ok).map((a: AnyReply) => ipInt(a.ip));
    expect(new Set(singles).size).toBe(200);
    for (const ip of singles)
      expect(
        ranges.some((r) => ip >= r.first && ip <= r.last),
        String(ip),
      ).toBe(false);
    // Every Galera node holds the same blocks and the same blocked addresses.
    const blockedTotal = hosts.reduce((n, h) => n + h.size, 0);
    for (let n = 0; n < 3; n++) {
      const out = await galera.sql(
        n,
        `SELECT (SELECT COUNT(*) FROM orangery.ipam_block),
                (SELECT COUNT(*) FROM orangery.ipam_address WHERE available_at = 9007199254740991),
                (SELECT COUNT(*) FROM orangery.ipam_address WHERE live_owner IS NOT NULL)`,
      );
      expect(out.trim().split(/\s+/).map(Number), `node ${n}`).toEqual([24, blockedTotal, 200]);
    }
  });

  it('one block address bound by ten owners through three nodes at once: exactly one wins', async () => {
    const block = ok(await req('orangery.ipam.block.reserve', { pool: 'g-race', host: 'gsw-bind', size: 4 }));
    const owners = Array.from({ length: 10 }, (_, i) => owner('grace', i));
    const replies = await Promise.all(
      owners.map((o, i) =>
        req('orangery.ipam.block.bind', { pool: 'g-race', ip: block.first, owner: o, instanceId: `${o.env}:${o.app}:${o.slot}`, host: 'gsw-bind' }, i),
      ),
    );
    expect(replies.filter((r) => r.ok)).toHaveLength(1);
    for (const r of replies.filter((x) => !x.ok)) expect(r.error.code, JSON.stringify(r)).toBe('IP_TAKEN');
  });
});

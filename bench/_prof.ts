import { ContractClient, freshDatabase, HarnessDir, NatsServer, ServiceProcess } from '@orangery/testing';
import { closedLoop, fmt } from './lib';
const dir = new HarnessDir('prof');
const nats = await NatsServer.start(dir);
const dbUrl = await freshDatabase('prof');
const p = await ServiceProcess.start(dir, 'ipam', { ORANGERY_NATS_URL: nats.url, ORANGERY_DB_URL: dbUrl });
const c = await ContractClient.connect(nats.url);
await c.request('orangery.ipam.pool.create', { name: 'b', cidr: '198.19.0.0/16', gateway: '198.19.0.1' }, 60000);
for (const [name, op] of [
  ['pool.get', async () => (await c.request('orangery.ipam.pool.list', {})).ok],
  ['get-miss', async () => (await c.request('orangery.ipam.get', { ip: '198.19.0.9' })).ok === false],
  ['allocate', async (s: number) => (await c.request('orangery.ipam.allocate', { pool: 'b', owner: { env: 'x', app: 'a' + Math.floor(s / 10000) + name, slot: s % 10000 } })).ok],
] as const) {
  const r = await closedLoop(1, 3, op as never);
  console.log(name, fmt(r.perSecond, 0), fmt(r.p50, 2), r.errors);
}
const r = await closedLoop(16, 3, async (s) => (await c.request('orangery.ipam.allocate', { pool: 'b', owner: { env: 'y', app: 'b' + Math.floor(s / 10000), slot: s % 10000 } })).ok);
console.log('alloc16', fmt(r.perSecond, 0), fmt(r.p50, 2), r.errors);
await p.terminate();
await c.close();
await dir.cleanup();

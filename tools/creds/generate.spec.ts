import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateCreds, type CredsOptions } from './generate';

const tmp = mkdtempSync(join(tmpdir(), 'orangery-creds-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const options = (dir: string, extra: Partial<CredsOptions> = {}): CredsOptions => ({
  dir,
  agents: [{ name: 'node-1', hosts: ['node-1'] }],
  natsServers: ['10.0.0.5:4222', '10.0.0.6:4222'],
  sans: ['localhost', '127.0.0.1'],
  dbUrl: 'mysql://db.example:3306/orangery',
  dbUserHost: '%',
  rotate: false,
  repoRoot: resolve(__dirname, '..', '..'),
  bcryptCost: 4,
  ...extra,
});
const read = (dir: string, f: string) => readFileSync(join(dir, f), 'utf8');

describe('generateCreds', () => {
  const dir = join(tmp, 'a');

  it('writes private files whose env files point at every server over TLS', async () => {
    const r = await generateCreds(options(dir));
    expect(r.users.map((u) => u.user)).toEqual(['ipam', 'scheduler', 'migrator', 'console', 'operator', 'upstream', 'agent-node-1']);
    for (const f of r.files) expect((statSync(f).mode & 0o777).toString(8)).toBe('600');
    const secrets = JSON.parse(read(dir, 'secrets.json'));
    const env = read(dir, 'env/scheduler.env');
    expect(env).toContain(`ORANGERY_NATS_URL=tls://scheduler:${secrets.nats.scheduler}@10.0.0.5:4222,tls://scheduler:${secrets.nats.scheduler}@10.0.0.6:4222`);
    expect(env).toContain(`ORANGERY_NATS_CA=${join(resolve(dir), 'ca.pem')}`);
    expect(env).toContain(`ORANGERY_DB_URL=mysql://orangery_scheduler:${secrets.db.scheduler}@db.example:3306/orangery`);
    expect(read(dir, 'env/agent-node-1.env')).toContain('ORANGERY_HOST_ID=node-1');
    expect(read(dir, 'env/operator.env')).toContain('--inbox-prefix _INBOX_operator');
    // every table the services' migrations create, and nothing across services
    const sql = read(dir, 'db-users.sql');
    for (const t of ['ipam_pool', 'ipam_address', 'ipam_migrations', 'sched_instance', 'scheduler_migrations', 'mig_migration', 'migrator_migrations'])
      expect(sql).toContain(`\`${t}\``);
    expect(sql).not.toMatch(/`sched_[a-z_]+` TO 'orangery_ipam'/);
  });

  it("keeps every host of a Galera list, in order, in the services' database URLs", async () => {
    const d = join(tmp, 'galera');
    await generateCreds(options(d, { dbUrl: 'mysql://root:x@g1:3306,g2:3307,g3:3306/orangery' }));
    const secrets = JSON.parse(read(d, 'secrets.json'));
    expect(read(d, 'env/ipam.env')).toContain(`ORANGERY_DB_URL=mysql://orangery_ipam:${secrets.db.ipam}@g1:3306,g2:3307,g3:3306/orangery`);
  });

  it('keeps every secret, the CA and the certificate on a re-run', async () => {
    const before = ['secrets.json', 'nats-hashes.json', 'nats-auth.conf', 'ca.pem', 'server-cert.pem'].map((f) => read(dir, f));
    await generateCreds(options(dir));
    expect(['secrets.json', 'nats-hashes.json', 'nats-auth.conf', 'ca.pem', 'server-cert.pem'].map((f) => read(dir, f))).toEqual(before);
  });

  it('drops the env file of an agent left out of a re-run', async () => {
    await generateCreds(
      options(dir, {
        agents: [
          { name: 'node-1', hosts: ['node-1'] },
          { name: 'node-2', hosts: ['node-2'] },
        ],
      }),
    );
    expect(statSync(join(dir, 'env', 'agent-node-2.env')).isFile()).toBe(true);
    await generateCreds(options(dir));
    expect(() => statSync(join(dir, 'env', 'agent-node-2.env'))).toThrow(/ENOENT/);
    expect(JSON.parse(read(dir, 'secrets.json')).nats['agent-node-2']).toBeUndefined();
  });

  it('makes new ones of everything with rotate', async () => {
    const secrets = read(dir, 'secrets.json');
    const ca = read(dir, 'ca.pem');
    await generateCreds(options(dir, { rotate: true }));
    expect(read(dir, 'secrets.json')).not.toBe(secrets);
    expect(read(dir, 'ca.pem')).not.toBe(ca);
  });

  it('refuses a host id that is not one (it would widen a subject)', async () => {
    await expect(generateCreds(options(join(tmp, 'b'), { agents: [{ name: 'evil', hosts: ['*'] }] }))).rejects.toThrow(/'\*' must match/);
  });
});

import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

// The file is read as YAML (merge keys resolved, as compose does) and its structure checked;
// where Debian's docker-compose (1.29, Python) is installed it also validates the file
// against the compose schema and interpolates the variables (`docker compose`, v2, is not
// installed here or in CI).
const dir = resolve(__dirname);
const text = readFileSync(join(dir, 'docker-compose.yml'), 'utf8');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const compose = parse(text, { merge: true }) as { services: Record<string, any>; volumes: Record<string, unknown> };
const services = compose.services;
const CONTROL_PLANE = ['ipam', 'scheduler', 'migrator', 'vmware-agent'];
const flags = (name: string): string[] => services[name].command as string[];
const flag = (name: string, key: string): string | undefined =>
  flags(name)
    .find((a) => a.startsWith(`--${key}=`))
    ?.slice(key.length + 3);

describe('deploy/compose/docker-compose.yml', () => {
  it('has exactly the control plane: 3 NATS, 3 Galera, the services; no docker-agent (it runs under systemd)', () => {
    expect(Object.keys(services).sort()).toEqual([
      'galera-1',
      'galera-2',
      'galera-3',
      'ipam',
      'migrator',
      'nats-1',
      'nats-2',
      'nats-3',
      'scheduler',
      'vmware-agent',
    ]);
    // the console is there, commented out, until its image exists (issue 15)
    expect(text).toMatch(/^ {2}# console:$/m);
  });

  it('NATS: 3 named nodes in one cluster, each routing to all three, JetStream on its own volume, health-checked', () => {
    const names = ['nats-1', 'nats-2', 'nats-3'];
    for (const n of names) {
      expect(flag(n, 'name')).toBe(n);
      expect(flag(n, 'cluster_name')).toBe('orangery');
      expect(flag(n, 'cluster')).toBe('nats://0.0.0.0:6222');
      expect(flag(n, 'routes')!.split(',').sort()).toEqual(names.map((m) => `nats://${m}:6222`));
      expect(flags(n)).toContain('--jetstream');
      expect(services[n].volumes).toEqual([`${n}:/data`]);
      expect(services[n].healthcheck.test.join(' ')).toMatch(/healthz\?js-enabled-only=true/);
    }
  });

  it('Galera: 3 nodes of one cluster with the settings Galera needs; only galera-1 ever bootstraps, and only on an empty data directory', () => {
    const names = ['galera-1', 'galera-2', 'galera-3'];
    for (const n of names) {
      expect(flag(n, 'wsrep_on')).toBe('ON');
      expect(flag(n, 'wsrep_provider')).toBe('/usr/lib/galera/libgalera_smm.so');
      expect(flag(n, 'wsrep_cluster_name')).toBe('orangery');
      expect(flag(n, 'wsrep_cluster_address')).toBe('gcomm://galera-1,galera-2,galera-3');
      expect(flag(n, 'binlog_format')).toBe('ROW');
      expect(flag(n, 'innodb_autoinc_lock_mode')).toBe('2');
      expect(flag(n, 'wsrep_sync_wait')).toBe('1');
      expect(services[n].volumes).toEqual([`${n}:/var/lib/mysql`]);
      expect(services[n].healthcheck.test).toEqual(['CMD', 'healthcheck.sh', '--connect', '--innodb_initialized', '--galera_online']);
      expect(JSON.stringify(services[n].command)).not.toMatch(/wsrep-new-cluster/);
    }
    const boot = (services['galera-1'].entrypoint as string[]).join(' ');
    expect(boot).toMatch(/if \[ ! -e \/var\/lib\/mysql\/grastate\.dat \]; then set -- "\$\$@" --wsrep-new-cluster; fi/);
    expect(services['galera-2'].entrypoint).toBeUndefined();
    expect(services['galera-3'].entrypoint).toBeUndefined();
    expect(services['galera-2'].depends_on).toEqual({ 'galera-1': { condition: 'service_healthy' } });
  });

  it.each(CONTROL_PLANE)('%s: 2 replicas on every NATS node (and every database node), health-checked, confined, time to drain', (name) => {
    const s = services[name];
    expect(s.deploy.replicas).toBeGreaterThanOrEqual(2);
    expect(s.environment.ORANGERY_NATS_URL.split(',')).toEqual(['nats://nats-1:4222', 'nats://nats-2:4222', 'nats://nats-3:4222']);
    if (name !== 'vmware-agent') expect(s.environment.ORANGERY_DB_URL).toMatch(/@galera-1:3306,galera-2:3306,galera-3:3306\/orangery$/);
    const port = { ipam: 9401, scheduler: 9402, migrator: 9403, 'vmware-agent': 9405 }[name];
    expect(s.healthcheck.test.join(' ')).toContain(`http://127.0.0.1:${port}/readyz`);
    expect(s.image).toMatch(new RegExp(`/${name}:`));
    expect(s.restart).toBe('unless-stopped');
    expect(s.stop_signal).toBe('SIGTERM');
    expect(Number(/^(\d+)s$/.exec(s.stop_grace_period)![1])).toBeGreaterThan(20);
    expect(s.read_only).toBe(true);
    expect(s.cap_drop).toEqual(['ALL']);
    expect(s.security_opt).toEqual(['no-new-privileges:true']);
  });

  it('every variable the file requires is in env.example, and no password has a default', () => {
    // lines in force (the console's are commented out)
    const active = text
      .split('\n')
      .filter((l) => !/^\s*#/.test(l))
      .join('\n');
    const required = [...new Set([...active.matchAll(/\$\{([A-Z_]+):\?/g)].map((m) => m[1]!))];
    const example = readFileSync(join(dir, 'env.example'), 'utf8');
    for (const v of required) expect(example, v).toMatch(new RegExp(`^${v}=`, 'm'));
    expect(text).not.toMatch(/PASSWORD:-/);
    expect(required).toEqual(expect.arrayContaining(['ORANGERY_DB_PASSWORD', 'MARIADB_ROOT_PASSWORD', 'ORANGERY_VCENTER_PASSWORD']));
  });

  const dockerCompose = ['/usr/bin/docker-compose', '/usr/local/bin/docker-compose'].find((p) => existsSync(p));
  it.skipIf(!dockerCompose)('docker-compose validates it with the variables of env.example filled in, and refuses it with one missing', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'orangery-compose-'));
    const config = (env: string) =>
      new Promise<{ code: number; stderr: string }>((done) => {
        writeFileSync(join(tmp, '.env'), env);
        execFile(dockerCompose!, ['config', '-q'], { cwd: tmp, timeout: 60_000 }, (err, _out, stderr) => done({ code: err ? 1 : 0, stderr }));
      });
    try {
      // compose 1.29 predates the top-level `name` (compose v2): the rest is checked
      writeFileSync(join(tmp, 'docker-compose.yml'), text.replace(/^name: orangery\n/m, ''));
      const filled = readFileSync(join(dir, 'env.example'), 'utf8').replace(/^([A-Z_]+)=$/gm, '$1=secret-$1');
      const ok = await config(filled);
      expect(ok.stderr).toBe('');
      expect(ok.code).toBe(0);
      const missing = await config(filled.replace(/^ORANGERY_DB_PASSWORD=.*$/m, ''));
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/set ORANGERY_DB_PASSWORD in \.env/);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

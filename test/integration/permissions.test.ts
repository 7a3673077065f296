import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection } from 'mysql2/promise';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { natsEndpoints } from '@orangery/messaging';
import { HarnessDir, NatsServer, PrivateMariadb, REPO_ROOT, ServiceProcess, waitFor } from '@orangery/testing';

// Least privilege on the bus and in the database (docs/security.md), with the credentials
// `npm run creds` generates: a real nats-server that includes the generated configuration
// (users, permissions, TLS), a real MariaDB with the generated users, and real ipam and
// scheduler processes started with their generated env files. One test per attack.
const run = promisify(execFile);
const dir = new HarnessDir('permissions');
const credsDir = dir.sub('creds');
let nats: NatsServer;
let db: PrivateMariadb;
let secrets: { nats: Record<string, string>; db: Record<string, string> };
let ipam: ServiceProcess;
let scheduler: ServiceProcess;
let migrator: ServiceProcess;
const open: NatsConnection[] = [];

const creds = (...extra: string[]) =>
  run(
    process.execPath,
    [
      'tools/run-ts.mjs',
      'tools/creds.ts',
      '--dir',
      credsDir,
      '--agent-host',
      'host-a',
      '--agent-host',
      'host-b',
      '--agent',
      'vc1=esx-1,esx-2',
      '--swarm-agent',
      'sw1=sw1-n1,sw1-n2',
      ...extra,
    ],
    {
      cwd: REPO_ROOT,
    },
  );

/** KEY=VALUE lines of a generated env file (comments skipped). */
function envFile(user: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(join(credsDir, 'env', `${user}.env`), 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

const INBOX: Record<string, string> = {
  operator: '_INBOX_operator',
  upstream: '_INBOX_upstream',
  console: '_INBOX_console',
  'agent-host-a': '_INBOX_host-a',
  'agent-vc1': '_INBOX_vc1',
  'agent-sw1': '_INBOX_sw1',
};

/** Connects as a role, from its env file, as that role's client would (its own inbox prefix). */
async function connectAs(user: string, errors: Error[] = []): Promise<NatsConnection> {
  const env = envFile(user);
  const ep = natsEndpoints(env['ORANGERY_NATS_URL']!);
  const nc = await connect({
    servers: ep.servers,
    user: ep.user!,
    pass: ep.pass!,
    tls: { ca: readFileSync(env['ORANGERY_NATS_CA']!, 'utf8') },
    inboxPrefix: INBOX[user] ?? '_INBOX',
    reconnect: false,
  });
  open.push(nc);
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'error') errors.push(s.error);
  })();
  return nc;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function request(nc: NatsConnection, subject: string, body: unknown, timeout = 10_000): Promise<any> {
  return (await nc.request(subject, JSON.stringify(body), { timeout })).json();
}

const violation = (errors: Error[], operation: 'publish' | 'subscription', subject: string) =>
  errors.some(
    (e) =>
      e.name === 'PermissionViolationError' &&
      (e as Error & { operation: string }).operation === operation &&
      (e as Error & { subject: string }).subject === subject,
  );

beforeAll(async () => {
  // First run: the server's configuration (its port is not known yet, so the env files say 4222).
  await creds();
  nats = await NatsServer.start(dir, `include "${relative(dir.path, join(credsDir, 'nats-auth.conf'))}"`);
  db = await PrivateMariadb.start(dir);
  // Second run with the real addresses: idempotent, every secret is kept.
  const before = readFileSync(join(credsDir, 'secrets.json'), 'utf8');
  await creds('--nats', `127.0.0.1:${nats.port}`, '--db-url', `mysql://127.0.0.1:${db.port}/orangery`);
  expect(readFileSync(join(credsDir, 'secrets.json'), 'utf8')).toBe(before);
  secrets = JSON.parse(before);
  // An administrator runs the generated SQL.
  await run('mariadb', ['--protocol=socket', '-S', join(dir.path, 'mysqld.sock'), '-uroot', 'orangery', '-e', `source ${join(credsDir, 'db-users.sql')}`]);

  const fast = { ORANGERY_OBSERVE_ADDR: '', ORANGERY_RECONCILE_SECONDS: '1', ORANGERY_ANTI_ENTROPY_SECONDS: '2' };
  ipam = await ServiceProcess.start(dir, 'ipam', { ...envFile('ipam'), ...fast });
  scheduler = await ServiceProcess.start(dir, 'scheduler', { ...envFile('scheduler'), ...fast });
  migrator = await ServiceProcess.start(dir, 'migrator', { ...envFile('migrator'), ...fast });
});

afterAll(async () => {
  await Promise.all(open.map((nc) => nc.close().catch(() => undefined)));
  await ipam?.terminate();
  await scheduler?.terminate();
  await migrator?.terminate();
  await dir.cleanup();
});

describe('npm run creds', () => {
  it('writes every file with mode 0600 in a 0700 directory', () => {
    expect(statSync(credsDir).mode & 0o777).toBe(0o700);
    const files = ['ca.pem', 'ca-key.pem', 'server-cert.pem', 'server-key.pem', 'nats-auth.conf', 'db-users.sql', 'secrets.json'];
    for (const u of ['ipam', 'scheduler', 'migrator', 'console', 'operator', 'upstream', 'agent-host-a', 'agent-host-b', 'agent-vc1', 'agent-sw1'])
      files.push(join('env', `${u}.env`));
    for (const f of files) expect({ f, mode: (statSync(join(credsDir, f)).mode & 0o777).toString(8) }).toEqual({ f, mode: '600' });
  });

  it('keeps no plain password in the server configuration (bcrypt hashes only)', () => {
    const conf = readFileSync(join(credsDir, 'nats-auth.conf'), 'utf8');
    for (const p of Object.values(secrets.nats)) expect(conf).not.toContain(p);
    expect(conf).toMatch(/password: "\$2[ab]\$11\$/);
  });
});

describe('TLS and authentication', () => {
  it('a plain-TCP client is refused: the server requires TLS before anything else', async () => {
    const text = await new Promise<string>((resolve) => {
      let got = '';
      const s = tcpConnect({ host: '127.0.0.1', port: nats.port }, () => {
        s.write(`CONNECT {"user":"operator","pass":"${secrets.nats['operator']}","verbose":false}\r\nPING\r\n`);
      });
      s.on('data', (d) => (got += d.toString()));
      s.on('close', () => resolve(got));
      s.on('error', () => resolve(got));
      setTimeout(() => s.destroy(), 5_000);
    });
    expect(text).toContain('"tls_required":true');
    expect(text).not.toContain('PONG');
  });

  it('a client that trusts another CA does not connect', async () => {
    const other = dir.sub('other-ca');
    await run('/usr/bin/openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      join(other, 'k.pem'),
      '-out',
      join(other, 'ca.pem'),
      '-days',
      '1',
      '-subj',
      '/CN=evil',
    ]);
    await expect(
      connect({
        servers: `127.0.0.1:${nats.port}`,
        user: 'operator',
        pass: secrets.nats['operator']!,
        tls: { ca: readFileSync(join(other, 'ca.pem'), 'utf8') },
        reconnect: false,
      }),
    ).rejects.toThrow();
  });

  it('no credentials, or a wrong password, are refused', async () => {
    const ca = readFileSync(join(credsDir, 'ca.pem'), 'utf8');
    await expect(connect({ servers: `127.0.0.1:${nats.port}`, tls: { ca }, reconnect: false })).rejects.toThrow(/Authorization/i);
    await expect(connect({ servers: `127.0.0.1:${nats.port}`, user: 'operator', pass: 'guess', tls: { ca }, reconnect: false })).rejects.toThrow(
      /Authorization/i,
    );
  });
});

describe('a service configured for TLS', () => {
  it('exits 2 naming ORANGERY_NATS_CA when the CA file cannot be read', async () => {
    const p = ServiceProcess.spawn(dir, 'ipam', { ...envFile('ipam'), ORANGERY_NATS_CA: join(credsDir, 'missing.pem'), ORANGERY_OBSERVE_ADDR: '' });
    expect(await p.exited()).toBe(2);
    expect(p.stderr).toMatch(/ORANGERY_NATS_CA '.*missing\.pem' cannot be read/);
  });

  it('refuses a NATS server without TLS, before sending credentials (no downgrade)', async () => {
    const plainDir = new HarnessDir('permissions-plain');
    try {
      const plain = await NatsServer.start(plainDir);
      const p = ServiceProcess.spawn(dir, 'ipam', {
        ...envFile('ipam'),
        ORANGERY_NATS_URL: `nats://127.0.0.1:${plain.port}`,
        ORANGERY_OBSERVE_ADDR: '',
      });
      expect(await p.exited()).toBe(1);
      expect(p.stderr).toMatch(/does not offer TLS/);
    } finally {
      await plainDir.cleanup();
    }
  });
});

describe('services over TLS with their generated users', () => {
  it('ipam, the scheduler and the migrator work end to end: an operator creates a pool, allocates and lists', async () => {
    const op = await connectAs('operator');
    const created = await request(op, 'orangery.ipam.pool.create', { name: 'sec', cidr: '198.18.40.0/24', gateway: '198.18.40.1' });
    expect(created).toMatchObject({ ok: true, data: { name: 'sec' } });
    const got = await request(op, 'orangery.ipam.allocate', { pool: 'sec', owner: { env: 'prod', app: 'pay', slot: 0 } });
    expect(got).toMatchObject({ ok: true, data: { state: 'allocated', pool: 'sec' } });
    const hosts = await request(op, 'orangery.scheduler.hosts.list', {});
    expect(hosts).toMatchObject({ ok: true, data: { hosts: [] } });
    const migration = await request(op, 'orangery.migrator.migrations.get', { migrationId: `m-${randomUUID()}` });
    expect(migration).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } });
  });

  it('an upstream publisher scale request is stored and answered by the running scheduler', async () => {
    const up = await connectAs('upstream');
    const id = randomUUID();
    const outcome = new Promise<{ type: string }>((resolve) => {
      const sub = up.subscribe('orangery.evt.scale.*', {
        callback: (_e, m) => {
          const ev = m.json<{ type: string; data: { requestId: string } }>();
          if (ev.data.requestId === id) {
            sub.unsubscribe();
            resolve(ev);
          }
        },
      });
    });
    await up.flush();
    const ack = await jetstream(up).publish(
      'orangery.scale.prod.web',
      JSON.stringify({
        specversion: '1.0',
        id,
        source: '/test/upstream',
        type: 'io.orangery.scale.requested',
        data: {
          env: 'prod',
          app: 'web',
          replicas: 0,
          resources: { cpu: 1, memoryMb: 256, heapMb: 128, diskMb: 100 },
          image: 'web:1',
          backend: 'docker',
          pool: 'sec',
          spread: 'host',
        },
      }),
    );
    expect(ack.stream).toBe('ORANGERY_SCALE');
    expect((await outcome).type).toBe('io.orangery.scale.completed');
  });
});

describe('attacks, each refused by a permission', () => {
  it('agent A cannot heartbeat for host B (keep a dead host alive, register a phantom)', async () => {
    const seen: string[] = [];
    const watcher = await connectAs('migrator');
    watcher.subscribe('orangery.hb.*', { callback: (_e, m) => void seen.push(m.subject) });
    await watcher.flush();
    const errors: Error[] = [];
    const a = await connectAs('agent-host-a', errors);
    a.publish('orangery.hb.host-b', JSON.stringify({ hostId: 'host-b' }));
    a.publish('orangery.hb.phantom', JSON.stringify({ hostId: 'phantom' }));
    a.publish('orangery.hb.host-a', JSON.stringify({ hostId: 'host-a' }));
    await a.flush();
    await waitFor('host-a heartbeat to arrive', () => seen.includes('orangery.hb.host-a'), 5_000);
    expect(seen).toEqual(['orangery.hb.host-a']);
    await waitFor(
      'the violations to be reported',
      () => violation(errors, 'publish', 'orangery.hb.host-b') && violation(errors, 'publish', 'orangery.hb.phantom'),
      5_000,
    );
  });

  it('a vmware-agent heartbeats for its listed ESXi hosts only', async () => {
    const seen: string[] = [];
    const watcher = await connectAs('migrator');
    watcher.subscribe('orangery.hb.*', { callback: (_e, m) => void seen.push(m.subject) });
    await watcher.flush();
    const errors: Error[] = [];
    const vc = await connectAs('agent-vc1', errors);
    for (const h of ['esx-3', 'esx-1', 'esx-2']) vc.publish(`orangery.hb.${h}`, '{}');
    await vc.flush();
    await waitFor('both listed hosts', () => seen.length >= 2, 5_000);
    await waitFor('the violation', () => violation(errors, 'publish', 'orangery.hb.esx-3'), 5_000);
    expect(seen.sort()).toEqual(['orangery.hb.esx-1', 'orangery.hb.esx-2']);
  });

  it("agent A cannot take host B's commands (so a reply on B's subject comes from B)", async () => {
    const errors: Error[] = [];
    const a = await connectAs('agent-host-a', errors);
    const got: string[] = [];
    const refused: string[] = [];
    for (const subject of ['orangery.agent.host-b.>', 'orangery.agent.*.instance.*', '_INBOX.>']) {
      a.subscribe(subject, { callback: (e, m) => void (e ? refused.push(subject) : got.push(m.subject)) });
    }
    await a.flush();
    await waitFor(
      'the violations',
      () => ['orangery.agent.host-b.>', 'orangery.agent.*.instance.*', '_INBOX.>'].every((s) => violation(errors, 'subscription', s)),
      5_000,
    );
    const sched = await connectAs('migrator');
    sched.publish('orangery.agent.host-b.instance.get', '{}');
    await sched.flush();
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toEqual([]);
    expect(refused.sort()).toEqual(['_INBOX.>', 'orangery.agent.*.instance.*', 'orangery.agent.host-b.>']);
  });

  it("agents, upstream and the console cannot release a running instance's IP; they and operators cannot drive the slot API; state is unchanged", async () => {
    const op = await connectAs('operator');
    const owner = { env: 'prod', app: 'victim', slot: 0 };
    const held = await request(op, 'orangery.ipam.allocate', { pool: 'sec', owner });
    expect(held.ok).toBe(true);

    for (const user of ['agent-host-a', 'upstream', 'console']) {
      const errors: Error[] = [];
      const nc = await connectAs(user, errors);
      await expect(request(nc, 'orangery.ipam.release', { owner }, 2_000), user).rejects.toThrow();
      expect(violation(errors, 'publish', 'orangery.ipam.release'), user).toBe(true);
    }
    for (const user of ['agent-host-a', 'upstream', 'console', 'operator']) {
      for (const subject of [
        'orangery.scheduler.slot.hold',
        'orangery.scheduler.slot.commit',
        'orangery.scheduler.slot.get',
        'orangery.scheduler.slot.create',
        'orangery.scheduler.host.drain',
      ]) {
        const errors: Error[] = [];
        const nc = await connectAs(user, errors);
        await expect(
          request(nc, subject, { instanceId: 'prod:victim:0', by: 'attacker', hostId: 'host-b', drain: true }, 2_000),
          `${user} ${subject}`,
        ).rejects.toThrow();
        expect(violation(errors, 'publish', subject), `${user} ${subject}`).toBe(true);
      }
    }
    // The console reaches what its API offers.
    expect(await request(await connectAs('console'), 'orangery.ipam.pool.get', { name: 'sec' })).toMatchObject({ ok: true, data: { name: 'sec' } });
    // The subjects are live: the migrator's user gets a contract answer there.
    const mig = await connectAs('migrator');
    expect(await request(mig, 'orangery.scheduler.slot.get', { instanceId: 'prod:victim:0' })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } });
    // Nothing moved.
    expect(await request(op, 'orangery.ipam.get', { owner })).toMatchObject({ ok: true, data: { ip: held.data.ip, state: 'allocated' } });
  });

  it("a swarm-agent keeps its nodes' ipam blocks and bindings; other agents may not touch blocks, nor it single addresses", async () => {
    const sw = await connectAs('agent-sw1');
    const block = await request(sw, 'orangery.ipam.block.reserve', { pool: 'sec', host: 'sw1-n1', size: 4 });
    expect(block, JSON.stringify(block)).toMatchObject({ ok: true, data: { pool: 'sec', host: 'sw1-n1', size: 4 } });
    const o = { env: 'test', app: 'swarmed', slot: 0 };
    const bound = await request(sw, 'orangery.ipam.block.bind', { pool: 'sec', ip: block.data.first, owner: o, instanceId: 'test:swarmed:0', host: 'sw1-n1' });
    expect(bound).toMatchObject({ ok: true, data: { ip: block.data.first, state: 'bound', backend: 'swarm', host: 'sw1-n1' } });
    expect(await request(sw, 'orangery.ipam.get', { ip: block.data.first })).toMatchObject({ ok: true, data: { state: 'bound' } });
    expect(await request(sw, 'orangery.ipam.pool.get', { name: 'sec' })).toMatchObject({ ok: true, data: { blocked: 3 } });
    expect(await request(sw, 'orangery.ipam.block.list', { host: 'sw1-n1' })).toMatchObject({ ok: true, data: { blocks: [{ bound: 1 }] } });
    for (const [user, subject] of [
      ['agent-host-a', 'orangery.ipam.block.reserve'],
      ['agent-host-a', 'orangery.ipam.block.bind'],
      ['agent-host-a', 'orangery.ipam.block.unbind'],
      ['agent-host-a', 'orangery.ipam.block.release'],
      ['agent-vc1', 'orangery.ipam.block.unbind'],
      ['upstream', 'orangery.ipam.block.unbind'],
      ['console', 'orangery.ipam.block.release'],
      ['agent-sw1', 'orangery.ipam.release'],
      ['agent-sw1', 'orangery.ipam.allocate'],
      ['agent-sw1', 'orangery.ipam.bind'],
      ['agent-sw1', 'orangery.ipam.pool.delete'],
    ] as const) {
      const errors: Error[] = [];
      const nc = await connectAs(user, errors);
      const body = { ip: block.data.first, pool: 'sec', host: 'sw1-n1', size: 4, owner: o, instanceId: 'x', name: 'sec', backend: 'docker' };
      await expect(request(nc, subject, body, 2_000), `${user} ${subject}`).rejects.toThrow();
      expect(violation(errors, 'publish', subject), `${user} ${subject}`).toBe(true);
    }
    // Operators list blocks and give one back once its tasks are gone.
    const op = await connectAs('operator');
    expect(await request(op, 'orangery.ipam.block.list', { pool: 'sec' })).toMatchObject({ ok: true, data: { blocks: [{ host: 'sw1-n1', bound: 1 }] } });
    expect(await request(sw, 'orangery.ipam.block.unbind', { ip: block.data.first })).toMatchObject({ ok: true, data: { state: 'released' } });
    expect(await request(op, 'orangery.ipam.block.release', { pool: 'sec', host: 'sw1-n1' })).toMatchObject({ ok: true });
    expect(await request(op, 'orangery.ipam.block.list', { pool: 'sec' })).toMatchObject({ ok: true, data: { blocks: [] } });
  });

  it('upstream and agents cannot send agent commands or ipam writes, nor snoop on replies', async () => {
    for (const user of ['upstream', 'agent-host-a']) {
      const errors: Error[] = [];
      const nc = await connectAs(user, errors);
      nc.publish('orangery.agent.host-b.instance.stop', '{}');
      nc.publish('orangery.ipam.pool.delete', '{}');
      nc.subscribe('_INBOX.>');
      await nc.flush();
      await waitFor(
        `${user}'s violations`,
        () =>
          violation(errors, 'publish', 'orangery.agent.host-b.instance.stop') &&
          violation(errors, 'publish', 'orangery.ipam.pool.delete') &&
          violation(errors, 'subscription', '_INBOX.>'),
        5_000,
      );
    }
  });
});

describe('database users', () => {
  const dbAs = async (service: string) => {
    const u = new URL(envFile(service)['ORANGERY_DB_URL']!);
    return createConnection({
      host: u.hostname,
      port: Number(u.port),
      user: u.username,
      password: decodeURIComponent(u.password),
      database: u.pathname.slice(1),
    });
  };

  it("ipam's user reads its own tables, not the scheduler's, and the other way round", async () => {
    const ipamDb = await dbAs('ipam');
    const schedDb = await dbAs('scheduler');
    try {
      await expect(ipamDb.query('SELECT COUNT(*) FROM ipam_address')).resolves.toBeDefined();
      await expect(schedDb.query('SELECT COUNT(*) FROM sched_app')).resolves.toBeDefined();
      await expect(ipamDb.query('SELECT * FROM sched_app')).rejects.toMatchObject({ code: 'ER_TABLEACCESS_DENIED_ERROR' });
      await expect(schedDb.query('SELECT * FROM ipam_address')).rejects.toMatchObject({ code: 'ER_TABLEACCESS_DENIED_ERROR' });
      await expect(schedDb.query('UPDATE ipam_address SET state = "released"')).rejects.toMatchObject({ code: 'ER_TABLEACCESS_DENIED_ERROR' });
      await expect(ipamDb.query('CREATE TABLE sched_evil (id INT)')).rejects.toMatchObject({ code: 'ER_TABLEACCESS_DENIED_ERROR' });
    } finally {
      await ipamDb.end();
      await schedDb.end();
    }
  });
});

describe('service logs', () => {
  it('show a permission violation when a service runs under a user without its rights', async () => {
    const wrong = ServiceProcess.spawn(dir, 'ipam', {
      ...envFile('upstream'),
      ORANGERY_DB_URL: envFile('ipam')['ORANGERY_DB_URL']!,
      ORANGERY_OBSERVE_ADDR: '',
    });
    try {
      await waitFor(
        'the refusal in its log',
        () => wrong.lines.some((l) => /"msg":"NATS connection trouble".*Permissions Violation|Permissions Violation.*"msg":"NATS connection trouble"/.test(l)),
        30_000,
      );
    } finally {
      await wrong.terminate();
    }
  });

  it('show no permission violation: the services had every right their work needed', () => {
    const text = [ipam, scheduler, migrator].flatMap((p) => [...p.lines, p.stderr]).join('\n');
    expect(text).toContain('connected to NATS');
    expect(text).not.toMatch(/permissions? violation/i);
  });

  it('hold no generated password', () => {
    const text = [ipam, scheduler, migrator].flatMap((p) => [...p.lines, p.stderr]).join('\n');
    expect(text.length).toBeGreaterThan(0);
    for (const p of [...Object.values(secrets.nats), ...Object.values(secrets.db)]) expect(text).not.toContain(p);
  });
});

import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// The systemd units and the docker-agent's install script, checked without systemd running
// (this machine and CI have no systemd as PID 1): systemd-analyze verify where it exists,
// the sandbox read from the unit files, and the install script run against a fake root.
const repo = resolve(__dirname, '..', '..');
const dir = join(repo, 'deploy', 'systemd');
const SERVICES = ['ipam', 'scheduler', 'migrator', 'docker-agent', 'vmware-agent', 'swarm-agent'];

type Unit = Map<string, string[]>;

/** `[Section] Key=value` lines as `Section.Key -> [values...]` (repeated keys accumulate). */
function parseUnit(text: string): Unit {
  const out: Unit = new Map();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      continue;
    }
    const eq = line.indexOf('=');
    const key = `${section}.${line.slice(0, eq)}`;
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

const unitText = (name: string) => readFileSync(join(dir, `orangery-${name}.service`), 'utf8');
const one = (u: Unit, key: string) => {
  const v = u.get(key);
  if (!v || v.length !== 1) throw new Error(`${key}: expected one value, got ${JSON.stringify(v)}`);
  return v[0]!;
};
const words = (u: Unit, key: string) => new Set((u.get(key) ?? []).flatMap((v) => v.split(/\s+/).filter(Boolean)));

const run = (cmd: string, args: string[], env: Record<string, string | undefined> = {}) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      done({ code, stdout, stderr });
    });
  });

describe('systemd units', () => {
  it('there is one unit and one environment template per service, and nothing else', () => {
    expect(
      readdirSync(dir)
        .filter((f) => f.endsWith('.service'))
        .sort(),
    ).toEqual(SERVICES.map((s) => `orangery-${s}.service`).sort());
    expect(readdirSync(join(dir, 'env')).sort()).toEqual(SERVICES.map((s) => `${s}.env`).sort());
  });

  it.each(SERVICES)('%s: sandboxed, restarted with a pause, stopped by SIGTERM with time for the drain', (name) => {
    const u = parseUnit(unitText(name));
    // the service's node flags (tools/build-service.mjs NODE_FLAGS, dist/services/<name>/node-flags)
    const flags = name === 'docker-agent' ? '--max-semi-space-size=1 --lite-mode --no-expose-wasm ' : '';
    expect(one(u, 'Service.ExecStart')).toBe(`/usr/bin/node ${flags}/opt/orangery/dist/services/${name}/main.js`);
    expect(one(u, 'Service.EnvironmentFile')).toBe(`/etc/orangery/${name}.env`);
    for (const [key, value] of [
      ['DynamicUser', 'yes'],
      ['NoNewPrivileges', 'yes'],
      ['ProtectSystem', 'strict'],
      ['ProtectHome', 'yes'],
      ['PrivateTmp', 'yes'],
      ['PrivateDevices', 'yes'],
      ['ProtectKernelTunables', 'yes'],
      ['ProtectKernelModules', 'yes'],
      ['ProtectControlGroups', 'yes'],
      ['RestrictNamespaces', 'yes'],
      ['RestrictSUIDSGID', 'yes'],
      ['LockPersonality', 'yes'],
      ['Restart', 'always'],
      ['RestartPreventExitStatus', '2'],
      ['KillSignal', 'SIGTERM'],
    ]) {
      expect(one(u, `Service.${key}`), key).toBe(value);
    }
    expect(u.get('Service.SystemCallFilter')![0]).toBe('@system-service');
    expect(Number(one(u, 'Service.RestartSec').replace(/s$/, ''))).toBeGreaterThanOrEqual(1);
    // the service forces its own exit after 20 s of draining (libs/service-kit bootstrap)
    expect(Number(one(u, 'Service.TimeoutStopSec').replace(/s$/, ''))).toBeGreaterThan(20);
    expect(one(u, 'Unit.StartLimitIntervalSec')).toBe('0');
    expect(words(u, 'Service.RestrictAddressFamilies')).toEqual(
      new Set(name === 'docker-agent' ? ['AF_UNIX', 'AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_PACKET'] : ['AF_UNIX', 'AF_INET', 'AF_INET6']),
    );
  });

  it('the docker-agent gets exactly CAP_NET_ADMIN and CAP_NET_RAW and the docker group; the others no capability at all', () => {
    for (const name of SERVICES) {
      const u = parseUnit(unitText(name));
      const caps = name === 'docker-agent' ? new Set(['CAP_NET_ADMIN', 'CAP_NET_RAW']) : new Set<string>();
      expect(words(u, 'Service.CapabilityBoundingSet'), name).toEqual(caps);
      expect(words(u, 'Service.AmbientCapabilities'), name).toEqual(caps);
      expect(u.get('Service.CapabilityBoundingSet'), `${name}: declared, not left to the default (all)`).toBeDefined();
      expect(words(u, 'Service.SupplementaryGroups'), name).toEqual(new Set(name === 'docker-agent' ? ['docker'] : []));
      if (name !== 'docker-agent') expect(one(u, 'Service.PrivateUsers')).toBe('yes');
    }
  });

  it('every variable in the environment templates is one the service reads', () => {
    const read = (root: string): string => {
      let text = '';
      for (const e of readdirSync(root, { withFileTypes: true })) {
        const p = join(root, e.name);
        if (e.isDirectory()) text += read(p);
        else if (e.name.endsWith('.ts') && !e.name.endsWith('.spec.ts')) text += readFileSync(p, 'utf8');
      }
      return text;
    };
    const libs = read(join(repo, 'libs'));
    for (const name of SERVICES) {
      const source = read(join(repo, 'services', name, 'src')) + libs;
      const template = readFileSync(join(dir, 'env', `${name}.env`), 'utf8');
      const vars = [...template.matchAll(/^#?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!);
      expect(vars, name).toContain('ORANGERY_NATS_URL');
      for (const v of vars) {
        // NODE_EXTRA_CA_CERTS is Node's own; ORANGERY_OBSERVE_ADDR is the contract's (issue 15)
        if (v === 'NODE_EXTRA_CA_CERTS' || v === 'ORANGERY_OBSERVE_ADDR') continue;
        expect(source.includes(`'${v}'`) || source.includes(`"${v}"`) || source.includes(`.${v}`), `${name}.env: ${v}`).toBe(true);
      }
    }
    expect(readFileSync(join(dir, 'env', 'docker-agent.env'), 'utf8')).toMatch(/^ORANGERY_UPLINK=CHANGE-ME$/m);
    for (const name of ['ipam', 'scheduler', 'migrator']) expect(readFileSync(join(dir, 'env', `${name}.env`), 'utf8')).toMatch(/^ORANGERY_DB_URL=/m);
  });

  const analyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));
  it.skipIf(!analyze)('systemd-analyze verify finds nothing to say about any unit', async () => {
    // A copy whose ExecStart points at this machine's node: verify checks it is executable.
    const tmp = mkdtempSync(join(tmpdir(), 'orangery-units-'));
    try {
      const files = SERVICES.map((name) => {
        const p = join(tmp, `orangery-${name}.service`);
        writeFileSync(p, unitText(name).replace('/usr/bin/node', process.execPath));
        return p;
      });
      const r = await run(analyze!, ['verify', '--man=no', ...files]);
      expect(r.stderr + r.stdout).toBe('');
      expect(r.code).toBe(0);
      // and it would say something: an unknown key is reported
      writeFileSync(files[0]!, unitText('ipam').replace('[Service]', '[Service]\nProtectEverything=yes'));
      const bad = await run(analyze!, ['verify', '--man=no', files[0]!]);
      expect(bad.stderr).toMatch(/Unknown key/);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('install-docker-agent.sh', () => {
  let tmp: string;
  let engine: Server;
  let apiVersion = '1.41';
  const script = join(dir, 'install-docker-agent.sh');

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'orangery-install-'));
    // a fake engine: GET /version on a unix socket
    engine = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(req.url === '/version' ? { ApiVersion: apiVersion, Version: 'fake' } : {}));
    });
    await new Promise<void>((ok) => engine.listen(join(tmp, 'docker.sock'), ok));
    // a release tree
    mkdirSync(join(tmp, 'src', 'dist', 'services', 'docker-agent'), { recursive: true });
    writeFileSync(join(tmp, 'src', 'dist', 'services', 'docker-agent', 'main.js'), '// agent\n');
    mkdirSync(join(tmp, 'src', 'node_modules', 'left-pad'), { recursive: true });
    writeFileSync(join(tmp, 'src', 'package.json'), '{}\n');
    mkdirSync(join(tmp, 'src-nodist', 'node_modules'), { recursive: true });
    // sysfs with an uplink that is up (IFF_UP) and one that is down
    for (const [iface, flags] of [
      ['up0', '0x1003'],
      ['down0', '0x1002'],
    ]) {
      mkdirSync(join(tmp, 'sys', iface), { recursive: true });
      writeFileSync(join(tmp, 'sys', iface, 'flags'), `${flags}\n`);
    }
    // node 18, and a systemctl that records what it was asked
    writeFileSync(join(tmp, 'node18'), '#!/bin/sh\necho v18.19.0\n');
    chmodSync(join(tmp, 'node18'), 0o755);
    writeFileSync(join(tmp, 'systemctl'), `#!/bin/sh\necho "$@" >> ${join(tmp, 'systemctl.log')}\n`);
    chmodSync(join(tmp, 'systemctl'), 0o755);
  });

  afterAll(async () => {
    await new Promise<void>((ok) => engine.close(() => ok()));
    rmSync(tmp, { recursive: true, force: true });
  });

  const socketGroup = () => {
    const gid = statSync(join(tmp, 'docker.sock')).gid;
    const line = readFileSync('/etc/group', 'utf8')
      .split('\n')
      .find((l) => l.split(':')[2] === String(gid));
    return line?.split(':')[0] ?? String(gid);
  };

  const install = (root: string, overrides: Record<string, string> = {}, uplink = 'up0') => {
    const { uplink: u, ...env }: Record<string, string> = { uplink, ...overrides };
    // file names in the table are inside the test's directory
    for (const key of ['ORANGERY_SOURCE', 'ORANGERY_NODE'] as const) if (env[key] && !env[key].startsWith('/')) env[key] = join(tmp, env[key]);
    return run('bash', [script, u], {
      ORANGERY_INSTALL_ROOT: join(tmp, root),
      ORANGERY_SOURCE: join(tmp, 'src'),
      ORANGERY_NODE: process.execPath,
      ORANGERY_ARPING: 'true',
      ORANGERY_SYSFS_NET: join(tmp, 'sys'),
      ORANGERY_DOCKER_GROUP: socketGroup(),
      ORANGERY_SYSTEMCTL: join(tmp, 'systemctl'),
      DOCKER_HOST: `unix://${join(tmp, 'docker.sock')}`,
      ...env,
    });
  };

  it.each([
    ['node 18', { ORANGERY_NODE: 'node18' }, /refused: node at .*node18 is v18\.19\.0; Node\.js 20 or later is needed/],
    ['no node', { ORANGERY_NODE: '/nonexistent/node' }, /refused: node is not installed at \/nonexistent\/node/],
    ['no built agent', { ORANGERY_SOURCE: 'src-nodist' }, /refused: the agent is not built: .*main\.js is missing \(run npm run build\)/],
    ['no engine', { DOCKER_HOST: 'unix:///nonexistent/docker.sock' }, /refused: the docker engine does not answer on unix:\/\/\/nonexistent\/docker\.sock/],
    [
      'socket of another group',
      { ORANGERY_DOCKER_GROUP: 'orangery-no-such-group' },
      /refused: the engine's socket .* belongs to group .*, not 'orangery-no-such-group'/,
    ],
    ['no uplink', { uplink: 'nope0' }, /refused: the uplink nope0 does not exist on this host/],
    ['uplink down', { uplink: 'down0' }, /refused: the uplink down0 is down/],
    ['no arping', { ORANGERY_ARPING: 'orangery-no-arping' }, /refused: arping is not installed \(Debian: apt-get install iputils-arping\)/],
  ])('refuses %s with one line, and writes nothing', async (label, overrides, message) => {
    const root = `root-${label.replace(/\W+/g, '-')}`;
    const r = await install(root, overrides as Record<string, string>);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.split('\n').filter((l) => l.includes('refused:'))).toHaveLength(1);
    expect(r.stderr).toMatch(/nothing installed \(1 problem\(s\) above\)/);
    expect(existsSync(join(tmp, root))).toBe(false);
  });

  it('refuses an engine older than API 1.41', async () => {
    apiVersion = '1.40';
    try {
      const r = await install('root-old-engine');
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/speaks API 1\.40; 1\.41 \(Docker 20\.10\) or later is needed/);
      expect(existsSync(join(tmp, 'root-old-engine'))).toBe(false);
    } finally {
      apiVersion = '1.41';
    }
  });

  it('reports every problem at once', async () => {
    const r = await install('root-many', { ORANGERY_ARPING: 'orangery-no-arping', uplink: 'nope0' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/nothing installed \(2 problem\(s\) above\)/);
  });

  it('installs the unit, a private environment file with the uplink, reloads systemd, and never overwrites an existing environment file', async () => {
    const r = await install('root-ok');
    expect(r.stderr).not.toMatch(/refused/);
    expect(r.code).toBe(0);
    const root = join(tmp, 'root-ok');
    expect(readFileSync(join(root, 'etc/systemd/system/orangery-docker-agent.service'), 'utf8')).toBe(unitText('docker-agent'));
    expect(readFileSync(join(root, 'opt/orangery/dist/services/docker-agent/main.js'), 'utf8')).toBe('// agent\n');
    expect(existsSync(join(root, 'opt/orangery/node_modules/left-pad'))).toBe(true);
    const envFile = join(root, 'etc/orangery/docker-agent.env');
    expect(readFileSync(envFile, 'utf8')).toMatch(/^ORANGERY_UPLINK=up0$/m);
    expect(statSync(envFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(tmp, 'systemctl.log'), 'utf8')).toBe('daemon-reload\n');

    writeFileSync(envFile, 'ORANGERY_UPLINK=bond0\nORANGERY_NATS_URL=nats://mine:4222\n');
    const again = await install('root-ok');
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/kept the existing .*docker-agent\.env/);
    expect(readFileSync(envFile, 'utf8')).toBe('ORANGERY_UPLINK=bond0\nORANGERY_NATS_URL=nats://mine:4222\n');
  });

  it('refuses a bad interface name before looking at anything', async () => {
    const r = await install('root-bad-name', {}, 'eth0; rm -rf /');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/refused: 'eth0; rm -rf \/' is not an interface name/);
  });
});

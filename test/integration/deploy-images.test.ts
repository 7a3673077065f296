import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SUBJECTS } from '@orangery/contracts';
import { REPO_ROOT, waitFor } from '@orangery/testing';
import type { Lab, LabServer } from '../lab';
import { buildDeployImages, SERVICE_IMAGES, TEST_IMAGES, type ImageTimings } from '../lab/deploy-images';
import { createLabPool, LabCluster } from './fixtures/lab-cluster';

// deploy/: the images of deploy/images built from their Dockerfiles with no registry (a
// debootstrap'd Debian base, this machine's node), and run for real: ipam and the scheduler
// from their images are the control plane that places the fat image (supervisord as PID 1,
// the app, sshd, an agent) through a docker-agent on a lab server; the install script of
// deploy/systemd checked against a real engine and uplink.
let cluster: LabCluster;
let lab: Lab;
let s1: LabServer;
let timings: ImageTimings;
const CONTAINERS = ['olab-deploy-ipam', 'olab-deploy-scheduler'];

const docker = (argv: string[]) => lab.docker(s1, argv, { timeoutMs: 120_000 });
/** `docker run` that may fail: its exit code and output. */
const dockerRun = (argv: string[]) =>
  new Promise<{ code: number; out: string }>((done) => {
    execFile('/usr/bin/docker', ['-H', s1.dockerHost, 'run', ...argv], { timeout: 120_000 }, (err, stdout, stderr) => {
      done({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: stdout + stderr });
    });
  });

const fatRequest = (replicas: number) => ({
  env: 'lab',
  app: 'fat',
  replicas,
  resources: { cpu: 0.5, memoryMb: 256, diskMb: 200 },
  image: TEST_IMAGES.fat,
  backend: 'docker' as const,
  pool: 'lab-net',
});

const controlPlaneEnv = () => ['-e', `ORANGERY_NATS_URL=${cluster.nats.url}`, '-e', `ORANGERY_DB_URL=${cluster.dbUrl}`];

beforeAll(async () => {
  cluster = await LabCluster.start({ label: 'deploy-images', lab: { servers: 1, legacyVms: 1 } });
  lab = cluster.lab;
  s1 = lab.servers[0]!;
  timings = await buildDeployImages(s1.socketPath, { fat: true });
  // the figures for deploy/README.md ("CI time")
  console.log(`deploy images built: ${JSON.stringify(timings)}`);
}, 1_200_000);

afterAll(async () => {
  const t0 = Date.now();
  if (lab && s1) await Promise.all(CONTAINERS.map((c) => docker(['rm', '-f', c]).catch(() => undefined)));
  const t1 = Date.now();
  if (lab && s1) await lab.stopEngine(s1);
  const t2 = Date.now();
  await cluster?.close();
  console.log(`deploy-images teardown: containers ${t1 - t0} ms, engine ${t2 - t1} ms, the rest ${Date.now() - t2} ms`);
}, 300_000);

describe('deploy/images', () => {
  it('every service image holds node 20, its bundle and production dependencies only, and runs as uid 10001 (the docker-agent as root, by design)', async () => {
    for (const name of SERVICE_IMAGES) {
      const image = TEST_IMAGES.service(name);
      const user = (await docker(['image', 'inspect', '-f', '{{.Config.User}}', image])).trim();
      expect(user, name).toBe(name === 'docker-agent' ? '0:0' : '10001:10001');
      // the bundle loads (every import resolves) and stops at the configuration: exit 2, one line
      const bad = await dockerRun(['--rm', '--network', 'none', '-e', 'ORANGERY_NATS_URL=not a url', '-e', 'ORANGERY_DB_URL=not a url', image]);
      expect(bad.code, `${name}: ${bad.out}`).toBe(2);
      expect(bad.out, name).toMatch(new RegExp(`orangery-${name}: configuration error: `));
      const probe = await dockerRun([
        '--rm',
        '--network',
        'none',
        '--entrypoint',
        'node',
        image,
        '-e',
        `const r = (m) => { try { require.resolve(m); return true } catch { return false } };
         console.log(JSON.stringify({ node: process.versions.node.split('.')[0], mysql2: r('mysql2'), vitest: r('vitest'), typescript: r('typescript'), esbuild: r('esbuild') }))`,
      ]);
      expect(JSON.parse(probe.out.trim().split('\n').pop()!), name).toEqual({ node: '20', mysql2: true, vitest: false, typescript: false, esbuild: false });
    }
  });

  it('the ipam image runs against NATS and MariaDB and answers the contract', async () => {
    await docker([
      'run',
      '-d',
      '--name',
      'olab-deploy-ipam',
      '--network',
      'host',
      ...controlPlaneEnv(),
      '-e',
      'ORANGERY_OBSERVE_ADDR=',
      TEST_IMAGES.service('ipam'),
    ]);
    const list = await waitFor(
      'pool.list from the ipam container',
      async () => {
        const r = await cluster.client.request(SUBJECTS.ipam.poolList, {}, 2_000).catch(() => undefined);
        return r?.ok ? r : undefined;
      },
      60_000,
      500,
    );
    expect(list.data.pools).toEqual([]);
    await createLabPool(cluster.client, 'lab-net');
    const again = await cluster.client.request(SUBJECTS.ipam.poolList, {});
    expect(again.data.pools.map((p: { name: string }) => p.name)).toEqual(['lab-net']);
    // its process: the image's user, not root
    const top = await docker(['top', 'olab-deploy-ipam', '-eo', 'pid,uid,args']);
    expect(top).toMatch(/^\s*\d+\s+10001\s+node dist\/services\/ipam\/main\.js/m);
  });
});

describe('the fat image through the platform', () => {
  it('a scale request runs it on a lab server: supervisord is PID 1 and every program it supervises is RUNNING', async () => {
    // the scheduler from its image too; the docker-agent as the process a systemd unit runs
    await docker([
      'run',
      '-d',
      '--name',
      'olab-deploy-scheduler',
      '--network',
      'host',
      ...controlPlaneEnv(),
      '-e',
      'ORANGERY_HEARTBEAT_SECONDS=1',
      '-e',
      'ORANGERY_OBSERVE_ADDR=',
      TEST_IMAGES.service('scheduler'),
    ]);
    await cluster.startDockerAgent(s1);
    await waitFor(
      'the scheduler container leads',
      async () => (await docker(['logs', 'olab-deploy-scheduler'])).includes('leading: consuming scale requests'),
      60_000,
      500,
    );
    await cluster.waitHostsReady(1, { timeoutMs: 30_000 });

    const done = await cluster.scaleAndWait(fatRequest(1), 180_000);
    expect(done.type, JSON.stringify(done.data)).toBe('io.orangery.scale.completed');
    const [instance] = await cluster.instances('lab', 'fat');
    expect(instance.state).toBe('running');
    const name = (await docker(['ps', '--filter', 'label=io.orangery.app=fat', '--format', '{{.Names}}'])).trim();
    expect(name).not.toBe('');

    const status = await waitFor(
      'every supervised program RUNNING',
      async () => {
        const out = await docker(['exec', name, 'supervisorctl', 'status']).catch((e: Error) => e.message);
        const lines = out.trim().split('\n');
        return lines.length === 3 && lines.every((l) => /\sRUNNING\s/.test(l)) ? lines : undefined;
      },
      30_000,
      500,
    );
    expect(status.map((l) => l.split(/\s+/)[0]).sort()).toEqual(['app', 'example-agent', 'sshd']);
    const pid1 = (await docker(['exec', name, 'cat', '/proc/1/cmdline'])).replace(/\0/g, ' ');
    expect(pid1).toMatch(/supervisord -n -c \/etc\/supervisor\/supervisord\.conf/);
    // the app serves on the instance's own IP, reachable from a legacy VM on the fabric
    const page = await waitFor('the app answers on its IP', async () => (await lab.vmHttpGet(lab.vms[0]!, instance.ip, 8080)) ?? undefined, 20_000, 300);
    expect(page).toBe(`orangery fat image: lab:fat:0 on ${instance.ip}\n`);
    // sshd answers on the instance's IP (its banner; a login needs SYS_CHROOT, see images/fat/README.md)
    const banner = await lab.execInVm(lab.vms[0]!, ['timeout', '3', 'busybox', 'nc', instance.ip, '22'], { timeoutMs: 10_000 });
    expect(banner.stdout).toMatch(/^SSH-2\.0-OpenSSH_/);
    // each container has its own sshd host keys, made at its first start
    expect(await docker(['exec', name, 'ls', '/etc/ssh/ssh_host_ed25519_key.pub'])).toMatch(/ssh_host_ed25519_key\.pub/);

    const down = await cluster.scaleAndWait(fatRequest(0));
    expect(down.type, JSON.stringify(down.data)).toBe('io.orangery.scale.completed');
    expect(await docker(['ps', '-a', '--filter', 'label=io.orangery.app=fat', '--format', '{{.Names}}'])).toBe('');
  });
});

describe('deploy/systemd/install-docker-agent.sh on a real engine and uplink', () => {
  it('accepts the lab server (Docker 20.10, API 1.41; uplink up) and installs into the given root', async () => {
    const root = mkdtempSync(join(tmpdir(), 'orangery-install-lab-'));
    // a release tree: the real build, and an empty node_modules (copying the repository's takes long)
    const source = mkdtempSync(join(tmpdir(), 'orangery-release-'));
    mkdirSync(join(source, 'node_modules'));
    symlinkSync(join(REPO_ROOT, 'dist'), join(source, 'dist'));
    try {
      const gid = statSync(s1.socketPath).gid;
      const group =
        readFileSync('/etc/group', 'utf8')
          .split('\n')
          .find((l) => l.split(':')[2] === String(gid))
          ?.split(':')[0] ?? String(gid);
      const r = await new Promise<{ code: number; stderr: string }>((done) =>
        execFile(
          'bash',
          [join(REPO_ROOT, 'deploy', 'systemd', 'install-docker-agent.sh'), s1.uplink],
          {
            timeout: 120_000,
            env: {
              ...process.env,
              ORANGERY_INSTALL_ROOT: root,
              ORANGERY_SOURCE: source,
              ORANGERY_NODE: process.execPath,
              ORANGERY_DOCKER_GROUP: group,
              ORANGERY_SYSTEMCTL: 'true',
              DOCKER_HOST: s1.dockerHost,
            },
          },
          (err, _out, stderr) => done({ code: err ? Number(err.code) : 0, stderr }),
        ),
      );
      expect(r.stderr).not.toMatch(/refused/);
      expect(r.code).toBe(0);
      expect(readFileSync(join(root, 'etc/orangery/docker-agent.env'), 'utf8')).toMatch(new RegExp(`^ORANGERY_UPLINK=${s1.uplink}$`, 'm'));
      expect(readFileSync(join(root, 'opt/orangery/dist/services/docker-agent/main.js'), 'utf8')).toBe(
        readFileSync(join(REPO_ROOT, 'dist/services/docker-agent/main.js'), 'utf8'),
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(source, { recursive: true, force: true });
    }
  });
});

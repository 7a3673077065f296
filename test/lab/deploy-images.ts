// The images of deploy/images, built with no registry: the same Dockerfiles, from a Debian
// base made here with debootstrap and `docker import`, with this machine's node copied in
// (Debian bookworm's nodejs is 18: too old), and the production node_modules installed on
// this machine from npm's cache (the lab's engines have no network for builds). The slow
// parts are cached under .run/images: the Debian base per day, node_modules per lock file.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '@orangery/testing';
import { ensureLabPackages } from './lab';
import { DOCKER_CLI, run, TAR } from './sys';

export const IMAGES_DIR = join(REPO_ROOT, '.run', 'images');
const DEBIAN_MIRROR = process.env['ORANGERY_DEBIAN_MIRROR'] || 'http://deb.debian.org/debian';

/** The control-plane services with an image in deploy/images/<name>/Dockerfile. */
export const SERVICE_IMAGES = ['ipam', 'scheduler', 'migrator', 'docker-agent', 'vmware-agent'] as const;

export const TEST_IMAGES = {
  debian: 'orangery-test/debian:bookworm',
  node: 'orangery-test/node:20',
  fat: 'orangery/fat:test',
  service: (name: string) => `orangery/${name}:test`,
} as const;

/** Seconds each step took (undefined: served from the cache). */
export interface ImageTimings {
  debootstrap?: number;
  prodDeps?: number;
  services: Record<string, number>;
  fat?: number;
  total: number;
}

async function must(cmd: string, args: readonly string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const r = await run(cmd, args, { timeoutMs: 600_000, ...opts });
  if (r.code !== 0)
    throw new Error(`${cmd} ${args.slice(0, 6).join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim().split('\n').slice(-15).join('\n')}`);
  return r.stdout;
}

const seconds = (t0: number) => Math.round((Date.now() - t0) / 100) / 10;

/** Writes `path` through a temporary file, so a run killed half-way never leaves a bad cache entry. */
async function cached(path: string, make: (tmp: string) => Promise<void>): Promise<number | undefined> {
  if (existsSync(path)) return undefined;
  mkdirSync(IMAGES_DIR, { recursive: true });
  const t0 = Date.now();
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await make(tmp);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
  return seconds(t0);
}

/** `debootstrap --variant=minbase bookworm` as a tar for `docker import`: once a day (security updates). */
export async function debianBaseTar(): Promise<{ path: string; seconds: number | undefined }> {
  const day = new Date().toISOString().slice(0, 10);
  const path = join(IMAGES_DIR, `debian-bookworm-minbase-${day}.tar`);
  const took = await cached(path, async (tmp) => {
    await ensureLabPackages(['debootstrap']);
    const rootfs = join(IMAGES_DIR, `rootfs-${process.pid}`);
    rmSync(rootfs, { recursive: true, force: true });
    try {
      await must('debootstrap', ['--variant=minbase', 'bookworm', rootfs, DEBIAN_MIRROR], { timeoutMs: 900_000 });
      // what debian:bookworm-slim also leaves out: downloaded packages and package lists
      for (const d of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
        for (const f of readdirSync(join(rootfs, d)))
          if (f.endsWith('.deb') || f.endsWith('_Packages') || f.endsWith('Release')) rmSync(join(rootfs, d, f), { force: true });
      }
      await must(TAR, ['--numeric-owner', '-C', rootfs, '-cf', tmp, '.']);
    } finally {
      rmSync(rootfs, { recursive: true, force: true });
    }
  });
  for (const f of readdirSync(IMAGES_DIR)) {
    if (/^debian-bookworm-minbase-\d{4}-\d\d-\d\d\.tar$/.test(f) && !path.endsWith(f)) rmSync(join(IMAGES_DIR, f), { force: true });
  }
  return { path, seconds: took };
}

/** /opt/orangery/node_modules with the production dependencies of the lock file, as a tar. */
export async function prodDepsTar(): Promise<{ path: string; tag: string; seconds: number | undefined }> {
  const hash = createHash('sha256')
    .update(readFileSync(join(REPO_ROOT, 'package.json')))
    .update(readFileSync(join(REPO_ROOT, 'package-lock.json')))
    .digest('hex')
    .slice(0, 12);
  const path = join(IMAGES_DIR, `prod-deps-${hash}.tar`);
  const took = await cached(path, async (tmp) => {
    const top = join(IMAGES_DIR, `prod-deps-${process.pid}`);
    const app = join(top, 'opt', 'orangery');
    rmSync(top, { recursive: true, force: true });
    mkdirSync(app, { recursive: true });
    try {
      for (const f of ['package.json', 'package-lock.json']) copyFileSync(join(REPO_ROOT, f), join(app, f));
      const args = ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefix', app];
      // npm's cache holds every package after `npm ci` (npm test starts with it); the registry only when it does not
      const offline = await run('npm', [...args, '--offline'], { timeoutMs: 600_000 });
      if (offline.code !== 0) await must('npm', [...args, '--prefer-offline']);
      await must(TAR, ['--numeric-owner', '--owner=0', '--group=0', '-C', top, '-cf', tmp, 'opt/orangery/node_modules']);
    } finally {
      rmSync(top, { recursive: true, force: true });
    }
  });
  for (const f of readdirSync(IMAGES_DIR)) if (/^prod-deps-[0-9a-f]{12}\.tar$/.test(f) && !path.endsWith(f)) rmSync(join(IMAGES_DIR, f), { force: true });
  return { path, tag: `orangery-test/deps:${hash}`, seconds: took };
}

/**
 * Builds every image of deploy/images into the engine at `socket`: the services' images
 * (dist/ must be built) and, with `fat`, the fat image. `docker-agent` and the fat image
 * install Debian packages in their build: those builds use the host's network.
 */
export async function buildDeployImages(socket: string, opts: { services?: readonly string[]; fat?: boolean } = {}): Promise<ImageTimings> {
  const t0 = Date.now();
  const docker = (argv: string[], buildkit = false) =>
    must(DOCKER_CLI, ['-H', `unix://${socket}`, ...argv], { timeoutMs: 900_000, env: { ...process.env, DOCKER_BUILDKIT: buildkit ? '1' : '0' } });
  const [base, deps] = await Promise.all([debianBaseTar(), prodDepsTar()]);
  const timings: ImageTimings = { debootstrap: base.seconds, prodDeps: deps.seconds, services: {}, total: 0 };
  await docker(['import', base.path, TEST_IMAGES.debian]);
  await docker(['import', deps.path, deps.tag]);

  // node:20-bookworm-slim, made here: the Debian base and this machine's node (Node 20, linked
  // against glibc and libstdc++ only, both in minbase).
  const ctx = join(IMAGES_DIR, `node-context-${process.pid}`);
  rmSync(ctx, { recursive: true, force: true });
  mkdirSync(ctx, { recursive: true });
  try {
    copyFileSync(process.execPath, join(ctx, 'node'));
    writeFileSync(
      join(ctx, 'Dockerfile'),
      `FROM ${TEST_IMAGES.debian}\nCOPY node /usr/local/bin/node\nRUN ["/usr/local/bin/node", "-e", "process.exit(process.versions.node.split('.')[0] >= 20 ? 0 : 1)"]\n`,
    );
    await docker(['build', '-q', '-t', TEST_IMAGES.node, ctx]);
  } finally {
    rmSync(ctx, { recursive: true, force: true });
  }

  for (const name of opts.services ?? SERVICE_IMAGES) {
    const t = Date.now();
    // BuildKit: it builds only the stages the image needs, so the `deps` stage (npm ci from
    // the registry) is skipped for the DEPS_IMAGE given here.
    await docker(
      [
        'build',
        '-q',
        '--network',
        'host',
        '-f',
        join(REPO_ROOT, 'deploy', 'images', name, 'Dockerfile'),
        '--build-arg',
        `NODE_IMAGE=${TEST_IMAGES.node}`,
        '--build-arg',
        `DEPS_IMAGE=${deps.tag}`,
        '-t',
        TEST_IMAGES.service(name),
        REPO_ROOT,
      ],
      true,
    );
    timings.services[name] = seconds(t);
  }
  if (opts.fat) {
    const t = Date.now();
    const dir = join(REPO_ROOT, 'deploy', 'images', 'fat');
    await docker(['build', '-q', '--network', 'host', '--build-arg', `BASE_IMAGE=${TEST_IMAGES.debian}`, '-t', TEST_IMAGES.fat, dir], true);
    timings.fat = seconds(t);
  }
  timings.total = seconds(t0);
  return timings;
}

// The lab's test images, made locally with no registry: a busybox-static root filesystem
// packed with tar and `docker import`ed into every lab engine.
import { chmodSync, copyFileSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BUSYBOX, must, TAR } from './sys';

export const LAB_IMAGES = {
  /** busybox applets only; CMD /bin/sh. */
  busybox: 'orangery/busybox:lab',
  /** A service: HTTP on TCP 8080 (/www), plus /bin/fill-disk <mb> and /bin/eat-mem <mb> [seconds]. */
  svc: 'orangery/svc:lab',
} as const;

/** The port the svc image's HTTP server listens on. */
export const SVC_PORT = 8080;
/** The body of GET / on the svc image. */
export const SVC_INDEX = 'orangery svc lab\n';

const SVC_START = `#!/bin/sh
# orangery/svc:lab entry: a static HTTP service on :8080 that stops at once on SIGTERM
# (a shell as PID 1 would otherwise ignore it and docker stop would wait its full timeout).
mkdir -p /data
# Announce the address (unsolicited ARP), as an ESXi port group's "notify switches" does
# when a VM powers on or moves: vcsim runs VMs as containers and announces nothing, so
# without this a VM taking over an IP (same MAC, other port) stays unreachable until the
# fabric forgets the old port. The docker-agent announces its containers itself.
addr=$(ip -4 addr show dev eth0 2>/dev/null | awk '/inet /{split($2, a, "/"); print a[1]; exit}')
[ -n "$addr" ] && arping -U -c 2 -I eth0 "$addr" >/dev/null 2>&1 &
httpd -f -p 8080 -h /www &
pid=$!
trap 'kill "$pid" 2>/dev/null; exit 0' TERM INT
wait "$pid"
`;

const FILL_DISK = `#!/bin/sh
# fill-disk <mb>: writes <mb> MiB of zeros to /data/fill (replacing it) and syncs, so the
# container's writable layer grows by that much.
set -e
mb=\${1:?usage: fill-disk <mb>}
mkdir -p /data
dd if=/dev/zero of=/data/fill bs=1M count="$mb" conv=fsync 2>/dev/null
echo "wrote $mb MiB to /data/fill"
`;

const EAT_MEM = `#!/bin/sh
# eat-mem <mb> [seconds]: allocates and touches <mb> MiB of anonymous memory (charged to
# the container's memory cgroup) and holds it for [seconds] (default: until killed).
# Run it in the background with \`docker exec -d <ctr> eat-mem 200\`; stop it with \`killall awk\` (this busybox has no pkill).
mb=\${1:?usage: eat-mem <mb> [seconds]}
secs=\${2:-2147483647}
exec awk -v mb="$mb" -v secs="$secs" 'BEGIN {
  s = sprintf("%1048576s", "")
  for (i = 0; i < mb; i++) a[i] = s i
  printf "holding %d MiB\\n", mb
  fflush()
  system("exec sleep " secs)
}'
`;

const WHOAMI_CGI = `#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
hostname
`;

function writeExec(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  chmodSync(path, 0o755);
}

/**
 * Builds the two image tars in `dir` (once per lab): busybox.tar and svc.tar. Returns their
 * paths. The rootfs: /bin/busybox (static) and one symlink per applet at its usual path.
 */
export async function buildImageTars(dir: string): Promise<{ busybox: string; svc: string }> {
  const rootfs = join(dir, 'rootfs');
  rmSync(rootfs, { recursive: true, force: true });
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'etc', 'root', 'data', 'var/tmp']) {
    mkdirSync(join(rootfs, d), { recursive: true });
  }
  mkdirSync(join(rootfs, 'tmp'), { recursive: true, mode: 0o1777 });
  chmodSync(join(rootfs, 'tmp'), 0o1777);
  copyFileSync(BUSYBOX, join(rootfs, 'bin', 'busybox'));
  chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
  const applets = (await must(BUSYBOX, ['--list-full'])).split('\n').filter((a) => a && a !== 'bin/busybox' && a !== 'linuxrc');
  for (const a of applets) {
    mkdirSync(dirname(join(rootfs, a)), { recursive: true });
    symlinkSync('/bin/busybox', join(rootfs, a));
  }
  writeFileSync(join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
  writeFileSync(join(rootfs, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');

  const tarOf = async (name: string) => {
    const out = join(dir, `${name}.tar`);
    await must(TAR, ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', out, '.']);
    return out;
  };
  const busybox = await tarOf('busybox');

  writeExec(join(rootfs, 'bin', 'svc-start'), SVC_START);
  writeExec(join(rootfs, 'bin', 'fill-disk'), FILL_DISK);
  writeExec(join(rootfs, 'bin', 'eat-mem'), EAT_MEM);
  mkdirSync(join(rootfs, 'www'), { recursive: true });
  writeFileSync(join(rootfs, 'www', 'index.html'), SVC_INDEX);
  writeExec(join(rootfs, 'www', 'cgi-bin', 'whoami'), WHOAMI_CGI);
  const svc = await tarOf('svc');
  rmSync(rootfs, { recursive: true, force: true });
  return { busybox, svc };
}

/** `docker import` of both tars into one engine (`docker` runs the lab's Debian CLI on it). */
export async function importImages(docker: (argv: string[]) => Promise<string>, tars: { busybox: string; svc: string }): Promise<void> {
  await docker(['import', '-c', 'CMD ["/bin/sh"]', tars.busybox, LAB_IMAGES.busybox]);
  await docker(['import', '-c', 'CMD ["/bin/svc-start"]', '-c', 'EXPOSE 8080/tcp', tars.svc, LAB_IMAGES.svc]);
}

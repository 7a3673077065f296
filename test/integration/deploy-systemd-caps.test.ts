import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '@orangery/testing';

// What the docker-agent's unit grants is what the agent's helpers need: run as a
// throw-away user with exactly the unit's capability set (setpriv, as systemd would), in a
// private network namespace with a veth pair (unshare -n: nothing touches this machine's
// interfaces), the helpers the agent runs either work or fail as docs/docker-agent.md says.
const unit = readFileSync(join(REPO_ROOT, 'deploy', 'systemd', 'orangery-docker-agent.service'), 'utf8');
const caps = /^AmbientCapabilities=(.*)$/m
  .exec(unit)![1]!
  .trim()
  .split(/\s+/)
  .map((c) => c.replace(/^CAP_/, '').toLowerCase());
const isRoot = process.getuid?.() === 0;

/** Runs `script` (bash) in a new network namespace holding veth v0/v1 (up): as root, and `$AS` prefixes a command with the unit's identity. */
function inPrivateNetns(script: string, capSet: string[]) {
  const set = ['-all', ...capSet.map((c) => `+${c}`)].join(',');
  const as = `setpriv --reuid=61234 --regid=61234 --clear-groups --inh-caps=${set} --ambient-caps=${set} --bounding-set=${set} --no-new-privs`;
  return new Promise<string>((done, fail) =>
    execFile(
      'unshare',
      ['-n', 'bash', '-c', `set -u; ip link add v0 type veth peer name v1 && ip link set v0 up && ip link set v1 up || exit 99\n${script}`],
      { env: { ...process.env, AS: as }, timeout: 30_000 },
      (err, stdout, stderr) => (err && (err as { code?: unknown }).code === 99 ? fail(new Error(stderr)) : done(stdout)),
    ),
  );
}

describe.skipIf(!isRoot)("the docker-agent's capabilities (deploy/systemd)", () => {
  it('the unit grants exactly NET_ADMIN and NET_RAW', () => {
    expect(caps.sort()).toEqual(['net_admin', 'net_raw']);
  });

  it('with them: the wire probe (arping -D) and the host shim (ip link add macvlan, ip addr) work', async () => {
    const out = await inPrivateNetns(
      `$AS arping -D -q -c 1 -w 1 -I v0 198.18.9.9; echo "probe=$?"
       $AS ip link add osh-test link v0 type macvlan mode bridge; echo "shim=$?"
       $AS ip addr replace 198.18.9.10/32 dev osh-test; echo "addr=$?"`,
      caps,
    );
    // arping -D exits 0 when nothing answered (the address is free)
    expect(out).toBe('probe=0\nshim=0\naddr=0\n');
  });

  it('without them the same helpers fail: the unit could not drop either', async () => {
    const out = await inPrivateNetns(
      `$AS ip link add osh-test link v0 type macvlan mode bridge 2>/dev/null; echo "shim=$?"
       $AS arping -D -q -c 1 -w 1 -I v0 198.18.9.9 2>/dev/null; echo "probe=$?"`,
      ['net_admin'],
    );
    expect(out).toMatch(/^shim=0\nprobe=[1-9]\d*\n$/);
    const noAdmin = await inPrivateNetns(`$AS ip link add osh-test link v0 type macvlan mode bridge 2>/dev/null; echo "shim=$?"`, ['net_raw']);
    expect(noAdmin).toBe('shim=2\n');
  });

  it("the gratuitous ARP's nsenter into an instance's namespace needs more (SYS_ADMIN, SYS_PTRACE): the known gap", async () => {
    const out = await inPrivateNetns(
      `unshare -n sleep 20 & target=$!; sleep 0.3
       $AS nsenter --net=/proc/$target/ns/net true 2>/dev/null; echo "nsenter=$?"
       kill $target`,
      caps,
    );
    expect(out).toBe('nsenter=1\n');
    const wider = await inPrivateNetns(
      `unshare -n sleep 20 & target=$!; sleep 0.3
       $AS nsenter --net=/proc/$target/ns/net true; echo "nsenter=$?"
       kill $target`,
      [...caps, 'sys_admin', 'sys_ptrace'],
    );
    expect(wider).toBe('nsenter=0\n');
  });
});

import { execFile } from 'node:child_process';
import { access, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { isStrictIpv4 } from '@orangery/netaddr';
import type { LinkState } from '../domain/ports';

const run = promisify(execFile);
const IFACE = /^[A-Za-z0-9_.-]{1,15}$/;

/**
 * The uplink's state from sysfs: a file read, no process, so the self-fence can look at it
 * every second for nothing. `carrier` reads 1 or 0, and fails (EINVAL) on an interface
 * that is administratively down; operstate then says `down`. An interface that is gone
 * has no carrier either.
 */
export class SysfsLinkState implements LinkState {
  constructor(private readonly root = '/sys/class/net') {}

  async carrier(iface: string): Promise<boolean | undefined> {
    if (!IFACE.test(iface)) return undefined;
    try {
      return (await readFile(`${this.root}/${iface}/carrier`, 'utf8')).trim() === '1';
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return false;
      try {
        const state = (await readFile(`${this.root}/${iface}/operstate`, 'utf8')).trim();
        return state === 'down' || state === 'lowerlayerdown' || state === 'notpresent' ? false : undefined;
      } catch {
        return undefined;
      }
    }
  }

  async exists(iface: string): Promise<boolean> {
    if (!IFACE.test(iface)) return false;
    try {
      await access(`${this.root}/${iface}`);
      return true;
    } catch {
      return false;
    }
  }
}

/**
 * Announces a started container's address from inside its network namespace (unsolicited
 * ARP, source MAC = the container's): switches learn at once which port the MAC is on now
 * and neighbours refresh their caches. Without it, after a failover or migration (same IP,
 * same MAC, another port) frames keep going to the old port until the switch's entry ages
 * out: measured in the lab, 15-30 s without an answer. vSphere's vMotion sends a RARP for
 * the same reason. `nsenter` switches only the network namespace, so the host's arping runs.
 */
export class GratuitousArp {
  constructor(private readonly warn: (msg: string, fields: Record<string, unknown>) => void) {}

  announce(pid: number, ip: string): void {
    if (!Number.isInteger(pid) || pid <= 1 || !isStrictIpv4(ip)) return;
    run('nsenter', [`--net=/proc/${pid}/ns/net`, 'arping', '-U', '-q', '-c', '2', '-w', '2', '-I', 'eth0', ip], { timeout: 5_000 }).catch((e: unknown) => {
      // exit 1: nobody replied, which is what an announcement expects
      if ((e as { code?: unknown }).code !== 1) this.warn('gratuitous ARP failed', { ip, err: (e as Error).message.split('\n')[0] });
    });
  }
}

/** Interfaces holding a default route: never an uplink (the lab must not touch them). */
export async function defaultRouteInterfaces(): Promise<string[]> {
  const out: string[] = [];
  for (const family of ['-4', '-6']) {
    try {
      const { stdout } = await run('ip', [family, '-o', 'route', 'show', 'default']);
      for (const m of stdout.matchAll(/\bdev\s+(\S+)/g)) out.push(m[1]!);
    } catch {
      // no such family: nothing to add
    }
  }
  return [...new Set(out)];
}

export async function interfaceExists(name: string): Promise<boolean> {
  if (!IFACE.test(name)) return false;
  try {
    await run('ip', ['-o', 'link', 'show', 'dev', name]);
    return true;
  } catch {
    return false;
  }
}

/**
 * The host shim: a macvlan interface of the host itself on a network's parent, so that
 * processes on the host can reach the host's own containers (a macvlan parent cannot talk
 * to its children). It gets one /32 address, and one /32 route per local container.
 * Names are derived from the parent (`osh-` + 6 hex digits), so several agents sharing a
 * namespace (the lab) do not collide.
 */
export class HostShim {
  private readonly ready = new Map<string, Promise<string>>();

  constructor(private readonly shimIp: string) {
    if (!isStrictIpv4(shimIp)) throw new Error(`bad shim address '${shimIp}'`);
  }

  static nameFor(parent: string): string {
    let h = 0x811c9dc5;
    for (const ch of parent) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
    return `osh-${h.toString(16).padStart(8, '0').slice(0, 6)}`;
  }

  private ensure(parent: string): Promise<string> {
    if (!IFACE.test(parent)) return Promise.reject(new Error(`bad interface name '${parent}'`));
    let p = this.ready.get(parent);
    if (!p) {
      const name = HostShim.nameFor(parent);
      p = (async () => {
        if (!(await interfaceExists(name))) {
          await run('ip', ['link', 'add', name, 'link', parent, 'type', 'macvlan', 'mode', 'bridge']);
        }
        await run('ip', ['addr', 'replace', `${this.shimIp}/32`, 'dev', name]);
        await run('ip', ['link', 'set', name, 'up']);
        return name;
      })();
      p.catch(() => this.ready.delete(parent));
      this.ready.set(parent, p);
    }
    return p;
  }

  async routeTo(parent: string, ip: string): Promise<void> {
    if (!isStrictIpv4(ip)) throw new Error(`bad IPv4 address '${ip}'`);
    const name = await this.ensure(parent);
    await run('ip', ['route', 'replace', `${ip}/32`, 'dev', name]);
  }

  async unroute(parent: string, ip: string): Promise<void> {
    if (!isStrictIpv4(ip)) return;
    await run('ip', ['route', 'del', `${ip}/32`, 'dev', HostShim.nameFor(parent)]).catch(() => undefined);
  }

  /** Removes the shim interfaces this agent made (their routes go with them). */
  async remove(): Promise<void> {
    for (const parent of this.ready.keys()) {
      await run('ip', ['link', 'del', HostShim.nameFor(parent)]).catch(() => undefined);
    }
    this.ready.clear();
  }
}

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { isStrictIpv4 } from '@orangery/netaddr';
import type { ArpProbe } from '../domain/ports';

const run = promisify(execFile);
const IFACE = /^[A-Za-z0-9_.-]{1,15}$/;

/**
 * Duplicate-address detection with iputils' arping (RFC 5227 probe: sender 0.0.0.0, so no
 * cache anywhere learns a false mapping). Exit 0: nobody answered; 1: someone did. Arguments
 * are checked and passed as an argv array, never through a shell.
 */
export class ArpingProbe implements ArpProbe {
  /** `seconds` probes, one a second, listening until the last second is over. */
  constructor(private readonly seconds = 2) {}

  async inUse(iface: string, ip: string): Promise<boolean> {
    if (!IFACE.test(iface)) throw new Error(`bad interface name '${iface}'`);
    if (!isStrictIpv4(ip)) throw new Error(`bad IPv4 address '${ip}'`);
    try {
      await run('arping', ['-D', '-q', '-c', String(this.seconds), '-w', String(this.seconds), '-I', iface, ip], {
        timeout: (this.seconds + 3) * 1000,
      });
      return false;
    } catch (e) {
      const code = (e as { code?: number | string }).code;
      if (code === 1) return true;
      throw new Error(`arping on ${iface} failed: ${(e as Error).message.split('\n')[0]}`);
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
    run('nsenter', [`--net=/proc/${pid}/ns/net`, 'arping', '-U', '-q', '-c', '2', '-w', '2', '-I', 'eth0', ip], { timeout: 5_000 }).catch(
      (e: unknown) => {
        // exit 1: nobody replied, which is what an announcement expects
        if ((e as { code?: unknown }).code !== 1) this.warn('gratuitous ARP failed', { ip, err: (e as Error).message.split('\n')[0] });
      },
    );
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

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

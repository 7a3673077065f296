import { spawn } from 'node:child_process';
import { isStrictIpv4 } from '@orangery/netaddr';
import type { ArpProbe } from '../domain/ports';

const IFACE = /^[A-Za-z0-9_.-]{1,15}$/;

/** What the probe needs of a child process (node's ChildProcess; a fake in unit tests). */
export interface ProbeChild {
  kill(signal: NodeJS.Signals): boolean;
  once(event: 'close', listener: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
  once(event: 'error', listener: (err: Error) => void): unknown;
  readonly stderr: { on(event: 'data', listener: (chunk: Buffer) => void): unknown } | null;
}

export type SpawnProbe = (command: string, argv: readonly string[]) => ProbeChild;

const spawnArping: SpawnProbe = (command, argv) => spawn(command, [...argv], { stdio: ['ignore', 'ignore', 'pipe'] });

export interface ArpProbeTiming {
  /** the whole probe: from the first ARP probe until the verdict "nobody answered" (default 300) */
  windowMs: number;
  /** ARP probes sent, evenly spaced over the window (default 3: 0, 100 and 200 ms) */
  probes: number;
}

/**
 * Duplicate-address detection in about 300 ms: RFC 5227 ARP probes (sender 0.0.0.0, so no
 * cache anywhere learns a false mapping), three of them 100 ms apart, listening until
 * 300 ms after the first (the last probe gets 100 ms to be answered, like Spiderpool's
 * coordinator). Debian's iputils arping takes only whole seconds for its interval and
 * deadline (`-i 0.1` and `-w 0.4` are refused), so each probe is one `arping -D -c 1`
 * process, started at its time and sent SIGTERM when the window closes. arping in DAD mode
 * exits 1 as soon as a reply arrives and, on SIGTERM, exits 0 unless one did: a reply
 * never goes unseen, and the first one ends the probe at once (an answering address is
 * known in a few ms). Any other exit (2: no such interface...) is an error, never "free".
 * Arguments are checked and passed as an argv array, never through a shell.
 */
export class ArpingProbe implements ArpProbe {
  private readonly timing: ArpProbeTiming;

  constructor(
    timing: Partial<ArpProbeTiming> = {},
    private readonly spawnChild: SpawnProbe = spawnArping,
    private readonly command = 'arping',
  ) {
    this.timing = { windowMs: timing.windowMs ?? 300, probes: timing.probes ?? 3 };
    if (!(this.timing.windowMs >= 10) || !Number.isInteger(this.timing.probes) || this.timing.probes < 1) {
      throw new Error(`bad ARP probe timing ${JSON.stringify(this.timing)}`);
    }
  }

  inUse(iface: string, ip: string): Promise<boolean> {
    if (!IFACE.test(iface)) return Promise.reject(new Error(`bad interface name '${iface}'`));
    if (!isStrictIpv4(ip)) return Promise.reject(new Error(`bad IPv4 address '${ip}'`));
    const { windowMs, probes } = this.timing;
    const interval = Math.floor(windowMs / probes);
    // arping's own deadline lies beyond the window: it listens until we end it.
    const argv = ['-D', '-q', '-c', '1', '-w', String(Math.ceil(windowMs / 1000) + 1), '-I', iface, ip];

    return new Promise<boolean>((resolve, reject) => {
      const live = new Set<ProbeChild>();
      const timers: NodeJS.Timeout[] = [];
      let windowClosed = false;
      let settled = false;
      let launched = 0;

      const settle = (err: Error | undefined, answered: boolean) => {
        if (settled) return;
        settled = true;
        for (const t of timers) clearTimeout(t);
        for (const c of live) c.kill('SIGKILL');
        live.clear();
        if (err) reject(err);
        else resolve(answered);
      };
      const maybeDone = () => {
        if (windowClosed && live.size === 0 && launched > 0) settle(undefined, false);
      };
      const launch = () => {
        if (settled || windowClosed) return;
        let child: ProbeChild;
        try {
          child = this.spawnChild(this.command, argv);
        } catch (e) {
          settle(new Error(`arping on ${iface} failed: ${(e as Error).message}`), false);
          return;
        }
        launched++;
        live.add(child);
        let stderr = '';
        child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        child.once('error', (e: Error) => {
          live.delete(child);
          settle(new Error(`arping on ${iface} failed: ${e.message}`), false);
        });
        child.once('close', (code, signal) => {
          live.delete(child);
          if (code === 1) return settle(undefined, true);
          // 0: no reply; killed by a signal: ended by us (SIGKILL after the grace) without one
          if (code !== 0 && !(code === null && signal !== null)) {
            const why = stderr.trim().split('\n')[0] || `exit ${code}`;
            return settle(new Error(`arping on ${iface} failed: ${why}`), false);
          }
          maybeDone();
        });
      };

      launch();
      for (let k = 1; k < probes; k++) timers.push(setTimeout(launch, k * interval));
      timers.push(
        setTimeout(() => {
          windowClosed = true;
          for (const c of live) c.kill('SIGTERM');
          maybeDone();
        }, windowMs),
      );
      // arping ignoring SIGTERM must not hold the probe: killed, it counts as no reply.
      timers.push(setTimeout(() => [...live].forEach((c) => c.kill('SIGKILL')), windowMs + 1_000));
    });
  }
}

// An ARP watcher on the lab fabric: who answers for each watched IP, how often, and how many
// times per request. The fault tests' and `npm run chaos`'s eye on the wire.
//
// How it works
// - Its own network namespace `olab-arpw`, whose eth0 is a veth (`olab-arpwf`) on the fabric
//   bridge, no address configured. Created at start, removed at stop; both names carry the
//   lab prefix, so the lab's crash-safe sweep (sweepLab) removes them, and kills the helper
//   (a process inside a lab namespace) by PID, after any crash.
// - The helper is Debian's python3 with an AF_PACKET raw socket (the script is below, run
//   with `ip netns exec`, which execs it: the PID we hold is the helper's own). Why this and
//   not arping or tcpdump: arping counts replies per run, not per request, and stops at the
//   first one in -D mode; tcpdump + arping means two processes whose outputs must be matched
//   by time, which misattributes a late reply on a loaded 2-core machine. A C helper would
//   need gcc at test time. python3 is always on Debian and a raw socket gives us both the
//   sending and the receiving side in one process with exact per-request accounting.
// - Per-request accounting without ids: ARP has no request id, and the copies of an
//   instance share its MAC, so replies must be counted as frames and matched to the request
//   that caused them. Each tick sends one request per watched IP with a *sender IP* taken in
//   turn from a small block of tag addresses (default 198.18.0.224-239, reserved in the
//   tests' pools, answered by nobody). A reply's target IP is the request's sender IP, so
//   the tag names the request exactly: a reply up to 16 ticks (3.2 s) late is still counted
//   for its own request, never as a second reply to the next one. The requests are ordinary
//   requests (sender IP set), not RFC 5227 probes (sender 0.0.0.0), so an agent probing the
//   same IP before a start does not take the watcher for a competing prober; the replies are
//   unicast to the watcher's MAC, so nobody else's probe sees them either. Gratuitous ARP
//   (announcements) never carries a tag address and is ignored.
// - Bounded: the helper exits by itself after `maxSeconds`, when its stdin closes (this
//   process died), or on `q`. stop() waits for it and then SIGKILLs that PID only.
import { spawn, type ChildProcess } from 'node:child_process';
import { assertLabName, IP, LAB_PREFIX, must, run } from './sys';

/** Namespace of the watcher (its veth on the fabric is `<ns>f`). */
export const ARPW_NETNS = `${LAB_PREFIX}-arpw`;
/** First tag address (sender IP of the watcher's requests); `ARPW_TAGS` consecutive ones are used. */
export const ARPW_TAG_BASE = '198.18.0.224';
export const ARPW_TAGS = 16;
/** The Debian interpreter, not a pyenv shim on PATH. */
const PYTHON = '/usr/bin/python3';
const FABRIC = `${LAB_PREFIX}-fab`;

// The helper. argv: ifname interval_ms max_seconds tag_base ntags ip...
// stdin: "+<ip>" watch, "-<ip>" unwatch, "q" stop. stdout, one event per line:
//   S <epoch_ms>                      start (t below is seconds since this)
//   Q <t> <ip> <seq> <tag>            request sent
//   R <t> <ip> <tag> <sender-mac>     reply from <ip> to the request tagged <tag>
//   E <reason>                        the helper stops
const HELPER = String.raw`
import os, select, socket, struct, sys, time
ETH_P_ARP = 0x0806
ifname, interval, max_s = sys.argv[1], int(sys.argv[2]) / 1000.0, float(sys.argv[3])
base = struct.unpack('!I', socket.inet_aton(sys.argv[4]))[0]
ntags = int(sys.argv[5])
tags = [struct.pack('!I', base + i) for i in range(ntags)]
tag_of = {t: i for i, t in enumerate(tags)}
watched = {}
def watch(ip):
    try: watched[socket.inet_aton(ip)] = ip
    except OSError: pass
for ip in sys.argv[6:]: watch(ip)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
s.bind((ifname, ETH_P_ARP))
s.setblocking(False)
mac = s.getsockname()[4]
out = sys.stdout
start = time.monotonic()
out.write('S %d\n' % int(time.time() * 1000)); out.flush()
def frame(tag, target):
    arp = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 1, mac, tag, b'\0' * 6, target)
    return (b'\xff' * 6 + mac + struct.pack('!H', ETH_P_ARP) + arp).ljust(60, b'\0')
seq, next_t, stopping, buf, reason = 0, start, None, b'', 'max-seconds'
while True:
    now = time.monotonic()
    if stopping is not None and now >= stopping: break
    if stopping is None and now - start >= max_s: stopping = now + 0.5
    if stopping is None and now >= next_t:
        tag = seq % ntags
        lines = []
        for raw, ip in list(watched.items()):
            try:
                s.send(frame(tags[tag], raw))
                lines.append('Q %.4f %s %d %d' % (time.monotonic() - start, ip, seq, tag))
            except OSError as e:
                lines.append('X %.4f %s %s' % (time.monotonic() - start, ip, e.errno))
        if lines: out.write('\n'.join(lines) + '\n'); out.flush()
        seq += 1
        next_t += interval
        if next_t < now: next_t = now + interval
    wake = (stopping if stopping is not None else next_t) - time.monotonic()
    r, _, _ = select.select([s, 0], [], [], max(0.0, wake))
    if s in r:
        lines = []
        while True:
            try: pkt = s.recv(2048)
            except (BlockingIOError, InterruptedError): break
            if len(pkt) < 42 or pkt[12:14] != b'\x08\x06': continue
            op = struct.unpack('!H', pkt[20:22])[0]
            sha, spa, tpa = pkt[22:28], pkt[28:32], pkt[38:42]
            if op != 2 or spa not in watched or tpa not in tag_of: continue
            lines.append('R %.4f %s %d %s' % (time.monotonic() - start, watched[spa], tag_of[tpa], sha.hex(':')))
        if lines: out.write('\n'.join(lines) + '\n'); out.flush()
    if 0 in r:
        chunk = os.read(0, 4096)
        if not chunk:
            reason = 'stdin-closed'
            if stopping is None: stopping = time.monotonic() + 0.3
        buf += chunk
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            cmd = line.decode().strip()
            if cmd == 'q':
                reason = 'stop'
                if stopping is None: stopping = time.monotonic() + 0.5
            elif cmd.startswith('+'): watch(cmd[1:])
            elif cmd.startswith('-'):
                try: watched.pop(socket.inet_aton(cmd[1:]), None)
                except OSError: pass
out.write('E %s\n' % reason); out.flush()
`;

// ---------------------------------------------------------------- accounting (pure)

/** One request the watcher sent, and what came back for it. */
export interface ArpRequestRecord {
  ip: string;
  seq: number;
  /** Epoch ms when sent. */
  at: number;
  replies: number;
  /** Epoch ms of the first reply. */
  firstReplyAt?: number;
  macs: string[];
}

export type ArpState = 'answering' | 'silent' | 'duplicate';

/** Consecutive requests of one state: the timeline of an IP. */
export interface ArpSegment {
  state: ArpState;
  /** Epoch ms of the first and last request in the segment. */
  from: number;
  to: number;
  requests: number;
}

export interface ArpIpReport {
  ip: string;
  requests: number;
  /** Reply frames in total. */
  replies: number;
  /** Requests that got at least one reply. */
  answered: number;
  /** The most replies any single request got (2 = two holders on the wire). */
  maxReplies: number;
  /** Requests with >= 2 replies. */
  duplicates: number;
  /** Longest time without any reply (s), window edges included. */
  longestGap: number;
  /** Epoch ms where that gap started. */
  longestGapFrom: number | undefined;
  macs: string[];
  timeline: ArpSegment[];
}

export interface ArpReport {
  from: number;
  to: number;
  ips: Record<string, ArpIpReport>;
  /** Totals over every IP. */
  duplicates: number;
  maxReplies: number;
  longestGap: number;
}

/**
 * Turns the helper's lines into per-request records. Pure: feed it lines, read `records`.
 * A reply belongs to the last request sent to that IP with that tag; the tags rotate, so a
 * late reply is never counted for a later request.
 */
export class ArpAccounting {
  startEpochMs: number | undefined;
  /** Why the helper stopped (its `E` line). */
  ended: string | undefined;
  readonly records: ArpRequestRecord[] = [];
  /** Replies no request of ours explains (tag reused before they came, or before start). */
  strayReplies = 0;
  sendErrors = 0;
  /** Epoch ms of the newest line seen. */
  lastAt = 0;
  private readonly byTag = new Map<string, ArpRequestRecord>();

  constructor(startEpochMs?: number) {
    this.startEpochMs = startEpochMs;
  }

  private at(t: string): number {
    const ms = (this.startEpochMs ?? 0) + Number(t) * 1000;
    this.lastAt = Math.max(this.lastAt, ms);
    return ms;
  }

  /** One line of helper output; unknown lines are ignored. */
  line(raw: string): void {
    const f = raw.trim().split(/\s+/);
    switch (f[0]) {
      case 'S':
        this.startEpochMs = Number(f[1]);
        this.lastAt = Math.max(this.lastAt, this.startEpochMs);
        break;
      case 'Q': {
        if (f.length < 5) return;
        const rec: ArpRequestRecord = { ip: f[2]!, seq: Number(f[3]), at: this.at(f[1]!), replies: 0, macs: [] };
        this.records.push(rec);
        this.byTag.set(`${rec.ip}/${f[4]}`, rec);
        break;
      }
      case 'R': {
        if (f.length < 5) return;
        const at = this.at(f[1]!);
        const rec = this.byTag.get(`${f[2]}/${f[3]}`);
        if (!rec) {
          this.strayReplies++;
          return;
        }
        rec.replies++;
        rec.firstReplyAt ??= at;
        const mac = f[4]!.toLowerCase();
        if (!rec.macs.includes(mac)) rec.macs.push(mac);
        break;
      }
      case 'X':
        this.sendErrors++;
        if (f[1]) this.at(f[1]);
        break;
      case 'E':
        this.ended = f.slice(1).join(' ') || 'unknown';
        break;
      default:
    }
  }

  /**
   * Statistics per IP over requests sent in [from, to) (epoch ms; default: everything).
   * Requests younger than `settleMs` before the newest line are left out (their replies may
   * still be on the way), unless the helper has ended.
   */
  report(opts: { from?: number; to?: number; ips?: readonly string[]; settleMs?: number } = {}): ArpReport {
    const settle = this.ended ? 0 : (opts.settleMs ?? 400);
    const from = opts.from ?? -Infinity;
    const to = Math.min(opts.to ?? Infinity, this.lastAt - settle + 1e-6);
    const per = new Map<string, ArpRequestRecord[]>();
    for (const ip of opts.ips ?? []) per.set(ip, []);
    for (const r of this.records) {
      if (r.at < from || r.at >= to) continue;
      if (opts.ips && !opts.ips.includes(r.ip)) continue;
      const list = per.get(r.ip) ?? [];
      list.push(r);
      per.set(r.ip, list);
    }
    const ips: Record<string, ArpIpReport> = {};
    for (const [ip, list] of per) ips[ip] = summarize(ip, list);
    const all = Object.values(ips);
    return {
      from: Number.isFinite(from) ? from : (this.records[0]?.at ?? 0),
      to: Number.isFinite(to) ? to : this.lastAt,
      ips,
      duplicates: all.reduce((n, r) => n + r.duplicates, 0),
      maxReplies: all.reduce((n, r) => Math.max(n, r.maxReplies), 0),
      longestGap: all.reduce((n, r) => Math.max(n, r.longestGap), 0),
    };
  }
}

const stateOf = (r: ArpRequestRecord): ArpState => (r.replies === 0 ? 'silent' : r.replies === 1 ? 'answering' : 'duplicate');

/** Per-IP statistics of its requests (sorted by send time). Pure. */
export function summarize(ip: string, requests: readonly ArpRequestRecord[]): ArpIpReport {
  const list = [...requests].sort((a, b) => a.at - b.at);
  const rep: ArpIpReport = {
    ip,
    requests: list.length,
    replies: 0,
    answered: 0,
    maxReplies: 0,
    duplicates: 0,
    longestGap: 0,
    longestGapFrom: undefined,
    macs: [],
    timeline: [],
  };
  if (list.length === 0) return rep;
  // A gap runs from the last request that got an answer (or the window's first request) to
  // the next request that got one (or the window's last request): it is measured on request
  // times, so it is exact to one tick and independent of how late replies come.
  let lastAnswer = list[0]!.at;
  const gap = (until: number) => {
    const g = (until - lastAnswer) / 1000;
    if (g > rep.longestGap) {
      rep.longestGap = g;
      rep.longestGapFrom = lastAnswer;
    }
  };
  for (const r of list) {
    rep.replies += r.replies;
    rep.maxReplies = Math.max(rep.maxReplies, r.replies);
    if (r.replies >= 2) rep.duplicates++;
    for (const m of r.macs) if (!rep.macs.includes(m)) rep.macs.push(m);
    if (r.replies > 0) {
      rep.answered++;
      gap(r.at);
      lastAnswer = r.at;
    }
    const st = stateOf(r);
    const seg = rep.timeline[rep.timeline.length - 1];
    if (seg && seg.state === st) {
      seg.to = r.at;
      seg.requests++;
    } else rep.timeline.push({ state: st, from: r.at, to: r.at, requests: 1 });
  }
  gap(list[list.length - 1]!.at);
  return rep;
}

/** The timeline as one line, times in seconds from `origin`: `answering 0.0-12.2 (62) | silent 12.4-15.0 (14)`. */
export function formatTimeline(segments: readonly ArpSegment[], origin: number): string {
  const s = (ms: number) => ((ms - origin) / 1000).toFixed(1);
  return segments.map((g) => `${g.state} ${s(g.from)}-${s(g.to)} (${g.requests})`).join(' | ');
}

/** A report as short text lines, one per IP (for failure messages and chaos logs). */
export function formatReport(rep: ArpReport, origin = rep.from): string {
  return Object.values(rep.ips)
    .map(
      (r) =>
        `${r.ip}: ${r.requests} req, ${r.replies} replies, max ${r.maxReplies}/req, ${r.duplicates} dup, ` +
        `longest gap ${r.longestGap.toFixed(1)} s, macs ${r.macs.join(',') || '-'}; ${formatTimeline(r.timeline, origin)}`,
    )
    .join('\n');
}

// ---------------------------------------------------------------- the process

export interface ArpWatcherOptions {
  /** Seconds between two requests to the same IP: 0.2 default. */
  intervalMs?: number;
  /** The helper stops by itself after this long (default 30 min; at most 4 h). */
  maxSeconds?: number;
  /** Namespace name (default `olab-arpw`); its veth is `<netns>f`. */
  netns?: string;
  tagBase?: string;
}

const isLab = (ip: string) => /^198\.(18|19)\.\d{1,3}\.\d{1,3}$/.test(ip) && ip.split('.').every((o) => Number(o) <= 255);

/** Creates the watcher's namespace with eth0 on the fabric (no address). */
async function plugWatcherNetns(netns: string): Promise<void> {
  const port = `${netns}f`;
  assertLabName(netns);
  assertLabName(port);
  await unplugWatcherNetns(netns);
  await must(IP, ['netns', 'add', netns]);
  await must(IP, ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  await must(IP, ['link', 'set', port, 'master', FABRIC]);
  await must(IP, ['link', 'set', port, 'up']);
  await must(IP, ['-n', netns, 'link', 'set', 'lo', 'up']);
  // No IPv6 on it: no router/neighbour solicitations of our own on the fabric.
  await run(IP, ['netns', 'exec', netns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1']);
  // Keep our own kernel quiet for ARP: it has no address, but say it anyway.
  await run(IP, ['netns', 'exec', netns, 'sysctl', '-q', '-w', 'net.ipv4.conf.all.arp_ignore=8']);
  await must(IP, ['-n', netns, 'link', 'set', 'eth0', 'up']);
}

async function unplugWatcherNetns(netns: string): Promise<void> {
  assertLabName(netns);
  assertLabName(`${netns}f`);
  await run(IP, ['netns', 'del', netns]);
  await run(IP, ['link', 'del', 'dev', `${netns}f`]);
}

/**
 * The watcher process. `ArpWatcher.start(['198.18.1.1', ...])` once the lab is up; `report()`
 * any time (a window with `from`/`to`); `stop()` always (idempotent), also in `finally`.
 */
export class ArpWatcher {
  readonly accounting = new ArpAccounting();
  private readonly watched = new Set<string>();
  private stderr = '';
  private exitedP: Promise<void>;
  private stopped = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly netns: string,
    readonly intervalMs: number,
    ips: readonly string[],
  ) {
    ips.forEach((ip) => this.watched.add(ip));
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.accounting.line(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    child.stdin!.on('error', () => undefined);
    // 'close': after the exit and after stdout's last line (the E line) was read.
    this.exitedP = new Promise((r) => child.once('close', () => r()));
  }

  static async start(ips: readonly string[], opts: ArpWatcherOptions = {}): Promise<ArpWatcher> {
    for (const ip of ips) if (!isLab(ip)) throw new Error(`arp watcher: ${ip} is not a lab address`);
    const netns = opts.netns ?? ARPW_NETNS;
    const intervalMs = Math.max(50, Math.min(5_000, opts.intervalMs ?? 200));
    const maxSeconds = Math.max(1, Math.min(4 * 3600, opts.maxSeconds ?? 1800));
    const tagBase = opts.tagBase ?? ARPW_TAG_BASE;
    if (!isLab(tagBase)) throw new Error(`arp watcher: tag base ${tagBase} is not a lab address`);
    await plugWatcherNetns(netns);
    const child = spawn(
      IP,
      ['netns', 'exec', netns, PYTHON, '-u', '-c', HELPER, 'eth0', String(intervalMs), String(maxSeconds), tagBase, String(ARPW_TAGS), ...ips],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const w = new ArpWatcher(child, netns, intervalMs, ips);
    const started = Date.now();
    while (w.accounting.startEpochMs === undefined) {
      if (child.exitCode !== null || child.signalCode !== null || Date.now() - started > 10_000) {
        await w.stop();
        throw new Error(`arp watcher did not start: ${w.stderr.trim() || 'no output'}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return w;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  get ips(): string[] {
    return [...this.watched];
  }

  /** Watches one more IP (from the next tick on). */
  add(ip: string): void {
    if (!isLab(ip)) throw new Error(`arp watcher: ${ip} is not a lab address`);
    this.watched.add(ip);
    this.child.stdin!.write(`+${ip}\n`);
  }

  remove(ip: string): void {
    this.watched.delete(ip);
    this.child.stdin!.write(`-${ip}\n`);
  }

  /** Statistics so far, or over a window [from, to) of epoch ms. */
  report(opts: { from?: number; to?: number; ips?: readonly string[] } = {}): ArpReport {
    return this.accounting.report({ ...opts, settleMs: this.intervalMs * 2 });
  }

  /** Waits until the watcher has seen requests sent at or after `t` settle (their replies in). */
  async settled(t = Date.now()): Promise<void> {
    const deadline = Date.now() + 5_000;
    while (this.running && this.accounting.lastAt < t + this.intervalMs * 2 + 50 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  get diagnostics(): string {
    return `ended=${this.accounting.ended ?? '-'} stray=${this.accounting.strayReplies} sendErrors=${this.accounting.sendErrors} stderr=${this.stderr.trim().slice(-500)}`;
  }

  /** Stops the helper (q, then SIGKILL to its PID after 3 s) and removes the namespace. Idempotent. */
  async stop(): Promise<ArpReport> {
    if (!this.stopped) {
      this.stopped = true;
      if (this.running) {
        this.child.stdin!.write('q\n');
        const timer = setTimeout(() => this.child.kill('SIGKILL'), 3_000);
        await this.exitedP;
        clearTimeout(timer);
      }
      await unplugWatcherNetns(this.netns).catch(() => undefined);
    }
    return this.accounting.report();
  }
}

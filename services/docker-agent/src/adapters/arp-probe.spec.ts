import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ArpingProbe, type ProbeChild } from './arp-probe';

/**
 * A fake arping process that behaves as iputils' does in DAD mode (checked on Debian's
 * 20221126): exit 1 as soon as a reply arrives; on SIGTERM exit 0 when none did (1 when one
 * did); SIGKILL: killed by the signal; exit 2 with a message for a missing interface.
 */
class FakeArping extends EventEmitter implements ProbeChild {
  readonly stderr = new EventEmitter();
  readonly signals: NodeJS.Signals[] = [];
  exited = false;

  constructor(
    readonly argv: readonly string[],
    readonly startedAt: number,
    private readonly ignoreTerm = false,
  ) {
    super();
  }

  kill(signal: NodeJS.Signals): boolean {
    this.signals.push(signal);
    if (this.exited) return false;
    if (signal === 'SIGKILL') this.exit(null, 'SIGKILL');
    else if (!this.ignoreTerm) setImmediate(() => this.exit(0));
    return true;
  }

  reply(): void {
    setImmediate(() => this.exit(1));
  }

  fail(message: string): void {
    this.stderr.emit('data', Buffer.from(`${message}\n`));
    setImmediate(() => this.exit(2));
  }

  exit(code: number | null, signal: NodeJS.Signals | null = null): void {
    if (this.exited) return;
    this.exited = true;
    this.emit('close', code, signal);
  }
}

function harness(opts: { ignoreTerm?: boolean; windowMs?: number } = {}) {
  const children: FakeArping[] = [];
  const spawned: { command: string; argv: readonly string[] }[] = [];
  const probe = new ArpingProbe({ windowMs: opts.windowMs ?? 300 }, (command, argv) => {
    spawned.push({ command, argv });
    const c = new FakeArping(argv, Date.now(), opts.ignoreTerm);
    children.push(c);
    return c;
  });
  return { probe, children, spawned };
}

/** Resolves `p` while advancing fake time in small steps; the verdict and when it came. */
async function timed<T>(p: Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = Date.now();
  let done = false;
  let value!: T;
  let error: unknown;
  p.then(
    (v) => ((value = v), (done = true)),
    (e: unknown) => ((error = e), (done = true)),
  );
  for (let i = 0; i < 1_000 && !done; i++) await vi.advanceTimersByTimeAsync(5);
  if (error) throw error;
  if (!done) throw new Error('the probe never ended');
  return { value, ms: Date.now() - t0 };
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe('ArpingProbe (~300 ms RFC 5227 probe)', () => {
  it('nobody answers: three DAD probes 100 ms apart, verdict "free" when the 300 ms window closes', async () => {
    const h = harness();
    const { value, ms } = await timed(h.probe.inUse('eth1', '198.18.0.7'));
    expect(value).toBe(false);
    expect(ms).toBeGreaterThanOrEqual(300);
    expect(ms).toBeLessThan(330);
    expect(h.children.map((c) => c.startedAt - h.children[0]!.startedAt)).toEqual([0, 100, 200]);
    expect(h.spawned[0]).toEqual({ command: 'arping', argv: ['-D', '-q', '-c', '1', '-w', '2', '-I', 'eth1', '198.18.0.7'] });
    expect(h.children.every((c) => c.signals.includes('SIGTERM'))).toBe(true);
  });

  it('an answer to the first probe ends the probe at once: no further probe is sent', async () => {
    const h = harness();
    const p = h.probe.inUse('eth1', '198.18.0.7');
    h.children[0]!.reply();
    const { value, ms } = await timed(p);
    expect(value).toBe(true);
    expect(ms).toBeLessThan(50);
    await vi.advanceTimersByTimeAsync(500);
    expect(h.children).toHaveLength(1);
  });

  it('an answer to the last probe only, just before the window closes, is seen', async () => {
    const h = harness();
    const p = h.probe.inUse('eth1', '198.18.0.7');
    await vi.advanceTimersByTimeAsync(290);
    expect(h.children).toHaveLength(3);
    h.children[2]!.reply();
    expect((await timed(p)).value).toBe(true);
  });

  // Issue 17: a holder that starts answering at any moment of the 300 ms window (a VM booting,
  // a duplicate coming up while the container is created) must be seen, whichever of the
  // live arpings hears it (the oldest: the worst case, its probe was sent longest ago).
  it.each([0, 1, 50, 99, 100, 101, 150, 199, 200, 201, 250, 290, 299])(
    'a holder answering %i ms into the window is seen: verdict "in use", at once',
    async (at) => {
      const h = harness();
      const p = h.probe.inUse('eth1', '198.18.0.7');
      let verdict: boolean | undefined;
      void p.then((v) => (verdict = v));
      if (at > 0) await vi.advanceTimersByTimeAsync(at);
      expect(verdict).toBeUndefined(); // nothing decided before the answer
      const live = h.children.filter((c) => !c.exited);
      expect(live.length).toBeGreaterThan(0);
      expect(h.children).toHaveLength(Math.min(3, Math.floor(at / 100) + 1));
      live[0]!.reply();
      const { value, ms } = await timed(p);
      expect(value).toBe(true);
      expect(ms).toBeLessThan(20);
    },
  );

  it('an answer a moment after the window closed (arping already stopped) is not taken: the verdict is "free"', async () => {
    const h = harness();
    const p = h.probe.inUse('eth1', '198.18.0.7');
    const { value } = await timed(p);
    for (const c of h.children) c.reply(); // too late: every arping has exited
    expect(value).toBe(false);
  });

  it('a reply that lands while arping is being stopped still counts (arping exits 1 on SIGTERM then)', async () => {
    const h = harness({ ignoreTerm: true });
    const p = h.probe.inUse('eth1', '198.18.0.7');
    await vi.advanceTimersByTimeAsync(300);
    h.children[1]!.exit(1);
    expect((await timed(p)).value).toBe(true);
  });

  it('an arping that ignores SIGTERM is killed a second later: no reply, verdict "free"', async () => {
    const h = harness({ ignoreTerm: true });
    const { value, ms } = await timed(h.probe.inUse('eth1', '198.18.0.7'));
    expect(value).toBe(false);
    expect(ms).toBeGreaterThanOrEqual(1_300);
    expect(h.children.every((c) => c.signals.includes('SIGKILL'))).toBe(true);
  });

  it('arping failing (no such interface) is an error, never "free"', async () => {
    const h = harness();
    const p = h.probe.inUse('eth1.100', '198.18.0.7');
    h.children[0]!.fail('arping: Device eth1.100 not available.');
    await expect(timed(p)).rejects.toThrow('arping on eth1.100 failed: arping: Device eth1.100 not available.');
  });

  it('arping missing from the path is an error', async () => {
    const probe = new ArpingProbe({}, () => {
      const c = new FakeArping([], 0);
      setImmediate(() => c.emit('error', Object.assign(new Error('spawn arping ENOENT'), { code: 'ENOENT' })));
      return c;
    });
    await expect(timed(probe.inUse('eth1', '198.18.0.7'))).rejects.toThrow('spawn arping ENOENT');
  });

  it.each([
    ['eth1; reboot', '198.18.0.7'],
    ['eth1', '198.18.0.7 -s 1.2.3.4'],
    ['eth1', '1.2.3'],
  ])('refuses %j / %j before running anything', async (iface, ip) => {
    const h = harness();
    await expect(h.probe.inUse(iface, ip)).rejects.toThrow(/bad/);
    expect(h.spawned).toEqual([]);
  });

  it('the window follows ORANGERY_ARP_PROBE_MS: 600 ms gives probes at 0, 200, 400 and arping -w 2', async () => {
    const h = harness({ windowMs: 600 });
    const { value, ms } = await timed(h.probe.inUse('eth1', '198.18.0.7'));
    expect(value).toBe(false);
    expect(ms).toBeGreaterThanOrEqual(600);
    expect(h.children.map((c) => c.startedAt - h.children[0]!.startedAt)).toEqual([0, 200, 400]);
  });
});

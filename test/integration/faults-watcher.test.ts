import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '@orangery/testing';
import { ArpAccounting, ArpWatcher, formatReport, Lab, LAB_GATEWAY, LAB_IMAGES, LAB_SUBNET, labResidue, summarize, type LabServer } from '../lab';

// The ARP watcher the fault tests and `npm run chaos` rely on: its accounting (pure), then
// proven on the lab's wire: one holder = one reply per request and no gap; a second holder
// with the same IP and MAC on another server = two replies to one request; a stopped holder
// = a gap.

describe('ARP watcher accounting (pure)', () => {
  const feed = (lines: string[]) => {
    const a = new ArpAccounting();
    lines.forEach((l) => a.line(l));
    return a;
  };

  it('counts reply frames per request by tag, so a late reply is not a second reply to the next request', () => {
    const a = feed([
      'S 1000000',
      'Q 0.0 198.18.1.1 0 0',
      'R 0.01 198.18.1.1 0 02:00:c6:12:01:01',
      'Q 0.2 198.18.1.1 1 1',
      'Q 0.4 198.18.1.1 2 2',
      // the reply to request 1 comes late, after request 2 went out: still request 1's
      'R 0.45 198.18.1.1 1 02:00:c6:12:01:01',
      'R 0.46 198.18.1.1 2 02:00:c6:12:01:01',
      'Q 0.6 198.18.1.1 3 3',
      // two frames for one request: two holders (same MAC, as copies of an instance have)
      'R 0.61 198.18.1.1 3 02:00:c6:12:01:01',
      'R 0.62 198.18.1.1 3 02:00:c6:12:01:01',
      'E stop',
    ]);
    expect(a.records.map((r) => r.replies)).toEqual([1, 1, 1, 2]);
    expect(a.records[0]!.at).toBe(1_000_000);
    const rep = a.report().ips['198.18.1.1']!;
    expect(rep).toMatchObject({ requests: 4, replies: 5, answered: 4, maxReplies: 2, duplicates: 1, macs: ['02:00:c6:12:01:01'] });
    expect(rep.timeline.map((s) => [s.state, s.requests])).toEqual([
      ['answering', 3],
      ['duplicate', 1],
    ]);
    expect(a.ended).toBe('stop');
  });

  it('a reply whose tag names no request of ours is stray, not counted', () => {
    const a = feed(['S 0', 'Q 0.0 198.18.1.1 0 0', 'R 0.1 198.18.1.1 5 02:00:00:00:00:01', 'R 0.1 198.18.1.2 0 02:00:00:00:00:01', 'E stop']);
    expect(a.records[0]!.replies).toBe(0);
    expect(a.strayReplies).toBe(2);
  });

  it('the longest gap runs from the last answered request to the next (window edges included)', () => {
    const req = (at: number, replies: number) => ({ ip: '198.18.1.1', seq: at, at, replies, macs: [] });
    // answered at 0..1 s, silent 1.2..3.8 s, answered again from 4.0 s
    const list = [
      ...[0, 200, 400, 600, 800, 1000].map((t) => req(t, 1)),
      ...[1200, 1400, 1600, 1800, 2000, 2200, 2400, 2600, 2800, 3000, 3200, 3400, 3600, 3800].map((t) => req(t, 0)),
      req(4000, 1),
      req(4200, 1),
    ];
    const r = summarize('198.18.1.1', list);
    expect(r.longestGap).toBeCloseTo(3.0, 5);
    expect(r.longestGapFrom).toBe(1000);
    expect(r.timeline.map((s) => [s.state, s.from, s.to])).toEqual([
      ['answering', 0, 1000],
      ['silent', 1200, 3800],
      ['answering', 4000, 4200],
    ]);
    // silent up to the end of the window: the tail counts
    expect(summarize('198.18.1.1', [req(0, 1), req(200, 0), req(2200, 0)]).longestGap).toBeCloseTo(2.2, 5);
    // silent from the start of the window: the head counts
    expect(summarize('198.18.1.1', [req(0, 0), req(1500, 0), req(1700, 1)]).longestGap).toBeCloseTo(1.7, 5);
    // never answered: the whole window
    expect(summarize('198.18.1.1', [req(0, 0), req(5000, 0)])).toMatchObject({ longestGap: 5, answered: 0 });
  });

  it('reports a window, leaves out requests too young to have their replies, and names every IP asked for', () => {
    const a = feed([
      'S 0',
      'Q 0.0 198.18.1.1 0 0',
      'R 0.01 198.18.1.1 0 m',
      'Q 1.0 198.18.1.1 1 1',
      'R 1.01 198.18.1.1 1 m',
      'Q 2.0 198.18.1.1 2 2',
      'Q 2.1 198.18.1.1 3 3',
    ]);
    // running helper: the request at 2.0 s is 100 ms old at the newest line (2.1 s): pending
    expect(a.report({ settleMs: 400 }).ips['198.18.1.1']!.requests).toBe(2);
    expect(a.report({ from: 500, to: 1500, settleMs: 0 }).ips['198.18.1.1']).toMatchObject({ requests: 1, replies: 1 });
    const withMissing = a.report({ ips: ['198.18.1.1', '198.18.9.9'], settleMs: 0 });
    expect(withMissing.ips['198.18.9.9']).toMatchObject({ requests: 0 });
    expect(formatReport(withMissing)).toContain('198.18.1.1: 4 req, 2 replies');
  });
});

describe('ARP watcher on the lab fabric', () => {
  const NET = 'orangery-lab';
  const IP = '198.18.3.1';
  const MAC = '02:4f:c6:12:03:01';
  const OTHER = '198.18.3.2';
  let lab: Lab;
  let watcher: ArpWatcher | undefined;
  const run = (s: LabServer, name: string, ip: string) =>
    lab.docker(s, ['run', '-d', '--name', name, '--network', NET, '--ip', ip, '--mac-address', MAC, LAB_IMAGES.svc]);

  beforeAll(async () => {
    lab = await Lab.setup({ servers: 2, legacyVms: 1 });
    for (const s of lab.servers) {
      await lab.docker(s, ['network', 'create', '-d', 'macvlan', '--subnet', LAB_SUBNET, '--gateway', LAB_GATEWAY, '-o', `parent=${s.uplink}`, NET]);
    }
  }, 180_000);

  afterAll(async () => {
    await watcher?.stop();
    await lab?.teardown();
    const left = await labResidue([lab.labDir]);
    expect(left).toEqual({ interfaces: [], netns: [], processes: [], mounts: [], cgroups: [], dirs: [] });
  }, 120_000);

  it('one holder: one reply per request, no gap; a second holder with the same IP and MAC: duplicates; a stop: a gap', async () => {
    const [s1, s2] = lab.servers as [LabServer, LabServer];
    await run(s1, 'first', IP);
    await waitFor(`${IP} answers`, () => lab.arpProbe(IP), 15_000, 200);
    watcher = await ArpWatcher.start([IP, OTHER]);
    expect(watcher.pid).toBeGreaterThan(1);
    // the watcher's namespace carries the lab prefix (the crash-safe sweep removes it)
    expect((await labResidue()).netns).toContain('olab-arpw');

    // 1. one holder
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 3_000));
    const one = await (async () => {
      await watcher!.settled();
      return watcher!.report({ from: t0, ips: [IP] });
    })();
    const r1 = one.ips[IP]!;
    expect(r1.requests, formatReport(one)).toBeGreaterThanOrEqual(10);
    expect(r1.answered, formatReport(one)).toBe(r1.requests);
    expect(r1.maxReplies).toBe(1);
    expect(r1.duplicates).toBe(0);
    expect(r1.longestGap).toBeLessThan(1);
    expect(r1.macs).toEqual([MAC]);
    // nobody holds OTHER: asked, never answered
    const other = watcher.report({ from: t0 }).ips[OTHER]!;
    expect(other.requests).toBeGreaterThanOrEqual(10);
    expect(other.replies).toBe(0);

    // 2. a second holder, same IP and MAC, on the other server
    const t1 = Date.now();
    await run(s2, 'second', IP);
    await new Promise((r) => setTimeout(r, 3_000));
    await watcher.settled();
    const two = watcher.report({ from: t1, ips: [IP] });
    const r2 = two.ips[IP]!;
    expect(r2.duplicates, formatReport(two)).toBeGreaterThanOrEqual(1);
    expect(r2.maxReplies).toBe(2);
    expect(r2.macs).toEqual([MAC]);
    expect(r2.timeline.some((s) => s.state === 'duplicate')).toBe(true);
    await lab.docker(s2, ['rm', '-f', 'second']);

    // 3. the holder stops for ~3 s, then starts again: a gap of about that long
    const t2 = Date.now();
    await new Promise((r) => setTimeout(r, 1_000));
    await lab.docker(s1, ['stop', '-t', '0', 'first']);
    await new Promise((r) => setTimeout(r, 3_000));
    await lab.docker(s1, ['start', 'first']);
    await waitFor(`${IP} answers again`, () => (watcher!.report({ from: Date.now() - 1_000, ips: [IP] }).ips[IP]?.answered ?? 0) > 0, 15_000, 200);
    await new Promise((r) => setTimeout(r, 1_000));
    await watcher.settled();
    const three = watcher.report({ from: t2, ips: [IP] });
    const r3 = three.ips[IP]!;
    expect(r3.longestGap, formatReport(three)).toBeGreaterThan(2.5);
    expect(r3.longestGap).toBeLessThan(15);
    expect(r3.duplicates).toBe(0);
    expect(r3.timeline.map((s) => s.state)).toEqual(['answering', 'silent', 'answering']);
    console.info(formatReport(watcher.report({ from: t0 })));

    // bounded: stop() ends the helper by itself and removes its namespace
    const final = await watcher.stop();
    expect(watcher.running).toBe(false);
    expect(watcher.accounting.ended).toBe('stop');
    expect(final.ips[IP]!.duplicates).toBeGreaterThanOrEqual(1);
    expect((await labResidue()).netns).not.toContain('olab-arpw');
  });

  it('stops by itself after maxSeconds', async () => {
    const w = await ArpWatcher.start([IP], { maxSeconds: 1, netns: 'olab-arpw2' });
    await waitFor('the helper to exit', () => !w.running, 10_000, 100);
    expect(w.accounting.ended).toBe('max-seconds');
    await w.stop();
    expect((await labResidue()).netns).not.toContain('olab-arpw2');
  });
});

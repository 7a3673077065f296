/**
 * Failover benchmark (npm run bench:failover), issue 12's definition, all real in the lab
 * (test/integration/fixtures/fault-lab.ts: 2 docker servers, 1 legacy VM, NATS, MariaDB,
 * ipam, a docker-agent per server, the scheduler; the ARP watcher of test/lab/arp-watch.ts
 * on the fabric asking every instance IP every 200 ms from start to end).
 *
 * 1. Host loss, per profile (CONTRACT.md's defaults and a fast one), BENCH_ROUNDS rounds
 *    (default 20): one instance (app `fo`) runs on a server; the server dies (FaultLab's
 *    killHost: agent SIGKILLed, engine stopped, uplink cut: a dead host is off the wire,
 *    which since v1.1 is what lets the scheduler replace it); measured is the time from the
 *    first of those steps to the replacement answering HTTP on the same IP from the legacy
 *    VM (instances.list places it elsewhere first). Then the server returns (uplink, engine,
 *    agent) and both hosts are ready again before the next round; its old copy must stay
 *    stopped. Duplicates: ARP requests to which the watcher got two or more replies (copies
 *    share the MAC, so replies are counted, not MACs), over the watcher's whole life.
 * 2. Outages: each non-moving fault of issue 12 once per profile (BENCH_OUTAGES: default,fast
 *    by default; default, fast, or 0 for none), in a lab of its own with web x2 and api x2,
 *    through FaultLab.observe (fault, recovery, fenceAfter + margin + 2 s of watching): the
 *    longest silence of any instance IP and the duplicates. The wall-clock step is included
 *    when libfaketime is there; vCenter frozen and vmware-agent killed are not (this lab has
 *    no vCenter).
 * Prints the machine, the tables, met/not met; writes bench/results/failover.md; exits 1 on
 * any duplicate. Bounded: each failover waited for at most 90 s, the whole run at most
 * 30 + 3 x rounds minutes; progress on stderr. Ctrl-C cleans up (frozen processes resumed,
 * uplinks restored, watcher, services and lab stopped).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { waitFor } from '@orangery/testing';
import { SVC_INDEX, SVC_PORT, type LabServer } from '../test/lab';
import { FaultLab, type FaultLabTimings, type FaultOutcome } from '../test/integration/fixtures/fault-lab';
import { fmt, percentile, table } from './lib';

const ROUNDS = Math.max(1, Math.min(100, Number(process.env['BENCH_ROUNDS'] ?? 20)));
/** Profiles the outage table runs with: BENCH_OUTAGES=default,fast (the default), default, fast, or 0 for none. */
const OUTAGE_PROFILES = (process.env['BENCH_OUTAGES'] ?? 'default,fast').split(',').filter((x) => x && x !== '0');
/** The watcher's interval between two requests to one IP (FaultLab's default). */
const TICK_S = 0.2;
const started = Date.now();
const log = (m: string) => process.stderr.write(`[bench:failover +${Math.round((Date.now() - started) / 1000)}s] ${m}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Profile extends FaultLabTimings {
  name: string;
  /** Target for p95 (s). */
  target: number;
  targetText: string;
}
const DEFAULTS: FaultLabTimings = { heartbeat: 2, lostAfter: 6, fenceAfter: 10, margin: 5 };
const PROFILES: Profile[] = [
  { name: 'default (CONTRACT.md)', ...DEFAULTS, target: DEFAULTS.fenceAfter + 3, targetText: 'fenceAfter + 3 s' },
  { name: 'fast', heartbeat: 1, lostAfter: 2, fenceAfter: 3, margin: 1, target: 5, targetText: '5 s' },
];

interface ProfileResult {
  profile: Profile;
  times: number[];
  /** Failover times in round order (NaN: not replaced within 90 s). */
  order: number[];
  silences: number[];
  /** Over the watcher's whole life in this lab. */
  duplicates: number;
  requests: number;
  maxReplies: number;
  problems: string[];
}

let current: FaultLab | undefined;

const instanceOf = async (fl: FaultLab, app: string) => (await fl.instances()).find((i) => i.app === app);

async function hostLoss(p: Profile): Promise<ProfileResult> {
  log(`${p.name}: starting the lab (heartbeat ${p.heartbeat} s, lostAfter ${p.lostAfter} s, fenceAfter ${p.fenceAfter} s, margin ${p.margin} s)`);
  const fl = await FaultLab.start({ label: `bench-fo-${p.name.split(' ')[0]}`, apps: [{ app: 'fo', replicas: 1 }], timings: p, log });
  current = fl;
  const res: ProfileResult = { profile: p, times: [], order: [], silences: [], duplicates: 0, requests: 0, maxReplies: 0, problems: [] };
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      await fl.waitHostsReady(90_000);
      const inst = await instanceOf(fl, 'fo');
      if (!inst || inst.state !== 'running') throw new Error(`round ${round}: fo is ${inst?.state ?? 'missing'}`);
      if (!fl.watcher!.ips.includes(inst.ip)) fl.watcher!.add(inst.ip);
      const victim = fl.lab.servers.find((s: LabServer) => s.id === inst.host)!;
      const t0 = Date.now();
      const p0 = performance.now();
      await fl.killHost(victim);
      let ms = NaN;
      try {
        await waitFor(
          'the replacement answering on the same IP',
          async () => {
            const now = await instanceOf(fl, 'fo');
            if (!now || now.host === victim.id || now.ip !== inst.ip) return undefined;
            return (await fl.lab.vmHttpGet(fl.lab.vms[0]!, inst.ip, SVC_PORT, '/', 500)) === SVC_INDEX || undefined;
          },
          90_000,
          100,
        );
        ms = performance.now() - p0;
        res.times.push(ms);
      } catch (e) {
        res.order.push(NaN);
        res.problems.push(`round ${round}: ${String(e)}`);
      }
      if (!Number.isNaN(ms)) res.order.push(ms);
      // the dead server returns; its stopped copy must stay stopped (the watcher would see it)
      await fl.reviveHost(victim);
      await fl.waitHostsReady(90_000);
      await sleep(2_000);
      const wire = await fl.wire(t0 - 1_000);
      const ipRep = wire.ips[inst.ip];
      if (ipRep) res.silences.push(ipRep.longestGap);
      log(
        `${p.name}: round ${round}/${ROUNDS}: ${inst.ip} ${victim.id} -> replacement answers after ${fmt(ms / 1000, 1)} s; ` +
          `wire: silent ${fmt(ipRep?.longestGap ?? NaN, 1)} s, ${wire.duplicates} duplicate(s)`,
      );
      if (wire.duplicates > 0) log(fl.formatWire(wire));
      if (Number.isNaN(ms)) log(fl.diagnostics());
    }
  } finally {
    current = undefined;
    const all = await fl.close();
    if (all) {
      res.duplicates = all.duplicates;
      res.maxReplies = all.maxReplies;
      res.requests = Object.values(all.ips).reduce((n, r) => n + r.requests, 0);
    } else res.problems.push('no watcher report');
  }
  res.times.sort((a, b) => a - b);
  res.silences.sort((a, b) => a - b);
  return res;
}

interface OutageRow {
  profile: Profile;
  outcome: FaultOutcome;
  /** Requests without any reply, over every instance IP. */
  unanswered: number;
}

async function outages(p: Profile): Promise<{ rows: OutageRow[]; skipped: string[]; requests: number; duplicates: number }> {
  const faketime = FaultLab.faketimeAvailable;
  log(`outages, ${p.name}: starting the lab (web x2, api x2${faketime ? '; scheduler under libfaketime' : ''})`);
  const fl = await FaultLab.start({
    label: `bench-fo-out-${p.name.split(' ')[0]}`,
    apps: [
      { app: 'web', replicas: 2 },
      { app: 'api', replicas: 2 },
    ],
    timings: p,
    faketimeScheduler: faketime,
    log,
  });
  current = fl;
  const rows: OutageRow[] = [];
  const skipped = ['vCenter frozen 30 s (no vCenter in this lab)', 'vmware-agent killed 30 s (no vCenter in this lab)'];
  let requests = 0;
  let duplicates = 0;
  try {
    const s1 = fl.lab.servers[0]!;
    const faults: [string, () => Promise<void>][] = [
      ['NATS down 20 s', () => fl.natsDown(20)],
      [`docker-agent ${s1.id} killed 30 s`, () => fl.agentKilled(s1, 30)],
      [`docker-agent ${s1.id} SIGSTOP 25 s`, () => fl.agentFrozen(s1, 25)],
      [`dockerd ${s1.id} SIGSTOP 20 s`, () => fl.engineFrozen(s1, 20)],
      ['scheduler + ipam killed 20 s', () => fl.controlPlaneKilled(20)],
    ];
    if (faketime && fl.opts.faketimeScheduler) {
      faults.push([
        "scheduler's wall clock +15 s",
        async () => {
          await fl.stepSchedulerClock(15);
          await sleep(20_000);
        },
      ]);
    } else skipped.push("scheduler's wall clock +15 s (no libfaketime)");
    for (const [name, inject] of faults) {
      const o = await fl.observe(name, inject);
      const unanswered = Object.values(o.wire.ips).reduce((n, r) => n + (r.requests - r.answered), 0);
      rows.push({ profile: p, outcome: o, unanswered });
      log(
        `outage ${name} (${p.name}): longest silence ${fmt(o.maxGap, 1)} s, ${unanswered} unanswered, ${o.duplicates} duplicate(s), ${o.violations.length} violation(s)`,
      );
      if (o.violations.length > 0) log(o.details);
    }
  } finally {
    current = undefined;
    const all = await fl.close();
    if (all) {
      duplicates = all.duplicates;
      requests = Object.values(all.ips).reduce((n, r) => n + r.requests, 0);
    }
  }
  return { rows, skipped, requests, duplicates };
}

async function main(): Promise<number> {
  const cpuList = cpus();
  const machine = `${cpuList.length} cores, ${cpuList[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}`;
  log(`machine: ${machine}; ${ROUNDS} round(s) per profile; outages with ${OUTAGE_PROFILES.join(', ') || 'none'}`);
  const results: ProfileResult[] = [];
  for (const p of PROFILES) results.push(await hostLoss(p));
  const outs = [];
  for (const short of OUTAGE_PROFILES) {
    const p = PROFILES.find((x) => x.name.split(' ')[0] === short);
    if (!p) throw new Error(`BENCH_OUTAGES: unknown profile ${short} (default, fast)`);
    outs.push(await outages(p));
  }
  const out =
    outs.length === 0
      ? undefined
      : {
          rows: outs.flatMap((o) => o.rows),
          skipped: outs[0]!.skipped,
          requests: outs.reduce((n, o) => n + o.requests, 0),
          duplicates: outs.reduce((n, o) => n + o.duplicates, 0),
        };

  const lossRows = results.map((r) => {
    const p95 = percentile(r.times, 95) / 1000;
    return [
      r.profile.name,
      `${r.profile.heartbeat} / ${r.profile.lostAfter} / ${r.profile.fenceAfter} / ${r.profile.margin}`,
      `${r.times.length} of ${ROUNDS}`,
      fmt(percentile(r.times, 50) / 1000, 1),
      fmt(p95, 1),
      fmt((r.times[r.times.length - 1] ?? NaN) / 1000, 1),
      `${r.profile.target} (${r.profile.targetText})`,
      p95 <= r.profile.target && r.times.length === ROUNDS ? 'met' : '**not met**',
      `${fmt(percentile(r.silences, 50), 1)} / ${fmt(percentile(r.silences, 95), 1)}`,
      `${r.duplicates} of ${r.requests}`,
    ];
  });
  const lossTable = table(
    [
      'profile',
      'heartbeat / lost / fence / margin s',
      'failovers',
      'p50 s',
      'p95 s',
      'max s',
      'target p95 s',
      'target',
      'wire silence p50 / p95 s',
      'duplicates (ARP requests with 2+ replies)',
    ],
    lossRows,
  );
  let outageTable = '';
  let outageNote = '';
  if (out) {
    outageTable = table(
      ['profile', 'fault', 'longest silence s', 'unanswered requests', 'duplicates', 'moved', 'violations'],
      out.rows.map((r) => [
        r.profile.name,
        r.outcome.fault,
        fmt(Math.max(0, r.outcome.maxGap - TICK_S), 1),
        `${r.unanswered} of ${Object.values(r.outcome.wire.ips).reduce((n, x) => n + x.requests, 0)}`,
        r.outcome.duplicates,
        r.outcome.moves,
        r.outcome.violations.length === 0 ? 'none' : r.outcome.violations.join('; '),
      ]),
    );
    const silent = out.rows.filter((r) => r.unanswered > 0);
    const dups = out.rows.reduce((n, r) => n + r.outcome.duplicates, 0);
    outageNote =
      `Outages: one run of each fault per profile on 4 instances (web x2, api x2 over both servers), each fault followed by recovery and fenceAfter + margin + 2 s of watching; ` +
      `silence = the longest time between two answered ARP requests to one instance IP, less the 0.2 s between requests (0.0: every request answered). ` +
      `Target 0 s / 0 duplicates: ${silent.length === 0 && dups === 0 ? 'met' : `not met (${silent.length} fault(s) with unanswered requests, ${dups} duplicate(s))`}. ` +
      `Watcher total over the outage labs: ${out.duplicates} duplicate(s) in ${out.requests} requests. Not run: ${out.skipped.join('; ')}.`;
  }
  const totalDuplicates = results.reduce((n, r) => n + r.duplicates, 0) + (out?.duplicates ?? 0);
  const problems = results.flatMap((r) => r.problems.map((x) => `${r.profile.name}: ${x}`));
  const lossNote =
    `Host loss: time from the server's death (agent SIGKILLed, engine stopped, uplink cut) to the replacement answering HTTP on the same IP from a legacy VM; ` +
    `the server returns (uplink, engine, agent) before the next round. Wire silence: the longest time without an ARP answer for that IP in the round, from the watcher on the fabric (a request every 0.2 s). ` +
    `Duplicates: requests with two or more replies over the watcher's whole life in that profile's lab (must be 0). ` +
    results
      .map((r) => {
        const p95 = percentile(r.times, 95) / 1000;
        return (
          `${r.profile.name}: p95 ${fmt(p95, 1)} s against <= ${r.profile.target} s: ${p95 <= r.profile.target && r.times.length === ROUNDS ? 'met' : 'not met'} ` +
          `(nothing moves before the host has been silent for fenceAfter + margin = ${r.profile.fenceAfter + r.profile.margin} s since its last heartbeat); ` +
          `rounds in order (s): ${r.order.map((ms) => fmt(ms / 1000, 1)).join(', ')}.`
        );
      })
      .join(' ') +
    (problems.length > 0 ? ` Failed rounds: ${problems.join('; ')}.` : '') +
    ` Duplicates in total: ${totalDuplicates}.`;
  const header = `<!-- written by npm run bench:failover on ${new Date().toISOString()}; ${ROUNDS} rounds per profile; ${cpuList.length}-core machine -->`;
  const body = [`Machine: ${machine}.`, '', lossTable, '', lossNote, ...(out ? ['', outageTable, '', outageNote] : [])].join('\n');
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/failover.md', `${header}\n${body}\n`);
  process.stdout.write(`${body}\n`);
  log(`done in ${Math.round((Date.now() - started) / 60_000)} min`);
  return totalDuplicates > 0 ? 1 : 0;
}

let exiting = false;
async function cleanup(code: number, why: string): Promise<void> {
  if (exiting) process.exit(code);
  exiting = true;
  log(`${why}: cleaning up`);
  await current?.close().catch((e: unknown) => log(`cleanup: ${String(e)}`));
  process.exit(code);
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void cleanup(130, sig));
setTimeout(() => void cleanup(1, 'hard stop: over the time bound'), (30 + 3 * ROUNDS) * 60_000).unref();

main().then(
  (code) => process.exit(code),
  async (e: unknown) => {
    process.stderr.write(`[bench:failover] failed: ${e instanceof Error ? e.stack : String(e)}\n`);
    await cleanup(1, 'failure');
  },
);

/**
 * npm run chaos: random faults, one at a time, against the whole control plane in the lab,
 * with the ARP watcher on every instance IP throughout (issue 12, CONTRACT.md "Failure
 * semantics (v1.1)").
 *
 *   npm run chaos                       # 10 minutes
 *   npm run chaos -- --minutes 3        # or CHAOS_MINUTES=3; at most 120
 *   npm run chaos -- --seed 42          # or CHAOS_SEED: the same sequence of faults again
 *   npm run chaos -- --faults nats-down,agent-frozen   # or CHAOS_FAULTS: a subset
 *
 * Builds nothing itself (the npm script builds first). Starts its own lab (2 docker servers,
 * 1 legacy VM), NATS, MariaDB (a fresh database in ORANGERY_DB_URL's server when that is
 * set, else a private mariadbd), ipam, two docker-agents, the scheduler, and apps web x2 and
 * api x2 (test/integration/fixtures/fault-lab.ts). Then, until the time is up, one fault
 * after another, each followed by recovery and fenceAfter + margin + 2 s of watching:
 *   nats-down 20 s | agent-killed 30 s | agent-frozen 25 s (SIGSTOP) | engine-frozen 20 s
 *   (dockerd SIGSTOP) | control-plane-killed 20 s (scheduler + ipam) | clock-step +15 s on
 *   the scheduler (libfaketime; left out without it) | host-isolated (uplink cut, agent on
 *   NATS) | host-dead (agent, engine, uplink) -- the last two move instances, the others
 *   must not.
 * Prints a table (fault, duration, moves, max gap, duplicates, violations) and exits 1 when
 * any request got two replies (a second holder of an IP on the wire), else 0. Violations
 * (a gap over 3 s or a move where nothing may move) are listed but do not fail the run.
 * Bounded: the last fault starts only if it can end in time; a hard stop at the duration +
 * 10 min. Ctrl-C (or SIGTERM): resumes frozen processes, restores uplinks, stops the
 * watcher, the services and the lab, then exits 130. A second Ctrl-C exits at once; the next
 * lab setup sweeps what is left.
 */
import { randomInt } from 'node:crypto';
import { FaultLab, type FaultOutcome } from '../test/integration/fixtures/fault-lab';
import type { LabServer } from '../test/lab';

const log = (m: string) => process.stderr.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${m}\n`);

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0) return process.argv[i + 1];
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  return eq?.slice(name.length + 3);
}

const minutes = Number(arg('minutes') ?? process.env['CHAOS_MINUTES'] ?? 10);
if (!Number.isFinite(minutes) || minutes <= 0 || minutes > 120) {
  process.stderr.write('chaos: --minutes must be in (0, 120]\n');
  process.exit(2);
}
let seed = Number(arg('seed') ?? process.env['CHAOS_SEED'] ?? randomInt(1, 2 ** 31));
/** mulberry32: a small seeded generator, so a run can be repeated with --seed. */
function random(): number {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;

interface Fault {
  name: string;
  /** Upper bound of its wall time (s), fault + recovery + watching, to decide whether it still fits. */
  budget: number;
  run: (fl: FaultLab) => Promise<FaultOutcome>;
}

const server = (fl: FaultLab): LabServer => pick(fl.lab.servers);
/** The server that runs the most instances (a moving fault there moves something). */
async function busiest(fl: FaultLab): Promise<LabServer> {
  const list = await fl.instances();
  const n = (s: LabServer) => list.filter((i) => i.host === s.id).length;
  return [...fl.lab.servers].sort((a, b) => n(b) - n(a))[0]!;
}

const FAULTS: Fault[] = [
  { name: 'nats-down', budget: 60, run: (fl) => fl.observe('NATS down 20 s', () => fl.natsDown(20)) },
  {
    name: 'agent-killed',
    budget: 75,
    run: (fl) => {
      const s = server(fl);
      return fl.observe(`agent ${s.id} killed 30 s`, () => fl.agentKilled(s, 30));
    },
  },
  {
    name: 'agent-frozen',
    budget: 70,
    run: (fl) => {
      const s = server(fl);
      return fl.observe(`agent ${s.id} SIGSTOP 25 s`, () => fl.agentFrozen(s, 25));
    },
  },
  {
    name: 'engine-frozen',
    budget: 65,
    run: (fl) => {
      const s = server(fl);
      return fl.observe(`dockerd ${s.id} SIGSTOP 20 s`, () => fl.engineFrozen(s, 20));
    },
  },
  { name: 'control-plane-killed', budget: 75, run: (fl) => fl.observe('scheduler + ipam killed 20 s', () => fl.controlPlaneKilled(20)) },
  {
    name: 'clock-step',
    budget: 60,
    run: (fl) =>
      fl.observe('scheduler wall clock +15 s', async () => {
        await fl.stepSchedulerClock(15);
        await new Promise((r) => setTimeout(r, 20_000));
      }),
  },
  { name: 'host-isolated', budget: 120, run: async (fl) => fl.observeMove('isolated', await busiest(fl)) },
  { name: 'host-dead', budget: 150, run: async (fl) => fl.observeMove('dead', await busiest(fl)) },
];

function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(cells[0]!), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...cells.slice(1).map(line)].join('\n');
}

async function main(): Promise<number> {
  const only = (arg('faults') ?? process.env['CHAOS_FAULTS'] ?? '').split(',').filter(Boolean);
  for (const f of only) if (!FAULTS.some((x) => x.name === f)) throw new Error(`unknown fault ${f}; known: ${FAULTS.map((x) => x.name).join(', ')}`);
  let faults = FAULTS.filter((f) => only.length === 0 || only.includes(f.name));
  const startSeed = seed;
  log(`duration ${minutes} min, seed ${startSeed}`);
  const t0 = Date.now();
  const deadline = t0 + minutes * 60_000;
  // Ctrl-C during setup waits for the setup to finish, then tears it down.
  const state: { starting?: Promise<FaultLab> } = {};
  let interrupted = false;
  const outcomes: FaultOutcome[] = [];
  const hardStop = setTimeout(
    () => {
      log('hard stop: over the duration + 10 min');
      void shutdown(1);
    },
    minutes * 60_000 + 600_000,
  );
  hardStop.unref();

  let closing: Promise<void> | undefined;
  async function shutdown(code: number): Promise<void> {
    closing ??= (async () => {
      log('cleaning up: frozen processes resumed, uplinks restored, watcher, services and lab stopped');
      const lab = await state.starting?.catch(() => undefined);
      await lab?.close().catch((e: unknown) => log(`cleanup: ${String(e)}`));
      process.exit(code);
    })();
    await closing;
  }
  let signals = 0;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      signals++;
      interrupted = true;
      if (signals > 1) {
        log('second signal: exiting now (the next lab setup sweeps what is left)');
        process.exit(130);
      }
      log(`${sig}: stopping`);
      printTable(outcomes, startSeed, t0);
      void shutdown(130);
    });
  }

  state.starting = FaultLab.start({ label: 'chaos', faketimeScheduler: true, log });
  const fl = await state.starting;
  if (!FaultLab.faketimeAvailable) {
    log('libfaketime missing (Debian package faketime): clock-step left out');
    faults = faults.filter((f) => f.name !== 'clock-step');
  }
  if (faults.length === 0) throw new Error('no fault to run');
  let last = '';
  try {
    while (!interrupted) {
      const left = (deadline - Date.now()) / 1000;
      const fits = faults.filter((f) => f.budget <= left);
      if (fits.length === 0) break;
      // never the same fault twice in a row when there is a choice
      const f = pick(fits.length > 1 ? fits.filter((x) => x.name !== last) : fits);
      last = f.name;
      const o = await f.run(fl);
      outcomes.push(o);
      if (o.violations.length > 0) log(o.details);
    }
  } catch (e) {
    if (!interrupted) await fl.close().catch(() => undefined);
    throw e;
  }
  if (interrupted) return new Promise<number>(() => undefined); // shutdown() exits
  const dup = printTable(outcomes, startSeed, t0);
  const rep = await fl.close();
  if (rep) log(`watcher over the whole run: ${rep.duplicates} duplicate(s), ${Object.keys(rep.ips).length} IPs`);
  return dup > 0 || (rep?.duplicates ?? 0) > 0 ? 1 : 0;
}

function printTable(outcomes: FaultOutcome[], startSeed: number, t0: number): number {
  const rows = outcomes.map((o, i) => [
    i + 1,
    o.fault,
    o.seconds.toFixed(0),
    o.moves,
    o.maxGap.toFixed(1),
    o.duplicates,
    o.violations.length === 0 ? '-' : o.violations.join('; ').slice(0, 160),
  ]);
  const dup = outcomes.reduce((n, o) => n + o.duplicates, 0);
  process.stdout.write(
    `\n${table(['#', 'fault', 'duration s', 'moves', 'max gap s', 'duplicates', 'violations'], rows)}\n\n` +
      `${outcomes.length} fault(s) in ${((Date.now() - t0) / 60_000).toFixed(1)} min, seed ${startSeed}; duplicates: ${dup}` +
      ` (requests that got two or more ARP replies; must be 0)\n`,
  );
  return dup;
}

main().then(
  (code) => process.exit(code),
  async (e: unknown) => {
    process.stderr.write(`[chaos] failed: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);

/**
 * Scheduler leader takeover benchmark (npm run bench:leader; issue 14: "a new scheduler
 * leader takes over within 5 s", p50/p95 over 10 kills). Real NATS, MariaDB and scheduler
 * processes (`node dist/services/scheduler/main.js`), two replicas at all times, each
 * behind its own userspace TCP proxy to NATS and to the database (libs/testing
 * BlackholeProxy). BENCH_ROUNDS rounds (default 10) per fault:
 * - SIGKILL: the leader's process is killed (the kernel closes its sockets);
 * - blackhole: the leader's proxies stop forwarding bytes both ways with both sockets open
 *   (no FIN, no RST: power loss or a partition; the database keeps its connections).
 * Measured from the fault to the standby's `elected scheduler leader` (the lease is
 * taken: the compare-and-set committed) and to its `leading: consuming scale requests`
 * (the journal loaded, the scale consumer started).
 * The faulted replica is then removed and a fresh one started, so every round starts
 * with a leader that has led for a while and a standby that has watched it.
 * Writes bench/results/leader.md; exits 1 when a round does not take over within 60 s.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { BlackholeProxy, freshDatabase, HarnessDir, NatsServer, ServiceProcess, waitFor } from '@orangery/testing';
import { fmt, percentile, table } from './lib';

const ROUNDS = Math.max(1, Math.min(100, Number(process.env['BENCH_ROUNDS'] ?? 10)));
const LEASE_SECONDS = Number(process.env['ORANGERY_LEADER_LEASE_SECONDS'] ?? 3);
const started = Date.now();
const log = (m: string) => process.stderr.write(`[bench:leader +${Math.round((Date.now() - started) / 1000)}s] ${m}\n`);

interface Replica {
  proc: ServiceProcess;
  db: BlackholeProxy;
  nats: BlackholeProxy;
}

const elected = (p: ServiceProcess) => p.hasLog('elected scheduler leader');
const leading = (p: ServiceProcess) => p.hasLog('leading: consuming scale requests');

async function main(): Promise<number> {
  const dir = new HarnessDir('bench-leader');
  const replicas: Replica[] = [];
  try {
    const nats = await NatsServer.start(dir);
    const dbUrl = await freshDatabase('bench_leader');
    const dbu = new URL(dbUrl);
    const nu = new URL(nats.url);
    const env = {
      ORANGERY_LEADER_LEASE_SECONDS: String(LEASE_SECONDS),
      ORANGERY_HEARTBEAT_SECONDS: '2',
      ORANGERY_LOST_AFTER_SECONDS: '6',
      LOG_LEVEL: 'info',
    };
    const startReplica = async (): Promise<Replica> => {
      const db = await BlackholeProxy.start({ host: dbu.hostname, port: Number(dbu.port) });
      const np = await BlackholeProxy.start({ host: nu.hostname, port: Number(nu.port) });
      const proc = await ServiceProcess.start(dir, 'scheduler', { ...env, ORANGERY_NATS_URL: np.rewrite(nats.url), ORANGERY_DB_URL: db.rewrite(dbUrl) });
      const r = { proc, db, nats: np };
      replicas.push(r);
      return r;
    };
    const first = await startReplica();
    await first.proc.waitForLog('leading: consuming scale requests', 60_000);
    await startReplica();

    const results: Record<'SIGKILL' | 'blackhole', { elected: number[]; leading: number[] }> = {
      SIGKILL: { elected: [], leading: [] },
      blackhole: { elected: [], leading: [] },
    };
    let failures = 0;
    for (let round = 0; round < ROUNDS * 2; round++) {
      const fault = round % 2 === 0 ? 'SIGKILL' : 'blackhole';
      const leader = replicas.find((r) => leading(r.proc) && r.proc.child.exitCode === null && !r.db.blackholed);
      const standby = replicas.find((r) => r !== leader && r.proc.child.exitCode === null);
      if (!leader || !standby) throw new Error('lost track of the leader and the standby');
      // the standby has watched a few renewals, as in production
      await new Promise((r) => setTimeout(r, LEASE_SECONDS * 1000));
      const t0 = performance.now();
      if (fault === 'SIGKILL') {
        leader.proc.child.kill('SIGKILL');
      } else {
        leader.db.blackhole();
        leader.nats.blackhole();
      }
      let tElected: number | undefined;
      try {
        await waitFor(
          'the standby to take over',
          () => {
            if (tElected === undefined && elected(standby.proc)) tElected = performance.now() - t0;
            return leading(standby.proc);
          },
          60_000,
          5,
        );
        const tLeading = performance.now() - t0;
        results[fault].elected.push(tElected ?? tLeading);
        results[fault].leading.push(tLeading);
        log(`round ${round + 1}/${ROUNDS * 2} ${fault}: elected after ${fmt((tElected ?? tLeading) / 1000, 2)} s, leading after ${fmt(tLeading / 1000, 2)} s`);
      } catch (e) {
        failures++;
        log(`round ${round + 1} ${fault}: ${String(e)}`);
      }
      // replace the faulted replica with a fresh one
      await leader.proc.kill9();
      await leader.db.close();
      await leader.nats.close();
      replicas.splice(replicas.indexOf(leader), 1);
      await startReplica();
    }

    const cpuList = cpus();
    const machine = `${cpuList.length} cores, ${cpuList[0]?.model.split(' ').slice(0, 2).join(' ') ?? 'unknown CPU'}, Node ${process.version}`;
    const s = (ms: number[], p: number) =>
      fmt(
        percentile(
          [...ms].sort((x, y) => x - y),
          p,
        ) / 1000,
        2,
      );
    const rows = (['SIGKILL', 'blackhole'] as const).map((f) => {
      const r = results[f];
      const p95 =
        percentile(
          [...r.leading].sort((x, y) => x - y),
          95,
        ) / 1000;
      return [
        f,
        `${r.elected.length} of ${ROUNDS}`,
        s(r.elected, 50),
        s(r.elected, 95),
        s(r.leading, 50),
        s(r.leading, 95),
        fmt(Math.max(...r.leading) / 1000, 2),
        r.leading.length === ROUNDS && p95 <= 5 ? 'met' : '**not met**',
      ];
    });
    const tbl = table(['fault', 'takeovers', 'lease taken p50 s', 'p95 s', 'leading p50 s', 'p95 s', 'max s', 'target: leading p95 <= 5 s'], rows);
    const note =
      `Lease ${LEASE_SECONDS} s (renewed every ${fmt(LEASE_SECONDS / 3, 2)} s; the leader yields at ${fmt((LEASE_SECONDS * 5) / 6, 2)} s without a renewal; candidates poll every ${fmt(LEASE_SECONDS / 6, 2)} s). ` +
      `"lease taken": from the fault to the standby's compare-and-set on sched_leader; "leading": to its journal loaded and its scale consumer running (the heartbeats it heard as a standby stand for a new leader's wait of min(2.5 s, lostAfter / 2)). ` +
      `Rounds in order (leading, s): SIGKILL ${results.SIGKILL.leading.map((ms) => fmt(ms / 1000, 2)).join(', ')}; blackhole ${results.blackhole.leading.map((ms) => fmt(ms / 1000, 2)).join(', ')}.`;
    const header = `<!-- written by npm run bench:leader on ${new Date().toISOString()}; ${ROUNDS} rounds per fault; ${cpuList.length}-core machine -->`;
    const body = [`Machine: ${machine}.`, '', tbl, '', note].join('\n');
    mkdirSync('bench/results', { recursive: true });
    writeFileSync('bench/results/leader.md', `${header}\n${body}\n`);
    process.stdout.write(`${body}\n`);
    return failures > 0 ? 1 : 0;
  } finally {
    for (const r of replicas) {
      await r.db.close().catch(() => undefined);
      await r.nats.close().catch(() => undefined);
    }
    await dir.cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench:leader failed: ${String(e)}\n`);
    process.exit(1);
  },
);

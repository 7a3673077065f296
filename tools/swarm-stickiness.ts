/**
 * What Docker Swarm keeps of a task when it restarts or moves, measured on the lab's swarm
 * (node tools/run-ts.mjs tools/swarm-stickiness.ts; root, under the lab lock:
 * `flock /tmp/orangery-lab.lock node tools/run-ts.mjs tools/swarm-stickiness.ts`).
 *
 * The setup is the one the swarm-agent uses (docs/swarm-agent.md): 3 nodes, each with its
 * own config-only macvlan network whose --ip-range is that node's block, one swarm-scoped
 * macvlan network made --config-from them, nodes labelled orangery.net.<pool>=1, and one
 * swarm service per slot (replicas 1, not pinned to a node, constraint on that label),
 * swarm's default restart policy (condition any, delay 5 s). Then, repeated:
 *   - kill:   the task's container is SIGKILLed on its node (a crash);
 *   - update: `service update --force` (a redeploy);
 *   - drain:  the node of a task is drained, then set active again;
 *   - down:   a worker node running a task is cut off the fabric (its veth down), then restored.
 * For each: on which node the new task runs, whether it kept its IP, and how long until the
 * new task runs (manager's view, polled every ~0.3 s) and answers ARP on the fabric.
 * Writes bench/results/swarm-stickiness.md (figures for docs/swarm-stickiness.md).
 * Bounded: every wait has a deadline; the lab is torn down in every case.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { Lab, LAB_GATEWAY, LAB_IMAGES, LAB_SUBNET, type LabSwarmTask } from '../test/lab';
import { fmtRepeated, machineLine, REPEATS, repeated, table } from '../bench/lib';

const NODES = 3;
const SLOTS = 4;
const TRIALS = Math.max(REPEATS, Number(process.env['STICKINESS_TRIALS'] ?? 6) || 6);
const CFG = 'olab-stcfg';
const NET = 'olab-stnet';
const LABEL = 'orangery.net.lab';
const svcName = (slot: number) => `olab-st-${slot}`;
/** Node i's block of the lab segment: 198.18.200.0/26, .64/26, .128/26. */
const block = (i: number) => `198.18.200.${(i - 1) * 64}/26`;
const blockOf = (ip: string): number | undefined => {
  const m = /^198\.18\.200\.(\d+)$/.exec(ip);
  return m ? Math.floor(Number(m[1]) / 64) + 1 : undefined;
};
const log = (m: string) => process.stderr.write(`[swarm-stickiness] ${m}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Placed {
  task: string;
  node: string;
  ip: string;
  containerId: string;
}

interface Trial {
  kind: string;
  before: Placed;
  after: Placed;
  /** ms from the action until the manager reports the new task running with its address */
  runningMs: number;
  /** ms from the action until the new address answers ARP on the fabric */
  arpMs: number;
  note?: string;
}

async function main(): Promise<void> {
  const lab = await Lab.setup({ servers: 0, legacyVms: 1 });
  const trials: Trial[] = [];
  const extra: string[] = [];
  try {
    const swarm = await lab.addSwarm({ nodes: NODES });
    log(`swarm of ${NODES} up in ${lab.timings.swarmMs} ms`);
    for (const n of swarm.nodes) {
      await lab.docker(n, [
        'network',
        'create',
        '--config-only',
        '--subnet',
        LAB_SUBNET,
        '--gateway',
        LAB_GATEWAY,
        '--ip-range',
        block(n.node),
        '-o',
        `parent=${swarm.uplink}`,
        CFG,
      ]);
      await lab.swarmDocker(['node', 'update', '--label-add', `${LABEL}=1`, swarm.nodeIds[n.hostname]!]);
    }
    await lab.swarmDocker(['network', 'create', '-d', 'macvlan', '--scope', 'swarm', '--config-from', CFG, NET]);
    for (let slot = 0; slot < SLOTS; slot++) {
      await lab.swarmDocker([
        'service',
        'create',
        '-d',
        '--name',
        svcName(slot),
        '--replicas',
        '1',
        '--constraint',
        `node.labels.${LABEL}==1`,
        '--label',
        `orangery.slot=${slot}`,
        '--network',
        NET,
        '--no-resolve-image',
        LAB_IMAGES.svc,
      ]);
    }

    /** The slot's one running task (desired running, state running, address known). */
    const running = async (slot: number): Promise<Placed | undefined> => {
      const ts = (await lab.swarmTasks(svcName(slot))).filter((t: LabSwarmTask) => t.desired === 'running' && t.state === 'running' && t.ips[NET]);
      const t = ts[0];
      return t && ts.length === 1 ? { task: t.id, node: t.node!, ip: t.ips[NET]!, containerId: t.containerId! } : undefined;
    };
    const waitRunning = async (slot: number, notTask: string | undefined, timeoutMs = 90_000): Promise<Placed> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const p = await running(slot);
        if (p && p.task !== notTask) return p;
        if (Date.now() > deadline) throw new Error(`slot ${slot}: no new running task within ${timeoutMs} ms`);
        await sleep(100);
      }
    };
    const waitArp = async (ip: string, t0: number, timeoutMs = 30_000): Promise<number> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (await lab.arpProbe(ip, { count: 1, timeoutSec: 1 })) return performance.now() - t0;
        if (Date.now() > deadline) return NaN;
      }
    };
    const initial: Placed[] = [];
    for (let slot = 0; slot < SLOTS; slot++) initial.push(await waitRunning(slot, undefined));
    log(`slots placed: ${initial.map((p, s) => `${s}@${p.node} ${p.ip}`).join(', ')}`);

    // --- kill: the container dies on its node; swarm replaces the task.
    for (let k = 0; k < TRIALS; k++) {
      const slot = k % SLOTS;
      const before = await waitRunning(slot, undefined);
      const t0 = performance.now();
      await lab.docker(before.node, ['kill', before.containerId]);
      const after = await waitRunning(slot, before.task);
      const runningMs = performance.now() - t0;
      trials.push({ kind: 'kill', before, after, runningMs, arpMs: await waitArp(after.ip, t0) });
      log(`kill slot ${slot}: ${before.node} ${before.ip} -> ${after.node} ${after.ip} in ${Math.round(runningMs)} ms`);
    }

    // --- update --force: a redeploy of the same spec.
    for (let k = 0; k < REPEATS; k++) {
      const slot = k % SLOTS;
      const before = await waitRunning(slot, undefined);
      const t0 = performance.now();
      await lab.swarmDocker(['service', 'update', '-d', '--force', '--no-resolve-image', svcName(slot)]);
      const after = await waitRunning(slot, before.task);
      const runningMs = performance.now() - t0;
      trials.push({ kind: 'update', before, after, runningMs, arpMs: await waitArp(after.ip, t0) });
      log(`update slot ${slot}: ${before.node} ${before.ip} -> ${after.node} ${after.ip} in ${Math.round(runningMs)} ms`);
    }

    // --- drain: every task of the drained node moves; set active again, nothing moves back.
    for (let k = 0; k < REPEATS; k++) {
      const slot = k % SLOTS;
      const before = await waitRunning(slot, undefined);
      const t0 = performance.now();
      await lab.setNodeAvailability(before.node, 'drain');
      const after = await waitRunning(slot, before.task);
      const runningMs = performance.now() - t0;
      trials.push({ kind: 'drain', before, after, runningMs, arpMs: await waitArp(after.ip, t0) });
      log(`drain ${before.node} (slot ${slot}): -> ${after.node} ${after.ip} in ${Math.round(runningMs)} ms`);
      // Everything off that node before it comes back.
      for (let s = 0; s < SLOTS; s++) {
        const p = await waitRunning(s, undefined);
        if (p.node === before.node) throw new Error(`slot ${s} still on drained ${before.node}`);
      }
      await lab.setNodeAvailability(before.node, 'active');
      await sleep(3_000);
      const moved = [];
      for (let s = 0; s < SLOTS; s++) if ((await waitRunning(s, undefined)).node === before.node) moved.push(s);
      if (k === 0)
        extra.push(
          `After a drained node is set active again, ${moved.length} of ${SLOTS} slots moved back to it within 3 s (swarm does not rebalance running tasks).`,
        );
    }

    // --- down: a worker node holding a task is cut off the fabric (the manager, node 1, stays).
    for (let k = 0; k < REPEATS; k++) {
      let slot = -1;
      let before: Placed | undefined;
      for (let s = 0; s < SLOTS && !before; s++) {
        const p = await waitRunning(s, undefined);
        if (p.node !== swarm.manager.hostname) [slot, before] = [s, p];
      }
      if (!before) {
        // Every slot on the manager: move one off by a forced update until it lands elsewhere.
        for (let tries = 0; tries < 10 && !before; tries++) {
          const p = await waitRunning(0, undefined);
          await lab.swarmDocker(['service', 'update', '-d', '--force', '--no-resolve-image', svcName(0)]);
          const q = await waitRunning(0, p.task);
          if (q.node !== swarm.manager.hostname) [slot, before] = [0, q];
        }
      }
      if (!before) throw new Error('no task off the manager node');
      const t0 = performance.now();
      await lab.cutUplink(before.node);
      let downMs = NaN;
      const after = await (async () => {
        const deadline = Date.now() + 120_000;
        for (;;) {
          if (Number.isNaN(downMs) && (await lab.swarmNodeStates())[before.node]?.state === 'down') downMs = performance.now() - t0;
          const p = await running(slot);
          if (p && p.task !== before.task && p.node !== before.node) return p;
          if (Date.now() > deadline) throw new Error(`slot ${slot}: not rescheduled within 120 s of cutting ${before.node}`);
          await sleep(200);
        }
      })();
      const runningMs = performance.now() - t0;
      const arpMs = await waitArp(after.ip, t0);
      // The cut-off node's engine is still reachable over its unix socket: is the old container still running?
      const oldStillRunning = (await lab.docker(before.node, ['ps', '-q', '--no-trunc'])).split('\n').includes(before.containerId);
      const t1 = performance.now();
      await lab.restoreUplink(before.node);
      let oldGoneMs = NaN;
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        if (!(await lab.docker(before.node, ['ps', '-q', '--no-trunc'])).split('\n').includes(before.containerId)) {
          oldGoneMs = performance.now() - t1;
          break;
        }
        await sleep(200);
      }
      await (async () => {
        const d = Date.now() + 60_000;
        while ((await lab.swarmNodeStates())[before.node]?.state !== 'ready' && Date.now() < d) await sleep(250);
      })();
      const note = `node reported down after ${Math.round(downMs)} ms; old container still running while cut off: ${oldStillRunning}; removed ${Number.isNaN(oldGoneMs) ? 'not within 120 s' : `${Math.round(oldGoneMs)} ms`} after the node came back`;
      trials.push({ kind: 'down', before, after, runningMs, arpMs, note });
      log(`down ${before.node} (slot ${slot}): -> ${after.node} ${after.ip} in ${Math.round(runningMs)} ms; ${note}`);
    }

    // --- report
    const rows = ['kill', 'update', 'drain', 'down'].map((kind) => {
      const ts = trials.filter((t) => t.kind === kind);
      const sameNode = ts.filter((t) => t.after.node === t.before.node).length;
      const sameIp = ts.filter((t) => t.after.ip === t.before.ip).length;
      const inOwnBlock = ts.filter((t) => blockOf(t.after.ip) === lab.swarmNode(t.after.node).node).length;
      return [
        kind,
        ts.length,
        `${sameNode}/${ts.length}`,
        `${sameIp}/${ts.length}`,
        `${inOwnBlock}/${ts.length}`,
        fmtRepeated(repeated(ts.map((t) => t.runningMs / 1000))),
        fmtRepeated(repeated(ts.map((t) => t.arpMs / 1000))),
      ];
    });
    const detail = trials.map((t) => [
      t.kind,
      `${t.before.node} ${t.before.ip}`,
      `${t.after.node} ${t.after.ip}`,
      (t.runningMs / 1000).toFixed(1),
      t.note ?? '',
    ]);
    const out = [
      `Lab swarm of ${NODES} nodes (Docker ${(await lab.swarmDocker(['version', '--format', '{{.Server.Version}}'])).trim()}, API ${(await lab.swarmDocker(['version', '--format', '{{.Server.APIVersion}}'])).trim()}), ${SLOTS} slots = ${SLOTS} services of 1 replica, default restart policy (any, delay 5 s), one config-only macvlan network per node with the node's /26 as --ip-range.`,
      '',
      table(['event', 'trials', 'same node', 'same IP', 'IP in new node block', 'until running, s: median (min-max)', 'until ARP, s: median (min-max)'], rows),
      '',
      ...extra,
      '',
      '<details><summary>every trial</summary>',
      '',
      table(['event', 'before', 'after', 'running after s', 'note'], detail),
      '',
      '</details>',
      '',
      machineLine(),
      '',
    ].join('\n');
    process.stdout.write(`\n${out}`);
    mkdirSync('bench/results', { recursive: true });
    writeFileSync('bench/results/swarm-stickiness.md', `<!-- written by tools/swarm-stickiness.ts on ${new Date().toISOString()} -->\n${out}`);
  } finally {
    await lab.teardown();
  }
}

main().catch((e) => {
  process.stderr.write(`[swarm-stickiness] failed: ${String(e?.stack ?? e)}\n`);
  process.exit(1);
});

import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, REPO_ROOT } from '@orangery/testing';
import { labResidue } from '../lab';

// `npm start` with the demo (issue 15), end to end: deploy/local/start.sh --detach on private
// ports and a private run dir, as a user runs it on a machine with no agent configured; the
// dashboard URL and token it prints answer, the apps run on both backends, and
// `start.sh stop` leaves no lab behind. The demo takes the lab lock itself, or runs under
// an ancestor holding it (`flock /tmp/orangery-lab.lock npm test`).
const runDir = join(REPO_ROOT, '.run', 'demo-test');
let env: Record<string, string>;
let started: { code: number | null; out: string };
let stopped: { code: number | null; out: string } | undefined;

function startSh(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['deploy/local/start.sh', ...args], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const t = setTimeout(() => {
      child.kill('SIGTERM');
      reject(new Error(`start.sh ${args.join(' ')} still running after ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

const field = (name: string) => new RegExp(`^  ${name} +(\\S+)`, 'm').exec(started.out)?.[1];

beforeAll(async () => {
  const [nats, mon, db, consolePort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => v !== undefined && !/^ORANGERY_/.test(k)) as [string, string][]);
  env = {
    ...inherited,
    ORANGERY_RUN_DIR: runDir,
    ORANGERY_LOCAL_NATS_PORT: String(nats),
    ORANGERY_LOCAL_NATS_MONITOR_PORT: String(mon),
    ORANGERY_LOCAL_DB_PORT: String(db),
    ORANGERY_CONSOLE_ADDR: `127.0.0.1:${consolePort}`,
  };
  rmSync(runDir, { recursive: true, force: true });
  started = await startSh(['--detach'], 240_000);
}, 250_000);

afterAll(async () => {
  if (!stopped) await startSh(['stop'], 150_000).catch(() => undefined);
  await new Promise<void>((resolve) => {
    const c = spawn('bash', ['deploy/local/infra.sh', 'down', 'dev', '--wipe'], { cwd: REPO_ROOT, env, stdio: 'ignore' });
    c.on('exit', () => resolve());
  });
  rmSync(runDir, { recursive: true, force: true });
}, 180_000);

describe('npm start with the demo', () => {
  it('prints a dashboard URL and an operator token that answer: demo/hello runs 3 containers, demo/legacy 3 VMs', async () => {
    expect(started.code, started.out).toBe(0);
    expect(started.out).toMatch(/^ {2}demo {8}running/m);
    const token = field('token')!;
    const dashboard = field('dashboard')!;
    expect(token, started.out).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(dashboard).toBe(`http://${env['ORANGERY_CONSOLE_ADDR']}/?token=${token}`);
    expect((await fetch(dashboard)).status).toBe(200);

    const api = `http://${env['ORANGERY_CONSOLE_ADDR']}/api/v1/instances?env=demo`;
    expect((await fetch(api)).status).toBe(401);
    const res = await fetch(api, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const { instances } = (await res.json()) as { instances: { app: string; state: string; backend: string; host: string; ip: string }[] };
    const why = `${JSON.stringify(instances)}\n${started.out}`;
    const of = (app: string) => instances.filter((i) => i.app === app);
    expect(
      of('hello').map((i) => [i.state, i.backend]),
      why,
    ).toEqual(Array(3).fill(['running', 'docker']));
    expect(new Set(of('hello').map((i) => i.host)), why).toEqual(new Set(['olab-s1', 'olab-s2']));
    expect(
      of('legacy').map((i) => [i.state, i.backend]),
      why,
    ).toEqual(Array(3).fill(['running', 'vmware']));
    expect(
      of('legacy')
        .map((i) => i.host)
        .sort(),
      why,
    ).toEqual(['esx01-lab-local', 'esx02-lab-local', 'esx03-lab-local']);
    for (const i of instances) expect(i.ip).toMatch(/^198\.18\./);

    // the token is on the terminal only: no log file under the run dir holds it
    const logs = join(runDir, 'logs');
    for (const f of readdirSync(logs)) expect(readFileSync(join(logs, f), 'utf8').includes(token), f).toBe(false);
    expect((await labResidue()).netns.length).toBeGreaterThan(0);
  });

  it('start.sh stop: the demo scales both apps to 0, stops its agents and tears the lab down', async () => {
    stopped = await startSh(['stop'], 150_000);
    expect(stopped.code, stopped.out).toBe(0);
    expect(stopped.out).toMatch(/stopped the demo/);
    const left = await labResidue();
    expect({ ...left, dirs: [] }).toEqual({ interfaces: [], netns: [], processes: [], mounts: [], cgroups: [], dirs: [] });
    expect(existsSync(join(runDir, 'demo.pid'))).toBe(false);
    expect(readdirSync(runDir).filter((f) => f.startsWith('demo-'))).toEqual([]);
    const demoLog = readFileSync(join(runDir, 'logs', 'demo.log'), 'utf8');
    expect(demoLog).toMatch(/^demo: stopped after/m);
  });
});

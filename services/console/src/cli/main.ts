import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { EnvRecord, HostSummary, InstanceSummary, MigrationView, PoolWithUsage } from '@orangery/contracts';
import { ConsoleClient, Refusal } from './console-client';
import { labels, ratio, table } from './format';

/**
 * `orangery`, the operators' CLI (CONTRACT.md "Console"): it talks to the console at
 * ORANGERY_CONSOLE_URL with ORANGERY_TOKEN. Tables for people, `--json` for scripts; exit
 * 0 on success, 1 on a refusal (the code and message printed), 2 on bad usage.
 */
export const EXIT_OK = 0;
export const EXIT_REFUSED = 1;
export const EXIT_USAGE = 2;
const DEFAULT_URL = 'http://127.0.0.1:7480';

class UsageError extends Error {}

const out = (s: string): void => void process.stdout.write(s);
const json = (v: unknown): void => out(`${JSON.stringify(v, null, 2)}\n`);

function client(): ConsoleClient {
  const token = process.env['ORANGERY_TOKEN']?.trim();
  if (!token) throw new UsageError('set ORANGERY_TOKEN to a console token (see docs/console.md)');
  const url = process.env['ORANGERY_CONSOLE_URL']?.trim() || DEFAULT_URL;
  try {
    new URL(url);
  } catch {
    throw new UsageError(`ORANGERY_CONSOLE_URL is not a URL: '${url}'`);
  }
  return new ConsoleClient(url, token);
}

const integer =
  (min: number, max: number) =>
  (v: string): number => {
    if (!/^-?\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new InvalidArgumentError(`must be an integer from ${min} to ${max}`);
    return Number(v);
  };
const positiveNumber = (v: string): number => {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number');
  return n;
};
const list = (v: string, prev: string[] = []): string[] => [
  ...prev,
  ...v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== ''),
];
const keyValue = (v: string, prev: Record<string, string> = {}): Record<string, string> => {
  const i = v.indexOf('=');
  if (i <= 0) throw new InvalidArgumentError('must be key=value');
  return { ...prev, [v.slice(0, i)]: v.slice(i + 1) };
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One progress line on stderr: rewritten in place on a terminal, a new line elsewhere when it changes. */
class Progress {
  private last = '';
  show(line: string): void {
    if (line === this.last) return;
    this.last = line;
    if (process.stderr.isTTY) process.stderr.write(`\r\x1b[2K${line}`);
    else process.stderr.write(`${line}\n`);
  }
  done(): void {
    if (process.stderr.isTTY && this.last !== '') process.stderr.write('\n');
  }
}

function deadline(seconds: number): () => boolean {
  const end = Date.now() + seconds * 1000;
  return () => Date.now() > end;
}

interface JsonOpt {
  json?: boolean;
}
interface WaitOpts extends JsonOpt {
  wait?: boolean;
  timeout: number;
  interval: number;
}

const instancesTable = (xs: readonly InstanceSummary[]) =>
  table(
    ['ID', 'STATE', 'BACKEND', 'HOST', 'IP', 'MAC'],
    xs.map((i) => [i.id, i.state, i.backend, i.host, i.ip, i.mac]),
  );

async function waitScale(c: ConsoleClient, requestId: string, env: string, app: string, replicas: number, o: WaitOpts): Promise<number> {
  const progress = new Progress();
  const late = deadline(o.timeout);
  for (;;) {
    const s = await c
      .call<{ state: string; reason?: { code: string; message: string; details?: unknown } }>('GET', `/api/v1/requests/${encodeURIComponent(requestId)}`)
      .catch((e: unknown) => {
        // The console learns of its own requests at once; another replica may lag a moment.
        if (e instanceof Refusal && e.code === 'NOT_FOUND') return { state: 'pending' as const };
        throw e;
      });
    const inst = await c.all<InstanceSummary>('/api/v1/instances', 'instances', { env, app });
    const running = inst.filter((i) => i.slot < replicas && i.state === 'running').length;
    progress.show(`scale ${env}/${app}: ${running}/${replicas} slots running (request ${s.state})`);
    if (s.state !== 'pending') {
      progress.done();
      if (o.json) json({ requestId, ...s });
      else if (s.state === 'completed') out(`scale ${env}/${app} completed: ${replicas} slots running\n${instancesTable(inst)}`);
      if (s.state === 'rejected') {
        if (!o.json) process.stderr.write(`error: ${s.reason?.code}: ${s.reason?.message}\n`);
        return EXIT_REFUSED;
      }
      return EXIT_OK;
    }
    if (late()) {
      progress.done();
      throw new Refusal(
        'TIMEOUT',
        `scale request ${requestId} still pending after ${o.timeout} s (it goes on; check it with GET /api/v1/requests/${requestId})`,
      );
    }
    await sleep(o.interval * 1000);
  }
}

const envsTable = (xs: readonly EnvRecord[]) =>
  table(
    ['NAME', 'BACKENDS', 'POOLS', 'HOST LABELS', 'DEFAULTS', 'UPDATED'],
    xs.map((e) => [
      e.name,
      e.backends.join(','),
      (e.pools ?? []).join(',') || '-',
      labels(e.hostLabels),
      [e.defaults?.backend ? `backend=${e.defaults.backend}` : '', e.defaults?.spread ? `spread=${e.defaults.spread}` : ''].filter(Boolean).join(' ') || '-',
      e.updatedAt,
    ]),
  );

interface EnvPutOpts extends JsonOpt {
  backends: string[];
  pools?: string[];
  label: Record<string, string>;
  defaultBackend?: string;
  defaultSpread?: string;
  allowPrivilegeEscalation?: boolean;
  pidsLimit?: number;
  addCapabilities?: string[];
}

const stepOf = (m: MigrationView): string => m.step ?? m.steps.at(-1)?.name ?? 'starting';

async function waitMigrations(c: ConsoleClient, ids: readonly string[], label: string, o: WaitOpts): Promise<{ code: number; views: MigrationView[] }> {
  const progress = new Progress();
  const late = deadline(o.timeout);
  for (;;) {
    const views = await Promise.all(ids.map((id) => c.call<MigrationView>('GET', `/api/v1/migrations/${encodeURIComponent(id)}`)));
    const ended = views.filter((m) => m.state !== 'running');
    const running = views.filter((m) => m.state === 'running');
    progress.show(
      ids.length === 1
        ? `${label}: ${views[0]!.state}, step ${stepOf(views[0]!)} (${views[0]!.steps.filter((s) => s.state === 'done').length} steps done)`
        : `${label}: ${ended.length}/${ids.length} migrations ended${running[0] ? `; ${running[0].instanceId} at ${stepOf(running[0])}` : ''}`,
    );
    if (running.length === 0) {
      progress.done();
      const failed = views.filter((m) => m.state === 'failed');
      return { code: failed.length > 0 ? EXIT_REFUSED : EXIT_OK, views };
    }
    if (late()) {
      progress.done();
      throw new Refusal('TIMEOUT', `${label}: still running after ${o.timeout} s (it goes on)`);
    }
    await sleep(o.interval * 1000);
  }
}

function migrationsReport(views: readonly MigrationView[], o: JsonOpt): void {
  if (o.json) return json(views.length === 1 ? views[0] : { migrations: views });
  out(
    table(
      ['MIGRATION', 'INSTANCE', 'STATE', 'FROM', 'TO', 'ERROR'],
      views.map((m) => [
        m.id,
        m.instanceId,
        m.state,
        m.from ? `${m.from.hostId}/${m.from.backend}` : '-',
        m.to ? `${m.to.hostId}/${m.to.backend}` : '-',
        m.error ? `${m.error.code}: ${m.error.message}` : '',
      ]),
    ),
  );
  for (const m of views.filter((v) => v.state === 'failed'))
    process.stderr.write(`error: ${m.error?.code ?? 'FAILED'}: ${m.id}: ${m.error?.message ?? 'failed'}\n`);
}

const waitOptions = (cmd: Command): Command =>
  cmd
    .option('--wait', 'wait until it completed or was rejected, showing progress on stderr')
    .addOption(new Option('--timeout <seconds>', 'with --wait: give up waiting after this long (exit 1)').default(900).argParser(integer(1, 86_400)))
    .addOption(new Option('--interval <seconds>', 'with --wait: seconds between polls').default(1).argParser(integer(1, 60)).hideHelp());

export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('orangery')
    .description(
      'Operate Orangery through its console (ORANGERY_CONSOLE_URL, default http://127.0.0.1:7480; ORANGERY_TOKEN).\n' +
        'Exit codes: 0 success, 1 refused (code and message printed), 2 bad usage.',
    )
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const withJson = (cmd: Command) => cmd.option('--json', 'print JSON for scripts instead of a table');

  const pools = withJson(program.command('pools').description('list the address pools with their usage; `pools create` makes one')).action(
    async (o: JsonOpt) => {
      const xs = await client().all<PoolWithUsage>('/api/v1/pools', 'pools');
      if (o.json) return json({ pools: xs });
      out(
        table(
          ['NAME', 'CIDR', 'GATEWAY', 'VLAN', 'SIZE', 'USED', 'FREE', 'QUARANTINED'],
          xs.map((p) => [p.name, p.cidr, p.gateway, p.vlan, p.size, p.used, p.free, p.quarantined]),
        ),
      );
    },
  );
  withJson(
    pools
      .command('create <name>')
      .description('create an address pool')
      .requiredOption('--cidr <cidr>', 'IPv4 a.b.c.d/n, host bits zero')
      .requiredOption('--gateway <ip>', 'the gateway, inside the cidr')
      .option('--vlan <id>', 'VLAN id, 0 (untagged) to 4094', integer(0, 4094))
      .option('--reserved <list>', 'addresses or ranges a-b never handed out, comma separated (repeatable)', list)
      .option('--cooldown <seconds>', 'seconds a released address waits before another owner may get it', integer(0, 86_400)),
  ).action(async (name: string, o: JsonOpt & { cidr: string; gateway: string; vlan?: number; reserved?: string[]; cooldown?: number }) => {
    const pool = await client().call<PoolWithUsage>('POST', '/api/v1/pools', {
      body: {
        name,
        cidr: o.cidr,
        gateway: o.gateway,
        ...(o.vlan !== undefined ? { vlan: o.vlan } : {}),
        ...(o.reserved ? { reserved: o.reserved } : {}),
        ...(o.cooldown !== undefined ? { cooldownSeconds: o.cooldown } : {}),
      },
    });
    if (o.json) return json(pool);
    out(`pool ${pool.name} created: ${pool.cidr} gateway ${pool.gateway} vlan ${pool.vlan}\n`);
  });

  withJson(program.command('hosts').description('list the hosts with their capacity and allocations')).action(async (o: JsonOpt) => {
    const xs = await client().all<HostSummary>('/api/v1/hosts', 'hosts');
    if (o.json) return json({ hosts: xs });
    out(
      table(
        ['ID', 'BACKEND', 'STATE', 'CPU', 'MEMORY MB', 'INSTANCES', 'LABELS'],
        xs.map((h) => [
          h.id,
          h.backend,
          h.state,
          ratio(h.allocated.cpu, h.capacity.cpu),
          ratio(h.allocated.memoryMb, h.capacity.memoryMb),
          h.instances,
          labels(h.labels),
        ]),
      ),
    );
  });

  withJson(
    program.command('instances').description('list the instances').option('--env <env>', 'only this environment').option('--app <app>', 'only this app'),
  ).action(async (o: JsonOpt & { env?: string; app?: string }) => {
    const xs = await client().all<InstanceSummary>('/api/v1/instances', 'instances', { env: o.env, app: o.app });
    if (o.json) return json({ instances: xs });
    out(instancesTable(xs));
  });

  withJson(
    waitOptions(
      program
        .command('scale <env/app>')
        .description('ask for N replicas of an app (a scale request); --wait follows it to its outcome')
        .requiredOption('--replicas <n>', 'how many slots', integer(0, 10_000))
        .option('--image <image>', 'container image (on the engines already)')
        .option('--template <name>', "VM template's name in vCenter")
        .addOption(new Option('--backend <backend>', 'where to run').choices(['auto', 'docker', 'vmware', 'swarm']))
        .option('--pool <pool>', 'the address pool')
        .addOption(new Option('--spread <spread>', 'host: one per host while others fit').choices(['host', 'none']))
        .option('--cpu <cores>', 'cores per instance', positiveNumber)
        .option('--memory <mb>', 'memory MB per instance', integer(16, 4_194_304))
        .option('--heap <mb>', 'JVM heap MB (memory gets head room above it)', integer(0, 4_194_304))
        .option('--disk <mb>', 'disk MB per instance', integer(0, 1_073_741_824)),
    ),
  ).action(
    async (
      target: string,
      o: WaitOpts & {
        replicas: number;
        image?: string;
        template?: string;
        backend?: string;
        pool?: string;
        spread?: string;
        cpu?: number;
        memory?: number;
        heap?: number;
        disk?: number;
      },
    ) => {
      const m = /^([^/]+)\/([^/]+)$/.exec(target);
      if (!m) throw new UsageError(`'${target}' is not <env>/<app>`);
      const [, env, app] = m as unknown as [string, string, string];
      const resources = {
        ...(o.cpu !== undefined ? { cpu: o.cpu } : {}),
        ...(o.memory !== undefined ? { memoryMb: o.memory } : {}),
        ...(o.heap !== undefined ? { heapMb: o.heap } : {}),
        ...(o.disk !== undefined ? { diskMb: o.disk } : {}),
      };
      const body = {
        replicas: o.replicas,
        resources,
        ...(o.image ? { image: o.image } : {}),
        ...(o.template ? { template: o.template } : {}),
        ...(o.backend ? { backend: o.backend } : {}),
        ...(o.pool ? { pool: o.pool } : {}),
        ...(o.spread ? { spread: o.spread } : {}),
      };
      const c = client();
      const { requestId } = await c.call<{ requestId: string }>('POST', `/api/v1/apps/${encodeURIComponent(env)}/${encodeURIComponent(app)}/scale`, { body });
      if (!o.wait) {
        if (o.json) return json({ requestId });
        return out(`scale request ${requestId} accepted for ${env}/${app} (${o.replicas} replicas)\n`);
      }
      if (!o.json) process.stderr.write(`scale request ${requestId} accepted\n`);
      setExit(await waitScale(c, requestId, env, app, o.replicas, o));
    },
  );

  withJson(
    waitOptions(
      program
        .command('migrate <instanceId>')
        .description('move an instance to another host or backend, keeping its IP and MAC')
        .option('--to-host <hostId>', 'the target host')
        .addOption(new Option('--to-backend <backend>', 'the target backend').choices(['docker', 'vmware', 'swarm'])),
    ),
  ).action(async (instanceId: string, o: WaitOpts & { toHost?: string; toBackend?: string }) => {
    const c = client();
    const { migrationId } = await c.call<{ migrationId: string }>('POST', `/api/v1/instances/${encodeURIComponent(instanceId)}/migrate`, {
      body: { ...(o.toHost ? { toHost: o.toHost } : {}), ...(o.toBackend ? { toBackend: o.toBackend } : {}) },
    });
    if (!o.wait) {
      if (o.json) return json({ migrationId });
      return out(`migration ${migrationId} started for ${instanceId}\n`);
    }
    if (!o.json) process.stderr.write(`migration ${migrationId} started\n`);
    const r = await waitMigrations(c, [migrationId], `migrate ${instanceId}`, o);
    migrationsReport(r.views, o);
    setExit(r.code);
  });

  withJson(waitOptions(program.command('drain <hostId>').description('move every instance off a host'))).action(async (hostId: string, o: WaitOpts) => {
    const c = client();
    const reply = await c.call<{ migrationIds: string[]; drainId?: string }>('POST', `/api/v1/hosts/${encodeURIComponent(hostId)}/drain`, { body: {} });
    if (!o.wait) {
      if (o.json) return json(reply);
      return out(`drain of ${hostId} started: ${reply.migrationIds.length} migrations\n${reply.migrationIds.map((id) => `  ${id}\n`).join('')}`);
    }
    if (!o.json) process.stderr.write(`drain of ${hostId} started: ${reply.migrationIds.length} migrations\n`);
    if (reply.migrationIds.length === 0) {
      if (o.json) json({ migrations: [] });
      else out(`nothing to move off ${hostId}\n`);
      return;
    }
    const r = await waitMigrations(c, reply.migrationIds, `drain ${hostId}`, o);
    migrationsReport(r.views, o.json ? { json: true } : o);
    setExit(r.code);
  });

  const envs = withJson(program.command('envs').description('list the environments; `envs get|put|delete <name>` for one')).action(async (o: JsonOpt) => {
    const xs = await client().all<EnvRecord>('/api/v1/envs', 'envs');
    if (o.json) return json({ envs: xs });
    out(envsTable(xs));
  });
  // `envs get x --json`: the parent `envs` has --json too, and commander gives it the flag
  const asJson = (o: JsonOpt): boolean => Boolean(o.json || (envs.opts() as JsonOpt).json);
  withJson(envs.command('get <name>').description("one environment's record")).action(async (name: string, o: JsonOpt) => {
    const e = await client().call<EnvRecord>('GET', `/api/v1/envs/${encodeURIComponent(name)}`);
    if (asJson(o)) return json(e);
    out(envsTable([e]));
  });
  withJson(
    envs
      .command('put <name>')
      .description("create or replace an environment's record (the whole record: what is not given is removed)")
      .requiredOption('--backends <list>', 'the backends its instances may use: docker, vmware, swarm (comma separated)', list)
      .option('--pools <list>', 'the only pools it may use (comma separated; absent: any)', list)
      .option('--label <key=value>', 'an eligible host carries this label (repeatable)', keyValue, {})
      .addOption(new Option('--default-backend <backend>', 'for requests that name none').choices(['auto', 'docker', 'vmware', 'swarm']))
      .addOption(new Option('--default-spread <spread>', 'for requests that name none').choices(['host', 'none']))
      .option('--allow-privilege-escalation', 'containers keep setuid binaries working (no no-new-privileges)')
      .option('--pids-limit <n>', "containers' PIDs limit instead of the agent's", integer(16, 4_194_304))
      .option('--add-capabilities <list>', 'capabilities the agent drops that containers keep (comma separated)', list),
  ).action(async (name: string, o: EnvPutOpts) => {
    const defaults = { ...(o.defaultBackend ? { backend: o.defaultBackend } : {}), ...(o.defaultSpread ? { spread: o.defaultSpread } : {}) };
    const security = {
      ...(o.allowPrivilegeEscalation ? { allowPrivilegeEscalation: true } : {}),
      ...(o.pidsLimit !== undefined ? { pidsLimit: o.pidsLimit } : {}),
      ...(o.addCapabilities ? { addCapabilities: o.addCapabilities } : {}),
    };
    const body = {
      backends: o.backends,
      ...(o.pools ? { pools: o.pools } : {}),
      ...(Object.keys(o.label).length > 0 ? { hostLabels: o.label } : {}),
      ...(Object.keys(defaults).length > 0 ? { defaults } : {}),
      ...(Object.keys(security).length > 0 ? { containerSecurity: security } : {}),
    };
    const e = await client().call<EnvRecord>('PUT', `/api/v1/envs/${encodeURIComponent(name)}`, { body });
    if (asJson(o)) return json(e);
    out(`env ${e.name} saved: backends ${e.backends.join(',')}\n`);
  });
  withJson(envs.command('delete <name>').description("delete an environment's record (running instances stay)")).action(async (name: string, o: JsonOpt) => {
    await client().call('DELETE', `/api/v1/envs/${encodeURIComponent(name)}`);
    if (asJson(o)) return json({ deleted: name });
    out(`env ${name} deleted\n`);
  });

  withJson(
    program
      .command('events')
      .description('the latest events; --follow streams new ones as they come')
      .option('--follow', 'keep streaming new events until interrupted')
      .option('--last <n>', 'how many past events to show', integer(0, 100_000), 20)
      .option('--after <seq>', 'only events after this stream sequence (resume)', integer(0, Number.MAX_SAFE_INTEGER)),
  ).action(async (o: JsonOpt & { follow?: boolean; last: number; after?: number }) => {
    const c = client();
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    const query = { ...(o.after === undefined ? { history: o.last } : {}), ...(o.follow ? {} : { follow: 'false' }) };
    if (!o.json) out(table(['SEQ', 'TIME', 'TYPE', 'SUBJECT'], []));
    try {
      for await (const ev of c.events(query, o.after, ac.signal)) {
        let e: { time?: string; type?: string; subject?: string } = {};
        try {
          e = JSON.parse(ev.data) as typeof e;
        } catch {
          /* shown as it came */
        }
        if (o.json) out(`${JSON.stringify({ seq: ev.id, event: e })}\n`);
        else out(`${String(ev.id).padEnd(6)}  ${e.time ?? '-'}  ${(e.type ?? '-').replace(/^io\.orangery\./, '')}  ${e.subject ?? '-'}\n`);
      }
    } catch (err) {
      if (!ac.signal.aborted) throw err;
    }
  });

  return program;
}

export async function main(argv: readonly string[]): Promise<number> {
  let code = EXIT_OK;
  const program = buildProgram((c) => (code = c));
  let json = argv.includes('--json');
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version') return EXIT_OK;
      return EXIT_USAGE; // commander printed the reason
    }
    if (e instanceof UsageError) {
      process.stderr.write(`error: ${e.message}\n`);
      return EXIT_USAGE;
    }
    if (e instanceof Refusal) {
      if (json) out(`${JSON.stringify({ error: { code: e.code, message: e.message, details: e.details } }, null, 2)}\n`);
      process.stderr.write(`error: ${e.code}: ${e.message}\n`);
      return EXIT_REFUSED;
    }
    json = false;
    process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
    return EXIT_REFUSED;
  }
}

const code = await main(process.argv.slice(2));
process.exitCode = code;

// `npm run creds`: least-privilege NATS users per role, TLS for NATS and one database user
// per service (docs/security.md). Prints file names, never a secret.
//
//   npm run creds -- [--dir .run/creds] [--agent-host <hostId>]... [--agent <name>=<host>,<host>...]...
//                    [--swarm-agent <name>=<node host>,<node host>...]...
//                    [--nats <host:port>]... [--san <name or ip>]... [--db-url mysql://host:port/db]
//                    [--db-user-host %] [--rotate]
import { parseArgs } from 'node:util';
import { generateCreds } from './creds/generate';
import type { AgentSpec } from './creds/permissions';

const usage =
  'usage: npm run creds -- [--dir DIR] [--agent-host HOST]... [--agent NAME=HOST,HOST...]... [--swarm-agent NAME=HOST,HOST...]... [--nats HOST:PORT]... [--san NAME]... [--db-url mysql://host:port/db] [--db-user-host HOST] [--rotate]';

function fail(msg: string): never {
  console.error(`creds: ${msg}\n${usage}`);
  process.exit(2);
}

let args;
try {
  args = parseArgs({
    options: {
      dir: { type: 'string', default: '.run/creds' },
      'agent-host': { type: 'string', multiple: true, default: [] },
      agent: { type: 'string', multiple: true, default: [] },
      'swarm-agent': { type: 'string', multiple: true, default: [] },
      nats: { type: 'string', multiple: true, default: [] },
      san: { type: 'string', multiple: true, default: [] },
      'db-url': { type: 'string', default: 'mysql://127.0.0.1:3306/orangery' },
      'db-user-host': { type: 'string', default: '%' },
      rotate: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  }).values;
} catch (e) {
  fail((e as Error).message);
}
if (args.help) {
  console.log(usage);
  process.exit(0);
}

const agents: AgentSpec[] = args['agent-host'].map((h) => ({ name: h, hosts: [h] }));
for (const [flag, swarm] of [
  ['agent', false],
  ['swarm-agent', true],
] as const) {
  for (const a of args[flag]) {
    const m = /^([^=]+)=(.+)$/.exec(a);
    if (!m) fail(`--${flag} '${a}' must be NAME=HOST,HOST...`);
    agents.push({
      name: m[1]!,
      hosts: m[2]!
        .split(',')
        .map((h) => h.trim())
        .filter((h) => h !== ''),
      ...(swarm ? { swarm: true } : {}),
    });
  }
}
const natsServers = args.nats.length > 0 ? args.nats : ['127.0.0.1:4222'];
const sans = args.san.length > 0 ? args.san : ['localhost', '127.0.0.1'];
try {
  new URL(args['db-url']);
} catch {
  fail(`--db-url '${args['db-url']}' is not a URL`);
}

try {
  const r = await generateCreds({
    dir: args.dir,
    agents,
    natsServers,
    sans,
    dbUrl: args['db-url'],
    dbUserHost: args['db-user-host'],
    rotate: args.rotate,
    repoRoot: process.cwd(),
  });
  console.log(`wrote ${r.files.length} files (mode 0600) into ${r.dir} for users: ${r.users.map((u) => u.user).join(', ')}`);
  console.log(`  nats-server: include ${r.dir}/nats-auth.conf from its configuration (users, permissions, TLS; the path relative to that file)`);
  console.log(`  database:    run ${r.dir}/db-users.sql as an administrator`);
  console.log(`  services:    env files in ${r.dir}/env/`);
} catch (e) {
  console.error(`creds: ${(e as Error).message}`);
  process.exit(1);
}

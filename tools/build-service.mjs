#!/usr/bin/env node
// Bundles one service into dist/services/<name>/main.js with esbuild: a second or less on
// two cores, where webpack takes tens of seconds. npm packages stay external (resolved from
// node_modules at run time); the workspace libs (@orangery/*) are bundled in through the
// tsconfig path aliases. Type checking is `npm run typecheck` (tsc --noEmit), not this step.
//
// esbuild does not emit decorator metadata, so Nest providers inject by explicit tokens
// (@Inject(TOKEN)) everywhere: that is the project's rule, checked by the services starting.
import { build } from 'esbuild';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const name = process.argv[2];
if (!name || !/^[a-z0-9-]+$/.test(name)) {
  console.error('usage: build-service.mjs <service-name>');
  process.exit(2);
}
const outdir = join(root, 'dist', 'services', name);
/**
 * Node flags a service is started with (systemd unit, image, npm start and the test
 * harness read `dist/services/<name>/node-flags`). docker-agent: one host's agent must
 * stay small (issue 17: <= 80 MB). V8's young generation grows to 2 x 16 MiB under a
 * burst of creates and keeps it; 1 MiB semi-spaces cost a few more scavenges (the agent
 * allocates little) and save ~28 MiB. `--lite-mode` runs JavaScript in V8's interpreter
 * only (no optimizing compilers, feedback allocated lazily): ~20 MiB less for an agent
 * whose time goes to the engine and the wire, not to its own code (docs/docker-agent.md
 * "Footprint", README "docker-agent" for the measured cost).
 */
// --lite-mode turns WebAssembly off (and says so on stderr unless --no-expose-wasm says it
// first): nothing the agent loads uses it (ssh2 is not loaded, see NOT_LOADED and
// services/docker-agent/src/adapters/load-dockerode.ts), and so neither may the agent
// (no global fetch(): undici parses HTTP in WebAssembly).
// Not --single-threaded-gc: ~3.5 MiB less at start, but 4-5 MiB more after 50 creates
// (bench:agent, 3 runs each way: the main thread alone collects later).
const NODE_FLAGS = { 'docker-agent': ['--max-semi-space-size=1', '--lite-mode', '--no-expose-wasm'] };
/**
 * Packages a service never uses that shared libs import at their top level (service-kit
 * -> persistence -> typeorm, mysql2): an external import is kept by esbuild even when all
 * its uses are tree-shaken away, and loading typeorm and mysql2 costs ~15 MiB of RSS.
 * For these services they resolve to an empty module; code that really used one would
 * fail at once (`DataSource is not a constructor`), and none is reachable (no database).
 */
const NOT_LOADED = { 'docker-agent': ['typeorm', 'mysql2'], 'vmware-agent': ['typeorm', 'mysql2'] };
const notLoaded = NOT_LOADED[name] ?? [];
const stubUnused = {
  name: 'orangery-not-loaded',
  setup(b) {
    if (notLoaded.length === 0) return;
    const filter = new RegExp(`^(${notLoaded.join('|')})(/.*)?$`);
    b.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'orangery-not-loaded' }));
    b.onLoad({ filter: /.*/, namespace: 'orangery-not-loaded' }, (args) => ({
      contents: `// ${args.path}: not loaded in ${name} (tools/build-service.mjs NOT_LOADED)\nmodule.exports = {};\n`,
      loader: 'js',
    }));
  },
};
await mkdir(outdir, { recursive: true });
await writeFile(join(outdir, 'node-flags'), `${(NODE_FLAGS[name] ?? []).join(' ')}\n`);
// The bundle is an ES module: a package.json beside it says so to Node (inside the
// build's declared output, so an Nx cache restore brings it back too).
await writeFile(join(outdir, 'package.json'), '{ "type": "module" }\n');
await build({
  entryPoints: [join(root, 'services', name, 'src', 'main.ts')],
  outfile: join(outdir, 'main.js'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  packages: 'external',
  sourcemap: true,
  tsconfig: join(root, 'tsconfig.base.json'),
  banner: { js: "import { createRequire as __orangeryCreateRequire } from 'node:module'; const require = __orangeryCreateRequire(import.meta.url);" },
  logLevel: 'warning',
  plugins: [stubUnused],
});
console.log(`built dist/services/${name}/main.js`);

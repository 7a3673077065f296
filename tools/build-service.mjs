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
await mkdir(outdir, { recursive: true });
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
});
console.log(`built dist/services/${name}/main.js`);

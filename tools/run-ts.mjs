#!/usr/bin/env node
// Runs a TypeScript entry point (a bench or a tool) without a TS runtime dependency: esbuild
// bundles it with the workspace path aliases into .run/ts/, then Node imports the result.
import { build } from 'esbuild';
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = process.argv[2];
if (!entry) {
  console.error('usage: run-ts.mjs <file.ts> [args...]');
  process.exit(2);
}
const outdir = join(root, '.run', 'ts');
mkdirSync(outdir, { recursive: true });
writeFileSync(join(outdir, 'package.json'), '{ "type": "module" }\n');
const outfile = join(outdir, basename(entry).replace(/\.ts$/, '.mjs'));
await build({
  entryPoints: [resolve(entry)],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  packages: 'external',
  tsconfig: join(root, 'tsconfig.base.json'),
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: 'warning',
});
process.argv.splice(1, 2, outfile);
await import(pathToFileURL(outfile).href);

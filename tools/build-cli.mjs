#!/usr/bin/env node
// Bundles the `orangery` CLI (services/console/src/cli/main.ts) into dist/cli/orangery.js,
// the package's `bin`, with esbuild as tools/build-service.mjs does for services: npm
// packages stay external, the workspace libs are bundled in.
import { build } from 'esbuild';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist', 'cli');
await mkdir(outdir, { recursive: true });
await writeFile(join(outdir, 'package.json'), '{ "type": "module" }\n');
const outfile = join(outdir, 'orangery.js');
await build({
  entryPoints: [join(root, 'services', 'console', 'src', 'cli', 'main.ts')],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  packages: 'external',
  sourcemap: true,
  tsconfig: join(root, 'tsconfig.base.json'),
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __orangeryCreateRequire } from 'node:module'; const require = __orangeryCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
await chmod(outfile, 0o755);
console.log('built dist/cli/orangery.js');

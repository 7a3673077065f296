import { defineConfig } from 'vitest/config';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

// The workspace libs resolve through the same path aliases as tsc and esbuild.
const base = JSON.parse(readFileSync(resolve(__dirname, 'tsconfig.base.json'), 'utf8')) as {
  compilerOptions: { paths: Record<string, string[]> };
};
const alias = Object.fromEntries(Object.entries(base.compilerOptions.paths).map(([k, [v]]) => [k, resolve(__dirname, v!)]));

export default defineConfig({
  resolve: { alias },
  test: {
    reporters: ['default'],
    projects: [
      {
        resolve: { alias },
        test: {
          name: 'unit',
          include: ['libs/*/src/**/*.spec.ts', 'services/*/src/**/*.spec.ts', 'tools/**/*.spec.ts', 'deploy/**/*.spec.ts'],
          environment: 'node',
        },
      },
      {
        resolve: { alias },
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          environment: 'node',
          // Each file starts its own servers and processes: one file at a time on 2 cores.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
          pool: 'forks',
        },
      },
    ],
  },
});

import { defineConfig } from 'vitest/config';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

// The workspace libs resolve through the same path aliases as tsc and esbuild.
const base = JSON.parse(readFileSync(resolve(__dirname, 'tsconfig.base.json'), 'utf8')) as {
  compilerOptions: { paths: Record<string, string[]> };
};
const alias = Object.fromEntries(Object.entries(base.compilerOptions.paths).map(([k, [v]]) => [k, resolve(__dirname, v!)]));

/**
 * Integration files that use the network lab (test/lab: docker engines, netns, macvlan,
 * vcsim, the fixed `olab-*` names) run one at a time in the `integration-lab` project; the
 * others start only their own NATS, database and service processes (free ports, a fresh
 * database per file), so test/run.sh runs them in the `integration` project at the same time.
 */
const INTEGRATION_DIR = resolve(__dirname, 'test/integration');
const USES_LAB = /from '(\.\.\/lab(\/[a-z-]+)?|\.\/fixtures\/(fault-lab|lab-cluster))'/;
const integrationFiles = readdirSync(INTEGRATION_DIR).filter((f) => f.endsWith('.test.ts'));
const labFiles = integrationFiles.filter((f) => USES_LAB.test(readFileSync(join(INTEGRATION_DIR, f), 'utf8'))).map((f) => `test/integration/${f}`);
const integrationProject = { environment: 'node' as const, fileParallelism: false, testTimeout: 120_000, hookTimeout: 120_000, pool: 'forks' as const };

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
        // Each file starts its own servers and processes: one file at a time per project.
        test: { name: 'integration', include: ['test/integration/**/*.test.ts'], exclude: labFiles, ...integrationProject },
      },
      {
        resolve: { alias },
        test: { name: 'integration-lab', include: labFiles, ...integrationProject },
      },
    ],
  },
});

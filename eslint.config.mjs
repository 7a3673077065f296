// ESLint 9 flat config for the whole workspace (`npm run lint` / `npx eslint .`).
//
// Module boundaries are enforced by @nx/enforce-module-boundaries from the tags in each
// project.json, on two axes:
//   scope:*  which product area a project belongs to (a service, or `shared` for libs);
//   type:*   which layer it is (app, kit, adapter, contracts, util, testing).
// A project must satisfy the constraint of every tag it carries.
//
// No type-aware linting (no parserOptions.project): it is too slow on two cores.
import js from '@eslint/js';
import nx from '@nx/eslint-plugin';
import { createProjectGraphAsync } from '@nx/devkit';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

// @nx/enforce-module-boundaries reads the *cached* project graph and silently skips itself
// (a warning only, exit code 0) when there is none, e.g. on a fresh clone where no nx command
// has run yet. Computing the graph here keeps `eslint .` honest; it throws if Nx cannot
// build the graph, which fails the lint run instead of skipping the rule.
await createProjectGraphAsync({ exitOnError: false });

/** Services, one scope each. Add a new service here when it gets its project.json. */
const serviceScopes = ['ipam', 'scheduler', 'docker-agent', 'vmware-agent', 'migrator', 'swarm-agent', 'console'];

/** Packages that must stay out of pure code (domain logic, contracts, utilities). */
const infraPackages = ['@nats-io/*', 'typeorm', 'typeorm/*', '@nestjs/*'];

const depConstraints = [
  // Scope: a service may use its own code and the shared libs, never another service;
  // shared libs only use shared libs.
  ...serviceScopes.map((scope) => ({
    sourceTag: `scope:${scope}`,
    onlyDependOnLibsWithTags: [`scope:${scope}`, 'scope:shared'],
  })),
  { sourceTag: 'scope:shared', onlyDependOnLibsWithTags: ['scope:shared'] },

  // Type (layering): app -> kit -> adapter -> contracts -> util.
  {
    sourceTag: 'type:app',
    onlyDependOnLibsWithTags: ['type:kit', 'type:adapter', 'type:contracts', 'type:util'],
  },
  {
    sourceTag: 'type:kit',
    onlyDependOnLibsWithTags: ['type:adapter', 'type:contracts', 'type:util'],
  },
  { sourceTag: 'type:adapter', onlyDependOnLibsWithTags: ['type:contracts', 'type:util'] },
  {
    sourceTag: 'type:contracts',
    onlyDependOnLibsWithTags: ['type:util'],
    bannedExternalImports: infraPackages,
  },
  {
    sourceTag: 'type:util',
    onlyDependOnLibsWithTags: ['type:util'],
    bannedExternalImports: infraPackages,
  },
  {
    sourceTag: 'type:testing',
    onlyDependOnLibsWithTags: ['type:kit', 'type:adapter', 'type:contracts', 'type:util', 'type:testing'],
  },
];

export default defineConfig(
  { ignores: ['**/dist/**', '**/node_modules/**', '.run/**', '.nx/**', 'coverage/**'] },

  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, tseslint.configs.recommended],
    plugins: { '@nx': nx },
    languageOptions: { ecmaVersion: 2022, sourceType: 'module' },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          args: 'after-used',
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
        },
      ],
      '@nx/enforce-module-boundaries': [
        'error',
        {
          allow: [],
          enforceBuildableLibDependency: false,
          depConstraints,
        },
      ],
    },
  },

  // Domain code is pure: no transport, persistence, framework or driver imports.
  // (The nx rule works per project tag, not per folder, hence the core rule here.)
  {
    files: ['services/*/src/domain/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@nats-io/*', 'typeorm', 'typeorm/*', 'dockerode', 'dockerode/*', '@nestjs/*', 'mysql2', 'mysql2/*'],
              message: 'Domain code must not depend on NATS, TypeORM, Docker, NestJS or MySQL: define a port in domain/ports.ts and implement it in adapters/.',
            },
          ],
        },
      ],
    },
  },
);

import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? sources(join(dir, e.name))
      : e.name.endsWith('.ts') && !e.name.endsWith('.spec.ts') && dir.indexOf('testing') < 0
        ? [join(dir, e.name)]
        : [],
  );
}

describe('the docker-agent runs in V8 lite mode, without WebAssembly (tools/build-service.mjs NODE_FLAGS)', () => {
  it('is started with the flags, and its code calls neither WebAssembly nor the global fetch (undici needs WebAssembly)', () => {
    const build = readFileSync(join(root, 'tools', 'build-service.mjs'), 'utf8');
    expect(build).toContain("'docker-agent': ['--max-semi-space-size=1', '--lite-mode', '--no-expose-wasm']");
    const offenders = sources(here).filter((f) => /\bWebAssembly\b|(?<![.\w])fetch\(/.test(readFileSync(f, 'utf8')));
    expect(offenders).toEqual([]);
  });
});

#!/usr/bin/env node
// Copies the tables the benchmarks wrote (bench/results/<name>.md) into README.md between
// `<!-- bench:<name> -->` and `<!-- /bench:<name> -->`, so every figure in the README is one
// a script in this repository produced. Run by bench/run.sh after the benchmarks.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

let readme = readFileSync('README.md', 'utf8');
for (const m of readme.matchAll(/<!-- bench:([a-z0-9-]+) -->/g)) {
  const name = m[1];
  const file = `bench/results/${name}.md`;
  if (!existsSync(file)) continue;
  const body = readFileSync(file, 'utf8').trim();
  const re = new RegExp(`(<!-- bench:${name} -->)[\\s\\S]*?(<!-- /bench:${name} -->)`);
  readme = readme.replace(re, `$1\n${body}\n$2`);
}
writeFileSync('README.md', readme);
console.log('README.md benchmark tables updated from bench/results/');

import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { loadDockerode } from './load-dockerode';

describe('loadDockerode (issue 17: no ssh2 in the agent)', () => {
  it('loads a working dockerode without loading ssh2', () => {
    const Docker = loadDockerode();
    const docker = new Docker({ socketPath: '/nonexistent/docker.sock' });
    expect(typeof docker.listContainers).toBe('function');
    const cache = createRequire(import.meta.url).cache;
    expect(Object.keys(cache).filter((k) => /[/\\]ssh2[/\\]/.test(k))).toEqual([]);
    expect(Object.keys(cache).some((k) => /[/\\]dockerode[/\\]/.test(k))).toBe(true);
  });
});

import { createRequire, Module } from 'node:module';
import { dirname, join } from 'node:path';
import type Docker from 'dockerode';

/**
 * dockerode, without ssh2. docker-modem requires its ssh transport (and so ssh2) at load
 * time, for `ssh://` engines; ssh2 then instantiates a 16 MiB wasm memory (its
 * poly1305) that stays resident: about 12 MiB of the agent's RSS for a transport it never
 * uses (DOCKER_HOST is unix:// or tcp://, checked by the config). The ssh transport module
 * is put in the module cache as a stub that refuses, before dockerode is loaded.
 * Issue 17; docs/docker-agent.md "Footprint".
 */
export function loadDockerode(): typeof Docker {
  const req = createRequire(import.meta.url);
  const dockerodeMain = req.resolve('dockerode');
  const modemMain = createRequire(dockerodeMain).resolve('docker-modem');
  const sshPath = join(dirname(modemMain), 'ssh.js');
  if (!req.cache[sshPath]) {
    const stub = new Module(sshPath);
    stub.filename = sshPath;
    stub.loaded = true;
    stub.exports = () => {
      throw new Error('ssh:// container engines are not supported by the docker-agent (DOCKER_HOST is unix:// or tcp://)');
    };
    req.cache[sshPath] = stub;
  }
  return req('dockerode') as typeof Docker;
}

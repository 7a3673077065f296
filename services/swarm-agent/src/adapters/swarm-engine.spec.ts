import { describe, expect, it } from 'vitest';
import { ConfiguredNodeEngines, deriveEngineTemplate } from './swarm-engine';

describe('node engines derived from ORANGERY_SWARM_MANAGER (no ORANGERY_SWARM_NODE_ENGINES)', () => {
  it.each([
    ['a socket named after the manager', 'unix:///run/olab/swarm/olab-sw1.sock', 'olab-sw1', '198.18.0.201', 'unix:///run/olab/swarm/{hostname}.sock'],
    ['a directory named after the manager', 'unix:///run/engines/mgr-1/docker.sock', 'mgr-1', '10.0.0.5', 'unix:///run/engines/{hostname}/docker.sock'],
    ['tcp to the manager by hostname', 'tcp://mgr-1:2375', 'mgr-1', '10.0.0.5', 'tcp://{hostname}:2375'],
    ['tcp to the manager by its swarm address', 'tcp://10.0.0.5:2375', 'mgr-1', '10.0.0.5', 'tcp://{addr}:2375'],
    ['an address that only starts like the manager', 'tcp://10.0.0.50:2375', 'mgr-1', '10.0.0.5', undefined],
    ['nothing of the manager in it', 'unix:///var/run/docker.sock', 'mgr-1', '10.0.0.5', undefined],
    ['a one-letter hostname is not guessed', 'unix:///run/a/docker.sock', 'a', '', undefined],
  ])('%s', (_what, url, hostname, addr, template) => {
    expect(deriveEngineTemplate(url, hostname, addr)).toBe(template);
  });

  it("reaches the manager's node through the manager URL, the others through the derived template, none without one", () => {
    const derived = new ConfiguredNodeEngines({ kind: 'none' }, 'tcp://10.0.0.5:2375');
    expect(derived.setManagerNode('n1', 'mgr-1', '10.0.0.5')).toBe('tcp://{addr}:2375');
    expect(derived.forNode('mgr-1', 'n1')).toBeDefined();
    expect(derived.forNode('wrk-2', 'n2', '10.0.0.6')).toBeDefined();
    expect(derived.forNode('wrk-3', 'n3')).toBeUndefined(); // {addr} but no address known
    const plain = new ConfiguredNodeEngines({ kind: 'none' }, 'unix:///var/run/docker.sock');
    expect(plain.setManagerNode('n1', 'mgr-1', '10.0.0.5')).toBeUndefined();
    expect(plain.forNode('mgr-1', 'n1')).toBeDefined();
    expect(plain.forNode('wrk-2', 'n2', '10.0.0.6')).toBeUndefined();
    // an explicit setting is never overridden by a guess
    const pairs = new ConfiguredNodeEngines({ kind: 'pairs', byHostname: { 'wrk-2': 'unix:///w2.sock' } }, 'tcp://10.0.0.5:2375');
    expect(pairs.setManagerNode('n1', 'mgr-1', '10.0.0.5')).toBeUndefined();
    expect(pairs.forNode('wrk-3', 'n3', '10.0.0.7')).toBeUndefined();
  });
});

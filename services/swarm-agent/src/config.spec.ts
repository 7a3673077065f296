import { describe, expect, it } from 'vitest';
import { ConfigError } from '@orangery/service-kit';
import { loadSwarmAgentConfig } from './config';

const base = { ORANGERY_SWARM_MANAGER: 'unix:///run/swarm.sock' };

describe('swarm-agent configuration', () => {
  it('needs a manager engine, and defaults the cluster, uplink and block size', () => {
    expect(() => loadSwarmAgentConfig({})).toThrow(ConfigError);
    expect(loadSwarmAgentConfig(base)).toMatchObject({
      manager: 'unix:///run/swarm.sock',
      cluster: 'swarm',
      uplink: 'eth0',
      blockSize: 64,
      nodeEngines: { kind: 'none' },
    });
  });

  it("waits 25 s for a task by default, below the scheduler's 30 s agent timeout; holds departed nodes' blocks 24 h (0 allowed)", () => {
    expect(loadSwarmAgentConfig(base)).toMatchObject({ startTimeoutSeconds: 25, leftoverRetentionHours: 24 });
    expect(loadSwarmAgentConfig({ ...base, ORANGERY_LEFTOVER_RETENTION_HOURS: '0' }).leftoverRetentionHours).toBe(0);
  });

  it.each([
    [{ ORANGERY_SWARM_MANAGER: 'http://x' }, 'ORANGERY_SWARM_MANAGER'],
    [{ ...base, ORANGERY_SWARM_CLUSTER: 'Bad_Name' }, 'ORANGERY_SWARM_CLUSTER'],
    [{ ...base, ORANGERY_SWARM_UPLINK: 'a very long name' }, 'ORANGERY_SWARM_UPLINK'],
    [{ ...base, ORANGERY_SWARM_BLOCK_SIZE: '48' }, 'power of two'],
    [{ ...base, ORANGERY_SWARM_BLOCK_SIZE: '2' }, 'ORANGERY_SWARM_BLOCK_SIZE'],
    [{ ...base, ORANGERY_SWARM_NODE_ENGINES: 'sw1' }, 'hostname=url'],
    [{ ...base, ORANGERY_SWARM_NODE_ENGINES: 'sw1=http://x' }, 'ORANGERY_SWARM_NODE_ENGINES'],
  ])('refuses %o naming %s', (env, what) => {
    expect(() => loadSwarmAgentConfig(env)).toThrow(what);
  });

  it('reads node engines as a {hostname} template or as hostname=url pairs', () => {
    expect(loadSwarmAgentConfig({ ...base, ORANGERY_SWARM_NODE_ENGINES: 'unix:///run/olab/{hostname}.sock' }).nodeEngines).toEqual({
      kind: 'template',
      template: 'unix:///run/olab/{hostname}.sock',
    });
    expect(loadSwarmAgentConfig({ ...base, ORANGERY_SWARM_NODE_ENGINES: 'sw1=unix:///a.sock, sw2=tcp://10.0.0.2:2375' }).nodeEngines).toEqual({
      kind: 'pairs',
      byHostname: { sw1: 'unix:///a.sock', sw2: 'tcp://10.0.0.2:2375' },
    });
  });
});

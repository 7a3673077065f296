import { describe, expect, it } from 'vitest';
import { parseEnvBackends } from './config';

describe('ORANGERY_ENV_BACKENDS (a seed for env records)', () => {
  it('takes docker, vmware and swarm', () => {
    expect(parseEnvBackends('prod=vmware,docker; test=swarm')).toEqual({ prod: ['vmware', 'docker'], test: ['swarm'] });
    expect(parseEnvBackends(undefined)).toEqual({});
  });

  it('refuses an unknown backend or a bad env name', () => {
    expect(() => parseEnvBackends('test=k8s')).toThrow(/unknown backend 'k8s' for env 'test' \(docker, vmware or swarm\)/);
    expect(() => parseEnvBackends('Prod=docker')).toThrow(/is not <env>=<backend>/);
  });
});

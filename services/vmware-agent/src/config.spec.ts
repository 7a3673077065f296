import { describe, expect, it } from 'vitest';
import { ConfigError } from '@orangery/service-kit';
import { loadVmwareAgentConfig } from './config';

const base = {
  ORANGERY_VCENTER_URL: 'https://vcenter.example/sdk',
  ORANGERY_VCENTER_USER: 'agent',
  ORANGERY_VCENTER_PASSWORD: 'secret',
};

describe('the vmware-agent NATS identity (ORANGERY_HOST_ID)', () => {
  it('is optional: unset, the agent keeps the default reply inbox', () => {
    expect(loadVmwareAgentConfig(base).agentId).toBeUndefined();
  });

  it('names the agent (its inbox prefix _INBOX_<id>), lower-cased', () => {
    expect(loadVmwareAgentConfig({ ...base, ORANGERY_HOST_ID: 'VC1' }).agentId).toBe('vc1');
  });

  it('must be a host id: a dot or a wildcard would widen its inbox subject', () => {
    expect(() => loadVmwareAgentConfig({ ...base, ORANGERY_HOST_ID: 'vc.1' })).toThrow(ConfigError);
    expect(() => loadVmwareAgentConfig({ ...base, ORANGERY_HOST_ID: '>' })).toThrow(/ORANGERY_HOST_ID/);
  });
});

import { describe, expect, it } from 'vitest';
import { ConfigError } from '@orangery/service-kit';
import { loadAgentConfig } from './config';

const base = { ORANGERY_UPLINK: 'eth1', ORANGERY_HOST_ID: 'srv-1' };

describe('docker-agent config: isolation addresses and the ARP probe', () => {
  it('defaults: the gateways (undefined), a 300 ms probe, fenceAfter 10 s', () => {
    const c = loadAgentConfig(base);
    expect(c.isolationAddresses).toBeUndefined();
    expect(c.arpProbeMs).toBe(300);
    expect(c.fenceAfterSeconds).toBe(10);
  });

  it('ORANGERY_USAGE_SECONDS: 30 by default, 1 to 3600', () => {
    expect(loadAgentConfig(base).usageSeconds).toBe(30);
    expect(loadAgentConfig({ ...base, ORANGERY_USAGE_SECONDS: '5' }).usageSeconds).toBe(5);
    expect(() => loadAgentConfig({ ...base, ORANGERY_USAGE_SECONDS: '0' })).toThrow(ConfigError);
    expect(() => loadAgentConfig({ ...base, ORANGERY_USAGE_SECONDS: 'often' })).toThrow(ConfigError);
  });

  it('ORANGERY_ISOLATION_ADDRESSES: ip or ip@vlan, comma separated, duplicates dropped', () => {
    const c = loadAgentConfig({ ...base, ORANGERY_ISOLATION_ADDRESSES: ' 10.0.0.1, 10.0.100.1@100,10.0.0.1 ' });
    expect(c.isolationAddresses).toEqual([
      { ip: '10.0.0.1', vlan: 0 },
      { ip: '10.0.100.1', vlan: 100 },
    ]);
  });

  it.each(['10.0.0', '10.0.0.1;reboot', '10.0.0.256', '10.0.0.1@4095', '10.0.0.1@', 'gw.example', '10.0.0.1,,10.0.0.2'])(
    'refuses ORANGERY_ISOLATION_ADDRESSES=%j (exit 2 in main)',
    (value) => {
      expect(() => loadAgentConfig({ ...base, ORANGERY_ISOLATION_ADDRESSES: value })).toThrow(ConfigError);
    },
  );

  it('refuses a VLAN whose interface name would not fit the kernel', () => {
    expect(() => loadAgentConfig({ ...base, ORANGERY_UPLINK: 'enp129s0f1np1', ORANGERY_ISOLATION_ADDRESSES: '10.0.0.1@100' })).toThrow(/15 characters/);
  });

  it('ORANGERY_ARP_PROBE_MS (100..10000) wins; the older ORANGERY_ARP_PROBE_SECONDS still counts alone', () => {
    expect(loadAgentConfig({ ...base, ORANGERY_ARP_PROBE_MS: '500' }).arpProbeMs).toBe(500);
    expect(loadAgentConfig({ ...base, ORANGERY_ARP_PROBE_SECONDS: '2' }).arpProbeMs).toBe(2_000);
    expect(loadAgentConfig({ ...base, ORANGERY_ARP_PROBE_SECONDS: '2', ORANGERY_ARP_PROBE_MS: '300' }).arpProbeMs).toBe(300);
    expect(() => loadAgentConfig({ ...base, ORANGERY_ARP_PROBE_MS: '50' })).toThrow(ConfigError);
    expect(() => loadAgentConfig({ ...base, ORANGERY_ARP_PROBE_MS: '0.3' })).toThrow(ConfigError);
  });
});

describe('docker-agent config: ORANGERY_PIDS_LIMIT', () => {
  it('defaults to 4096; any integer from 16 to 4194304', () => {
    expect(loadAgentConfig(base).pidsLimit).toBe(4096);
    expect(loadAgentConfig({ ...base, ORANGERY_PIDS_LIMIT: ' 16 ' }).pidsLimit).toBe(16);
    expect(loadAgentConfig({ ...base, ORANGERY_PIDS_LIMIT: '4194304' }).pidsLimit).toBe(4_194_304);
    expect(loadAgentConfig({ ...base, ORANGERY_PIDS_LIMIT: '' }).pidsLimit).toBe(4096);
  });

  it.each(['0', '-1', '15', '4194305', '4096.5', '1e4', 'unlimited', '4096 pids'])('refuses ORANGERY_PIDS_LIMIT=%j (exit 2 in main)', (value) => {
    expect(() => loadAgentConfig({ ...base, ORANGERY_PIDS_LIMIT: value })).toThrow(ConfigError);
    expect(() => loadAgentConfig({ ...base, ORANGERY_PIDS_LIMIT: value })).toThrow(/ORANGERY_PIDS_LIMIT/);
  });
});

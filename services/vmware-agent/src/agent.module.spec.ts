import { describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/nats-core';
import { compileWithFakes, NATS } from '@orangery/service-kit';
import { createLogger } from '@orangery/telemetry';
import { loadVmwareAgentConfig } from './config';
import { VmwareAgentModule } from './agent.module';
import { VmwareAgentService } from './domain/vmware-agent.service';
import { FakeVcenter } from './domain/testing/fake-vcenter';
import type { VsphereVcenter } from './adapters/vsphere-vcenter';
import { VmwareRuntime } from './transport/vmware-runtime';
import { AGENT_SERVICE, EVENTS } from './tokens';

const config = loadVmwareAgentConfig({
  ORANGERY_NATS_URL: 'nats://nowhere:4222',
  ORANGERY_VCENTER_URL: 'https://vcenter.example/sdk',
  ORANGERY_VCENTER_USER: 'agent',
  ORANGERY_VCENTER_PASSWORD: 'secret',
});

describe('VmwareAgentModule wiring', () => {
  it('builds the runtime on the vCenter and connection it is given, with nothing connected', async () => {
    const nc = {} as NatsConnection;
    // What the module reads of the adapter besides the Vcenter port: its about line, its
    // client's URL (for events) and the roots the change watcher follows.
    const vcenter = Object.assign(new FakeVcenter(), {
      about: 'VMware vCenter Server (fake)',
      client: { url: new URL('https://vcenter.example/sdk') },
      watchRoots: { vms: { type: 'Folder', value: 'group-v1' }, hosts: { type: 'Folder', value: 'group-h1' } },
    }) as unknown as VsphereVcenter;
    const events = { instance: () => undefined, host: () => undefined };
    const ctx = await compileWithFakes(VmwareAgentModule.forRoot(config, createLogger('vmware-agent-test'), vcenter), [
      { provide: NATS, useValue: nc },
      { provide: EVENTS, useValue: events },
    ]);
    const agent = ctx.get<VmwareAgentService>(AGENT_SERVICE);
    expect(agent).toBeInstanceOf(VmwareAgentService);
    expect(ctx.get(VmwareRuntime)).toMatchObject({ nc, vc: vcenter, agent, events, config });
    expect(ctx.get(VmwareRuntime)).toMatchObject({ hosts: expect.any(Object), changes: expect.any(Object), watcher: expect.any(Object) });
    await ctx.close();
  });
});

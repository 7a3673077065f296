import { describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/nats-core';
import { compileWithFakes, NATS } from '@orangery/service-kit';
import { createLogger } from '@orangery/telemetry';
import { loadAgentConfig } from './config';
import { AgentModule } from './agent.module';
import { AgentService } from './domain/agent.service';
import { SelfFence } from './domain/self-fence';
import { WireProbeService } from './domain/wire-probe';
import { FakeEngine } from './domain/testing/fake-engine';
import { HostRuntime } from './transport/host-runtime';
import { AGENT_SERVICE, ENGINE, ENGINE_FACTS, EVENTS, SELF_FENCE, WIRE_PROBE } from './tokens';

const config = loadAgentConfig({ ORANGERY_NATS_URL: 'nats://nowhere:4222', ORANGERY_HOST_ID: 'srv-1', ORANGERY_UPLINK: 'eth0' });

describe('AgentModule (docker-agent) wiring', () => {
  it('builds the runtime and the domain services with the engine facts and connection it is given, with nothing connected', async () => {
    const nc = {} as NatsConnection;
    const engine = new FakeEngine();
    const facts = { cpus: 8, memoryMb: 16_384, diskMb: 102_400, version: 'fake' };
    const ctx = await compileWithFakes(AgentModule.forRoot(config, createLogger('docker-agent-test')), [
      { provide: NATS, useValue: nc },
      { provide: ENGINE, useValue: engine },
      // the real factory waits for the docker engine to answer
      { provide: ENGINE_FACTS, useValue: facts },
    ]);
    const agent = ctx.get<AgentService>(AGENT_SERVICE);
    expect(agent).toBeInstanceOf(AgentService);
    expect(ctx.get(SELF_FENCE)).toBeInstanceOf(SelfFence);
    expect(ctx.get(WIRE_PROBE)).toBeInstanceOf(WireProbeService);
    expect(ctx.get(HostRuntime)).toMatchObject({ nc, engine, agent, engineFacts: facts, events: ctx.get(EVENTS), config });
    await ctx.close();
  });
});

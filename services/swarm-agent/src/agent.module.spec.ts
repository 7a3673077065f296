import { describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/nats-core';
import { compileWithFakes, NATS } from '@orangery/service-kit';
import { createLogger } from '@orangery/telemetry';
import { loadSwarmAgentConfig } from './config';
import { SwarmAgentModule } from './agent.module';
import { SwarmAgentService } from './domain/swarm-agent.service';
import { SwarmNodes } from './domain/swarm-nodes';
import { TaskWatch } from './domain/task-watch';
import { FakeSwarm, swarmEngineOf } from './domain/testing/fake-swarm';
import { SwarmRuntime } from './transport/swarm-runtime';
import { EVENTS, SWARM, SWARM_AGENT, SWARM_NODES, TASK_WATCH } from './tokens';

const config = loadSwarmAgentConfig({
  ORANGERY_NATS_URL: 'nats://nowhere:4222',
  ORANGERY_SWARM_MANAGER: 'unix:///nowhere.sock',
  ORANGERY_SWARM_CLUSTER: 'lab',
});

describe('SwarmAgentModule wiring', () => {
  it('builds the runtime and the domain services with the engines and connection it is given, with nothing connected', async () => {
    const nc = { publish: () => undefined } as unknown as NatsConnection;
    const fake = new FakeSwarm();
    const swarm = swarmEngineOf(fake);
    const ctx = await compileWithFakes(SwarmAgentModule.forRoot(config, createLogger('swarm-agent-test'), swarm, fake, 'fake'), [
      { provide: NATS, useValue: nc },
      // the real queue makes a JetStream client of the connection
      { provide: EVENTS, useValue: { instance: () => undefined, host: () => undefined, flush: async () => undefined } },
    ]);
    expect(ctx.get(SWARM_AGENT)).toBeInstanceOf(SwarmAgentService);
    expect(ctx.get(SWARM_NODES)).toBeInstanceOf(SwarmNodes);
    expect(ctx.get(TASK_WATCH)).toBeInstanceOf(TaskWatch);
    expect(ctx.get(SwarmRuntime)).toMatchObject({ nc, swarm: ctx.get(SWARM), agent: ctx.get(SWARM_AGENT), events: ctx.get(EVENTS), config });
    await ctx.close();
  });
});

import { ConfigError, runService, type ServiceDefinition } from '@orangery/service-kit';
import { loadSwarmAgentConfig, type SwarmAgentConfig } from './config';
import { SwarmAgentModule } from './agent.module';
import { ConfiguredNodeEngines, DockerSwarmEngine } from './adapters/swarm-engine';

/**
 * The manager is asked first (the preflight): an engine that is not a swarm manager is a
 * configuration error (exit 2, one line). An unreachable one is not: the agent cannot
 * start without it, so it waits and says so, like for NATS.
 */
function swarmAgent(): ServiceDefinition<SwarmAgentConfig> {
  let engine: DockerSwarmEngine | undefined;
  let engines: ConfiguredNodeEngines | undefined;
  let version = '';
  return {
    name: 'swarm-agent',
    observePort: 9406,
    loadConfig: loadSwarmAgentConfig,
    preflight: async (config) => {
      engine = new DockerSwarmEngine(config.manager);
      engines = new ConfiguredNodeEngines(config.nodeEngines, config.manager);
      for (let attempt = 0; ; attempt++) {
        try {
          const about = await engine.about();
          if (!about.isManager)
            throw new ConfigError(`ORANGERY_SWARM_MANAGER ${config.manager} is not a swarm manager (docker swarm init, or a manager's engine)`);
          const derived = engines.setManagerNode(about.nodeId, about.hostname, about.addr);
          if (derived !== undefined) {
            process.stderr.write(
              `orangery-swarm-agent: ORANGERY_SWARM_NODE_ENGINES is empty: nodes' engines derived from ORANGERY_SWARM_MANAGER as ${derived} (each checked to be its node before use)\n`,
            );
          }
          version = about.version;
          break;
        } catch (e) {
          if (e instanceof ConfigError) throw e;
          if (attempt % 10 === 0) process.stderr.write(`orangery-swarm-agent: swarm manager ${config.manager} not reachable yet (${String(e)}); waiting\n`);
          await new Promise((r) => setTimeout(r, 1_000));
        }
      }
      if (config.nodeEngines.kind === 'none' && engines.derivedTemplate === undefined) {
        process.stderr.write(
          "orangery-swarm-agent: ORANGERY_SWARM_NODE_ENGINES is empty: only the manager node can get the pools' networks; other nodes get no orangery tasks\n",
        );
      }
    },
    module: (config, log) => SwarmAgentModule.forRoot(config, log, engine!, engines!, version),
  };
}

void runService(swarmAgent());

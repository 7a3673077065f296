import { runService } from '@orangery/service-kit';
import { checkUplink, loadAgentConfig } from './config';
import { AgentModule } from './agent.module';

void runService({
  name: 'docker-agent',
  observePort: 9404,
  // one wake-up every 100 ms rather than 10: the idle agent's CPU (issue 17)
  eventLoopPrecisionMs: 100,
  loadConfig: loadAgentConfig,
  preflight: checkUplink,
  module: (config, logger) => AgentModule.forRoot(config, logger),
});

import { runService } from '@orangery/service-kit';
import { checkUplink, loadAgentConfig } from './config';
import { AgentModule } from './agent.module';

void runService({
  name: 'docker-agent',
  observePort: 9404,
  loadConfig: loadAgentConfig,
  preflight: checkUplink,
  module: (config, logger) => AgentModule.forRoot(config, logger),
});

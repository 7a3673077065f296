import { runService } from '@orangery/service-kit';
import { loadMigratorConfig } from './config';
import { MigratorModule } from './migrator.module';

void runService({
  name: 'migrator',
  observePort: 9403,
  loadConfig: loadMigratorConfig,
  module: (config, logger) => MigratorModule.forRoot(config, logger),
});

import { runService } from '@orangery/service-kit';
import { loadSchedulerConfig } from './config';
import { SchedulerModule } from './scheduler.module';

void runService({
  name: 'scheduler',
  observePort: 9402,
  loadConfig: loadSchedulerConfig,
  module: (config, logger) => SchedulerModule.forRoot(config, logger),
});

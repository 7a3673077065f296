import { runService } from '@orangery/service-kit';
import { loadConsoleConfig } from './config';
import { ConsoleModule } from './console.module';

void runService({
  name: 'console',
  loadConfig: loadConsoleConfig,
  module: (config, logger) => ConsoleModule.forRoot(config, logger),
  // observePort: 9407 (w2-observe)
});

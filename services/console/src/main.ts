import { runService } from '@orangery/service-kit';
import { loadConsoleConfig } from './config';
import { ConsoleModule } from './console.module';

void runService({
  name: 'console',
  observePort: 9407,
  loadConfig: loadConsoleConfig,
  module: ConsoleModule.forRoot,
});

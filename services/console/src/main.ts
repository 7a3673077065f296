import { runService } from '@orangery/service-kit';
import { loadConsoleConfig } from './config';
import { ConsoleModule } from './console.module';

// A variable, not a literal in the call: `observePort` (CONTRACT.md "Health and metrics",
// console :9407) is a field of the service kit's ServiceDefinition since w2-observe; this
// compiles with and without it.
const definition = {
  name: 'console',
  observePort: 9407,
  loadConfig: loadConsoleConfig,
  module: ConsoleModule.forRoot,
};

void runService(definition);

import { Module, type DynamicModule } from '@nestjs/common';
import { CONFIG, LOGGER, NATS, natsWithReadiness } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { ConsoleConfig } from './config';
import { ConsoleRuntime } from './transport/console.runtime';

/**
 * The reply inbox prefix of the console's NATS user (docs/security.md, tools/creds): only
 * the three control-plane services may read the shared `_INBOX.>`.
 */
export const CONSOLE_INBOX_PREFIX = '_INBOX_console';

/** The console holds no database and no state: NATS, and the HTTP server over it. */
@Module({})
export class ConsoleModule {
  static forRoot(config: ConsoleConfig, logger: Logger): DynamicModule {
    return {
      module: ConsoleModule,
      providers: [
        { provide: CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
        {
          provide: NATS,
          useFactory: () => natsWithReadiness(config.natsUrl, 'console', logger, CONSOLE_INBOX_PREFIX),
        },
        ConsoleRuntime,
      ],
    };
  }
}

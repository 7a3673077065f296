import { runService } from '@orangery/service-kit';
import { loadIpamConfig } from './config';
import { IpamModule } from './ipam.module';

void runService({
  name: 'ipam',
  observePort: 9401,
  loadConfig: loadIpamConfig,
  module: (config, logger) => IpamModule.forRoot(config, logger),
});

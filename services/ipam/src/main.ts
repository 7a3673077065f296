import { runService } from '@orangery/service-kit';
import { loadIpamConfig } from './config';
import { IpamModule } from './ipam.module';

void runService({
  name: 'ipam',
  loadConfig: loadIpamConfig,
  module: (config, logger) => IpamModule.forRoot(config, logger),
});

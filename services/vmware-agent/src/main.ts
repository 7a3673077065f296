import { ConfigError, runService } from '@orangery/service-kit';
import type { VsphereLogger } from '@orangery/vsphere';
import { loadVmwareAgentConfig, type VmwareAgentConfig } from './config';
import { VmwareAgentModule } from './agent.module';
import { VsphereVcenter } from './adapters/vsphere-vcenter';

// The vCenter session is opened before anything else, so that wrong credentials or an
// unreachable vCenter end the process at once (exit 2, one line); the client's own log
// lines go to the service logger once it exists.
let vcenter: VsphereVcenter | undefined;
let vsphereLog: VsphereLogger = {};
const logger: VsphereLogger = {
  debug: (o, m) => vsphereLog.debug?.(o, m),
  info: (o, m) => vsphereLog.info?.(o, m),
  warn: (o, m) => vsphereLog.warn?.(o, m),
};

async function connectVcenter(config: VmwareAgentConfig): Promise<void> {
  try {
    vcenter = await VsphereVcenter.connect(
      {
        url: config.vcenterUrl,
        user: config.vcenterUser,
        password: config.vcenterPassword,
        insecure: config.vcenterInsecure,
        datacenter: config.datacenter,
        folder: config.folder,
        callTimeoutMs: config.callTimeoutSeconds * 1000,
        taskTimeoutMs: config.taskTimeoutSeconds * 1000,
        customization: config.customization,
      },
      logger,
    );
  } catch (e) {
    // the client's messages name the cause and never carry the password
    throw new ConfigError(`vCenter ${config.vcenterUrl}: ${(e as Error).message.replace(/\s+/g, ' ')}`);
  }
}

void runService({
  name: 'vmware-agent',
  loadConfig: loadVmwareAgentConfig,
  preflight: connectVcenter,
  module: (config, log) => {
    vsphereLog = log;
    return VmwareAgentModule.forRoot(config, log, vcenter!);
  },
});

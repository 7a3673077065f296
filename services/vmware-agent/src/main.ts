import { ConfigError, runService, type ServiceDefinition } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { VsphereLogger } from '@orangery/vsphere';
import { loadVmwareAgentConfig, type VmwareAgentConfig } from './config';
import { VmwareAgentModule } from './agent.module';
import { VsphereVcenter } from './adapters/vsphere-vcenter';

/**
 * The vCenter session is opened before anything else (the preflight), so that wrong
 * credentials or an unreachable vCenter end the process at once (exit 2, one line). The
 * client logs from the start; its lines go to the service logger once there is one.
 */
class VcenterPreflight {
  private vcenter: VsphereVcenter | undefined;
  private log: VsphereLogger = {};
  private readonly forwarding: VsphereLogger = {
    debug: (o, m) => this.log.debug?.(o, m),
    info: (o, m) => this.log.info?.(o, m),
    warn: (o, m) => this.log.warn?.(o, m),
  };

  async connect(config: VmwareAgentConfig): Promise<void> {
    try {
      this.vcenter = await VsphereVcenter.connect(
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
        this.forwarding,
      );
    } catch (e) {
      // the client's messages name the cause and never carry the password
      throw new ConfigError(`vCenter ${config.vcenterUrl}: ${(e as Error).message.replace(/\s+/g, ' ')}`);
    }
  }

  /** The connected session, its log lines from now on to `logger`. */
  session(logger: Logger): VsphereVcenter {
    if (!this.vcenter) throw new Error('the vCenter session is opened by the preflight, which has not run');
    this.log = logger;
    return this.vcenter;
  }
}

function vmwareAgent(): ServiceDefinition<VmwareAgentConfig> {
  const vcenter = new VcenterPreflight();
  return {
    name: 'vmware-agent',
    observePort: 9405,
    loadConfig: loadVmwareAgentConfig,
    preflight: (config) => vcenter.connect(config),
    module: (config, log) => VmwareAgentModule.forRoot(config, log, vcenter.session(log)),
  };
}

void runService(vmwareAgent());

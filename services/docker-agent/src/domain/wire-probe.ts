import { invalidRequest, OrangeryError, type ProbeWireCommand, type ProbeWireResult } from '@orangery/contracts';
import { LABEL, parentInterface } from './container-spec';
import { stateOf, type ArpProbe, type Engine, type LinkState } from './ports';
import { withTimeout } from './timeouts';

export interface WireProbeSettings {
  hostId: string;
  uplink: string;
  /** probes in flight at once (each is a few arping processes for ~300 ms) */
  concurrency: number;
  engineTimeoutMs: number;
}

/**
 * `orangery.agent.<hostId>.wire.probe`: which of these addresses answer ARP on this VLAN?
 * The scheduler asks before it takes a silent host's instances for gone, and before it
 * starts a VM with an IP. `answered: false` is evidence of silence that lets the control
 * plane start a copy, so nothing uncertain is ever reported as false: a probe that fails
 * fails the whole request.
 */
export class WireProbeService {
  constructor(
    private readonly engine: Pick<Engine, 'listManaged'>,
    private readonly probe: ArpProbe,
    private readonly link: Pick<LinkState, 'exists'>,
    private readonly settings: WireProbeSettings,
  ) {}

  async probeWire(cmd: ProbeWireCommand): Promise<ProbeWireResult> {
    let iface: string;
    try {
      iface = parentInterface(this.settings.uplink, cmd.vlan);
    } catch (e) {
      throw invalidRequest('vlan', (e as Error).message);
    }
    if (!(await this.link.exists(iface))) {
      throw new OrangeryError(
        'UNAVAILABLE',
        `${this.settings.hostId} has no interface ${iface} (no network of VLAN ${cmd.vlan} on this host yet): ask an agent that has one`,
        { iface, vlan: cmd.vlan },
      );
    }
    // A macvlan parent cannot see its own children: this host's running containers are
    // answered from the engine, never probed (a probe would call them silent).
    let own: Set<string>;
    try {
      const containers = await withTimeout(this.engine.listManaged(), this.settings.engineTimeoutMs, 'the engine (list containers)');
      own = new Set(
        containers
          .filter((c) => stateOf(c) === 'running' && Number(c.labels[LABEL.vlan] ?? 0) === cmd.vlan && c.labels[LABEL.ip])
          .map((c) => c.labels[LABEL.ip]!),
      );
    } catch (e) {
      throw new OrangeryError('UNAVAILABLE', `${this.settings.hostId} cannot tell its own containers' addresses: ${(e as Error).message}`, {
        retryable: true,
      });
    }
    const answered = new Map<string, boolean>();
    const queue = cmd.ips.filter((ip) => !own.has(ip));
    const worker = async () => {
      for (let ip = queue.shift(); ip !== undefined; ip = queue.shift()) {
        try {
          answered.set(ip, await this.probe.inUse(iface, ip));
        } catch (e) {
          queue.length = 0;
          throw new OrangeryError('UNAVAILABLE', `the ARP probe of ${ip} on ${iface} failed: ${(e as Error).message}`, { ip, iface, retryable: true });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(this.settings.concurrency, queue.length)) }, worker));
    return {
      hostId: this.settings.hostId,
      vlan: cmd.vlan,
      iface,
      results: cmd.ips.map((ip) => ({ ip, answered: own.has(ip) || answered.get(ip) === true })),
    };
  }
}

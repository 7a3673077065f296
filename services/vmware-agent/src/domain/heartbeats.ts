import type { Heartbeat, HostFacts } from '@orangery/contracts';
import type { EsxiHost, EsxiHostState, Vcenter } from './ports';
import { hostIdFromName } from './vm-spec';
import type { VmwareAgentService } from './vmware-agent.service';

export interface HeartbeatSettings {
  reservedCpus: number;
  reservedMemoryMb: number;
  /** every vCenter read of one round together (host states, and the VM list when the change stream is not in sync) */
  readTimeoutMs: number;
}

/** What one round of heartbeats found: vCenter's word on every host, and the heartbeats to publish. */
export interface HeartbeatRound {
  states: EsxiHostState[];
  heartbeats: Heartbeat[];
}

/**
 * The budget of one heartbeat round's vCenter reads: the heartbeat interval, but at least
 * 2 s (a busy vCenter is not a dead one) and never more than one call's timeout.
 */
export function heartbeatReadTimeoutMs(config: { heartbeatSeconds: number; callTimeoutSeconds: number }): number {
  return Math.min(config.callTimeoutSeconds * 1000, Math.max(2_000, config.heartbeatSeconds * 1000));
}

const CONNECTION_STATES = new Set(['connected', 'disconnected', 'notResponding']);
type ConnectionState = NonNullable<Heartbeat['connectionState']>;

export function hostFacts(h: EsxiHost, settings: Pick<HeartbeatSettings, 'reservedCpus' | 'reservedMemoryMb'>): HostFacts {
  const reserved = { cpu: Math.min(settings.reservedCpus, h.cpuCores), memoryMb: Math.min(settings.reservedMemoryMb, h.memoryMb), diskMb: 0 };
  const labels: Record<string, string> = { esxi: h.name, datacenter: h.datacenter };
  if (h.cluster) labels['cluster'] = h.cluster;
  return {
    hostId: hostIdFromName(h.name),
    backend: 'vmware',
    total: { cpu: h.cpuCores, memoryMb: h.memoryMb, diskMb: h.diskMb },
    reserved,
    capacity: { cpu: h.cpuCores - reserved.cpu, memoryMb: h.memoryMb - reserved.memoryMb, diskMb: h.diskMb },
    labels,
    vlans: h.vlans,
  };
}

/**
 * The ESXi hosts' heartbeats, from vCenter's view. A heartbeat vouches for what vCenter said
 * in this round, so each round reads it again (one cheap read, within `readTimeoutMs`):
 * - vCenter answers: every host of the inventory heartbeats, whatever its connection state,
 *   with `connectionState`, `maintenance` and `haProtected`. A `notResponding` host keeps
 *   heartbeating: the scheduler can tell "vCenter says the host is gone" from "the agent
 *   is silent".
 * - vCenter does not answer in time (down, frozen, slow): no heartbeat at all. The agent
 *   knows nothing fresh; the scheduler sees its hosts silent (`unknown`: nothing moves).
 * Capacity and usage come from the inventory (refreshed on its own, slower loop).
 */
export class HeartbeatSource {
  private readonly seq = new Map<string, number>();

  constructor(
    private readonly vc: Vcenter,
    private readonly agent: Pick<VmwareAgentService, 'snapshot' | 'allocated'>,
    private readonly settings: HeartbeatSettings,
    private readonly now: () => number = Date.now,
  ) {}

  /** One round; undefined when vCenter did not answer within the budget (no heartbeats then). Never throws for vCenter's sake. */
  async round(hosts: ReadonlyMap<string, EsxiHost>): Promise<HeartbeatRound | undefined> {
    const deadline = this.now() + this.settings.readTimeoutMs;
    let states: EsxiHostState[];
    let vms;
    try {
      states = await this.vc.hostStates(this.settings.readTimeoutMs);
      const left = deadline - this.now();
      if (left <= 0) return undefined;
      // from the change stream when in sync (no call): a listing waits for every power-on in flight
      vms = await this.agent.snapshot(left);
    } catch {
      return undefined;
    }
    const stateOf = new Map(states.map((s) => [s.ref, s]));
    const time = new Date(this.now()).toISOString();
    const heartbeats: Heartbeat[] = [];
    for (const [hostId, h] of hosts) {
      const state = stateOf.get(h.ref);
      // gone from vCenter (the inventory refresh stops serving it), or a state the contract has no word for
      if (!state || !CONNECTION_STATES.has(state.connectionState)) continue;
      const { amounts, count } = this.agent.allocated(vms, hostId);
      const seq = this.seq.get(hostId) ?? 0;
      this.seq.set(hostId, seq + 1);
      heartbeats.push({
        ...hostFacts(h, this.settings),
        time,
        seq,
        allocated: amounts,
        usage: {
          cpu: h.mhzPerCore > 0 ? Math.round((h.usedMhz / h.mhzPerCore) * 100) / 100 : 0,
          memoryMb: h.usedMemoryMb,
          diskMb: Math.max(0, h.diskMb - h.diskFreeMb),
        },
        instances: count,
        // the vmware-agent never fences: its link to NATS says nothing about the ESXi hosts'
        fenced: false,
        connectionState: state.connectionState as ConnectionState,
        maintenance: state.inMaintenanceMode,
        haProtected: state.haProtected,
      });
    }
    return { states, heartbeats };
  }
}

import { OrangeryError, type Heartbeat, type HostFacts } from '@orangery/contracts';
import { hostFacts, type HeartbeatSource } from './heartbeats';
import type { DomainLog, EsxiHost, EventSink } from './ports';
import { hostIdFromName } from './vm-spec';
import type { VmwareAgentService } from './vmware-agent.service';

export interface EsxiHostsDeps {
  agent: Pick<VmwareAgentService, 'setHosts'>;
  heartbeats: Pick<HeartbeatSource, 'round'>;
  events: EventSink;
  /** vCenter's product and version, for host.registered */
  engine: string;
  /** vCenter's address, for the logs */
  vcenter: string;
  /** ms on any clock: only differences are used (how long vCenter was silent) */
  now: () => number;
  log: DomainLog;
}

/**
 * The ESXi hosts this agent serves, as vCenter shows them: which hosts there are (the
 * inventory), their connection state (host.registered again when a host reconnects,
 * host.disconnected when it leaves vCenter), and the heartbeats, which only go out while
 * vCenter answers. The runtime serves each host's subjects and publishes the heartbeats.
 */
export class EsxiHosts {
  private readonly hosts = new Map<string, EsxiHost>();
  private readonly hostIdOfRef = new Map<string, string>();
  /** since when vCenter has not answered a heartbeat round (undefined: it answers) */
  private vcenterSilentSince: number | undefined;

  constructor(
    private readonly deps: EsxiHostsDeps,
    private readonly settings: { reservedCpus: number; reservedMemoryMb: number },
  ) {}

  get ids(): string[] {
    return [...this.hosts.keys()];
  }

  /**
   * A fresh inventory: a new host is registered (host.registered), a known one's connection
   * state followed, one gone from vCenter forgotten. Returns the hosts added and removed, for
   * the runtime to serve or stop serving.
   */
  inventory(list: readonly EsxiHost[]): { added: string[]; removed: string[] } {
    const added: string[] = [];
    const seen = new Set<string>();
    for (const h of list) {
      const hostId = hostIdFromName(h.name);
      seen.add(hostId);
      const before = this.hosts.get(hostId);
      this.hosts.set(hostId, h);
      this.hostIdOfRef.set(h.ref, hostId);
      if (!before) {
        this.deps.events.host(hostId, 'registered', { ...this.facts(h), engine: this.deps.engine, esxi: h.name, connectionState: h.connectionState });
        added.push(hostId);
      } else if (before.connectionState !== h.connectionState) {
        this.connection(h.ref, h.connectionState, before.connectionState);
      }
    }
    const removed = [...this.hosts.keys()].filter((hostId) => !seen.has(hostId));
    for (const hostId of removed) {
      const ref = this.hosts.get(hostId)!.ref;
      this.hosts.delete(hostId);
      if (this.hostIdOfRef.get(ref) === hostId) this.hostIdOfRef.delete(ref);
    }
    this.deps.agent.setHosts(this.hosts);
    return { added, removed };
  }

  /** A served host's facts (orangery.agent.<hostId>.host.get); NOT_FOUND for a host this agent does not serve (any more). */
  factsOf(hostId: string): HostFacts {
    const h = this.hosts.get(hostId);
    if (!h) throw new OrangeryError('NOT_FOUND', `this vmware-agent does not serve host ${hostId}`, { hostId });
    return this.facts(h);
  }

  /** vCenter's word on a host's connection (change stream, inventory, heartbeat read); events on a change only. */
  connection(ref: string, state: string, previous?: string): void {
    const hostId = this.hostIdOfRef.get(ref);
    const h = hostId ? this.hosts.get(hostId) : undefined;
    if (!hostId || !h) return;
    const was = previous ?? h.connectionState;
    if (was === state) return;
    h.connectionState = state;
    this.deps.agent.setHosts(this.hosts);
    if (state === 'connected') {
      this.deps.log.info({ hostId }, 'ESXi host connected again');
      this.deps.events.host(hostId, 'registered', { ...this.facts(h), engine: this.deps.engine, esxi: h.name, connectionState: state, reregistered: true });
    } else {
      this.deps.log.warn({ hostId, connectionState: state }, 'ESXi host no longer connected to vCenter; its heartbeats say so');
      this.deps.events.host(hostId, 'disconnected', { connectionState: state, esxi: h.name });
    }
  }

  /**
   * One heartbeat round. Heartbeats vouch for what vCenter says now: when it does not answer
   * within the round's budget, none go out (the scheduler sees the hosts silent: unknown,
   * nothing moves). What vCenter said of each host is kept.
   */
  async heartbeats(): Promise<Heartbeat[]> {
    const round = await this.deps.heartbeats.round(this.hosts);
    if (!round) {
      if (this.vcenterSilentSince === undefined) {
        this.vcenterSilentSince = this.deps.now();
        this.deps.log.warn(
          { vcenter: this.deps.vcenter },
          'vCenter did not answer the heartbeat read in time; heartbeats stop until it does (the VMs are not touched)',
        );
      }
      return [];
    }
    if (this.vcenterSilentSince !== undefined) {
      this.deps.log.info({ silentMs: this.deps.now() - this.vcenterSilentSince }, 'vCenter answers again; heartbeats resume');
      this.vcenterSilentSince = undefined;
    }
    for (const st of round.states) {
      const hostId = this.hostIdOfRef.get(st.ref);
      const h = hostId ? this.hosts.get(hostId) : undefined;
      if (!h) continue;
      h.inMaintenanceMode = st.inMaintenanceMode;
      h.haProtected = st.haProtected;
      this.connection(st.ref, st.connectionState);
    }
    return round.heartbeats;
  }

  private facts(h: EsxiHost) {
    return hostFacts(h, this.settings);
  }
}

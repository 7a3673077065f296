import type { Backend, FleetFailoverData, HostLostData, HostUnknownData, NewEvent } from '@orangery/contracts';
import type { HostBook, HostEntry } from './host-book';
import type { AgentPort, CoreLog } from './ports';

/** An instance a silent host is believed to hold: its address and the VLAN it lives on. */
export interface HeldAddress {
  readonly instanceId: string;
  readonly ip: string;
  readonly vlan: number;
}

export interface FailoverSettings {
  readonly source: string;
  /** a host is silent (unknown) after this long without a heartbeat */
  readonly lostAfterMs: number;
  /** fenceAfter + margin: before this, a silent host's instances are never taken for gone */
  readonly fenceDeadlineMs: number;
}

export interface FailoverPorts {
  readonly agents: Pick<AgentPort, 'probe'>;
  readonly log: CoreLog;
  /** journals events (outbox); a failure is logged and the verdict is taken again next sweep */
  readonly emit: (events: NewEvent<unknown>[]) => Promise<void>;
  /** the addresses the records place on a host */
  readonly addressesOn: (hostId: string) => HeldAddress[];
  /** the host is lost: replace its instances (same IPs and MACs) */
  readonly lost: (hostId: string) => void;
}

/**
 * Where failover is decided (CONTRACT.md "Failure semantics"). Two channels must both say
 * "gone" before a host's instances are replaced: its agent is silent (no heartbeat past
 * lostAfter: the host is `unknown`) AND, past fenceAfter + margin, every address the
 * records place on it is silent to ARP probes sent by another live agent on its VLAN (then
 * `lost`). An answer from any of them keeps the host `unknown`: its instances are serving,
 * whatever the control plane thinks. No prober on a VLAN means no evidence: unknown.
 *
 * Also: a backend more than half of whose hosts are silent pauses (a mass silence is more
 * likely our own partition than half a data centre dying), and a vSphere HA cluster's hosts
 * stay unknown (HA restarts their VMs; a clone would be a second copy), and so do swarm
 * nodes (swarm reschedules a down node's tasks on the other nodes of its cluster itself;
 * the scheduler follows them there, see swarm.ts).
 */
export class FailoverJudge {
  private readonly paused = new Set<Backend>();
  private readonly probing = new Set<string>();
  /** silences already announced (host.unknown once per silence) */
  private readonly announced = new Set<string>();

  constructor(
    private readonly hosts: HostBook,
    private readonly settings: FailoverSettings,
    private readonly ports: FailoverPorts,
  ) {}

  isPaused(backend: Backend): boolean {
    return this.paused.has(backend);
  }

  /** One pass over the fleet; probes run in the background, one per host at a time. */
  sweep(): void {
    this.updatePauses();
    for (const h of this.hosts.all()) {
      if (!this.hosts.isSilent(h)) {
        this.announced.delete(h.id);
        continue;
      }
      if (h.judged === 'lost') continue;
      if (h.judged === undefined) this.hosts.judge(h.id, 'unknown');
      const silentMs = this.hosts.silentFor(h.id);
      const hold = this.holdReason(h, silentMs);
      if (hold) {
        this.announceUnknown(h, silentMs, hold);
        continue;
      }
      if (!this.probing.has(h.id)) void this.probeAndJudge(h);
    }
  }

  /** Why a silent host cannot be judged lost now; undefined when its wire may be checked. */
  private holdReason(h: HostEntry, silentMs: number): string | undefined {
    if (h.backend === 'vmware' && h.downSince === undefined) {
      return 'the vmware-agent is silent: vCenter may still run its VMs (only vCenter saying the host is not responding moves them)';
    }
    if (h.backend === 'vmware' && h.haProtected) return 'vSphere HA protects its cluster: HA restarts its VMs';
    if (h.backend === 'swarm') return "swarm owns restarts: it reschedules the node's tasks on the other nodes of its cluster";
    if (this.paused.has(h.backend)) return `failover of ${h.backend} is paused: more than half of its hosts are silent`;
    if (silentMs <= this.settings.fenceDeadlineMs) return 'silent, within fenceAfter + margin';
    return undefined;
  }

  private updatePauses(): void {
    const byBackend = new Map<Backend, { hosts: number; silent: string[] }>();
    for (const h of this.hosts.all()) {
      const b = byBackend.get(h.backend) ?? { hosts: 0, silent: [] };
      b.hosts++;
      if (this.hosts.isSilent(h)) b.silent.push(h.id);
      byBackend.set(h.backend, b);
    }
    for (const [backend, b] of byBackend) {
      const mass = b.hosts >= 2 && b.silent.length * 2 > b.hosts;
      if (mass === this.paused.has(backend)) continue;
      if (mass) this.paused.add(backend);
      else this.paused.delete(backend);
      const data: FleetFailoverData = { backend, hosts: b.hosts, silent: b.silent.length, silentHosts: b.silent.slice(0, 100) };
      this.ports.log.warn({ ...data }, mass ? 'mass silence: failover paused for this backend' : 'failover resumed');
      this.publish('fleet', mass ? 'failover_paused' : 'failover_resumed', backend, data);
    }
  }

  private announceUnknown(h: HostEntry, silentMs: number, reason: string, answering?: string[]): void {
    if (this.announced.has(h.id)) return;
    this.announced.add(h.id);
    const data: HostUnknownData = {
      hostId: h.id,
      backend: h.backend,
      silentSeconds: Math.round(silentMs / 100) / 10,
      reason,
      ...(answering ? { answering } : {}),
    };
    this.ports.log.warn({ ...data }, 'host unknown: nothing of it is replaced');
    this.publish('host', 'unknown', h.id, data, `host-unknown:${h.id}:${new Date(h.lastBeatWall).toISOString()}`);
  }

  private async probeAndJudge(h: HostEntry): Promise<void> {
    this.probing.add(h.id);
    try {
      const held = this.ports.addressesOn(h.id);
      const byVlan = new Map<number, string[]>();
      for (const a of held) byVlan.set(a.vlan, [...(byVlan.get(a.vlan) ?? []), a.ip]);
      const answering: string[] = [];
      let probedBy: string | undefined;
      for (const [vlan, ips] of byVlan) {
        const prober = this.proberFor(h.id, vlan);
        if (!prober) {
          this.announceUnknown(h, this.hosts.silentFor(h.id), `no live agent on VLAN ${vlan} can probe its instances: no evidence they are off the wire`);
          return;
        }
        probedBy = prober;
        const answers = await this.ports.agents.probe(prober, vlan, ips);
        for (const ip of ips) if (answers.get(ip) !== false) answering.push(ip);
      }
      // The heartbeat may have come back while the probes ran: then nothing is judged.
      if (!this.hosts.isSilent(h) || h.judged === 'lost') return;
      if (answering.length > 0) {
        this.announceUnknown(h, this.hosts.silentFor(h.id), 'its agent is silent but its instances answer on the wire: they are serving', answering);
        return;
      }
      this.hosts.judge(h.id, 'lost');
      const data: HostLostData = {
        hostId: h.id,
        backend: h.backend,
        lastHeartbeat: new Date(h.lastBeatWall).toISOString(),
        lostAfterSeconds: Math.round(this.settings.lostAfterMs / 1000),
        silentSeconds: Math.round(this.hosts.silentFor(h.id) / 100) / 10,
        offWire: held.map((a) => a.ip),
        ...(probedBy ? { probedBy } : {}),
      };
      this.ports.log.warn({ ...data }, 'host lost: silent past fenceAfter + margin and its instances are off the wire; replacing them');
      this.publish('host', 'lost', h.id, data, `host-lost:${h.id}:${data.lastHeartbeat}`);
      this.ports.lost(h.id);
    } catch (e) {
      this.ports.log.warn({ host: h.id, err: e instanceof Error ? e.message : String(e) }, 'wire probe for a silent host failed; it stays unknown');
    } finally {
      this.probing.delete(h.id);
    }
  }

  /** A live docker-agent, other than the silent host, that reaches the VLAN. */
  proberFor(excludeHost: string, vlan: number): string | undefined {
    const candidates: string[] = [];
    for (const h of this.hosts.all()) {
      if (h.id === excludeHost || h.backend !== 'docker' || h.isolated || this.hosts.isDown(h.id)) continue;
      if (h.facts.vlans === 'any' || h.facts.vlans.includes(vlan)) candidates.push(h.id);
    }
    // Spread the probing load; any live agent on the VLAN is as good as another.
    return candidates.length > 0 ? candidates[Math.floor(Math.random() * candidates.length)] : undefined;
  }

  private publish(area: string, what: string, subject: string, data: unknown, id?: string): void {
    this.ports
      .emit([{ area, what, source: this.settings.source, subject, data, ...(id ? { id } : {}) }])
      .catch((e: unknown) => this.ports.log.warn({ area, what, subject, err: e instanceof Error ? e.message : String(e) }, 'could not journal an event'));
  }
}

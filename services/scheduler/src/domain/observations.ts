import { decode, HostFacts, hostFactsOf, OrangeryError, type AgentInstance, type Heartbeat } from '@orangery/contracts';
import type { HostBook } from './host-book';
import type { Leftovers } from './leftovers';
import type { SlotError, SlotRecord } from './model';
import type { HostState } from './placement';
import type { AgentPort, CoreLog } from './ports';
import type { SchedulerEvents } from './scheduler-events';
import type { SlotBook } from './slot-book';
import { errorOf } from './slot-records';
import { followSwarmTask, isSwarmSlot, notASwarmTask } from './swarm';

export interface ObservationPorts {
  readonly agents: Pick<AgentPort, 'get' | 'start' | 'hostFacts'>;
  readonly log: CoreLog;
  /** wakes a slot's worker (the slot reconciler) */
  readonly kick: (id: string) => void;
  /** the failover judge's pass over the silent hosts (FailoverJudge.sweep) */
  readonly judgeSilentHosts: () => void;
}

export interface ObservationSettings {
  /** an agent's `failed` is final after this long (the agent restarts a crashed instance a few times first) */
  readonly failedGraceMs: number;
}

/** How long a `stopped` (or a listing that is not running) waits before the agent is asked again. */
const STOPPED_VERIFY_MS = 1_000;
/** Registration hints checked at once: a flood of forged host.registered costs at most this many requests in flight. */
const MAX_HINTS_IN_FLIGHT = 256;

/** What asking a host's own agent for its facts came to (confirmRegistration). */
export type RegistrationCheck = 'registered' | 'unreachable' | 'refused' | 'busy';

/**
 * Where what the agents report is turned into work: heartbeats and registrations feed the
 * host book; an instance event or an agent's list that disagrees with the records makes
 * the scheduler ask the agent again (`verify`) and then restart, replace or recreate the
 * instance; a copy no record places on a host is a leftover (Leftovers). The records stay
 * the truth: an observation never changes a slot except through a phase its worker runs.
 *
 * Failover itself is decided in FailoverJudge; here, its verdict `lost` (and a host that
 * fenced itself) marks the host's slots for replacement.
 *
 * Swarm slots (swarm.ts) are followed, never taken for leftovers nor replaced: swarm
 * restarts and moves their tasks itself, so a copy listed (or an event raised) on another
 * node of the slot's cluster only makes the scheduler ask the agent (a bound instance.get,
 * which answers the slot's task wherever it runs), and the record takes the node, IP and
 * MAC of that reply.
 */
export class Observations {
  private readonly verifying = new Map<string, NodeJS.Timeout>();
  /** swarm slots: the node whose listing or event caused the verify (asked when the record's node is unknown) */
  private readonly hints = new Map<string, string>();
  /** hosts whose registration hint is being checked with their agent */
  private readonly confirming = new Set<string>();
  /** each host's state at the last sweep, so the host book notices changes */
  private readonly hostStates = new Map<string, HostState>();

  constructor(
    private readonly book: SlotBook,
    private readonly hosts: HostBook,
    private readonly leftovers: Pick<Leftovers, 'found' | 'listed'>,
    private readonly events: SchedulerEvents,
    private readonly ports: ObservationPorts,
    private readonly settings: ObservationSettings,
  ) {}

  stop(): void {
    for (const t of this.verifying.values()) clearTimeout(t);
    this.verifying.clear();
    this.hints.clear();
  }

  // ---- hosts ------------------------------------------------------------------------------

  /** Host states, failover verdicts, isolated hosts' instances: cheap, run every second. */
  sweepHosts(): void {
    if (this.book.stopped || !this.book.loaded) return;
    this.hosts.sweep(this.hostStates);
    this.ports.judgeSilentHosts();
    for (const h of this.hosts.all()) {
      // The agent stopped everything itself (its instance network was isolated) and says so:
      // each instance moves once the agent confirms it stopped (stepReplace asks).
      if (h.fenced && !this.hosts.isSilent(h))
        this.replaceAll(h.id, { code: 'HOST_ISOLATED', message: `host ${h.id} fenced itself: its instance network is isolated`, host: h.id });
    }
  }

  /** Marks every settled slot of a host for replacement elsewhere with its IP. */
  replaceAll(hostId: string, lastError: SlotError): void {
    for (const id of this.book.slotsOn(hostId)) {
      const s = this.book.slot(id);
      if (!s || s.hostId !== hostId || s.phase !== null || s.hold) continue;
      // swarm owns its tasks' restarts: a second copy would be the scheduler's doing
      if (isSwarmSlot(s, this.hosts)) continue;
      this.ports.log.warn({ instanceId: id, host: hostId, code: lastError.code }, 'replacing an instance of a lost host');
      void this.book
        .update(s, { phase: 'replace', state: 'failed', lastError })
        .then(() => this.ports.kick(id))
        .catch((e: unknown) => this.ports.log.warn({ instanceId: id, err: errorOf(e).message }, 'could not record the replacement; will retry'));
    }
  }

  heartbeat(hb: Heartbeat): void {
    this.heardFrom(hb, hb.time);
  }

  /**
   * Facts the host's own agent stated (its reply on orangery.agent.<hostId>.host.get) count
   * as being heard from, like a heartbeat (they may arrive first after a silence). Never
   * called with a host.registered event's data: see confirmRegistration.
   */
  registered(facts: HostFacts): void {
    this.heardFrom(facts, new Date().toISOString());
  }

  /**
   * A host.registered event is a hint, never a fact (issue 13): any agent may publish on
   * the public event subjects, so its data could name a phantom host, another host's
   * capacity, or keep a dead host "alive". The hint only makes the scheduler ask that
   * host's own agent on its bound subject, and what the reply says is registered, if it
   * names the host asked. No reply (no such agent, a silent one): nothing changes.
   */
  async confirmRegistration(hostId: string): Promise<RegistrationCheck> {
    if (this.book.stopped) return 'refused';
    if (this.confirming.has(hostId) || this.confirming.size >= MAX_HINTS_IN_FLIGHT) return 'busy';
    this.confirming.add(hostId);
    try {
      let raw: unknown;
      try {
        raw = await this.ports.agents.hostFacts(hostId);
      } catch (e) {
        this.ports.log.debug({ host: hostId, err: errorOf(e).message }, 'host.registered not confirmed: its agent did not answer');
        return 'unreachable';
      }
      let facts: HostFacts;
      try {
        facts = hostFactsOf(decode(HostFacts, raw));
      } catch (e) {
        this.ports.log.warn({ host: hostId, err: errorOf(e).message }, "host.registered not confirmed: the agent's facts are malformed");
        return 'refused';
      }
      if (facts.hostId !== hostId) {
        this.ports.log.warn({ host: hostId, answered: facts.hostId }, 'host.registered not confirmed: the reply names another host');
        return 'refused';
      }
      // deposed while asking: the new leader's own hint decides
      if (this.book.stopped) return 'refused';
      this.registered(facts);
      return 'registered';
    } finally {
      this.confirming.delete(hostId);
    }
  }

  /** A sign of life: the host's silence (and any verdict on it) ends, announced once with host.recovered. */
  private heardFrom(hb: Heartbeat | HostFacts, at: string): void {
    const before = this.hosts.get(hb.hostId);
    const judged = before?.judged;
    const silentSince = before ? new Date(before.lastBeatWall).toISOString() : undefined;
    if (this.hosts.heartbeat(hb)) {
      this.ports.log.info({ host: hb.hostId, backend: hb.backend }, 'host is ready');
      this.hostStates.set(hb.hostId, this.hosts.stateOf(this.hosts.get(hb.hostId)!));
    }
    if (judged !== undefined && this.hosts.get(hb.hostId)?.judged === undefined && silentSince && !this.book.stopped) {
      this.ports.log.warn({ host: hb.hostId, was: judged }, 'host heard from again');
      const data = { hostId: hb.hostId, backend: hb.backend, lastHeartbeat: at, silentSince };
      void this.book
        .save({ events: [this.events.event('host', 'recovered', hb.hostId, data, undefined, `host-recovered:${hb.hostId}:${silentSince}`)] })
        .catch((e: unknown) => this.ports.log.warn({ host: hb.hostId, err: errorOf(e).message }, 'could not journal host.recovered'));
    }
  }

  // ---- instances --------------------------------------------------------------------------

  /**
   * An agent's instance event: anything that leaves a running slot not running is checked.
   * A swarm slot's: any event of a node of its cluster but its own `running` with the
   * recorded address (the task may have moved, or been restarted with another address).
   */
  instanceEvent(what: string, instanceId: string, hostId: string, ip?: string): void {
    const s = this.book.slot(instanceId);
    if (!s || s.phase !== null || s.hold) return;
    if (isSwarmSlot(s, this.hosts)) {
      if (!s.hostId || !this.ofSlotsCluster(s.hostId, hostId)) return;
      if (what === 'running' && hostId === s.hostId && ip === s.ip) return;
      this.verifyLater(instanceId, what === 'running' ? 0 : STOPPED_VERIFY_MS, hostId);
      return;
    }
    if (s.hostId !== hostId) return;
    if (what === 'failed') this.verifyLater(instanceId, this.settings.failedGraceMs);
    else if (what === 'stopped') this.verifyLater(instanceId, STOPPED_VERIFY_MS);
    else if (what === 'removed') this.verifyLater(instanceId, 0);
  }

  /** Anti-entropy: what an agent says runs on its host against the records. */
  agentList(hostId: string, instances: readonly AgentInstance[]): void {
    // A deposed core's records are stale, and a core not started yet has none: either would
    // remove instances the (new) leader placed.
    if (this.book.stopped || !this.book.loaded) return;
    const seen = new Set<string>();
    const leftovers = new Set<string>();
    for (const inst of instances) {
      seen.add(inst.instanceId);
      const s = this.book.slot(inst.instanceId);
      if (s?.hold) continue; // a migration has copies on two hosts for a while
      if (s && this.swarmTaskOfSlot(s, hostId, inst)) {
        // swarm's, wherever it runs in the cluster: followed (verify), never a leftover
        const moved = s.hostId !== hostId || inst.ip !== s.ip || inst.mac !== s.mac;
        if (s.phase === null && (inst.state !== 'running' || moved)) this.verifyLater(s.id, inst.state === 'running' ? 0 : STOPPED_VERIFY_MS, hostId);
        continue;
      }
      if (!s || s.hostId !== hostId) {
        // Not ours there: stopped, kept for the retention period, never started (Leftovers).
        this.leftovers.found(hostId, inst);
        leftovers.add(inst.instanceId);
        continue;
      }
      if (s.phase === null && inst.state !== 'running') this.verifyLater(s.id, inst.state === 'failed' ? this.settings.failedGraceMs : STOPPED_VERIFY_MS);
    }
    for (const id of this.book.slotsOn(hostId)) {
      const s = this.book.slot(id);
      if (s && s.phase === null && !s.hold && !seen.has(id)) this.verifyLater(id, 0);
    }
    this.leftovers.listed(hostId, leftovers);
  }

  /**
   * A swarm task `hostId`'s agent lists is the slot's own: the slot is swarm's (or being
   * placed, on no host yet) and `hostId` is a node of the cluster of its record's node.
   */
  private swarmTaskOfSlot(s: SlotRecord, hostId: string, inst: AgentInstance): boolean {
    if (inst.backend !== 'swarm' || this.hosts.get(hostId)?.backend !== 'swarm') return false;
    if (s.hostId === null) return s.backend === null || s.backend === 'swarm';
    return isSwarmSlot(s, this.hosts) && this.ofSlotsCluster(s.hostId, hostId);
  }

  /**
   * `hostId` may hold the task of a swarm slot recorded on `recorded`: a node of the same
   * cluster, or any swarm node heard from when the recorded node's cluster is not known (a
   * new leader that never heard from that node: it may have left the swarm, its tasks moved).
   * Only a bound get then moves the record (verifySwarm).
   */
  private ofSlotsCluster(recorded: string, hostId: string): boolean {
    if (this.hosts.sameCluster(recorded, hostId)) return true;
    return !this.hosts.clusterKnown(recorded) && this.hosts.clusterKnown(hostId);
  }

  private verifyLater(id: string, delayMs: number, hint?: string): void {
    if (hint !== undefined) this.hints.set(id, hint);
    if (this.verifying.has(id) || this.book.stopped) return;
    this.verifying.set(
      id,
      setTimeout(() => {
        this.verifying.delete(id);
        void this.verify(id).catch((e: unknown) => this.ports.log.warn({ instanceId: id, err: errorOf(e).message }, 'verify failed'));
      }, delayMs),
    );
  }

  /** Asks the agent how the instance really is, and acts: restart a stopped one, replace a failed one, recreate a missing one. */
  private async verify(id: string): Promise<void> {
    const hint = this.hints.get(id);
    this.hints.delete(id);
    const s = this.book.slot(id);
    if (!s || s.phase !== null || !s.hostId || s.hold) return;
    if (isSwarmSlot(s, this.hosts)) return this.verifySwarm(s, hint);
    const inst = await this.ports.agents.get(s.hostId, id);
    // Deposed meanwhile: the new leader's records decide, not ours (a start from here could
    // restart a copy the new leader has just moved elsewhere).
    if (this.book.stopped) return;
    const now = this.book.slot(id);
    if (now !== s) return; // changed meanwhile: that change decides
    if (!inst || inst.state === 'removed') {
      this.ports.log.warn({ instanceId: id, host: s.hostId }, 'instance is gone from its host; creating it again');
      await this.book.update(s, { phase: 'create', state: 'placed' });
      this.ports.kick(id);
    } else if (inst.state === 'failed') {
      this.ports.log.warn({ instanceId: id, host: s.hostId, reason: inst.reason }, 'instance failed; replacing it');
      await this.book.update(s, {
        phase: 'replace',
        state: 'failed',
        lastError: { code: 'FAILED', message: inst.reason ?? `exit code ${inst.exitCode ?? '?'}`, host: s.hostId },
      });
      this.ports.kick(id);
    } else if (inst.state === 'stopped' || inst.state === 'created') {
      this.ports.log.warn({ instanceId: id, host: s.hostId }, 'instance stopped by itself; starting it again');
      try {
        const started = await this.ports.agents.start(s.hostId, id);
        if (started.state !== 'running') throw new OrangeryError('START_FAILED', started.reason ?? `still ${started.state}`);
      } catch (e) {
        await this.book.update(s, { phase: 'replace', state: 'failed', lastError: { ...errorOf(e), host: s.hostId } });
        this.ports.kick(id);
      }
    }
  }

  /**
   * A swarm slot: asks a live node of its cluster (its own first) for the slot's task,
   * which the agent answers wherever it runs. Running elsewhere, or with another address:
   * the record follows. Gone (the service was removed behind our back): created again.
   * Failed or stopped: swarm restarts it (it owns restarts); its next event or listing
   * brings the scheduler back.
   */
  private async verifySwarm(s: SlotRecord, hint: string | undefined): Promise<void> {
    // the cluster the task must be in: the record's node's, or (that node never heard from)
    // the cluster of the node that listed the task or raised the event
    const anchor = this.hosts.clusterKnown(s.hostId!) ? s.hostId! : hint !== undefined && this.hosts.clusterKnown(hint) ? hint : undefined;
    const contact = anchor !== undefined ? this.hosts.swarmContact(anchor) : undefined;
    if (!anchor || !contact) return; // no live node of the cluster: nothing can be asked, nothing is done
    const inst = await this.ports.agents.get(contact, s.id);
    if (this.book.stopped || this.book.slot(s.id) !== s) return;
    if (!inst || inst.state === 'removed') {
      this.ports.log.warn({ instanceId: s.id, host: s.hostId }, 'swarm service is gone; creating it again');
      await this.book.update(s, { phase: 'create', state: 'placed' });
      this.ports.kick(s.id);
      return;
    }
    if (inst.state !== 'running') {
      this.ports.log.info({ instanceId: s.id, host: inst.hostId, state: inst.state }, 'swarm task not running; swarm restarts it');
      return;
    }
    if (inst.hostId === s.hostId && inst.ip === s.ip && inst.mac === s.mac) return;
    const wrong = notASwarmTask(this.hosts, s, anchor, inst);
    if (wrong !== undefined) {
      this.ports.log.warn({ instanceId: s.id, host: contact, why: wrong }, "not following the swarm-agent's answer");
      return;
    }
    await followSwarmTask(this.book, this.hosts, this.events, this.ports.log, s, inst);
  }
}

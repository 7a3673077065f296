import { invalidRequest, OrangeryError, type AgentInstance, type Backend, type InstanceNetwork, type SlotView } from '@orangery/contracts';
import type { HostBook } from './host-book';
import { appKeyOf, type SlotRecord } from './model';
import { place, type HostState, type PlacementPolicy, type PlacementRequest } from './placement';
import type { AgentPort, CoreLog } from './ports';
import type { SlotBook } from './slot-book';
import { createCommandOf, demandOf, placementRequestOf, slotViewOf, targetKey } from './slot-records';

export interface LeasePorts {
  readonly log: CoreLog;
  /** wakes the slot's worker (after a release: the scheduler manages the slot again) */
  readonly kick: (id: string) => void;
  /** whether the slot's worker is running a step right now */
  readonly isRunning: (id: string) => boolean;
  /** the target's agent, for slot.create */
  readonly agents: Pick<AgentPort, 'create'>;
}

/**
 * The slot API for the migrator (docs/scheduler.md "Slot API"): a migration holds a slot
 * (the reconciler leaves a held slot alone), reserves a target host for it, and either
 * commits the move (the record follows the instance) or releases the hold (the old copy is
 * back). Every call is idempotent for the same `by`, and refused for another migration.
 *
 * The target's reservation is kept under `targetKey(id)` next to the slot's own, so the
 * capacity of both hosts is taken while both copies may exist.
 */
export class SlotLeases {
  constructor(
    private readonly book: SlotBook,
    private readonly hosts: HostBook,
    private readonly ports: LeasePorts,
    private readonly policy: PlacementPolicy,
  ) {}

  slotView(id: string): SlotView {
    const s = this.book.slot(id);
    if (!s) throw new OrangeryError('NOT_FOUND', `no instance ${id}`, { instanceId: id });
    return slotViewOf(s);
  }

  /** A migration takes the slot over: the scheduler leaves it alone until commit or release. */
  async hold(id: string, by: string): Promise<SlotView> {
    const s = this.heldBy(id, by, true);
    if (!s.hold) {
      // a step under way could still change the slot's host or state under the migration
      if (s.phase !== null || this.ports.isRunning(id)) {
        throw new OrangeryError('UNAVAILABLE', `instance ${id} is busy (${s.phase ?? 'a step is running'}); try again shortly`, { phase: s.phase });
      }
      if (!s.hostId || s.state !== 'running')
        throw new OrangeryError('INSTANCE_CONFLICT', `instance ${id} is ${s.state}, not running: nothing to move`, { state: s.state });
      if (s.backend === 'swarm') throw swarmMoveRefused(id, 'it runs on swarm', { hostId: s.hostId, backend: 'swarm' });
      await this.book.update(s, { hold: { by } });
      this.ports.log.info({ instanceId: id, by }, 'slot held for a migration');
    }
    return this.slotView(id);
  }

  /** Places and reserves the held slot's target (never its current host nor `exclude`). */
  async reserveTarget(
    id: string,
    by: string,
    opts: { toHost?: string; toBackend?: Backend; exclude?: readonly string[] },
  ): Promise<{ hostId: string; backend: Backend }> {
    const s = this.heldBy(id, by, false);
    if (s.hold?.target) return s.hold.target;
    const request = this.targetRequest(s, opts);
    const decision = place(request, this.hosts.inventory());
    if (!decision.ok) {
      throw new OrangeryError('INSUFFICIENT_CAPACITY', `no host can take ${id}: ${decision.reason.message}`, { ...decision.reason.details });
    }
    const target = { hostId: decision.hostId, backend: this.hosts.get(decision.hostId)!.backend };
    this.hosts.reserve(target.hostId, targetKey(id), s, demandOf(s.spec.resources));
    try {
      await this.book.update(s, { hold: { by, target } });
    } catch (e) {
      this.hosts.unreserve(target.hostId, targetKey(id));
      throw e;
    }
    return target;
  }

  /** Where the held slot may go: its app's backends (or `toBackend`), only `toHost` when given, never its host nor `exclude`. */
  private targetRequest(s: SlotRecord, opts: { toHost?: string; toBackend?: Backend; exclude?: readonly string[] }): PlacementRequest {
    const app = this.book.app(appKeyOf(s));
    if (!app) throw new OrangeryError('NOT_FOUND', `no app record for ${s.id}`);
    if (s.backend === 'swarm') throw swarmMoveRefused(s.id, 'it runs on swarm', { hostId: s.hostId, backend: 'swarm' });
    if (opts.toBackend === 'swarm') throw swarmMoveRefused(s.id, 'the target is swarm', { toBackend: 'swarm' });
    if (opts.toHost !== undefined && this.hosts.get(opts.toHost)?.backend === 'swarm') {
      throw swarmMoveRefused(s.id, `the target ${opts.toHost} is a swarm node`, { toHost: opts.toHost, backend: 'swarm' });
    }
    // the env's record when the app's request was accepted: a migration may not leave it
    const envAllowed = app.spec.envBackends;
    if (opts.toBackend !== undefined && envAllowed !== undefined && !envAllowed.includes(opts.toBackend)) {
      throw new OrangeryError('POLICY_VIOLATION', `field 'toBackend': env ${s.env} allows ${envAllowed.join(', ')}, not ${opts.toBackend}`, {
        field: 'toBackend',
        allowed: envAllowed,
      });
    }
    // never a swarm node as a target: a task's address comes from its node's block
    const backends = (opts.toBackend ? [opts.toBackend] : app.spec.backends).filter((b) => b !== 'swarm');
    if (backends.length === 0) throw swarmMoveRefused(s.id, 'its app may run on swarm only', { backends: app.spec.backends });
    for (const b of backends) {
      if (!(b === 'docker' ? (s.spec.image ?? app.spec.image) : (s.spec.template ?? app.spec.template))) {
        throw new OrangeryError('INVALID_REQUEST', `field 'toBackend': ${s.id} has no ${b === 'docker' ? 'image' : 'template'} for ${b}`, {
          field: 'toBackend',
        });
      }
    }
    if (opts.toHost !== undefined && !this.hosts.get(opts.toHost)) throw new OrangeryError('NOT_FOUND', `no host ${opts.toHost}`, { hostId: opts.toHost });
    const exclude = new Set([s.hostId!, ...(opts.exclude ?? [])]);
    if (opts.toHost !== undefined) for (const h of this.hosts.all()) if (h.id !== opts.toHost) exclude.add(h.id);
    return {
      ...placementRequestOf(app, this.policy, [...exclude]),
      resources: s.spec.resources,
      backend: backends.length === 1 ? backends[0]! : 'auto',
      allowedBackends: backends,
    };
  }

  /**
   * slot.create (issue 13): the held slot's copy on its reserved target, created by the
   * leader from its own record, so the app's environment goes from here to the target's
   * agent only and never to the migrator. The migrator gives the address it had from ipam;
   * it must be the slot's. As idempotent as the agent's create (same instance, same spec);
   * the migrator records that it asked before asking, so its rollback removes whatever
   * this may have made.
   */
  async createOnTarget(id: string, by: string, network: InstanceNetwork): Promise<AgentInstance> {
    const s = this.heldBy(id, by, false);
    const target = s.hold?.target;
    if (!target) throw new OrangeryError('INSTANCE_CONFLICT', `no target reserved for ${id}`);
    if (s.ip !== null && network.ip !== s.ip) throw invalidRequest('network.ip', `is not the address of ${id} (${s.ip})`);
    if (s.mac !== null && network.mac !== s.mac) throw invalidRequest('network.mac', `is not the MAC of ${id} (${s.mac})`);
    if (network.vlan !== s.spec.vlan) throw invalidRequest('network.vlan', `is not the VLAN of ${id}'s pool (${s.spec.vlan})`);
    const command = createCommandOf(s, network, target.backend);
    this.ports.log.info({ instanceId: id, by, host: target.hostId, backend: target.backend }, 'creating a migration target');
    return this.ports.agents.create(target.hostId, command);
  }

  /** The migration moved the instance to its target: the record follows, and the scheduler takes over again. */
  async commitTarget(id: string, by: string): Promise<SlotView> {
    const done = this.book.slot(id);
    if (done && !done.hold && done.movedBy === by) return this.slotView(id); // committed already
    const s = this.heldBy(id, by, false);
    const target = s.hold?.target;
    if (!target) throw new OrangeryError('INSTANCE_CONFLICT', `no target reserved for ${id}`);
    await this.book.update(s, {
      hostId: target.hostId,
      backend: target.backend,
      state: 'running',
      phase: null,
      hold: null,
      movedBy: by,
      tried: [],
      attempts: 0,
      lastError: null,
    });
    // the reservations follow the record only after the commit: a failed write leaves both copies' capacity taken
    if (s.hostId) this.hosts.unreserve(s.hostId, id);
    this.hosts.unreserve(target.hostId, targetKey(id));
    this.hosts.reserve(target.hostId, id, s, demandOf(s.spec.resources));
    this.ports.log.info({ instanceId: id, by, from: s.hostId, to: target.hostId }, 'slot moved by a migration');
    return this.slotView(id);
  }

  /** The migration gave up (the old copy is back): drop the target, manage the slot again. */
  async releaseHold(id: string, by: string): Promise<SlotView> {
    const s = this.book.slot(id);
    if (!s) throw new OrangeryError('NOT_FOUND', `no instance ${id}`, { instanceId: id });
    if (!s.hold) return this.slotView(id);
    if (s.hold.by !== by) throw new OrangeryError('INSTANCE_CONFLICT', `instance ${id} is held by ${s.hold.by}`, { heldBy: s.hold.by });
    await this.book.update(s, { hold: null });
    if (s.hold.target) this.hosts.unreserve(s.hold.target.hostId, targetKey(id));
    this.ports.kick(id);
    return this.slotView(id);
  }

  /** An operator's drain (through the migrator): journaled, then nothing new is placed on the host. */
  async setDrain(hostId: string, drain: boolean): Promise<{ hostId: string; state: HostState }> {
    const h = this.hosts.get(hostId);
    if (!h) throw new OrangeryError('NOT_FOUND', `no host ${hostId}`, { hostId });
    if (drain && h.backend === 'swarm') {
      throw new OrangeryError(
        'IP_WOULD_CHANGE',
        `${hostId} is a swarm node: drain it in swarm (docker node update --availability drain <node>); swarm moves its tasks to the other nodes, each with a new address from that node's block, and Orangery follows them`,
        { hostId, backend: 'swarm' },
      );
    }
    await this.book.save({ hostDrains: [{ hostId, drain, backend: h.backend, facts: h.facts, usage: h.usage }] });
    this.hosts.setDrain(hostId, drain);
    return { hostId, state: this.hosts.stateOf(h) };
  }

  /** The slot, held by `by` (or free, when `orFree`). */
  private heldBy(id: string, by: string, orFree: boolean): SlotRecord {
    const s = this.book.slot(id);
    if (!s) throw new OrangeryError('NOT_FOUND', `no instance ${id}`, { instanceId: id });
    if (s.hold ? s.hold.by !== by : !orFree) {
      throw new OrangeryError('INSTANCE_CONFLICT', s.hold ? `instance ${id} is held by ${s.hold.by}` : `instance ${id} is not held by ${by}`, {
        heldBy: s.hold?.by ?? null,
      });
    }
    return s;
  }
}

/**
 * A migration into, out of or within swarm (issue 16): a swarm task's address comes from
 * its node's ipam block, so the instance's IP cannot be kept across the move; refused
 * rather than changed silently. Swarm moves its own tasks (drain the node in swarm).
 */
export function swarmMoveRefused(id: string, why: string, details: Record<string, unknown>): OrangeryError {
  return new OrangeryError(
    'IP_WOULD_CHANGE',
    `${id} cannot be migrated: ${why}, and a swarm task's address comes from its node's ipam block, so the IP could not be kept (swarm moves its own tasks: drain the node in swarm with docker node update --availability drain)`,
    { instanceId: id, ...details },
  );
}

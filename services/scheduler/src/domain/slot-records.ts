import {
  errorBodyOf,
  instanceIdOf,
  memoryLimitMb,
  OrangeryError,
  ownerOfInstanceId,
  type Backend,
  type CreateInstanceCommand,
  type SlotView,
  type SwarmCreateInstanceCommand,
} from '@orangery/contracts';
import type { AppRecord, AppSpec, Demand, SlotError, SlotRecord, SlotSpec } from './model';
import type { PlacementPolicy, PlacementRequest } from './placement';
import type { AllocationInfo } from './ports';

/** Pure helpers over the records: what a slot is made of, takes, and is told. No state. */

/** What a slot takes on its host: cpu in cores, memory at the container's real limit. */
export const demandOf = (r: SlotSpec['resources']): Demand => ({
  cpu: r.cpu,
  memoryMb: memoryLimitMb(r.memoryMb, r.heapMb),
  diskMb: r.diskMb ?? 0,
});

/** The code and message of any error (a contract error's own, INTERNAL for the unexpected). */
export const errorOf = (e: unknown): SlotError => {
  const { code, message } = errorBodyOf(e);
  return { code, message };
};

/** The ipam owner of a slot's address. */
export function ownerOf(s: SlotRecord) {
  return ownerOfInstanceId(s.id) ?? { env: s.env, app: s.app, slot: s.slot };
}

/** The reservation of a migration's target, next to the slot's own on its current host. */
export const targetKey = (id: string): string => `${id}#target`;

/** The part of the app's spec a slot's instance is made of (taken when it is (re)placed). */
export function slotSpecOf(spec: AppSpec): SlotSpec {
  return {
    resources: spec.resources,
    ...(spec.image !== undefined ? { image: spec.image } : {}),
    ...(spec.template !== undefined ? { template: spec.template } : {}),
    pool: spec.pool,
    vlan: spec.vlan,
    ...(spec.environment ? { environment: spec.environment } : {}),
    ...(spec.security ? { security: spec.security } : {}),
  };
}

/** A slot's first record: to be created on `hostId` (its first attempt), or placed later when null. */
export function newSlot(app: AppRecord, slot: number, hostId: string | null, backend: Backend | null): SlotRecord {
  return {
    id: instanceIdOf({ env: app.env, app: app.app, slot }),
    env: app.env,
    app: app.app,
    slot,
    state: 'placed',
    phase: 'create',
    backend: hostId ? backend : null,
    hostId,
    ip: null,
    mac: null,
    spec: slotSpecOf(app.spec),
    tried: [],
    attempts: hostId ? 1 : 0,
    lastError: null,
    requestId: app.requestId,
  };
}

/** Where one instance of the app may go; `tried` are hosts never to use again in this round. */
export function placementRequestOf(app: AppRecord, policy: PlacementPolicy, tried: readonly string[]): PlacementRequest {
  const { spec } = app;
  return {
    env: app.env,
    app: app.app,
    resources: spec.resources,
    backend: spec.backends.length === 1 ? spec.backends[0]! : 'auto',
    allowedBackends: spec.backends,
    vlan: spec.vlan,
    spread: spec.spread,
    policy,
    excludeHosts: tried,
    ...(spec.hostLabels ? { hostLabels: spec.hostLabels } : {}),
  };
}

/** The same command for both backends: an image for a container, a template for a VM. */
export function createCommandOf(s: SlotRecord, alloc: AllocationInfo, backend: Backend): CreateInstanceCommand {
  const artifact = backend === 'docker' ? s.spec.image : s.spec.template;
  if (!artifact) throw new OrangeryError('INVALID_REQUEST', `the slot has no ${backend === 'docker' ? 'image' : 'template'} for ${backend}`);
  return {
    instanceId: s.id,
    env: s.env,
    app: s.app,
    slot: s.slot,
    ...(backend === 'docker' ? { image: artifact } : { template: artifact }),
    resources: s.spec.resources,
    network: { ip: alloc.ip, mac: alloc.mac, prefixLength: alloc.prefixLength, gateway: alloc.gateway, vlan: alloc.vlan },
    ...(s.spec.environment ? { environment: s.spec.environment } : {}),
    // the env record's relaxations of a container's confinement; a VM has no such thing
    ...(s.spec.security && backend !== 'vmware' ? { security: s.spec.security } : {}),
  };
}

/**
 * A swarm node's create (issue 16): the pool instead of a network, since swarm picks the
 * task's address inside its node's ipam block and the swarm-agent binds it; resources as
 * for a container (the agent maps memory, heap and cpu like the docker-agent).
 */
/** `hostLabels`: the app's env record's (AppSpec), which swarm must honour itself: it places the task. */
export function swarmCreateCommandOf(s: SlotRecord, hostLabels?: Readonly<Record<string, string>>): SwarmCreateInstanceCommand {
  if (!s.spec.image) throw new OrangeryError('INVALID_REQUEST', 'the slot has no image for swarm');
  return {
    instanceId: s.id,
    env: s.env,
    app: s.app,
    slot: s.slot,
    image: s.spec.image,
    resources: s.spec.resources,
    pool: s.spec.pool,
    ...(s.spec.environment ? { environment: s.spec.environment } : {}),
    // the env record's relaxations, as for a docker-agent's container
    ...(s.spec.security ? { security: s.spec.security } : {}),
    // the env record's host labels: swarm places the task itself, so the agent makes them constraints
    ...(hostLabels && Object.keys(hostLabels).length > 0 ? { hostLabels: { ...hostLabels } } : {}),
  };
}

/**
 * The slot API's view of a record (docs/scheduler.md "Slot API"). Never the environment:
 * it may hold secrets, and the migrator does not need it (slot.create sends it to the
 * agent from here). Nor the env's container security: it goes to agents only.
 */
export function slotViewOf(s: SlotRecord): SlotView {
  const { environment: _secret, security: _security, ...spec } = s.spec;
  return {
    id: s.id,
    env: s.env,
    app: s.app,
    slot: s.slot,
    state: s.state,
    phase: s.phase,
    backend: s.backend,
    hostId: s.hostId,
    ip: s.ip,
    mac: s.mac,
    spec,
    hold: s.hold ?? null,
  };
}

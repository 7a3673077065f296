import type { Allocation, BlockBindRequest, IpBlock, Owner } from '@orangery/contracts';
import type { ServicePlan } from './service-spec';

/** A swarm node as the manager shows it (`docker node ls` / inspect). */
export interface SwarmNode {
  id: string;
  hostname: string;
  role: 'manager' | 'worker';
  /** swarm's Status.State: ready, down, unknown, disconnected */
  state: string;
  /** Spec.Availability: active, pause, drain */
  availability: string;
  nanoCpus: number;
  memoryBytes: number;
  labels: Record<string, string>;
  /** the node object's version: label updates are compare-and-set on it */
  version: number;
  /** Status.Addr: the node's address as the swarm sees it (`{addr}` in ORANGERY_SWARM_NODE_ENGINES) */
  addr?: string;
}

/** One orangery swarm service (one slot). */
export interface SwarmService {
  id: string;
  name: string;
  labels: Record<string, string>;
  replicas: number;
  version: number;
}

/** A task of an orangery service. */
export interface SwarmTask {
  id: string;
  serviceId: string;
  nodeId: string | undefined;
  /** what swarm wants of it: running, shutdown, remove */
  desiredState: string;
  /** Status.State: new, pending, assigned, accepted, preparing, starting, running, complete, failed, shutdown, rejected, orphaned, remove */
  state: string;
  /** Status.Err: why a task failed or was rejected */
  err: string | undefined;
  containerId: string | undefined;
  /** Status.Timestamp (ISO): when the task last changed state */
  updatedAt: string;
  /** the manager's view of its addresses per network name ("a.b.c.d/n"), when swarm records them */
  addresses: Record<string, string[]>;
}

/** The manager's engine: nodes, services, tasks, swarm-scoped networks. */
export interface SwarmEngine {
  /** engine version and this engine's swarm role; throws when unreachable */
  about(): Promise<{ version: string; nodeId: string; isManager: boolean }>;
  nodes(): Promise<SwarmNode[]>;
  /** sets (value) or removes (undefined) a label on a node's spec */
  setNodeLabel(nodeId: string, key: string, value: string | undefined): Promise<void>;
  /** every orangery service (label io.orangery.managed=true) */
  services(): Promise<SwarmService[]>;
  findService(instanceId: string): Promise<SwarmService | undefined>;
  createService(plan: ServicePlan): Promise<string>;
  scaleService(serviceId: string, replicas: number): Promise<void>;
  /** removes the service; resolves when swarm accepted (its tasks then shut down) */
  removeService(serviceId: string): Promise<void>;
  /** the tasks of one service; without `serviceId`, every task of the swarm (callers keep their services') */
  tasks(serviceId?: string): Promise<SwarmTask[]>;
  /** the swarm-scoped macvlan network of a pool, created from the nodes' config-only networks */
  ensureSwarmNetwork(spec: SwarmNetworkSpec): Promise<void>;
}

export interface SwarmNetworkSpec {
  name: string;
  /** the config-only network every node has under this name */
  configFrom: string;
  labels: Record<string, string>;
}

/** A config-only macvlan network on one node (node-local: only that node's engine can make it). */
export interface ConfigNetworkSpec {
  name: string;
  parent: string;
  subnet: string;
  gateway: string;
  /** the node's ipam block: Docker's --ip-range */
  ipRange: string;
  labels: Record<string, string>;
}

/** One node's own engine (ORANGERY_SWARM_NODE_ENGINES). */
export interface NodeEngine {
  /** the swarm node id of the engine this reaches (`docker info` Swarm.NodeID): checked before a block's network is made on it */
  nodeId(): Promise<string>;
  /** creates the network, or replaces one of that name with another range; 'exists' when it is as asked */
  ensureConfigNetwork(spec: ConfigNetworkSpec): Promise<'created' | 'replaced' | 'exists'>;
  /** a container's address and MAC on a network (by network name), undefined when it has none (or is gone) */
  containerAddress(containerId: string, network: string): Promise<{ ip: string; mac: string } | undefined>;
}

export interface NodeEngines {
  /** the engine of the node with this hostname; undefined when ORANGERY_SWARM_NODE_ENGINES names none */
  forNode(hostname: string, nodeId: string, addr?: string): NodeEngine | undefined;
}

/** ipam's swarm-node block calls (orangery.ipam.block.*, orangery.ipam.get). */
export interface BlockIpam {
  reserve(pool: string, host: string, size: number): Promise<IpBlock>;
  /** returns the block to the pool; throws POOL_IN_USE while an address in it is bound */
  release(pool: string, host: string): Promise<void>;
  bind(req: BlockBindRequest): Promise<Allocation>;
  /**
   * NOT_FOUND is no error: the address is not held. With `instanceId`, ipam unbinds only if
   * the address is still bound to that instance (a late unbind never frees another task's).
   */
  unbind(ip: string, instanceId?: string): Promise<void>;
  /** the owner's live address, undefined when it holds none */
  held(owner: Owner): Promise<Allocation | undefined>;
}

export type InstanceEventKind = 'running' | 'stopped' | 'failed' | 'removed';

export interface EventSink {
  instance(hostId: string, what: InstanceEventKind, instanceId: string, data: Record<string, unknown>): void;
  host(hostId: string, what: string, data: Record<string, unknown>): void;
}

export interface DomainLog {
  debug?(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

import type { AgentInstanceState } from '@orangery/contracts';
import type { ContainerPlan } from './container-spec';

/** What the agent needs from the container engine (dockerode adapter; fakes in unit tests). */
export interface ManagedContainer {
  id: string;
  image: string;
  labels: Record<string, string>;
  /** docker's state: created, running, paused, restarting, removing, exited, dead */
  engineState: string;
  exitCode: number | undefined;
  oomKilled: boolean;
  /** writable layer size, when asked for */
  sizeRw?: number;
}

export interface NetworkSpec {
  name: string;
  parent: string;
  subnet: string;
  gateway: string;
}

export interface EngineFacts {
  cpus: number;
  memoryMb: number;
  diskMb: number;
  version: string;
}

export interface Engine {
  facts(): Promise<EngineFacts>;
  listManaged(withSize?: boolean): Promise<ManagedContainer[]>;
  findByInstance(instanceId: string): Promise<ManagedContainer | undefined>;
  hasImage(image: string): Promise<boolean>;
  ensureNetwork(spec: NetworkSpec): Promise<void>;
  create(plan: ContainerPlan, network: string): Promise<string>;
  start(id: string): Promise<void>;
  stop(id: string, timeoutSeconds: number): Promise<void>;
  remove(id: string): Promise<void>;
  /** memory bytes and cumulative CPU nanoseconds of a running container */
  usage(id: string): Promise<{ memoryBytes: number; cpuNanos: number }>;
  /** the managed macvlan networks: their parent interface and their IPAM gateway */
  listNetworks(): Promise<EngineNetwork[]>;
  /**
   * The managed containers' lifecycle events, in the engine's order, until the engine ends
   * the stream or `signal` aborts; throws when the engine cannot be reached. The caller
   * follows again after an end (events in between are lost: listings stay the truth).
   */
  events(signal: AbortSignal): AsyncIterable<EngineEvent>;
}

/** A lifecycle event of a managed container, with the container's labels. */
export type EngineEvent =
  | { kind: 'start' | 'oom' | 'destroy'; containerId: string; labels: Record<string, string> }
  /** `exitCode` undefined when the engine did not say */
  | { kind: 'die'; containerId: string; labels: Record<string, string>; exitCode: number | undefined };

export interface EngineNetwork {
  name: string;
  /** `<uplink>` or `<uplink>.<vlan>` */
  parent: string;
  gateway: string | undefined;
}

/** Duplicate-address detection on the wire (ARP, RFC 5227 probe). */
export interface ArpProbe {
  /** true when some endpoint answers for `ip` on `iface` */
  inUse(iface: string, ip: string): Promise<boolean>;
}

/** The host's links, read cheaply (sysfs): no process, no engine. */
export interface LinkState {
  /** false: no carrier (cable out, peer down, interface down or gone); undefined: unreadable */
  carrier(iface: string): Promise<boolean | undefined>;
  exists(iface: string): Promise<boolean>;
}

/** Milliseconds on a clock that never steps (performance.now): fencing must not follow the wall clock. */
export interface MonotonicClock {
  now(): number;
}

/** An address the agent probes to tell its own isolation from a control-plane outage. */
export interface IsolationTarget {
  ip: string;
  /** the interface of its VLAN: parentInterface(uplink, vlan) */
  iface: string;
}

/** Routes from the host itself to its local instances (the host shim: a macvlan parent cannot reach its children). */
export interface HostRoutes {
  routeTo(parent: string, ip: string): Promise<void>;
  unroute(parent: string, ip: string): Promise<void>;
}

export interface DomainLog {
  debug(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}

export interface InstanceEvent {
  what: 'running' | 'stopped' | 'failed' | 'removed' | 'disk_warning' | 'disk_exceeded';
  instanceId: string;
  data: Record<string, unknown>;
}

export interface EventSink {
  instance(e: InstanceEvent): void;
  host(what: string, data: Record<string, unknown>): void;
}

/**
 * The exit codes of a stop: 0, or the signals `docker stop` sends (SIGTERM 143, SIGINT 130,
 * SIGKILL 137 after the grace period), whoever sent them.
 */
const STOP_EXIT_CODES = new Set([0, 130, 137, 143]);

/**
 * How a container's exit counts, the one rule for a listing (stateOf) and an engine event
 * (InstanceEvents): a stop's exit code is a stop, anything else, or the kernel's OOM
 * killer (whose SIGKILL also reads 137), a failure. An unknown code is a failure.
 */
export function exitOf(exitCode: number | undefined, oomKilled: boolean): 'stopped' | 'failed' {
  return !oomKilled && exitCode !== undefined && STOP_EXIT_CODES.has(exitCode) ? 'stopped' : 'failed';
}

export function stateOf(c: ManagedContainer | undefined): AgentInstanceState {
  if (!c) return 'removed';
  switch (c.engineState) {
    case 'running':
    case 'restarting':
    case 'paused':
      return 'running';
    case 'created':
      return 'created';
    case 'exited':
      return exitOf(c.exitCode, c.oomKilled);
    default:
      return 'failed';
  }
}

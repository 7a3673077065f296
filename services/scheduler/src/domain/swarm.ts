import { MAC_PATTERN, type AgentInstance, type InstanceEventData } from '@orangery/contracts';
import type { HostBook } from './host-book';
import { appKeyOf, type SlotRecord } from './model';
import type { CoreLog } from './ports';
import type { SchedulerEvents } from './scheduler-events';
import type { SlotBook } from './slot-book';
import { demandOf } from './slot-records';

/**
 * Swarm slots (issue 16, docs/scheduler.md "Swarm"). Swarm picks a task's address inside
 * its node's ipam block and moves a slot's task between the nodes of its cluster by itself
 * (node drained or down, task failed): the swarm-agent binds the address in ipam and
 * answers the node the task runs on. The scheduler does not allocate, bind nor release a
 * swarm slot's address, never replaces what swarm restarts, and FOLLOWS a task that moved:
 * the record takes the node, IP and MAC an agent's bound reply states.
 */

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const MAC = new RegExp(MAC_PATTERN);

/** The slot is a swarm slot: its record (or, not placed yet, the host it is placed on) says so. */
export function isSwarmSlot(s: SlotRecord, hosts: HostBook): boolean {
  if (s.backend) return s.backend === 'swarm';
  return s.hostId !== null && hosts.get(s.hostId)?.backend === 'swarm';
}

/**
 * Why `inst` (an agent's bound reply about slot `s`, asked on a node of `clusterOf`'s
 * cluster) cannot be taken as the slot's running task; undefined when it can: the same
 * instance, a swarm task, running, with an address and a MAC, on a node of the same cluster.
 */
export function notASwarmTask(hosts: HostBook, s: SlotRecord, clusterOf: string, inst: AgentInstance): string | undefined {
  if (inst.instanceId !== s.id) return `the reply names ${inst.instanceId}, not ${s.id}`;
  if (inst.backend !== 'swarm') return `the reply's backend is ${inst.backend}, not swarm`;
  if (inst.state !== 'running') return `the task is ${inst.state}`;
  if (!IPV4.test(inst.ip)) return `the reply has no IPv4 address (${JSON.stringify(inst.ip)})`;
  if (!MAC.test(inst.mac)) return `the reply has no MAC address (${JSON.stringify(inst.mac)})`;
  if (!hosts.sameCluster(clusterOf, inst.hostId)) return `node ${inst.hostId} is not a known node of ${clusterOf}'s swarm cluster`;
  return undefined;
}

/**
 * The record follows the slot's task to where a bound reply says it runs (another node of
 * the cluster, or a new address on the same node): journaled with an `instance.running`
 * event carrying the task's node and IP, and the slot's reservation moves with it. Nothing
 * is stopped, removed or created.
 */
export async function followSwarmTask(
  book: SlotBook,
  hosts: HostBook,
  events: SchedulerEvents,
  log: CoreLog,
  s: SlotRecord,
  inst: AgentInstance,
): Promise<SlotRecord> {
  const from = s.hostId;
  const data: InstanceEventData = {
    instanceId: s.id,
    hostId: inst.hostId,
    backend: 'swarm',
    ip: inst.ip,
    mac: inst.mac,
    reason: from && from !== inst.hostId ? `swarm moved the task from ${from} to ${inst.hostId}` : `swarm restarted the task with ${inst.ip}`,
  };
  const app = book.app(appKeyOf(s));
  const next = await book.update(s, { hostId: inst.hostId, backend: 'swarm', ip: inst.ip, mac: inst.mac, state: 'running' }, () => [
    events.event('instance', 'running', s.id, data, app?.traceparent),
  ]);
  if (from !== inst.hostId) {
    if (from) hosts.unreserve(from, s.id);
    hosts.reserve(inst.hostId, s.id, s, demandOf(s.spec.resources), 'swarm');
  }
  log.info({ instanceId: s.id, from, to: inst.hostId, ip: inst.ip, was: s.ip }, 'swarm task followed');
  return next;
}

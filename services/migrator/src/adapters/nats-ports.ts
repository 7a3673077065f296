import type { NatsConnection } from '@nats-io/nats-core';
import type { AgentInstance, Backend, InstanceNetwork, InstanceSummary, Owner } from '@orangery/contracts';
import { AgentClient, IpamClient, SchedulerClient } from '@orangery/messaging';
import type { AddressInfo, AgentPort, IpamPort, SchedulerPort } from '../domain/ports';

/** The leader's slot.create waits this long beyond its own wait for the agent's create. */
const CREATE_MARGIN_MS = 10_000;

/** The scheduler leader's slot API and its operator query: the scheduler contract's client. */
export class NatsScheduler extends SchedulerClient implements SchedulerPort {
  /** `agentCommandMs`: ORANGERY_AGENT_TIMEOUT_SECONDS, which the scheduler's leader also waits for a create */
  constructor(
    nc: NatsConnection,
    private readonly agentCommandMs = 30_000,
  ) {
    super(nc);
  }

  instances(): Promise<InstanceSummary[]> {
    return this.instancesAll();
  }

  createOnTarget(instanceId: string, by: string, network: InstanceNetwork): Promise<AgentInstance> {
    return this.slotCreate(instanceId, by, network, this.agentCommandMs + CREATE_MARGIN_MS);
  }
}

/** Host agents (docker-agent, vmware-agent): the agent contract's client is the port as it is. */
export class NatsAgents extends AgentClient implements AgentPort {}

/** ipam's allocation of a slot, as the saga needs it (a released one is none). */
export class NatsIpam implements IpamPort {
  private readonly client: IpamClient;

  constructor(nc: NatsConnection, timeoutMs = 5_000) {
    this.client = new IpamClient(nc, timeoutMs);
  }

  async get(owner: Owner): Promise<AddressInfo | undefined> {
    const a = await this.client.get(owner);
    if (!a || a.state === 'released') return undefined;
    return { ip: a.ip, mac: a.mac, prefixLength: a.prefixLength, gateway: a.gateway, vlan: a.vlan };
  }

  bind(ip: string, instanceId: string, backend: Backend, host: string): Promise<void> {
    return this.client.bind({ ip, instanceId, backend, host });
  }
}

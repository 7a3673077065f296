import { context } from '@opentelemetry/api';
import type { AgentService } from './agent.service';
import { LABEL, parentInterface } from './container-spec';
import { exitOf, type DomainLog, type EngineEvent, type EventSink, type HostRoutes, type ManagedContainer } from './ports';

/**
 * What the engine's events of our containers mean: instance.running on a start,
 * instance.stopped or instance.failed on a death (exitOf, the same rule as a listing's
 * state), instance.removed on a destroy; a failure is restarted (AgentService's policy),
 * and the host shim's routes follow the running containers. The runtime only feeds it the
 * engine's stream.
 */
export class InstanceEvents {
  /** containers the kernel's OOM killer hit: their `die` follows the `oom` */
  private readonly oomKilled = new Set<string>();
  private stopped = false;

  constructor(
    private readonly deps: {
      agent: Pick<AgentService, 'expectedStops' | 'restartAfterFailure' | 'fenced'> & Partial<Pick<AgentService, 'takeStartTrace'>>;
      events: EventSink;
      routes: HostRoutes | undefined;
      log: DomainLog;
    },
    private readonly settings: { uplink: string },
  ) {}

  /** Shutdown: no restart starts from here on. */
  stop(): void {
    this.stopped = true;
  }

  /** At start: routes to what adoption found running (adoption itself starts nothing). */
  adopted(running: readonly ManagedContainer[]): void {
    for (const c of running) this.route(c.labels, true);
  }

  /** A new stream of events: an `oom` seen on the last one has no `die` coming on this one. */
  resubscribed(): void {
    this.oomKilled.clear();
  }

  on(e: EngineEvent): void {
    const instanceId = e.labels[LABEL.instanceId];
    if (!instanceId || !e.containerId) return;
    const base = { containerId: e.containerId, ip: e.labels[LABEL.ip], mac: e.labels[LABEL.mac] };
    switch (e.kind) {
      case 'start':
        this.route(e.labels, true);
        {
          // in the trace of the command that started it (create/start), when one did
          const ctx = this.deps.agent.takeStartTrace?.(e.containerId) ?? context.active();
          context.with(ctx, () => this.deps.events.instance({ what: 'running', instanceId, data: base }));
        }
        return;
      case 'oom':
        this.oomKilled.add(e.containerId);
        return;
      case 'die':
        this.route(e.labels, false);
        this.died(instanceId, e.containerId, e.exitCode, base);
        return;
      case 'destroy':
        this.deps.events.instance({ what: 'removed', instanceId, data: base });
        return;
    }
  }

  private died(instanceId: string, containerId: string, exitCode: number | undefined, base: Record<string, unknown>): void {
    const data = { ...base, exitCode: exitCode ?? -1 };
    // Both are consumed here, whatever the verdict: a later death of the container is judged afresh.
    const requested = this.deps.agent.expectedStops.delete(containerId);
    const oomKilled = this.oomKilled.delete(containerId);
    if (requested) {
      this.deps.events.instance({ what: 'stopped', instanceId, data: { ...data, reason: 'stopped on request' } });
      return;
    }
    if (exitOf(exitCode, oomKilled) === 'stopped') {
      const reason = exitCode === 0 ? 'exited by itself' : `stopped outside the agent (exit ${exitCode}: a stop signal)`;
      this.deps.events.instance({ what: 'stopped', instanceId, data: { ...data, reason } });
      return;
    }
    this.deps.events.instance({ what: 'failed', instanceId, data: { ...data, ...(oomKilled ? { reason: 'killed by the kernel: out of memory' } : {}) } });
    // A successful restart shows up as the engine's next `start` (instance.running).
    void this.deps.agent
      .restartAfterFailure(containerId, instanceId, () => this.deps.agent.fenced || this.stopped)
      .catch((err: unknown) => this.deps.log.warn({ instanceId, err: String(err) }, 'restart after failure failed'));
  }

  /** Host shim routes follow the containers: one /32 per running local instance. */
  private route(labels: Record<string, string>, up: boolean): void {
    const routes = this.deps.routes;
    const ip = labels[LABEL.ip];
    if (!routes || !ip) return;
    const parent = parentInterface(this.settings.uplink, Number(labels[LABEL.vlan] ?? 0));
    (up ? routes.routeTo(parent, ip) : routes.unroute(parent, ip)).catch((err: unknown) =>
      this.deps.log.warn({ err: String(err), ip }, 'host shim route failed'),
    );
  }
}

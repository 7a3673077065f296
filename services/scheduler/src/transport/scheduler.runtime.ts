import { Inject, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import {
  CURSORS,
  decode,
  pageQueryOf,
  Heartbeat,
  HostDrainRequest,
  HostFacts,
  OrangeryError,
  SlotGetRequest,
  SlotHoldRequest,
  SlotReserveRequest,
  passOn,
  PortError,
  HostsListRequest,
  InstancesListRequest,
  parseJsonObject,
  QUEUE_GROUPS,
  SUBJECTS,
} from '@orangery/contracts';
import { ensureEventsStream, Responder, type Route } from '@orangery/messaging';
import type { OutboxRelay } from '@orangery/persistence';
import { CONFIG, LOGGER, NATS, replicaId } from '@orangery/service-kit';
import { scrapedGauge, type Logger } from '@orangery/telemetry';
import type { SchedulerConfig } from '../config';
import { LeaderElection } from '../adapters/leader-election';
import type { MysqlSchedulerStore } from '../adapters/mysql-scheduler-store';
import { NatsAgents, NatsIpam } from '../adapters/nats-ports';
import { ensureScaleStream, ScaleConsumer, type ScaleVerdict } from '../adapters/scale-stream';
import { RetryLater, SchedulerCore } from '../domain/scheduler-core';
import { NotLeaderError, systemClock } from '../domain/ports';
import { OUTBOX, STORE } from '../tokens';

const HOST_FLUSH_MS = 2_000;
/** how often host silences are judged (cheap: in memory, probes only for silent hosts); a host past its deadline waits at most this long */
const HOST_SWEEP_MS = 250;
const LIST_CONCURRENCY = 8;

/** What only the leader runs: the core, its subscriptions, the scale consumer, the timers. */
interface Leading {
  core: SchedulerCore;
  slotApi: Responder;
  subs: Subscription[];
  consumer: ScaleConsumer;
  timers: NodeJS.Timeout[];
  dirtyHosts: Set<string>;
}

/**
 * Wires the scheduler to NATS. Every replica answers the operators' queries (from the
 * database) and campaigns for leadership; the leader alone consumes scale requests,
 * follows heartbeats and agent events, and drives the core.
 */
export class SchedulerRuntime implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private responder: Responder | undefined;
  private election: LeaderElection | undefined;
  private leading: Leading | undefined;
  private readonly replica = replicaId('scheduler');
  /** the verdicts last written to sched_host, by host */
  private readonly savedVerdicts = new Map<string, string>();

  constructor(
    @Inject(NATS) private readonly nc: NatsConnection,
    @Inject(CONFIG) private readonly config: SchedulerConfig,
    @Inject(STORE) private readonly store: MysqlSchedulerStore,
    @Inject(OUTBOX) private readonly outbox: OutboxRelay,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    await ensureEventsStream(this.nc, this.logger);
    await ensureScaleStream(this.nc, this.logger);
    this.outbox.start();
    this.leaderGauges();
    this.responder = new Responder(this.nc, QUEUE_GROUPS.scheduler, this.logger);
    this.responder.serve(this.routes());
    this.logger.info({ queue: QUEUE_GROUPS.scheduler }, 'serving orangery.scheduler.*');
    this.election = new LeaderElection(this.config.db, this.replica, { elected: (e) => this.lead(e), deposed: () => this.follow() }, this.logger);
    this.election.start();
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.responder?.drain();
    await this.election?.stop();
    await this.outbox.stop();
  }

  private routes(): Route[] {
    const lostAfterMs = this.config.lostAfterSeconds * 1000;
    return [
      {
        subject: SUBJECTS.scheduler.hostsList,
        handler: async (b) => this.store.listHosts(lostAfterMs, pageQueryOf(CURSORS.hosts, decode(HostsListRequest, b))),
      },
      {
        subject: SUBJECTS.scheduler.instancesList,
        handler: async (b) => {
          const req = decode(InstancesListRequest, b);
          return this.store.listInstances(req, pageQueryOf(CURSORS.instances, req));
        },
      },
    ];
  }

  /** orangery_scheduler_leader (every replica) and orangery_failover_paused (the leader only: it alone judges). */
  private leaderGauges(): void {
    scrapedGauge('orangery_scheduler_leader', 'Whether this scheduler replica is the leader (1) or a follower (0)', [], () => [
      { labels: {}, value: this.leading ? 1 : 0 },
    ]);
    scrapedGauge('orangery_failover_paused', "1 while the leader has paused a backend's failover (more than half of its hosts silent)", ['backend'], () => {
      const core = this.leading?.core;
      return core ? (['docker', 'vmware'] as const).map((backend) => ({ labels: { backend }, value: core.failover.isPaused(backend) ? 1 : 0 })) : [];
    });
  }

  // ---- leadership ---------------------------------------------------------------------------

  private async lead(epoch: number): Promise<void> {
    const c = this.config;
    this.store.setEpoch(epoch);
    const core = new SchedulerCore(
      {
        store: this.store,
        ipam: new NatsIpam(this.nc),
        agents: new NatsAgents(this.nc, { commandMs: c.agentTimeoutSeconds * 1000 }),
        clock: systemClock,
        wallClock: { now: () => Date.now() },
        log: this.logger,
      },
      {
        source: `orangery/scheduler/${this.replica}`,
        policy: c.policy,
        startAttempts: c.startAttempts,
        failedGraceMs: c.failedGraceSeconds * 1000,
        fenceMarginMs: (c.fenceAfterSeconds + c.fenceMarginSeconds) * 1000,
        leftoverRetentionMs: c.leftoverRetentionHours * 3_600_000,
        lostAfterMs: c.lostAfterSeconds * 1000,
        concurrency: c.concurrency,
        envBackends: (env) => c.envBackends[env],
      },
      () => void this.election?.stepDown('a write found a newer leader epoch'),
    );
    const dirtyHosts = new Set<string>();
    const subs = this.watchAgents(core, dirtyHosts);
    // Heartbeats first: hosts are known before the journal's slots are worked on.
    await new Promise((r) => setTimeout(r, Math.min(2_500, c.lostAfterSeconds * 500)));
    await core.start();
    const consumer = new ScaleConsumer(this.nc, (m) => this.judge(core, m), this.logger);
    await consumer.start();
    // The slot API is the leader's alone: no responders while there is no leader.
    const slotApi = new Responder(this.nc, QUEUE_GROUPS.scheduler, this.logger);
    slotApi.serve(slotRoutes(core));
    const timers = [
      setInterval(() => core.tick(), c.reconcileSeconds * 1000),
      setInterval(() => core.sweepHosts(), HOST_SWEEP_MS),
      setInterval(() => void this.flushHosts(core, dirtyHosts), HOST_FLUSH_MS),
      setInterval(() => void this.antiEntropy(core), c.antiEntropySeconds * 1000),
    ];
    this.leading = { core, slotApi, subs, consumer, timers, dirtyHosts };
    this.logger.info({ epoch }, 'leading: consuming scale requests');
  }

  private async follow(): Promise<void> {
    const l = this.leading;
    this.leading = undefined;
    this.store.setEpoch(undefined);
    if (!l) return;
    for (const t of l.timers) clearInterval(t);
    for (const s of l.subs) s.unsubscribe();
    await l.slotApi.drain();
    await l.consumer.stop();
    await l.core.stop();
  }

  private async judge(core: SchedulerCore, m: Parameters<SchedulerCore['handleScale']>[0]): Promise<ScaleVerdict> {
    try {
      await core.handleScale(m);
      return 'ack';
    } catch (e) {
      if (e instanceof RetryLater) {
        this.logger.warn({ seq: m.seq, reason: e.message }, 'scale request deferred');
        return 'retry';
      }
      if (e instanceof NotLeaderError) return 'abandon';
      throw e;
    }
  }

  private watchAgents(core: SchedulerCore, dirtyHosts: Set<string>): Subscription[] {
    const json = (data: Uint8Array): Record<string, unknown> | undefined => {
      try {
        return parseJsonObject(data);
      } catch {
        return undefined;
      }
    };
    const hb = this.nc.subscribe(SUBJECTS.heartbeatsAll, {
      callback: (_e, msg) => {
        try {
          const beat = decode(Heartbeat, json(msg.data));
          if (msg.subject !== SUBJECTS.heartbeat(beat.hostId)) return;
          core.heartbeat(beat);
          dirtyHosts.add(beat.hostId);
        } catch (err) {
          this.logger.debug({ subject: msg.subject, err: String(err) }, 'ignored a malformed heartbeat');
        }
      },
    });
    const registered = this.nc.subscribe(SUBJECTS.event('host', 'registered'), {
      callback: (_e, msg) => {
        const data = json(msg.data)?.['data'];
        try {
          const facts = decode(HostFacts, pick(data, ['hostId', 'backend', 'capacity', 'total', 'reserved', 'labels', 'vlans']));
          core.registered(facts);
          dirtyHosts.add(facts.hostId);
          void this.listHost(core, facts.hostId);
        } catch (err) {
          this.logger.debug({ err: String(err) }, 'ignored a malformed host.registered');
        }
      },
    });
    const instances = this.nc.subscribe(SUBJECTS.event('instance', '*'), {
      callback: (_e, msg) => {
        const what = msg.subject.split('.')[3] ?? '';
        const data = json(msg.data)?.['data'] as Record<string, unknown> | undefined;
        if (typeof data?.['instanceId'] === 'string' && typeof data['hostId'] === 'string') core.instanceEvent(what, data['instanceId'], data['hostId']);
      },
    });
    return [hb, registered, instances];
  }

  private async flushHosts(core: SchedulerCore, dirty: Set<string>): Promise<void> {
    // Silent hosts send nothing: a change of the leader's verdict on one is a change too.
    for (const h of core.hosts.all()) {
      if ((h.judged ?? '') !== (this.savedVerdicts.get(h.id) ?? '')) dirty.add(h.id);
    }
    const ids = [...dirty];
    dirty.clear();
    for (const id of ids) this.savedVerdicts.set(id, core.hosts.get(id)?.judged ?? '');
    const entries = ids.map((id) => core.hosts.get(id)).filter((h) => h !== undefined);
    await this.store.saveHosts(entries).catch((err: unknown) => {
      for (const id of ids) dirty.add(id);
      this.logger.warn({ err: String(err) }, 'could not save hosts; will retry');
    });
  }

  /** Compares what every reachable agent runs with the records (orphans, missing, failed). */
  private async antiEntropy(core: SchedulerCore): Promise<void> {
    const hosts = [...core.hosts.all()].filter((h) => !core.hosts.isDown(h.id)).map((h) => h.id);
    for (let i = 0; i < hosts.length; i += LIST_CONCURRENCY) {
      if (this.leading?.core !== core) return;
      await Promise.all(hosts.slice(i, i + LIST_CONCURRENCY).map((id) => this.listHost(core, id)));
    }
  }

  private async listHost(core: SchedulerCore, hostId: string): Promise<void> {
    try {
      const list = await new NatsAgents(this.nc).list(hostId);
      if (this.leading?.core === core || !this.leading) core.agentList(hostId, list);
    } catch (err) {
      this.logger.debug({ host: hostId, err: String(err) }, 'agent list failed');
    }
  }
}

function pick(v: unknown, keys: string[]): Record<string, unknown> | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  return Object.fromEntries(keys.filter((k) => k in o).map((k) => [k, o[k]]));
}

/** The migrator's view of slots (docs/scheduler.md "Slot API"): port errors become contract errors. */
function slotRoutes(core: SchedulerCore): Route[] {
  const s = SUBJECTS.schedulerSlot;
  const contract = async <T>(work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (e) {
      if (e instanceof PortError) throw passOn(e);
      if (e instanceof NotLeaderError) throw new OrangeryError('UNAVAILABLE', 'the scheduler leader is changing; try again', {});
      throw e;
    }
  };
  return [
    { subject: s.get, handler: async (b) => contract(async () => core.slotView(decode(SlotGetRequest, b).instanceId)) },
    {
      subject: s.hold,
      handler: async (b) =>
        contract(() => {
          const r = decode(SlotHoldRequest, b);
          return core.hold(r.instanceId, r.by);
        }),
    },
    {
      subject: s.reserve,
      handler: async (b) =>
        contract(() => {
          const r = decode(SlotReserveRequest, b);
          return core.reserveTarget(r.instanceId, r.by, {
            ...(r.toHost !== undefined ? { toHost: r.toHost } : {}),
            ...(r.toBackend !== undefined ? { toBackend: r.toBackend } : {}),
            ...(r.exclude !== undefined ? { exclude: r.exclude } : {}),
          });
        }),
    },
    {
      subject: s.commit,
      handler: async (b) =>
        contract(() => {
          const r = decode(SlotHoldRequest, b);
          return core.commitTarget(r.instanceId, r.by);
        }),
    },
    {
      subject: s.release,
      handler: async (b) =>
        contract(() => {
          const r = decode(SlotHoldRequest, b);
          return core.releaseHold(r.instanceId, r.by);
        }),
    },
    {
      subject: s.hostDrain,
      handler: async (b) =>
        contract(() => {
          const r = decode(HostDrainRequest, b);
          return core.setDrain(r.hostId, r.drain);
        }),
    },
  ];
}

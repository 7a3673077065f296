import { randomUUID } from 'node:crypto';
import { Inject, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import {
  CURSORS,
  decode,
  EnvListRequest,
  EnvNameRequest,
  EnvPutRequest,
  pageQueryOf,
  Heartbeat,
  HostDrainRequest,
  HOST_ID_PATTERN,
  OrangeryError,
  SlotCreateRequest,
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
import { MysqlLeaseStore } from '../adapters/mysql-lease-store';
import type { MysqlSchedulerStore } from '../adapters/mysql-scheduler-store';
import { NatsAgents, NatsIpam } from '../adapters/nats-ports';
import { ensureScaleStream, ScaleConsumer, type ScaleVerdict } from '../adapters/scale-stream';
import { RetryLater, SchedulerCore } from '../domain/scheduler-core';
import { LeaderLease, leaseTiming } from '../domain/leader-lease';
import { NotLeaderError, systemClock } from '../domain/ports';
import type { MysqlEnvStore } from '../adapters/mysql-env-store';
import { checkEnvPut, normalizeEnv } from '../domain/env-policy';
import { ENVS, OUTBOX, STORE } from '../tokens';

const HOST_FLUSH_MS = 2_000;
/** how often host silences are judged (cheap: in memory, probes only for silent hosts); a host past its deadline waits at most this long */
const HOST_SWEEP_MS = 250;
const LIST_CONCURRENCY = 8;
/** a host.registered hint: how often, and how far apart, its agent is asked for the facts */
const CONFIRM_ATTEMPTS = 3;
const CONFIRM_RETRY_MS = 1_000;
const HOST_ID = new RegExp(HOST_ID_PATTERN);
/** how long stepping down waits for each leader activity to wind down */
const STOP_LEADING_MS = 5_000;
/** how often seeding env records from ORANGERY_ENV_BACKENDS is tried again after the database refused it */
const SEED_RETRY_MS = 5_000;
/** the most of an `Orangery-Actor` header kept in the audit log */
const MAX_ACTOR = 255;

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
  private election: LeaderLease | undefined;
  private leaseStore: MysqlLeaseStore | undefined;
  private leaseTimers: { step?: NodeJS.Timeout; deadline?: NodeJS.Timeout; stepping?: Promise<void>; stopped: boolean } = { stopped: false };
  private leading: Leading | undefined;
  private readonly replica = replicaId('scheduler');
  /** the verdicts last written to sched_host, by host */
  private readonly savedVerdicts = new Map<string, string>();
  /** the latest heartbeat of each host, heard by this replica as leader or standby, and when (monotonic, wall) */
  private readonly recentBeats = new Map<string, { beat: Heartbeat; at: number; wall: number }>();
  private listeningSince = 0;
  private beatsSub: Subscription | undefined;
  private seedTimer: NodeJS.Timeout | undefined;

  constructor(
    @Inject(NATS) private readonly nc: NatsConnection,
    @Inject(CONFIG) private readonly config: SchedulerConfig,
    @Inject(STORE) private readonly store: MysqlSchedulerStore,
    @Inject(OUTBOX) private readonly outbox: OutboxRelay,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(ENVS) private readonly envs: MysqlEnvStore,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    await ensureEventsStream(this.nc, this.logger);
    await ensureScaleStream(this.nc, this.logger);
    this.outbox.start();
    await this.seedEnvs();
    this.leaderGauges();
    this.responder = new Responder(this.nc, QUEUE_GROUPS.scheduler, this.logger);
    this.responder.serve(this.routes());
    this.logger.info({ queue: QUEUE_GROUPS.scheduler }, 'serving orangery.scheduler.*');
    this.listenForBeats();
    this.startLease();
  }

  async beforeApplicationShutdown(): Promise<void> {
    clearTimeout(this.seedTimer);
    await this.responder?.drain();
    await this.stopLease();
    this.beatsSub?.unsubscribe();
    await this.outbox.stop();
  }

  /** How long a new leader hears heartbeats before it works: one heartbeat from every live host. */
  private heartbeatWaitMs(): number {
    return Math.min(2_500, this.config.lostAfterSeconds * 500);
  }

  /**
   * Every replica hears heartbeats, so that a standby elected leader knows the fleet at
   * once instead of waiting for a round of heartbeats: that wait came on top of the lease
   * and made a takeover take lease + 2.5 s. Only the latest beat per host is kept.
   */
  private listenForBeats(): void {
    this.listeningSince = performance.now();
    let sincePrune = 0;
    this.beatsSub = this.nc.subscribe(SUBJECTS.heartbeatsAll, {
      callback: (_e, msg) => {
        try {
          const beat = decode(Heartbeat, parseJsonObject(msg.data));
          if (msg.subject !== SUBJECTS.heartbeat(beat.hostId)) return;
          const now = performance.now();
          this.recentBeats.set(beat.hostId, { beat, at: now, wall: Date.now() });
          if (++sincePrune >= 1_000) {
            sincePrune = 0;
            for (const [id, b] of this.recentBeats) if (now - b.at > this.heartbeatWaitMs()) this.recentBeats.delete(id);
          }
        } catch {
          // malformed: the leader's own subscription logs it
        }
      },
    });
  }

  // ---- the leader lease ---------------------------------------------------------------------

  /**
   * Drives the lease (domain/leader-lease.ts): renewals at a fixed rate (a slow renewal
   * does not push the next one back), candidates' polls, and a timer that steps the leader
   * down at its deadline even when no renewal ever comes back (a database cut off without
   * a FIN). Leader activities never block this loop: elected/deposed run beside it.
   */
  private startLease(): void {
    const timing = leaseTiming(this.config.leaderLeaseSeconds);
    // a statement slower than half a lease counts as failed (the renewal after it still fits before the deadline)
    this.leaseStore = new MysqlLeaseStore(this.config.db, timing.leaseMs / 2, this.logger);
    const lease = new LeaderLease(
      this.leaseStore,
      // Unique per process start: in containers `hostname:pid` repeats (pid 1 everywhere),
      // and a holder id that matches the row's would take the lease without waiting.
      `${this.replica}/${randomUUID().slice(0, 8)}`,
      timing,
      systemClock,
      { elected: (e) => this.lead(e), deposed: () => this.follow() },
      this.logger,
    );
    this.election = lease;
    this.store.fenceWith(() => lease.validEpoch());
    const t = this.leaseTimers;
    const armDeadline = () => {
      clearTimeout(t.deadline);
      const ms = lease.msUntilDeadline();
      if (ms !== undefined) t.deadline = setTimeout(() => lease.checkDeadline(), ms + 1);
    };
    const loop = () => {
      if (t.stopped) return;
      const started = performance.now();
      t.stepping = lease
        .step()
        .catch((err: unknown) => this.logger.warn({ err: String(err) }, 'leader lease step failed'))
        .finally(() => {
          t.stepping = undefined;
          armDeadline();
          if (!t.stopped) t.step = setTimeout(loop, Math.max(0, lease.nextStepMs - (performance.now() - started)));
        });
    };
    loop();
  }

  private async stopLease(): Promise<void> {
    const t = this.leaseTimers;
    t.stopped = true;
    clearTimeout(t.step);
    clearTimeout(t.deadline);
    await t.stepping;
    await this.election?.stop();
    await this.leaseStore?.close();
  }

  /**
   * ORANGERY_ENV_BACKENDS as a seed (docs/scheduler.md "Environments"): a record `{ name,
   * backends }` for each listed env that has none yet, inserted only if absent (several
   * replicas starting at once are safe; a record an operator wrote is never overwritten).
   * Until a seed is written the env has no record and the variable rules it as before, so
   * a database that refuses now only delays it.
   */
  private async seedEnvs(): Promise<void> {
    const pending = Object.entries(this.config.envBackends);
    if (pending.length === 0) return;
    const created: string[] = [];
    try {
      for (const [name, backends] of pending) {
        if (await this.envs.insertIfAbsent(normalizeEnv({ name, backends }))) created.push(name);
      }
      this.logger.info(
        { created, kept: pending.map(([n]) => n).filter((n) => !created.includes(n)) },
        'ORANGERY_ENV_BACKENDS is a seed: env records created for listed envs that had none; existing records are kept and rule (manage them with orangery.scheduler.envs.*)',
      );
    } catch (err) {
      this.logger.warn(
        { err: String(err), retryInMs: SEED_RETRY_MS },
        'could not seed env records from ORANGERY_ENV_BACKENDS; the variable rules those envs meanwhile',
      );
      this.seedTimer = setTimeout(() => void this.seedEnvs(), SEED_RETRY_MS);
    }
  }

  /** The env subjects: every replica writes and reads the records in the database; writes are audited in the log. */
  private envRoutes(): Route[] {
    const audit = (action: string, name: string, actor: string | undefined, extra: Record<string, unknown> = {}) =>
      this.logger.info({ audit: action, env: name, actor: actor ? actor.slice(0, MAX_ACTOR) : undefined, replica: this.replica, ...extra }, `audit: ${action}`);
    return [
      {
        subject: SUBJECTS.scheduler.envsPut,
        handler: async (b, ctx) => {
          const req = decode(EnvPutRequest, b);
          checkEnvPut(req);
          const { record, created } = await this.envs.put(normalizeEnv(req));
          audit('env.put', record.name, ctx.actor, { created, backends: record.backends });
          return record;
        },
      },
      {
        subject: SUBJECTS.scheduler.envsGet,
        handler: async (b) => {
          const { name } = decode(EnvNameRequest, b);
          const record = await this.envs.get(name);
          if (!record) throw new OrangeryError('NOT_FOUND', `env '${name}' has no record`, { name });
          return record;
        },
      },
      {
        subject: SUBJECTS.scheduler.envsList,
        handler: async (b) => this.envs.list(pageQueryOf(CURSORS.envs, decode(EnvListRequest, b))),
      },
      {
        subject: SUBJECTS.scheduler.envsDelete,
        handler: async (b, ctx) => {
          const { name } = decode(EnvNameRequest, b);
          if (!(await this.envs.delete(name))) throw new OrangeryError('NOT_FOUND', `env '${name}' has no record`, { name });
          audit('env.delete', name, ctx.actor);
          return {};
        },
      },
    ];
  }

  private routes(): Route[] {
    const lostAfterMs = this.config.lostAfterSeconds * 1000;
    return [
      ...this.envRoutes(),
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
    /** set only while heartbeats heard as a standby are handed to the core, at the times they arrived */
    const replaying: { at?: number; wall?: number } = {};
    const core = new SchedulerCore(
      {
        store: this.store,
        ipam: new NatsIpam(this.nc),
        agents: new NatsAgents(this.nc, { commandMs: c.agentTimeoutSeconds * 1000 }),
        clock: { now: () => replaying.at ?? systemClock.now() },
        wallClock: { now: () => replaying.wall ?? Date.now() },
        log: this.logger,
        envs: (env) => this.envs.policy(env),
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
    // Heartbeats first: hosts are known before the journal's slots are worked on. Those this
    // replica heard in the last wait (as a standby) count, at the times they arrived, so a
    // host's silence is measured as if this replica had led all along; the replay is
    // synchronous, so no live beat interleaves with it. Then only the part of the wait this
    // replica was not listening for is left (none for a standby that has run a while).
    const waitMs = this.heartbeatWaitMs();
    const now = performance.now();
    const heard = [...this.recentBeats.values()].filter((b) => now - b.at <= waitMs).sort((x, y) => x.at - y.at);
    try {
      for (const b of heard) {
        replaying.at = b.at;
        replaying.wall = b.wall;
        core.heartbeat(b.beat);
        dirtyHosts.add(b.beat.hostId);
      }
    } finally {
      replaying.at = undefined;
      replaying.wall = undefined;
    }
    await new Promise((r) => setTimeout(r, Math.max(0, waitMs - (now - this.listeningSince))));
    if (this.election?.validEpoch() !== epoch) {
      // the lease ran out while waiting: nothing was started but the subscriptions
      for (const s of subs) s.unsubscribe();
      return;
    }
    await core.start();
    const consumer = new ScaleConsumer(this.nc, (m) => this.judge(core, m), this.logger);
    await consumer.start();
    // The slot API is the leader's alone: no responders while there is no leader.
    const slotApi = new Responder(this.nc, QUEUE_GROUPS.scheduler, this.logger);
    slotApi.serve(slotRoutes(core, () => this.election?.validEpoch() === epoch));
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
    if (!l) return;
    // The loops stop at once; the rest is bounded: over a NATS connection cut off without a
    // FIN a drain never completes, and the lease must be free to change hands meanwhile.
    for (const t of l.timers) clearInterval(t);
    for (const s of l.subs) s.unsubscribe();
    const stopping = async (what: string, work: Promise<unknown>) => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise((r) => (timer = setTimeout(r, STOP_LEADING_MS, 'timeout')));
      const end = await Promise.race([work.catch((err: unknown) => this.logger.warn({ err: String(err) }, `stopping ${what} failed`)), timeout]);
      clearTimeout(timer);
      if (end === 'timeout') this.logger.warn({ what, ms: STOP_LEADING_MS }, 'stopping a leader activity timed out; left behind');
    };
    await stopping('the slot API', l.slotApi.drain());
    await stopping('the scale consumer', l.consumer.stop());
    await stopping('the core', l.core.stop());
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
    // host.registered is public (any agent may publish it): only its hostId is read, as a
    // hint to ask that host's own agent; its facts are never taken (issue 13).
    const registered = this.nc.subscribe(SUBJECTS.event('host', 'registered'), {
      callback: (_e, msg) => {
        const hostId = (json(msg.data)?.['data'] as Record<string, unknown> | undefined)?.['hostId'];
        if (typeof hostId !== 'string' || !HOST_ID.test(hostId)) {
          this.logger.debug({ subject: msg.subject }, 'ignored a host.registered without a valid hostId');
          return;
        }
        void this.confirmRegistration(core, hostId, dirtyHosts);
      },
    });
    const instances = this.nc.subscribe(SUBJECTS.event('instance', '*'), {
      callback: (_e, msg) => {
        const what = msg.subject.split('.')[3] ?? '';
        const data = json(msg.data)?.['data'] as Record<string, unknown> | undefined;
        if (typeof data?.['instanceId'] === 'string' && typeof data['hostId'] === 'string') {
          core.instanceEvent(what, data['instanceId'], data['hostId'], typeof data['ip'] === 'string' ? data['ip'] : undefined);
        }
      },
    });
    return [hb, registered, instances];
  }

  /**
   * Asks the host's agent for its facts (orangery.agent.<host>.host.get) after a
   * host.registered hint; an agent that has just started may not serve yet, so no answer is
   * tried again a few times (its heartbeats register it anyway).
   */
  private async confirmRegistration(core: SchedulerCore, hostId: string, dirtyHosts: Set<string>): Promise<void> {
    for (let attempt = 1; attempt <= CONFIRM_ATTEMPTS; attempt++) {
      if (this.leading?.core !== core && this.leading) return;
      const outcome = await core.confirmRegistration(hostId);
      if (outcome === 'registered') {
        dirtyHosts.add(hostId);
        void this.listHost(core, hostId);
        return;
      }
      if (outcome !== 'unreachable') return;
      await new Promise((r) => setTimeout(r, CONFIRM_RETRY_MS));
    }
    this.logger.info({ host: hostId }, "host.registered not confirmed: no answer from that host's agent; nothing registered");
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

/** The migrator's view of slots (docs/scheduler.md "Slot API"): port errors become contract errors. */
function slotRoutes(core: SchedulerCore, leads: () => boolean): Route[] {
  const s = SUBJECTS.schedulerSlot;
  const contract = async <T>(work: () => Promise<T>): Promise<T> => {
    // Reads too: a replica past its lease deadline answers nothing from its memory (the
    // new leader's may differ), also in the moments before its responders are drained.
    if (!leads()) throw new OrangeryError('UNAVAILABLE', 'the scheduler leader is changing; try again', {});
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
      subject: s.create,
      handler: async (b) =>
        contract(() => {
          const r = decode(SlotCreateRequest, b);
          return core.createOnTarget(r.instanceId, r.by, r.network);
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

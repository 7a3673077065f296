import { buildEvent, CURSORS, memoryLimitMb, pageOf, type Amounts, type HostSummary, type InstanceSummary, type PageQuery } from '@orangery/contracts';
import {
  DatabaseUnavailableError,
  isTooLarge,
  keysetAfter,
  OutboxRowIds,
  type OutboxRelay,
  type PendingEvent,
  type SqlPool,
  type SqlTx,
} from '@orangery/persistence';
import type { Logger } from '@orangery/telemetry';
import type { HostEntry } from '../domain/host-book';
import type { AppRecord, SlotRecord } from '../domain/model';
import { JournalTooLarge, NotLeaderError, type Changes, type SchedulerStore } from '../domain/ports';

interface Pending {
  changes: Changes;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** Journal writes gathered into one transaction while the previous one commits. */
const MAX_GROUP = 400;

/**
 * The scheduler's journal on MySQL/MariaDB. Writes are group-committed: every change
 * that arrives while a transaction is in flight goes into the next one (one epoch check,
 * multi-row statements, one COMMIT round trip), so thousands of slot transitions a second
 * cost tens of transactions.
 *
 * Fencing (docs/scheduler.md "Leadership"): nothing is sent unless the lease says this
 * replica leads right now (`fenceWith`), and every transaction starts by WRITING the lease
 * row under its epoch, then fails on the server when the row holds another epoch, before
 * any of its writes. A write, not a read under a share lock: on Galera a read lock is local
 * to one node, while two transactions writing one row on two nodes conflict at
 * certification, so a takeover committed elsewhere makes this transaction fail (a deadlock,
 * retried by the pool from scratch, where the check then fails for good). The fence, the
 * writes and COMMIT go in one round trip: a leader cut off mid-transaction cannot leave the
 * lease row locked on the server between two of its round trips.
 */
export class MysqlSchedulerStore implements SchedulerStore {
  private epochNow: () => number | undefined = () => undefined;
  private readonly queue: Pending[] = [];
  private flushing = false;
  private maxPacket: number | undefined;

  constructor(
    private readonly sql: SqlPool,
    private readonly outbox: OutboxRelay,
    private readonly source: string,
    private readonly logger: Logger,
  ) {}

  /** Where the epoch to fence writes with comes from (undefined: not leading now; every commit fails). */
  fenceWith(epochNow: () => number | undefined): void {
    this.epochNow = epochNow;
  }

  async load(): Promise<{ apps: AppRecord[]; slots: SlotRecord[]; drained: string[] }> {
    return this.sql.read(async (q) => {
      const [apps, slots, drained] = (await q.queryAll([
        { sql: 'SELECT record FROM sched_app' },
        { sql: 'SELECT record FROM sched_instance' },
        { sql: 'SELECT id FROM sched_host WHERE drain = 1' },
      ])) as [{ record: unknown }[], { record: unknown }[], { id: string }[]];
      return {
        apps: apps.map((r) => json<AppRecord>(r.record)),
        slots: slots.map((r) => json<SlotRecord>(r.record)),
        drained: drained.map((r) => r.id),
      };
    });
  }

  async requestSeen(requestId: string): Promise<boolean> {
    const rows = await this.sql.read((q) => q.query<unknown[]>('SELECT 1 FROM sched_request WHERE request_id = ? LIMIT 1', [requestId]));
    return rows.length > 0;
  }

  commit(changes: Changes): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ changes, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const group = this.queue.splice(0, MAX_GROUP);
        try {
          const { events, rowIds } = await this.write(group.map((p) => p.changes));
          for (const p of group) p.resolve();
          void this.outbox.publishCommitted(events, rowIds.first);
        } catch (e) {
          // The database away or busy fails every change alike: one by one would only multiply the load.
          if (e instanceof NotLeaderError || e instanceof DatabaseUnavailableError || group.length === 1) {
            for (const p of group) p.reject(e);
            continue;
          }
          // One bad change must not fail the others: write them one by one.
          this.logger.warn({ err: String(e), changes: group.length }, 'group commit failed; writing its changes one by one');
          for (const p of group) {
            try {
              const { events, rowIds } = await this.write([p.changes]);
              void this.outbox.publishCommitted(events, rowIds.first);
              p.resolve();
            } catch (err) {
              p.reject(err);
            }
          }
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  private async write(all: Changes[]): Promise<{ events: PendingEvent[]; rowIds: OutboxRowIds }> {
    const epoch = this.epochNow();
    if (epoch === undefined) throw new NotLeaderError();
    const events: PendingEvent[] = [];
    const rowIds = new OutboxRowIds();
    for (const c of all) for (const e of c.events ?? []) events.push(buildEvent({ ...e, source: e.source || this.source }));
    try {
      await this.sql.transaction(async (tx) => {
        // Checked again on every run: the pool re-runs this after a deadlock (a Galera
        // certification conflict), and a takeover in between must fail it, not retry past it.
        if (this.epochNow() !== epoch) throw new NotLeaderError();
        fence(tx, epoch);
        this.statements(tx, all, events, rowIds);
      });
    } catch (e) {
      if (isFenced(e)) {
        this.logger.warn({ epoch, what: 'journal' }, 'a write was refused by the database: another replica leads (fenced)');
        throw new NotLeaderError();
      }
      if (isTooLarge(e)) throw new JournalTooLarge(await this.maxAllowedPacket(), String((e as Error).message ?? e));
      throw e;
    }
    return { events, rowIds };
  }

  /** The database's max_allowed_packet (read once; undefined when it cannot be read). */
  private async maxAllowedPacket(): Promise<number | undefined> {
    if (this.maxPacket === undefined) {
      const rows = await this.sql
        .read((q) => q.query<{ max: number | string }[]>('SELECT @@max_allowed_packet AS max'))
        .catch(() => [] as { max: number | string }[]);
      if (rows[0]) this.maxPacket = Number(rows[0].max);
    }
    return this.maxPacket;
  }

  private statements(tx: SqlTx, all: Changes[], events: PendingEvent[], rowIds: OutboxRowIds): void {
    const apps = all.flatMap((c) => c.apps ?? []);
    const slots = all.flatMap((c) => c.slots ?? []);
    const deletes = all.flatMap((c) => c.deleteSlots ?? []);
    const requests = all.flatMap((c) => c.requests ?? []);
    if (apps.length > 0) {
      tx.defer(
        `INSERT INTO sched_app (env, app, request_id, seq, outcome, record) VALUES ${rows(apps.length, 6)}
         ON DUPLICATE KEY UPDATE request_id = VALUES(request_id), seq = VALUES(seq), outcome = VALUES(outcome), record = VALUES(record)`,
        apps.flatMap((a) => [a.env, a.app, a.requestId, a.seq, a.outcome, JSON.stringify(a)]),
      );
    }
    if (requests.length > 0) {
      tx.defer(
        `INSERT INTO sched_request (request_id, env, app, seq, outcome, reason, decided_at) VALUES ${rows(requests.length, 7)}
         ON DUPLICATE KEY UPDATE outcome = VALUES(outcome), reason = VALUES(reason), decided_at = VALUES(decided_at)`,
        requests.flatMap((r) => [
          r.requestId,
          r.env,
          r.app,
          r.seq,
          r.outcome,
          r.reason === undefined ? null : JSON.stringify(r.reason),
          r.outcome === 'accepted' ? null : new Date(),
        ]),
      );
    }
    if (slots.length > 0) {
      tx.defer(
        `INSERT INTO sched_instance (id, env, app, slot, state, phase, backend, host_id, ip, mac, cpu, memory_mb, disk_mb, record)
         VALUES ${rows(slots.length, 14)}
         ON DUPLICATE KEY UPDATE state = VALUES(state), phase = VALUES(phase), backend = VALUES(backend), host_id = VALUES(host_id),
           ip = VALUES(ip), mac = VALUES(mac), cpu = VALUES(cpu), memory_mb = VALUES(memory_mb), disk_mb = VALUES(disk_mb), record = VALUES(record)`,
        slots.flatMap((s) => {
          const d = demand(s);
          return [s.id, s.env, s.app, s.slot, s.state, s.phase, s.backend, s.hostId, s.ip, s.mac, d.cpu, d.memoryMb, d.diskMb, JSON.stringify(s)];
        }),
      );
    }
    const drains = all.flatMap((c) => c.hostDrains ?? []);
    if (drains.length > 0) {
      tx.defer(
        `INSERT INTO sched_host (id, backend, drain, facts, usage_json, last_seen) VALUES ${rows(drains.length, 6)}
         ON DUPLICATE KEY UPDATE drain = VALUES(drain)`,
        drains.flatMap((d) => [d.hostId, d.backend, d.drain ? 1 : 0, JSON.stringify(d.facts), JSON.stringify(d.usage), new Date()]),
      );
    }
    // deletes after upserts: a slot updated then removed in one group ends removed
    if (deletes.length > 0) tx.defer(`DELETE FROM sched_instance WHERE id IN (${deletes.map(() => '?').join(', ')})`, deletes);
    if (events.length > 0) {
      tx.defer(
        `INSERT INTO sched_outbox (event_id, event_subject, event_json) VALUES ${rows(events.length, 3)}`,
        events.flatMap((e) => [e.event.id, e.natsSubject, JSON.stringify(e.event)]),
        rowIds.track,
      );
    }
  }

  // ---- hosts and the operators' read side (any replica) ----------------------------------

  /**
   * Saves what agents report and the leader's verdicts (`unknown`, `lost`), fenced like the
   * journal: a deposed leader's verdict must not overwrite the new leader's.
   */
  async saveHosts(hosts: readonly HostEntry[]): Promise<void> {
    if (hosts.length === 0) return;
    const epoch = this.epochNow();
    if (epoch === undefined) throw new NotLeaderError();
    try {
      await this.sql.transaction(async (tx) => {
        if (this.epochNow() !== epoch) throw new NotLeaderError();
        fence(tx, epoch);
        tx.defer(
          `INSERT INTO sched_host (id, backend, fenced, facts, usage_json, last_seen, verdict) VALUES ${rows(hosts.length, 7)}
           ON DUPLICATE KEY UPDATE backend = VALUES(backend), fenced = VALUES(fenced), facts = VALUES(facts),
             usage_json = VALUES(usage_json), last_seen = GREATEST(last_seen, VALUES(last_seen)), verdict = VALUES(verdict)`,
          hosts.flatMap((h) => [h.id, h.backend, h.fenced ? 1 : 0, JSON.stringify(h.facts), JSON.stringify(h.usage), new Date(h.lastBeatWall), h.judged ?? '']),
        );
      });
    } catch (e) {
      if (isFenced(e)) {
        this.logger.warn({ epoch, what: 'hosts' }, 'a write was refused by the database: another replica leads (fenced)');
        throw new NotLeaderError();
      }
      throw e;
    }
  }

  /** One page of hosts in id order (keyset: after the cursor's id, limit + 1 rows to know whether more remain). */
  async listHosts(lostAfterMs: number, page: PageQuery<[string]>): Promise<{ hosts: HostSummary[]; nextCursor?: string }> {
    return this.sql.read(async (q) => {
      const after = keysetAfter(['id'], page.after);
      const hostRows = await q.query<HostRow[]>(
        `SELECT id, backend, drain, fenced, facts, usage_json, last_seen, verdict, TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(3)) AS silent_us
         FROM sched_host ${after.sql ? `WHERE ${after.sql}` : ''} ORDER BY id LIMIT ?`,
        [...after.params, page.limit + 1],
      );
      const { items: hosts, nextCursor } = pageOf(CURSORS.hosts, hostRows, page.limit, (h): [string] => [h.id]);
      const sums =
        hosts.length === 0
          ? []
          : await q.query<SumRow[]>(
              `SELECT host_id, SUM(cpu) AS cpu, SUM(memory_mb) AS memory_mb, SUM(disk_mb) AS disk_mb, COUNT(*) AS n
               FROM sched_instance WHERE host_id IN (?) GROUP BY host_id`,
              [hosts.map((h) => h.id)],
            );
      const byHost = new Map(sums.map((s) => [s.host_id, s]));
      const out = hosts.map((h) => {
        const facts = json<{ capacity: Amounts; labels: Record<string, string> }>(h.facts);
        const s = byHost.get(h.id);
        const state = hostStateOf(h, lostAfterMs);
        return {
          id: h.id,
          backend: h.backend,
          state,
          capacity: facts.capacity,
          allocated: { cpu: round3(Number(s?.cpu ?? 0)), memoryMb: Number(s?.memory_mb ?? 0), diskMb: Number(s?.disk_mb ?? 0) },
          usage: json<Amounts>(h.usage_json),
          labels: facts.labels,
          lastHeartbeat: new Date(h.last_seen).toISOString(),
          instances: Number(s?.n ?? 0),
        } satisfies HostSummary;
      });
      return { hosts: out, ...(nextCursor ? { nextCursor } : {}) };
    });
  }

  /**
   * Fleet counts for /metrics (orangery_hosts, orangery_instances, orangery_scale_*): hosts
   * by backend and the state hosts.list shows, instances by backend and state, scale
   * requests accepted and not complete. Three grouped scans.
   */
  async fleetCounts(lostAfterMs: number): Promise<{ hosts: FleetCount[]; instances: FleetCount[]; pendingRequests: number; oldestPendingSeconds: number }> {
    return this.sql.read(async (q) => {
      const hostRows = await q.query<Pick<HostRow, 'backend' | 'drain' | 'fenced' | 'verdict' | 'silent_us'>[]>(
        `SELECT backend, drain, fenced, verdict, TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(3)) AS silent_us FROM sched_host`,
      );
      const hosts = new Map<string, FleetCount>();
      for (const h of hostRows) {
        const state = hostStateOf(h, lostAfterMs);
        const key = `${h.backend}/${state}`;
        const c = hosts.get(key) ?? { backend: h.backend, state, count: 0 };
        c.count++;
        hosts.set(key, c);
      }
      const inst = await q.query<{ backend: string | null; state: string; n: number | string }[]>(
        `SELECT backend, state, COUNT(*) AS n FROM sched_instance GROUP BY backend, state`,
      );
      // apps whose accepted request is not complete yet, and how long the oldest has waited
      const [pending] = await q.query<{ n: number | string; oldest_us: number | string | null }[]>(
        `SELECT COUNT(*) AS n, TIMESTAMPDIFF(MICROSECOND, MIN(r.received_at), NOW(3)) AS oldest_us
         FROM sched_app a JOIN sched_request r ON r.request_id = a.request_id WHERE a.outcome = 'pending'`,
      );
      return {
        hosts: [...hosts.values()],
        instances: inst.map((r) => ({ backend: r.backend ?? '', state: r.state, count: Number(r.n) })),
        pendingRequests: Number(pending?.n ?? 0),
        oldestPendingSeconds: pending?.oldest_us === null || pending?.oldest_us === undefined ? 0 : Number(pending.oldest_us) / 1e6,
      };
    });
  }

  /** One page of instances in (env, app, slot) order, filtered by env and app (keyset, limit + 1 rows). */
  async listInstances(
    filter: { env?: string; app?: string },
    page: PageQuery<[string, string, number]>,
  ): Promise<{ instances: InstanceSummary[]; nextCursor?: string }> {
    const where: string[] = [];
    const params: unknown[] = [];
    for (const col of ['env', 'app'] as const) {
      const v = filter[col];
      if (v === undefined) continue;
      where.push(`${col} = ?`);
      params.push(v);
    }
    const after = keysetAfter(['env', 'app', 'slot'], page.after);
    if (after.sql) {
      where.push(after.sql);
      params.push(...after.params);
    }
    const rowsOut = await this.sql.read((q) =>
      q.query<InstanceRow[]>(
        `SELECT id, env, app, slot, state, backend, host_id, ip, mac, JSON_UNQUOTE(JSON_EXTRACT(record, '$.lastError.message')) AS error
         FROM sched_instance ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY env, app, slot LIMIT ?`,
        [...params, page.limit + 1],
      ),
    );
    const { items, nextCursor } = pageOf(CURSORS.instances, rowsOut, page.limit, (r): [string, string, number] => [r.env, r.app, Number(r.slot)]);
    const instances = items.map((r) => ({
      id: r.id,
      env: r.env,
      app: r.app,
      slot: Number(r.slot),
      state: r.state as InstanceSummary['state'],
      backend: r.backend as InstanceSummary['backend'],
      host: r.host_id,
      ip: r.ip,
      mac: r.mac,
      ...(r.error && r.error !== 'null' && r.state !== 'running' ? { error: r.error } : {}),
    }));
    return { instances, ...(nextCursor ? { nextCursor } : {}) };
  }
}

export interface FleetCount {
  backend: string;
  state: string;
  count: number;
}

/** A host's state as hosts.list shows it. The leader's verdict decides lost; a silent host without one is unknown (nothing of it moves). */
function hostStateOf(h: Pick<HostRow, 'drain' | 'fenced' | 'verdict' | 'silent_us'>, lostAfterMs: number): HostSummary['state'] {
  const silent = Number(h.silent_us) / 1000 > lostAfterMs || h.verdict !== '';
  return Number(h.fenced) === 1 || (silent && h.verdict === 'lost') ? 'lost' : silent ? 'unknown' : Number(h.drain) === 1 ? 'draining' : 'ready';
}

interface HostRow {
  id: string;
  backend: 'docker' | 'vmware';
  drain: number;
  fenced: number;
  facts: unknown;
  usage_json: unknown;
  last_seen: Date;
  verdict: string;
  silent_us: number;
}
interface SumRow {
  host_id: string;
  cpu: number;
  memory_mb: number;
  disk_mb: number;
  n: number;
}
interface InstanceRow {
  id: string;
  env: string;
  app: string;
  slot: number;
  state: string;
  backend: string | null;
  host_id: string | null;
  ip: string | null;
  mac: string | null;
  error: string | null;
}

/**
 * The fencing write and check, first in a transaction: the UPDATE puts the lease row in the
 * transaction's write set (a certification conflict with any takeover on another Galera
 * node); the SELECT fails with "subquery returns more than 1 row" when the row holds
 * another epoch, and a failed statement stops the rest of the round trip, COMMIT included.
 * A statement that errors, rather than a check of affected rows by the client, because the
 * check must hold with the writes and COMMIT sent in the same round trip.
 */
function fence(tx: SqlTx, epoch: number): void {
  tx.defer('UPDATE sched_leader SET counter = counter + 1 WHERE id = 1 AND epoch = ?', [epoch]);
  tx.defer('SELECT (SELECT 1 UNION ALL SELECT 1 FROM sched_leader WHERE id = 1 AND epoch <> ?) INTO @orangery_fence', [epoch]);
}

/** ER_SUBQUERY_NO_1_ROW from `fence`: another epoch holds the lease row. */
function isFenced(e: unknown): boolean {
  const d = (e ?? {}) as { code?: string; errno?: number };
  return d.errno === 1242 || d.code === 'ER_SUBQUERY_NO_1_ROW';
}

const rows = (n: number, cols: number): string => {
  const one = `(${new Array(cols).fill('?').join(', ')})`;
  return new Array(n).fill(one).join(', ');
};

/** mysql2 returns JSON columns parsed on MySQL and as text on MariaDB (JSON is LONGTEXT there). */
const json = <T>(v: unknown): T => (typeof v === 'string' ? (JSON.parse(v) as T) : (v as T));

const round3 = (n: number): number => Math.round(n * 1000) / 1000;

function demand(s: SlotRecord): Amounts {
  const r = s.spec.resources;
  return { cpu: r.cpu, memoryMb: memoryLimitMb(r.memoryMb, r.heapMb), diskMb: r.diskMb ?? 0 };
}

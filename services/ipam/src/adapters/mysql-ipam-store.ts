import { trace } from '@opentelemetry/api';
import type { Backend, EventEnvelope, Owner } from '@orangery/contracts';
import { OrangeryError } from '@orangery/contracts';
import {
  DatabaseBusyError,
  DatabaseUnavailableError,
  isDuplicateKey,
  keysetAfter,
  OutboxRowIds,
  OUTBOX_SENT,
  type OutboxRelay,
  type SqlPool,
  type SqlTx,
} from '@orangery/persistence';
import { poolRecordOf, type PoolPlan } from '../domain/pool-plan';
import {
  BLOCKED_AT,
  OwnerConflict,
  type BlockRecord,
  type AddressPatch,
  type AddressRecord,
  type AuditEntry,
  type IpamStore,
  type IpamTx,
  type PoolRecord,
  type PoolUsage,
} from '../domain/ports';

/** Rows per INSERT when a pool's addresses are created (a /16 is 14 statements). */
const INSERT_BATCH = 5_000;

const ADDRESS_COLUMNS = 'ip, pool_id, state, owner_env, owner_app, owner_slot, available_at, released_at, instance_id, backend, host';

interface AddressRow {
  ip: number | string;
  pool_id: number;
  state: AddressRecord['state'];
  owner_env: string | null;
  owner_app: string | null;
  owner_slot: number | null;
  available_at: number | string | null;
  released_at: Date | null;
  instance_id: string | null;
  backend: Backend | null;
  host: string | null;
}

interface PoolRow {
  id: number;
  name: string;
  cidr: string;
  first_ip: number | string;
  last_ip: number | string;
  prefix_length: number;
  gateway: number | string;
  vlan: number;
  reserved_json: string;
  cooldown_seconds: number;
  size: number;
  created_at: Date;
}

const ownerKey = (o: Owner): string => `${o.env}:${o.app}:${o.slot}`;

function toAddress(r: AddressRow): AddressRecord {
  return {
    ip: Number(r.ip),
    poolId: Number(r.pool_id),
    state: r.state,
    owner:
      r.owner_env !== null && r.owner_app !== null && r.owner_slot !== null ? { env: r.owner_env, app: r.owner_app, slot: Number(r.owner_slot) } : undefined,
    availableAt: r.available_at === null ? null : Number(r.available_at),
    releasedAt: r.released_at,
    instanceId: r.instance_id,
    backend: r.backend,
    host: r.host,
  };
}

function toPoolRecord(r: PoolRow): PoolRecord {
  return {
    id: Number(r.id),
    name: r.name,
    cidrText: r.cidr,
    prefixLength: Number(r.prefix_length),
    first: Number(r.first_ip),
    last: Number(r.last_ip),
    gateway: Number(r.gateway),
    vlan: Number(r.vlan),
    reserved: JSON.parse(r.reserved_json) as string[],
    cooldownSeconds: Number(r.cooldown_seconds),
    size: Number(r.size),
    createdAt: r.created_at,
  };
}

class MysqlIpamTx implements IpamTx {
  readonly events: { natsSubject: string; event: EventEnvelope }[] = [];
  /** the audit rows that carry them (the outbox) */
  readonly rowIds = new OutboxRowIds();

  constructor(
    private readonly q: SqlTx,
    private readonly replica: string,
    private readonly actor: string | undefined,
  ) {}

  private async rows<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return (await this.q.query(sql, params)) as T[];
  }

  async openAllocation(poolName: string, owner: Owner): Promise<{ pool: PoolRecord | undefined; mine: AddressRecord[] }> {
    // One round trip: START TRANSACTION, the pool's shared lock, the owner's rows.
    const [pools, mine] = (await this.q.queryAll([
      { sql: 'SELECT * FROM ipam_pool WHERE name = ? LOCK IN SHARE MODE', params: [poolName] },
      { sql: `SELECT ${ADDRESS_COLUMNS} FROM ipam_address WHERE owner_key = ? FOR UPDATE`, params: [ownerKey(owner)] },
    ])) as [PoolRow[], AddressRow[]];
    return { pool: pools[0] ? toPoolRecord(pools[0]) : undefined, mine: mine.map(toAddress) };
  }

  async lockPoolCatalog(): Promise<void> {
    // A write, not SELECT ... FOR UPDATE: on Galera row locks are per node, and only rows a
    // transaction writes are certified across the cluster. Rewriting the row takes the same
    // exclusive lock on one server, and makes two pool creations through two nodes conflict
    // (one is aborted as a deadlock and runs again, seeing the other's pool).
    await this.q.queryAll([{ sql: 'DELETE FROM ipam_catalog_lock WHERE id = 1' }, { sql: 'INSERT INTO ipam_catalog_lock (id) VALUES (1)' }]);
  }

  async findPool(name: string, lock: 'none' | 'share' | 'update'): Promise<PoolRecord | undefined> {
    const suffix = lock === 'share' ? ' LOCK IN SHARE MODE' : lock === 'update' ? ' FOR UPDATE' : '';
    const [row] = await this.rows<PoolRow>(`SELECT * FROM ipam_pool WHERE name = ?${suffix}`, [name]);
    return row ? toPoolRecord(row) : undefined;
  }

  async findPoolById(id: number): Promise<PoolRecord | undefined> {
    const [row] = await this.rows<PoolRow>('SELECT * FROM ipam_pool WHERE id = ?', [id]);
    return row ? toPoolRecord(row) : undefined;
  }

  async findOverlappingPool(first: number, last: number): Promise<PoolRecord | undefined> {
    const [row] = await this.rows<PoolRow>('SELECT * FROM ipam_pool WHERE first_ip <= ? AND last_ip >= ? ORDER BY first_ip LIMIT 1', [last, first]);
    return row ? toPoolRecord(row) : undefined;
  }

  async totalPoolSize(): Promise<number> {
    const [row] = await this.rows<{ total: number | string | null }>('SELECT COALESCE(SUM(size), 0) AS total FROM ipam_pool');
    return Number(row?.total ?? 0);
  }

  async listPools(page: { after: string | undefined; limit: number }): Promise<PoolRecord[]> {
    const after = keysetAfter(['name'], page.after === undefined ? undefined : [page.after]);
    return (
      await this.rows<PoolRow>(`SELECT * FROM ipam_pool ${after.sql ? `WHERE ${after.sql}` : ''} ORDER BY name LIMIT ?`, [...after.params, page.limit])
    ).map(toPoolRecord);
  }

  async insertPool(plan: PoolPlan, now: Date): Promise<PoolRecord> {
    const res = (await this.q.query(
      `INSERT INTO ipam_pool (name, cidr, first_ip, last_ip, prefix_length, gateway, vlan, reserved_json, cooldown_seconds, size, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        plan.name,
        plan.cidr.text,
        plan.cidr.first,
        plan.cidr.last,
        plan.cidr.prefixLength,
        plan.gateway,
        plan.vlan,
        JSON.stringify(plan.reserved),
        plan.cooldownSeconds,
        plan.size,
        now,
      ],
    )) as { insertId: number };
    const id = Number(res.insertId);
    // Integers we computed ourselves, inlined: 5,000 placeholders per statement would cost
    // more in the driver than the insert itself.
    let batch: string[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      await this.q.query(`INSERT INTO ipam_address (ip, pool_id, state, available_at) VALUES ${batch.join(',')}`);
      batch = [];
    };
    for (const r of plan.allocatable) {
      for (let ip = r.start; ip <= r.end; ip++) {
        batch.push(`(${ip},${id},'free',0)`);
        if (batch.length >= INSERT_BATCH) await flush();
      }
    }
    await flush();
    return poolRecordOf(plan, id, now);
  }

  async deletePool(poolId: number): Promise<void> {
    this.q.defer('DELETE FROM ipam_address WHERE pool_id = ?', [poolId]);
    this.q.defer('DELETE FROM ipam_pool WHERE id = ?', [poolId]);
  }

  async usage(poolId: number, nowMs: number): Promise<PoolUsage> {
    // Blocked addresses (BLOCKED_AT) are above every cooldown's end: counted apart.
    const [row] = await this.rows<{ used: number | string; quarantined: number | string; blocked: number | string; next: number | string | null }>(
      `SELECT
         (SELECT COUNT(*) FROM ipam_address WHERE pool_id = ? AND available_at IS NULL) AS used,
         (SELECT COUNT(*) FROM ipam_address WHERE pool_id = ? AND available_at > ? AND available_at < ?) AS quarantined,
         (SELECT COUNT(*) FROM ipam_address WHERE pool_id = ? AND available_at = ?) AS blocked,
         (SELECT MIN(available_at) FROM ipam_address WHERE pool_id = ? AND available_at > ? AND available_at < ?) AS next`,
      [poolId, poolId, nowMs, BLOCKED_AT, poolId, BLOCKED_AT, poolId, nowMs, BLOCKED_AT],
    );
    return {
      used: Number(row?.used ?? 0),
      quarantined: Number(row?.quarantined ?? 0),
      blocked: Number(row?.blocked ?? 0),
      nextAvailableAt: row?.next === null || row?.next === undefined ? null : Number(row.next),
    };
  }

  async lockOwnerAddresses(owner: Owner): Promise<AddressRecord[]> {
    const rows = await this.rows<AddressRow>(`SELECT ${ADDRESS_COLUMNS} FROM ipam_address WHERE owner_key = ? FOR UPDATE`, [ownerKey(owner)]);
    return rows.map(toAddress);
  }

  async lockAddress(ip: number): Promise<AddressRecord | undefined> {
    const [row] = await this.rows<AddressRow>(`SELECT ${ADDRESS_COLUMNS} FROM ipam_address WHERE ip = ? FOR UPDATE`, [ip]);
    return row ? toAddress(row) : undefined;
  }

  async lockNextAvailable(poolId: number, nowMs: number): Promise<AddressRecord | undefined> {
    const [row] = await this.rows<AddressRow>(
      `SELECT ${ADDRESS_COLUMNS} FROM ipam_address FORCE INDEX (ix_pick)
       WHERE pool_id = ? AND available_at <= ?
       ORDER BY available_at, ip LIMIT 1 FOR UPDATE SKIP LOCKED`,
      [poolId, nowMs],
    );
    return row ? toAddress(row) : undefined;
  }

  async updateAddress(ip: number, p: AddressPatch): Promise<void> {
    // Sent with COMMIT; a duplicate live owner surfaces there (MysqlIpamStore maps it).
    this.q.defer(`UPDATE ipam_address SET ${UPDATE_COLUMNS.map((c) => `${c} = ?`).join(', ')} WHERE ip = ?`, [...addressValues(p), ip]);
  }

  async audit(entry: AuditEntry): Promise<void> {
    await this.auditAll([entry]);
  }

  async openAllocations(poolNames: readonly string[], owners: readonly Owner[]): Promise<{ pools: PoolRecord[]; mine: AddressRecord[] }> {
    // One round trip, as openAllocation. Owner keys sorted: concurrent batches lock
    // overlapping owners in the same (index) order, which keeps deadlocks rare.
    const keys = [...new Set(owners.map(ownerKey))].sort();
    const [pools, mine] = (await this.q.queryAll([
      { sql: 'SELECT * FROM ipam_pool WHERE name IN (?) ORDER BY name LOCK IN SHARE MODE', params: [[...poolNames]] },
      { sql: `SELECT ${ADDRESS_COLUMNS} FROM ipam_address WHERE owner_key IN (?) ORDER BY owner_key FOR UPDATE`, params: [keys] },
    ])) as [PoolRow[], AddressRow[]];
    return { pools: pools.map(toPoolRecord), mine: mine.map(toAddress) };
  }

  async lockAddresses(ips: readonly number[]): Promise<AddressRecord[]> {
    if (ips.length === 0) return [];
    const rows = await this.rows<AddressRow>(`SELECT ${ADDRESS_COLUMNS} FROM ipam_address WHERE ip IN (?) ORDER BY ip FOR UPDATE`, [[...ips]]);
    return rows.map(toAddress);
  }

  async lockNextAvailableMany(poolId: number, nowMs: number, limit: number, excluding: readonly number[]): Promise<AddressRecord[]> {
    const n = Math.floor(limit);
    if (!(n > 0)) return [];
    const rows = await this.rows<AddressRow>(
      `SELECT ${ADDRESS_COLUMNS} FROM ipam_address FORCE INDEX (ix_pick)
       WHERE pool_id = ? AND available_at <= ?${excluding.length > 0 ? ' AND ip NOT IN (?)' : ''}
       ORDER BY available_at, ip LIMIT ${n} FOR UPDATE SKIP LOCKED`,
      excluding.length > 0 ? [poolId, nowMs, [...excluding]] : [poolId, nowMs],
    );
    return rows.map(toAddress);
  }

  async openBinds(ips: readonly number[]): Promise<{ rows: AddressRecord[]; pools: PoolRecord[] }> {
    if (ips.length === 0) return { rows: [], pools: [] };
    const [rows, pools] = (await this.q.queryAll([
      { sql: `SELECT ${ADDRESS_COLUMNS} FROM ipam_address WHERE ip IN (?) ORDER BY ip FOR UPDATE`, params: [[...ips]] },
      { sql: 'SELECT * FROM ipam_pool WHERE id IN (SELECT pool_id FROM ipam_address WHERE ip IN (?))', params: [[...ips]] },
    ])) as [AddressRow[], PoolRow[]];
    return { rows: rows.map(toAddress), pools: pools.map(toPoolRecord) };
  }

  async findPoolsByIds(ids: readonly number[]): Promise<PoolRecord[]> {
    if (ids.length === 0) return [];
    return (await this.rows<PoolRow>('SELECT * FROM ipam_pool WHERE id IN (?)', [[...ids]])).map(toPoolRecord);
  }

  async updateAddresses(changes: readonly { ip: number; patch: AddressPatch }[]): Promise<void> {
    if (changes.length === 0) return;
    if (changes.length === 1) return this.updateAddress(changes[0]!.ip, changes[0]!.patch);
    // One UPDATE for every row: a column that differs between rows is a CASE over the ip.
    // The unique index on live_owner is checked row by row, as for single updates.
    const values = changes.map((c) => addressValues(c.patch));
    const sets: string[] = [];
    const params: unknown[] = [];
    UPDATE_COLUMNS.forEach((column, k) => {
      const first = values[0]![k];
      if (values.every((v) => sameValue(v[k], first))) {
        sets.push(`${column} = ?`);
        params.push(first);
        return;
      }
      sets.push(`${column} = CASE ip ${changes.map(() => 'WHEN ? THEN ?').join(' ')} END`);
      changes.forEach((c, i) => params.push(c.ip, values[i]![k]));
    });
    params.push(changes.map((c) => c.ip));
    this.q.defer(`UPDATE ipam_address SET ${sets.join(', ')} WHERE ip IN (?)`, params);
  }

  async auditAll(entries: readonly AuditEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const traceId = trace.getActiveSpan()?.spanContext().traceId ?? null;
    const params: unknown[] = [];
    for (const entry of entries) {
      params.push(
        entry.action,
        entry.ip,
        entry.poolName,
        this.actor ?? null,
        this.replica,
        traceId && traceId !== '00000000000000000000000000000000' ? traceId : null,
        entry.before === null ? null : JSON.stringify(entry.before),
        entry.after === null ? null : JSON.stringify(entry.after),
        entry.event?.event.id ?? null,
        entry.event?.natsSubject ?? null,
        entry.event ? JSON.stringify(entry.event.event) : null,
        // an audit row without an event has nothing to publish
        entry.event ? OUTBOX_SENT.pending : OUTBOX_SENT.published,
      );
      if (entry.event) this.events.push(entry.event);
    }
    // Sent with the next query or COMMIT; rows get ids in this order (the outbox cursor's order).
    this.q.defer(
      `INSERT INTO ipam_audit (at, action, ip, pool_name, actor, replica, trace_id, before_json, after_json,
         event_id, event_subject, event_json, sent)
       VALUES ${entries.map(() => '(NOW(3), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
      params,
      this.rowIds.track,
    );
  }

  // ---- swarm node blocks ----

  async findBlock(poolId: number, host: string, lock: 'none' | 'share' | 'update'): Promise<BlockRecord | undefined> {
    const suffix = lock === 'share' ? ' LOCK IN SHARE MODE' : lock === 'update' ? ' FOR UPDATE' : '';
    const [row] = await this.rows<BlockRow>(`SELECT * FROM ipam_block WHERE pool_id = ? AND host = ?${suffix}`, [poolId, host]);
    return row ? toBlock(row) : undefined;
  }

  async findBlockAt(ip: number): Promise<BlockRecord | undefined> {
    // Blocks never overlap: the one starting at or below ip is the only candidate.
    const [row] = await this.rows<BlockRow>('SELECT * FROM ipam_block WHERE first_ip <= ? ORDER BY first_ip DESC LIMIT 1', [ip]);
    return row && Number(row.last_ip) >= ip ? toBlock(row) : undefined;
  }

  async listBlocks(filter: { poolId?: number; host?: string }): Promise<(BlockRecord & { bound: number })[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.poolId !== undefined) {
      where.push('b.pool_id = ?');
      params.push(filter.poolId);
    }
    if (filter.host !== undefined) {
      where.push('b.host = ?');
      params.push(filter.host);
    }
    const rows = await this.rows<BlockRow & { bound: number | string }>(
      `SELECT b.*, (SELECT COUNT(*) FROM ipam_address a WHERE a.ip BETWEEN b.first_ip AND b.last_ip AND a.available_at IS NULL) AS bound
       FROM ipam_block b ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY b.first_ip`,
      params,
    );
    return rows.map((r) => ({ ...toBlock(r), bound: Number(r.bound) }));
  }

  async countBlocks(poolId: number): Promise<number> {
    const [row] = await this.rows<{ n: number | string }>('SELECT COUNT(*) AS n FROM ipam_block WHERE pool_id = ?', [poolId]);
    return Number(row?.n ?? 0);
  }

  async freeBlockCandidates(poolId: number, size: number, nowMs: number, limit: number): Promise<number[]> {
    // One range scan of ix_pick (covering): the available addresses grouped by aligned range;
    // a range qualifies when all `size` of its addresses are there (network, broadcast,
    // gateway and reserved addresses have no row, live ones are NULL, cooling or blocked ones
    // above now). Ranges of never-used addresses first keep released ones for their owners.
    const rows = await this.rows<{ k: number | string }>(
      `SELECT ip DIV ? AS k, SUM(available_at > 0) > 0 AS reused FROM ipam_address FORCE INDEX (ix_pick)
       WHERE pool_id = ? AND available_at <= ?
       GROUP BY k HAVING COUNT(*) = ? ORDER BY reused, k LIMIT ?`,
      [size, poolId, nowMs, size, Math.floor(limit)],
    );
    return rows.map((r) => Number(r.k) * size);
  }

  async lockRange(first: number, last: number): Promise<AddressRecord[]> {
    const rows = await this.rows<AddressRow>(`SELECT ${ADDRESS_COLUMNS} FROM ipam_address WHERE ip BETWEEN ? AND ? ORDER BY ip FOR UPDATE`, [first, last]);
    return rows.map(toAddress);
  }

  async setAvailableAt(ips: readonly number[], value: number): Promise<void> {
    if (ips.length === 0) return;
    this.q.defer('UPDATE ipam_address SET available_at = ? WHERE ip IN (?)', [value, [...ips]]);
  }

  async insertBlock(block: Omit<BlockRecord, 'id'>): Promise<BlockRecord> {
    // Not deferred: a rival's block for the same host (unique key) must surface here, as
    // OwnerConflict through the store's guard, so the reserve reruns and returns it.
    const res = (await this.q.query('INSERT INTO ipam_block (pool_id, host, first_ip, last_ip, size, created_at) VALUES (?, ?, ?, ?, ?, ?)', [
      block.poolId,
      block.host,
      block.first,
      block.last,
      block.size,
      block.createdAt,
    ])) as { insertId: number };
    return { ...block, id: Number(res.insertId) };
  }

  async deleteBlock(id: number): Promise<void> {
    this.q.defer('DELETE FROM ipam_block WHERE id = ?', [id]);
  }
}

interface BlockRow {
  id: number;
  pool_id: number;
  host: string;
  first_ip: number | string;
  last_ip: number | string;
  size: number;
  created_at: Date;
}

const toBlock = (r: BlockRow): BlockRecord => ({
  id: Number(r.id),
  poolId: Number(r.pool_id),
  host: r.host,
  first: Number(r.first_ip),
  last: Number(r.last_ip),
  size: Number(r.size),
  createdAt: r.created_at,
});

const UPDATE_COLUMNS = [
  'state',
  'owner_key',
  'owner_env',
  'owner_app',
  'owner_slot',
  'live_owner',
  'available_at',
  'released_at',
  'instance_id',
  'backend',
  'host',
] as const;

/** The values of UPDATE_COLUMNS for a patch, in that order. */
function addressValues(p: AddressPatch): unknown[] {
  const live = p.state === 'allocated' || p.state === 'bound';
  return [
    p.state,
    p.owner ? ownerKey(p.owner) : null,
    p.owner?.env ?? null,
    p.owner?.app ?? null,
    p.owner?.slot ?? null,
    live && p.owner ? ownerKey(p.owner) : null,
    p.availableAt,
    p.releasedAt,
    p.instanceId,
    p.backend,
    p.host,
  ];
}

const sameValue = (a: unknown, b: unknown): boolean => (a instanceof Date && b instanceof Date ? a.getTime() === b.getTime() : a === b);

/**
 * MySQL/MariaDB implementation of the IPAM store, on the lean SqlPool (an allocation is three
 * round trips). Transactions run READ COMMITTED: locking
 * reads see the latest committed rows and take no gap locks, so SKIP LOCKED picks spread
 * concurrent allocations over different rows instead of queueing them.
 */
export class MysqlIpamStore implements IpamStore {
  constructor(
    private readonly sql: SqlPool,
    private readonly relay: OutboxRelay,
    private readonly replica: string,
  ) {}

  /** orangery_ipam_addresses: every pool's used, quarantined and free counts, one grouped scan. */
  async addressCounts(nowMs: number): Promise<{ pool: string; used: number; quarantined: number; blocked: number; free: number }[]> {
    const rows = await this.sql.read((q) =>
      q.query<{ name: string; size: number | string; used: number | string | null; quarantined: number | string | null; blocked: number | string | null }[]>(
        `SELECT p.name, p.size,
           SUM(a.ip IS NOT NULL AND a.available_at IS NULL) AS used,
           SUM(a.available_at > ? AND a.available_at < ?) AS quarantined,
           SUM(a.available_at = ?) AS blocked
         FROM ipam_pool p LEFT JOIN ipam_address a ON a.pool_id = p.id GROUP BY p.id, p.name, p.size`,
        [nowMs, BLOCKED_AT, BLOCKED_AT],
      ),
    );
    return rows.map((r) => {
      const used = Number(r.used ?? 0);
      const quarantined = Number(r.quarantined ?? 0);
      const blocked = Number(r.blocked ?? 0);
      return { pool: r.name, used, quarantined, blocked, free: Number(r.size) - used - quarantined - blocked };
    });
  }

  async transaction<T>(work: (tx: IpamTx) => Promise<T>, actor?: string): Promise<T> {
    let tx: MysqlIpamTx | undefined;
    const result = await this.guard(() =>
      this.sql.transaction(async (q) => {
        tx = new MysqlIpamTx(q, this.replica, actor);
        return work(tx);
      }),
    );
    // After the commit, never before: an event for a rolled-back change must not exist.
    if (tx && tx.events.length > 0) await this.relay.publishCommitted(tx.events, tx.rowIds.first);
    return result;
  }

  async read<T>(work: (tx: IpamTx) => Promise<T>): Promise<T> {
    return this.guard(() => this.sql.read((q) => work(new MysqlIpamTx(q, this.replica, undefined))));
  }

  private async guard<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (e) {
      if (isDuplicateKey(e)) throw new OwnerConflict();
      if (e instanceof DatabaseUnavailableError) {
        const what = e instanceof DatabaseBusyError ? 'busy (too many requests wait for a connection)' : 'unreachable';
        throw new OrangeryError('UNAVAILABLE', `the IPAM database is ${what}; nothing was changed, retry later`, {
          retryable: true,
        });
      }
      throw e;
    }
  }
}

import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * IPAM tables. One row per allocatable address (pools are at most /16), keyed by the
 * address as an unsigned integer: pools never overlap, so the IP alone is the key.
 *
 * - ix_pick (pool_id, available_at, ip) serves "next address a fresh owner may take" as
 *   one index range scan: never-used rows have available_at = 0, released rows the end of
 *   their cooldown, live rows NULL (outside every `<= now` range).
 * - uq_live_owner makes "at most one live address per owner" a database fact.
 * - ipam_audit is both the audit trail and the transactional outbox (read by a cursor
 *   since 1732600000000).
 */
export class IpamInitial1732500000000 implements MigrationInterface {
  name = 'IpamInitial1732500000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE IF NOT EXISTS ipam_pool (
      id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      name VARCHAR(63) NOT NULL,
      cidr VARCHAR(18) NOT NULL,
      first_ip INT UNSIGNED NOT NULL,
      last_ip INT UNSIGNED NOT NULL,
      prefix_length TINYINT UNSIGNED NOT NULL,
      gateway INT UNSIGNED NOT NULL,
      vlan SMALLINT UNSIGNED NOT NULL,
      reserved_json TEXT NOT NULL,
      cooldown_seconds INT UNSIGNED NOT NULL,
      size INT UNSIGNED NOT NULL,
      created_at DATETIME(3) NOT NULL,
      UNIQUE KEY uq_pool_name (name),
      KEY ix_pool_range (first_ip, last_ip)
    ) ENGINE=InnoDB`);
    await q.query(`CREATE TABLE IF NOT EXISTS ipam_catalog_lock (id TINYINT UNSIGNED NOT NULL PRIMARY KEY) ENGINE=InnoDB`);
    await q.query(`INSERT IGNORE INTO ipam_catalog_lock (id) VALUES (1)`);
    await q.query(`CREATE TABLE IF NOT EXISTS ipam_address (
      ip INT UNSIGNED NOT NULL PRIMARY KEY,
      pool_id INT UNSIGNED NOT NULL,
      state ENUM('free','allocated','bound','released') NOT NULL DEFAULT 'free',
      owner_key VARCHAR(140) NULL,
      owner_env VARCHAR(63) NULL,
      owner_app VARCHAR(63) NULL,
      owner_slot SMALLINT UNSIGNED NULL,
      live_owner VARCHAR(140) NULL,
      available_at BIGINT NULL,
      released_at DATETIME(3) NULL,
      instance_id VARCHAR(140) NULL,
      backend VARCHAR(16) NULL,
      host VARCHAR(63) NULL,
      UNIQUE KEY uq_live_owner (live_owner),
      KEY ix_pick (pool_id, available_at, ip),
      KEY ix_owner (owner_key)
    ) ENGINE=InnoDB`);
    await q.query(`CREATE TABLE IF NOT EXISTS ipam_audit (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      at DATETIME(3) NOT NULL,
      action VARCHAR(32) NOT NULL,
      ip INT UNSIGNED NULL,
      pool_name VARCHAR(63) NOT NULL,
      actor VARCHAR(255) NULL,
      replica VARCHAR(255) NOT NULL,
      trace_id CHAR(32) NULL,
      before_json TEXT NULL,
      after_json TEXT NULL,
      event_id CHAR(36) NULL,
      event_subject VARCHAR(255) NULL,
      event_json TEXT NULL,
      event_pending DATETIME(3) NULL,
      UNIQUE KEY uq_audit_event (event_id),
      KEY ix_audit_ip (ip, id),
      KEY ix_audit_pending (event_pending)
    ) ENGINE=InnoDB`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE IF EXISTS ipam_audit');
    await q.query('DROP TABLE IF EXISTS ipam_address');
    await q.query('DROP TABLE IF EXISTS ipam_catalog_lock');
    await q.query('DROP TABLE IF EXISTS ipam_pool');
  }
}

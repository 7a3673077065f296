import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The scheduler's tables (its own; no other service reads them).
 * - sched_leader: one row; `epoch` grows each time a replica becomes leader and every
 *   journal write checks it (fencing token: a deposed leader's writes fail).
 * - sched_app: desired state per app (the latest accepted request) and its outcome.
 * - sched_request: every scale request seen, so a redelivery changes nothing and each
 *   request gets exactly one outcome.
 * - sched_instance: one row per slot: where it is placed, what the leader is doing with it.
 * - sched_host: hosts as agents report them (for hosts.list on any replica).
 * - sched_outbox (+cursor): events written in the same transaction as the change.
 */
export class SchedulerInitial1732700000000 implements MigrationInterface {
  name = 'SchedulerInitial1732700000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE IF NOT EXISTS sched_leader (
      id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
      epoch BIGINT UNSIGNED NOT NULL,
      holder VARCHAR(255) NULL,
      since DATETIME(3) NULL
    ) ENGINE=InnoDB`);
    await q.query('INSERT IGNORE INTO sched_leader (id, epoch) VALUES (1, 0)');
    await q.query(`CREATE TABLE IF NOT EXISTS sched_app (
      env VARCHAR(63) NOT NULL,
      app VARCHAR(63) NOT NULL,
      request_id VARCHAR(255) NOT NULL,
      seq BIGINT UNSIGNED NOT NULL,
      outcome VARCHAR(16) NOT NULL,
      record JSON NOT NULL,
      updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
      PRIMARY KEY (env, app)
    ) ENGINE=InnoDB`);
    await q.query(`CREATE TABLE IF NOT EXISTS sched_request (
      request_id VARCHAR(255) NOT NULL PRIMARY KEY,
      env VARCHAR(63) NOT NULL,
      app VARCHAR(63) NOT NULL,
      seq BIGINT UNSIGNED NOT NULL,
      outcome VARCHAR(16) NOT NULL,
      reason JSON NULL,
      received_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      decided_at DATETIME(3) NULL,
      KEY ix_request_app (env, app)
    ) ENGINE=InnoDB`);
    await q.query(`CREATE TABLE IF NOT EXISTS sched_instance (
      id VARCHAR(140) NOT NULL PRIMARY KEY,
      env VARCHAR(63) NOT NULL,
      app VARCHAR(63) NOT NULL,
      slot SMALLINT UNSIGNED NOT NULL,
      state VARCHAR(16) NOT NULL,
      phase VARCHAR(16) NULL,
      backend VARCHAR(16) NULL,
      host_id VARCHAR(63) NULL,
      ip VARCHAR(15) NULL,
      mac VARCHAR(17) NULL,
      cpu DOUBLE NOT NULL,
      memory_mb INT UNSIGNED NOT NULL,
      disk_mb BIGINT UNSIGNED NOT NULL,
      record JSON NOT NULL,
      updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
      KEY ix_instance_app (env, app, slot),
      KEY ix_instance_host (host_id)
    ) ENGINE=InnoDB`);
    await q.query(`CREATE TABLE IF NOT EXISTS sched_host (
      id VARCHAR(63) NOT NULL PRIMARY KEY,
      backend VARCHAR(16) NOT NULL,
      drain TINYINT(1) NOT NULL DEFAULT 0,
      fenced TINYINT(1) NOT NULL DEFAULT 0,
      facts JSON NOT NULL,
      usage_json JSON NOT NULL,
      last_seen DATETIME(3) NOT NULL,
      registered_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
    ) ENGINE=InnoDB`);
    await q.query(`CREATE TABLE IF NOT EXISTS sched_outbox (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      event_subject VARCHAR(255) NOT NULL,
      event_json MEDIUMTEXT NOT NULL,
      KEY ix_outbox_at (at)
    ) ENGINE=InnoDB`);
    await q.query(`CREATE TABLE IF NOT EXISTS sched_outbox_cursor (
      id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
      last_id BIGINT UNSIGNED NOT NULL
    ) ENGINE=InnoDB`);
    await q.query('INSERT IGNORE INTO sched_outbox_cursor (id, last_id) VALUES (1, 0)');
  }

  async down(q: QueryRunner): Promise<void> {
    for (const t of ['sched_outbox_cursor', 'sched_outbox', 'sched_host', 'sched_instance', 'sched_request', 'sched_app', 'sched_leader']) {
      await q.query(`DROP TABLE IF EXISTS ${t}`);
    }
  }
}

import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The migrator's tables (its own; no other service reads them).
 * - mig_migration: one row per migration (the saga). `record` holds the whole saga (steps
 *   with attempts and timestamps); the columns beside it are what queries select on.
 *   `lease_owner` / `lease_until` say which replica runs it: claimed with a conditional
 *   UPDATE, renewed while it runs, checked by every write (MysqlMigrationStore).
 *   `after_id`: a drain's migration waits for the previous one of its app.
 * - mig_drain: one row per drain; ended (and host.drained written) exactly once.
 * - mig_outbox (+cursor): events written in the same transaction as the change.
 */
export class MigratorInitial1733100000000 implements MigrationInterface {
  name = 'MigratorInitial1733100000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE IF NOT EXISTS mig_migration (
      id VARCHAR(64) NOT NULL PRIMARY KEY,
      instance_id VARCHAR(140) NOT NULL,
      state VARCHAR(16) NOT NULL,
      step VARCHAR(32) NOT NULL,
      drain_id VARCHAR(64) NULL,
      after_id VARCHAR(64) NULL,
      lease_owner VARCHAR(255) NULL,
      lease_until DATETIME(3) NULL,
      record JSON NOT NULL,
      created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
      KEY ix_mig_state (state, lease_until),
      KEY ix_mig_instance (instance_id),
      KEY ix_mig_drain (drain_id)
    ) ENGINE=InnoDB`);
    await q.query(`CREATE TABLE IF NOT EXISTS mig_drain (
      id VARCHAR(64) NOT NULL PRIMARY KEY,
      host_id VARCHAR(63) NOT NULL,
      state VARCHAR(16) NOT NULL,
      migration_ids JSON NOT NULL,
      created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      ended_at DATETIME(3) NULL,
      KEY ix_drain_state (state)
    ) ENGINE=InnoDB`);
    await q.query(`CREATE TABLE IF NOT EXISTS mig_outbox (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      event_subject VARCHAR(255) NOT NULL,
      event_json MEDIUMTEXT NOT NULL,
      KEY ix_outbox_at (at)
    ) ENGINE=InnoDB`);
    await q.query(`CREATE TABLE IF NOT EXISTS mig_outbox_cursor (
      id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
      last_id BIGINT UNSIGNED NOT NULL
    ) ENGINE=InnoDB`);
    await q.query('INSERT IGNORE INTO mig_outbox_cursor (id, last_id) VALUES (1, 0)');
  }

  async down(q: QueryRunner): Promise<void> {
    for (const t of ['mig_outbox_cursor', 'mig_outbox', 'mig_drain', 'mig_migration']) await q.query(`DROP TABLE IF EXISTS ${t}`);
  }
}

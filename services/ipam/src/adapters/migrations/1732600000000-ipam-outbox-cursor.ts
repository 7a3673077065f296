import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The outbox is read by a cursor instead of a per-event "sent" mark: measured, the mark
 * (one UPDATE and an index change per event) cost MariaDB about as much as the audit
 * insert itself. The sweeper now republishes every event once, some seconds after its
 * commit, inside JetStream's duplicate window (so it is stored once), and moves the cursor.
 * The cursor starts after the existing rows: those were published (or swept) already.
 */
export class IpamOutboxCursor1732600000000 implements MigrationInterface {
  name = 'IpamOutboxCursor1732600000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE IF NOT EXISTS ipam_outbox_cursor (
      id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
      last_id BIGINT UNSIGNED NOT NULL
    ) ENGINE=InnoDB`);
    await q.query('INSERT IGNORE INTO ipam_outbox_cursor (id, last_id) SELECT 1, COALESCE(MAX(id), 0) FROM ipam_audit');
    await q.query('ALTER TABLE ipam_audit DROP INDEX uq_audit_event, DROP INDEX ix_audit_pending, DROP COLUMN event_pending');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE ipam_audit ADD COLUMN event_pending DATETIME(3) NULL, ADD UNIQUE KEY uq_audit_event (event_id), ADD KEY ix_audit_pending (event_pending)');
    await q.query('DROP TABLE IF EXISTS ipam_outbox_cursor');
  }
}

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
    // Conditional, and portable to MySQL (no DROP INDEX IF EXISTS there): a database made
    // by an early build of the first migration lacks uq_audit_event.
    const has = async (sql: string, params: string[]) => ((await q.query(sql, params)) as unknown[]).length > 0;
    for (const index of ['uq_audit_event', 'ix_audit_pending']) {
      const exists = await has('SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ? LIMIT 1', [
        'ipam_audit',
        index,
      ]);
      if (exists) await q.query(`ALTER TABLE ipam_audit DROP INDEX ${index}`);
    }
    const column = await has('SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ? LIMIT 1', [
      'ipam_audit',
      'event_pending',
    ]);
    if (column) await q.query('ALTER TABLE ipam_audit DROP COLUMN event_pending');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(
      'ALTER TABLE ipam_audit ADD COLUMN event_pending DATETIME(3) NULL, ADD UNIQUE KEY uq_audit_event (event_id), ADD KEY ix_audit_pending (event_pending)',
    );
    await q.query('DROP TABLE IF EXISTS ipam_outbox_cursor');
  }
}

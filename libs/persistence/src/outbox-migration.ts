import type { QueryRunner } from 'typeorm';

async function exists(q: QueryRunner, sql: string, params: string[]): Promise<boolean> {
  return ((await q.query(sql, params)) as unknown[]).length > 0;
}

/**
 * Adds what the outbox needs to find every unpublished row whatever its commit order
 * (OutboxRelay): `sent` (0 pending, 1 published, 2 poisoned), `event_id` (so a publisher can
 * mark the rows JetStream acked) and the index the sweeper and the lag measure range over.
 * Additive and safe for a rolling upgrade: existing rows get `sent` = 0, but the sweeper only
 * looks above the cursor's last_id, which stops moving from now on; rows at or below it were
 * published by the old id cursor and are never published again. Rows old replicas insert
 * meanwhile are pending (no event_id): the new sweeper publishes them once, within JetStream's
 * duplicate window. Conditional steps, so a half-applied run can be run again.
 */
export async function addOutboxSentColumns(q: QueryRunner, table: string, addEventId: boolean): Promise<void> {
  const column = (name: string) =>
    exists(q, 'SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ? LIMIT 1', [table, name]);
  const index = (name: string) =>
    exists(q, 'SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ? LIMIT 1', [table, name]);
  if (addEventId && !(await column('event_id'))) await q.query(`ALTER TABLE ${table} ADD COLUMN event_id VARCHAR(160) NULL`);
  if (!(await column('sent'))) await q.query(`ALTER TABLE ${table} ADD COLUMN sent TINYINT UNSIGNED NOT NULL DEFAULT 0`);
  if (!(await index('ix_outbox_unsent'))) await q.query(`ALTER TABLE ${table} ADD KEY ix_outbox_unsent (sent, id)`);
}

export async function dropOutboxSentColumns(q: QueryRunner, table: string, dropEventId: boolean): Promise<void> {
  await q.query(`ALTER TABLE ${table} DROP INDEX ix_outbox_unsent, DROP COLUMN sent${dropEventId ? ', DROP COLUMN event_id' : ''}`);
}

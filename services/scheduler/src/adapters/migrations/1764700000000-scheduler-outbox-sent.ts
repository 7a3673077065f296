import type { MigrationInterface, QueryRunner } from 'typeorm';
import { addOutboxSentColumns, dropOutboxSentColumns } from '@orangery/persistence';

/**
 * The outbox marks rows published instead of following an AUTO_INCREMENT cursor, which
 * skipped a row committed out of id order (issue 13); see addOutboxSentColumns.
 */
export class SchedulerOutboxSent1764700000000 implements MigrationInterface {
  name = 'SchedulerOutboxSent1764700000000';

  async up(q: QueryRunner): Promise<void> {
    await addOutboxSentColumns(q, 'sched_outbox', true);
  }

  async down(q: QueryRunner): Promise<void> {
    await dropOutboxSentColumns(q, 'sched_outbox', true);
  }
}

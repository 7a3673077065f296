import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * v1.1 host states: the leader's verdict on a silent host (`unknown` or `lost`), so that
 * hosts.list on any replica tells a host whose instances still serve from one that is gone.
 */
export class SchedulerHostVerdict1733400000000 implements MigrationInterface {
  name = 'SchedulerHostVerdict1733400000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE sched_host ADD COLUMN IF NOT EXISTS verdict VARCHAR(16) NOT NULL DEFAULT ''`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE sched_host DROP COLUMN IF EXISTS verdict');
  }
}

import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Leadership as an expiring lease (docs/scheduler.md "Leadership"): the leader bumps
 * `counter` to renew, and so does every journal transaction (its fencing write); a
 * candidate takes over when (epoch, counter) stood still for a lease. The holder of the
 * named-lock era is freed, so the first replica of this version does not wait a lease.
 */
export class SchedulerLeaderLease1764700000000 implements MigrationInterface {
  name = 'SchedulerLeaderLease1764700000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE sched_leader ADD COLUMN IF NOT EXISTS counter BIGINT UNSIGNED NOT NULL DEFAULT 0');
    await q.query('UPDATE sched_leader SET holder = NULL WHERE id = 1');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE sched_leader DROP COLUMN IF EXISTS counter');
  }
}

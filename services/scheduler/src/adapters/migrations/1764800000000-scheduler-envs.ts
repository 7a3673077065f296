import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Environments (CONTRACT.md v1.1, docs/scheduler.md "Environments"): one row per env record,
 * its body as JSON (backends, pools, hostLabels, defaults, containerSecurity). Written by
 * `orangery.scheduler.envs.put|delete` on any replica, read by every replica's
 * `envs.get|list` and by the leader when it judges a scale request (by primary key).
 */
export class SchedulerEnvs1764800000000 implements MigrationInterface {
  name = 'SchedulerEnvs1764800000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE IF NOT EXISTS sched_envs (
      name VARCHAR(63) NOT NULL PRIMARY KEY,
      body JSON NOT NULL,
      created_at DATETIME(3) NOT NULL,
      updated_at DATETIME(3) NOT NULL
    ) ENGINE=InnoDB`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE IF EXISTS sched_envs');
  }
}

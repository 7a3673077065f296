import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Request ids compared byte for byte, trailing spaces included (CONTRACT.md v1.1: any
 * printable ASCII id). Under a PAD SPACE collation (utf8mb4_bin among them) `sp` and `sp `
 * are the same key: the second request was taken for a redelivery of the first and got no
 * outcome. utf8mb4_nopad_bin (MariaDB 10.2+) keeps them apart.
 */
export class SchedulerRequestIdNoPad1764600000000 implements MigrationInterface {
  name = 'SchedulerRequestIdNoPad1764600000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE sched_request MODIFY request_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL');
    await q.query('ALTER TABLE sched_app MODIFY request_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE sched_request MODIFY request_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL');
    await q.query('ALTER TABLE sched_app MODIFY request_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL');
  }
}

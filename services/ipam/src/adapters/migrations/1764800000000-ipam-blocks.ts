import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Swarm nodes' address blocks (docs/ipam.md "Blocks"): one row per (pool, host), the range
 * [first_ip, last_ip] aligned on its size. Which addresses a block holds is also written on
 * the addresses themselves (available_at = BLOCKED_AT while no task holds one), so the
 * allocation path needs no join. Additive: old replicas never read this table, and the
 * blocked value keeps their fresh-address pick away from block addresses too.
 */
export class IpamBlocks1764800000000 implements MigrationInterface {
  name = 'IpamBlocks1764800000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE IF NOT EXISTS ipam_block (
      id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      pool_id INT UNSIGNED NOT NULL,
      host VARCHAR(63) NOT NULL,
      first_ip INT UNSIGNED NOT NULL,
      last_ip INT UNSIGNED NOT NULL,
      size INT UNSIGNED NOT NULL,
      created_at DATETIME(3) NOT NULL,
      UNIQUE KEY uq_block_host (pool_id, host),
      UNIQUE KEY uq_block_first (first_ip),
      KEY ix_block_host (host)
    ) ENGINE=InnoDB`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE IF EXISTS ipam_block');
  }
}

import type { BeforeApplicationShutdown } from '@nestjs/common';
import { PeriodicTasks } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import type { SelfFence } from '../domain/self-fence';

/**
 * Runs the self-fence's checks on a timer of their own, from before the first NATS
 * connection until shutdown: neither NATS nor a slow heartbeat can hold them.
 */
export class IsolationWatch implements BeforeApplicationShutdown {
  private readonly periodic: PeriodicTasks;
  private started = false;

  constructor(
    private readonly selfFence: SelfFence,
    logger: Logger,
    private readonly intervalMs: number,
  ) {
    this.periodic = new PeriodicTasks((err) => logger.warn({ err: String(err) }, 'isolation check failed'));
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    // One check at a time (PeriodicTasks skips a tick while one runs): samples stay in order.
    this.periodic.every(this.intervalMs, async () => {
      await this.selfFence.check();
    });
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.periodic.stop();
    await this.selfFence.settled();
  }
}

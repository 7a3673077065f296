import { Inject, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { CONFIG, LOGGER, NATS } from '@orangery/service-kit';
import type { Logger } from '@orangery/telemetry';
import { NatsGateway } from '../adapters/nats-gateway';
import type { ConsoleConfig } from '../config';
import { RequestIndex } from '../domain/request-index';
import { ConsoleHttpServer } from './http-server';

/** Version of the console API in /openapi.json: the contract's (CONTRACT.md v1.1). */
export const CONSOLE_API_VERSION = '1.1.0';

/**
 * Wires the console: streams provisioned, the request index fed, then the HTTP server.
 * Shutdown runs in reverse: no new HTTP connections (open SSE streams ended), the index
 * feed stopped, NATS drained.
 */
export class ConsoleRuntime implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private http: ConsoleHttpServer | undefined;
  private feed: { stop: () => Promise<void> } | undefined;
  private indexReady = false;
  private readonly lifecycle = { stopped: false };

  constructor(
    @Inject(CONFIG) private readonly config: ConsoleConfig,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(NATS) private readonly nc: NatsConnection,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    const { config, logger } = this;
    await NatsGateway.provision(this.nc, logger, this.lifecycle);
    const gateway = new NatsGateway(this.nc, config.requestTimeoutMs);
    const index = new RequestIndex(config.requestIndexSize);
    this.http = new ConsoleHttpServer({
      host: config.host,
      port: config.port,
      tokens: config.tokens,
      gateway,
      index,
      indexReady: () => this.indexReady,
      ssePingMs: config.ssePingSeconds * 1000,
      version: CONSOLE_API_VERSION,
      logger,
    });
    const addr = await this.http.listen().catch((e: unknown) => {
      throw new Error(`cannot listen on ${config.host}:${config.port} (ORANGERY_CONSOLE_ADDR): ${e instanceof Error ? e.message : String(e)}`);
    });
    logger.info({ addr: `${addr.host}:${addr.port}`, tokens: config.tokens.size }, 'console listening');
    if (config.tokens.shortTokenNames.length > 0) {
      logger.warn({ names: config.tokens.shortTokenNames }, 'some console tokens are shorter than 16 characters: easy to guess');
    }
    if (config.generatedToken) {
      // The one place a token is ever written: stderr, once, for the person starting it.
      logger.warn('ORANGERY_CONSOLE_TOKENS is unset: generated an operator token named admin (printed once on stderr)');
      process.stderr.write(`orangery-console: operator token for this run (name admin): ${config.generatedToken}\n`);
    }
    this.feed = await gateway.feedIndex(index, logger);
    this.indexReady = true;
    logger.info(index.size, 'request index caught up');
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.lifecycle.stopped = true;
    await this.http?.close();
    await this.feed?.stop();
    await this.nc.drain().catch(() => undefined);
  }
}

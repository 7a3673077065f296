import 'reflect-metadata';
import { hostname } from 'node:os';
import { NestFactory } from '@nestjs/core';
import type { INestApplicationContext, DynamicModule } from '@nestjs/common';
import { collectProcessMetrics, createLogger, startTelemetry, stopTelemetry, type Logger } from '@orangery/telemetry';
import { setDefaultMaxInFlight, setStreamByteLimits } from '@orangery/messaging';
import { ConfigError, intFrom } from './config';
import { observeAddrFrom, startObserveServer, type ObserveAddr } from './observe';

export interface ServiceDefinition<C> {
  /** service name: ipam, scheduler, docker-agent, ... */
  name: string;
  /** the default port of its health and metrics endpoint (ORANGERY_OBSERVE_ADDR) */
  observePort: number;
  /** reads and checks the environment; throws ConfigError */
  loadConfig: (env: NodeJS.ProcessEnv) => C;
  /** async checks of the environment before anything starts (e.g. interfaces); throw ConfigError */
  preflight?: (config: C) => Promise<void>;
  /**
   * resolution of the event-loop delay metric (default 10 ms); an agent that must idle
   * cheaply sets 100 (docs/docker-agent.md "Footprint")
   */
  eventLoopPrecisionMs?: number;
  /** the root module, given the checked config and the logger */
  module: (config: C, logger: Logger) => DynamicModule;
}

/**
 * Runs a service: telemetry, config (exit 2 with a one-line reason when unusable), the Nest
 * application context, and a clean SIGTERM/SIGINT shutdown (in-flight work drained, NATS
 * and the database closed, exit 0). Their only HTTP server is the health and metrics
 * endpoint (ORANGERY_OBSERVE_ADDR); they speak NATS for everything else.
 */
export async function runService<C>(def: ServiceDefinition<C>): Promise<void> {
  let config: C;
  let observeAddr: ObserveAddr | undefined;
  try {
    observeAddr = observeAddrFrom(process.env, def.observePort);
    config = def.loadConfig(process.env);
    // every service's request handlers, alike (docs: "Limits")
    setDefaultMaxInFlight(intFrom(process.env, 'ORANGERY_MAX_IN_FLIGHT_REQUESTS', 1024, 1, 100_000));
    // every service that creates a stream must create it alike: set these the same everywhere
    const mb = 1024 * 1024;
    setStreamByteLimits({
      events: intFrom(process.env, 'ORANGERY_EVENTS_STREAM_MAX_MB', 512, 1, 1_048_576) * mb,
      scale: intFrom(process.env, 'ORANGERY_SCALE_STREAM_MAX_MB', 256, 1, 1_048_576) * mb,
    });
  } catch (e) {
    const reason = e instanceof ConfigError ? e.message : `unexpected error reading configuration: ${String(e)}`;
    process.stderr.write(`orangery-${def.name}: configuration error: ${reason}\n`);
    process.exit(2);
  }
  if (def.preflight) {
    try {
      await def.preflight(config);
    } catch (e) {
      const reason = e instanceof ConfigError ? e.message : `preflight failed: ${String(e)}`;
      process.stderr.write(`orangery-${def.name}: configuration error: ${reason}\n`);
      process.exit(2);
    }
  }
  startTelemetry(def.name);
  const logger = createLogger(`orangery-${def.name}`);
  collectProcessMetrics(def.name, def.eventLoopPrecisionMs);
  // Before the application: /healthz answers while the service still waits for NATS or its database.
  const observer = observeAddr ? await startObserveServer(observeAddr, logger) : undefined;
  let app: INestApplicationContext | undefined;
  let stopping = false;

  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      logger.error('shutdown took longer than 20 s; exiting');
      process.exit(1);
    }, 20_000);
    force.unref();
    try {
      await app?.close();
      observer?.close();
      await stopTelemetry();
      logger.info('stopped');
      process.exit(0);
    } catch (e) {
      logger.error({ err: e }, 'error during shutdown');
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));

  try {
    app = await NestFactory.createApplicationContext(def.module(config, logger), { logger: false, abortOnError: false });
    if (stopping) return;
    await app.init();
    logger.info('ready');
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`orangery-${def.name}: configuration error: ${e.message}\n`);
      process.exit(2);
    }
    logger.fatal({ err: e }, 'could not start');
    process.stderr.write(`orangery-${def.name}: could not start: ${(e as Error).message}\n`);
    process.exit(1);
  }
}

/** Injection tokens shared by every service's wiring. */
export const CONFIG = Symbol('CONFIG');
export const LOGGER = Symbol('LOGGER');
export const NATS = Symbol('NATS');
export const DATA_SOURCE = Symbol('DATA_SOURCE');

export function replicaId(service: string): string {
  return `${service}@${hostname()}:${process.pid}`;
}

import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '@orangery/telemetry';

export interface NatsOptions {
  /** comma-separated nats:// URLs (ORANGERY_NATS_URL) */
  servers: string;
  name: string;
  logger: Logger;
}

export function splitServers(servers: string): string[] {
  return servers
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/**
 * Connects to NATS and keeps the connection for the life of the process: the first
 * connection is waited for as long as it takes (NATS being down at start is not a
 * configuration error), and later outages reconnect forever. Status changes are logged.
 */
export async function connectNats(opts: NatsOptions): Promise<NatsConnection> {
  const servers = splitServers(opts.servers);
  opts.logger.info({ servers }, 'connecting to NATS');
  const nc = await connect({
    servers,
    name: opts.name,
    waitOnFirstConnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    reconnectJitter: 250,
    pingInterval: 5_000,
    maxPingOut: 2,
  });
  opts.logger.info({ server: nc.getServer() }, 'connected to NATS');
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'error' || s.type === 'staleConnection') {
        opts.logger.warn({ status: s.type, data: 'server' in s ? s.server : undefined }, 'NATS connection trouble');
      } else if (s.type === 'reconnect') {
        opts.logger.info({ server: s.server }, 'NATS reconnected');
      }
    }
  })().catch(() => undefined);
  return nc;
}

/** Validates ORANGERY_NATS_URL without connecting; returns a reason when unusable. */
export function natsUrlProblem(servers: string): string | undefined {
  const list = splitServers(servers);
  if (list.length === 0) return 'ORANGERY_NATS_URL is empty';
  for (const s of list) {
    let u: URL;
    try {
      u = new URL(s.includes('://') ? s : `nats://${s}`);
    } catch {
      return `ORANGERY_NATS_URL entry '${s}' is not a URL`;
    }
    if (!['nats:', 'tls:', 'ws:', 'wss:'].includes(u.protocol)) {
      return `ORANGERY_NATS_URL entry '${s}' must use nats:// or tls://`;
    }
    if (u.hostname === '') return `ORANGERY_NATS_URL entry '${s}' has no host`;
  }
  return undefined;
}

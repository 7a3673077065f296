import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '@orangery/telemetry';

export interface NatsOptions {
  /** comma-separated nats:// URLs (ORANGERY_NATS_URL) */
  servers: string;
  name: string;
  logger: Logger;
  /**
   * Inbox prefix for this client's replies. Agents use their own (`_INBOX_<hostId>`) so
   * their NATS user may subscribe to its own inboxes only, not to everybody's `_INBOX.>`.
   */
  inboxPrefix?: string;
}

export function splitServers(servers: string): string[] {
  return servers
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

export interface NatsEndpoints {
  servers: string[];
  user?: string;
  pass?: string;
  token?: string;
}

/**
 * Splits credentials out of `nats://user:password@host:port` (or `nats://token@host`), which
 * the client does not read from server URLs itself: ORANGERY_NATS_URL is the only NATS
 * setting of the contract, so an agent's user and password travel in it.
 */
export function natsEndpoints(servers: string): NatsEndpoints {
  const out: NatsEndpoints = { servers: [] };
  for (const raw of splitServers(servers)) {
    const withScheme = raw.includes('://') ? raw : `nats://${raw}`;
    let u: URL;
    try {
      u = new URL(withScheme);
    } catch {
      out.servers.push(raw);
      continue;
    }
    if (u.username && u.password) {
      out.user ??= decodeURIComponent(u.username);
      out.pass ??= decodeURIComponent(u.password);
    } else if (u.username) {
      out.token ??= decodeURIComponent(u.username);
    }
    out.servers.push(`${u.protocol}//${u.host}`);
  }
  return out;
}

/**
 * Connects to NATS and keeps the connection for the life of the process: the first
 * connection is waited for as long as it takes (NATS being down at start is not a
 * configuration error), and later outages reconnect forever. Status changes are logged.
 */
export async function connectNats(opts: NatsOptions): Promise<NatsConnection> {
  const { servers, user, pass, token } = natsEndpoints(opts.servers);
  opts.logger.info({ servers, user }, 'connecting to NATS');
  const nc = await connect({
    servers,
    ...(user !== undefined ? { user, pass } : {}),
    ...(token !== undefined ? { token } : {}),
    name: opts.name,
    waitOnFirstConnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    reconnectJitter: 250,
    pingInterval: 5_000,
    maxPingOut: 2,
    // Measured: with async traces on, every request (JetStream publishes included) builds
    // an Error with a stack up front, ~0.1 ms of CPU each; our callers map failures to
    // their own errors (NoReplyError, PortError) and never read those stacks.
    noAsyncTraces: true,
    ...(opts.inboxPrefix ? { inboxPrefix: opts.inboxPrefix } : {}),
  });
  opts.logger.info({ server: nc.getServer() }, 'connected to NATS');
  disconnected.set(nc, false);
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') disconnected.set(nc, true);
      else if (s.type === 'reconnect') disconnected.set(nc, false);
      if (s.type === 'disconnect' || s.type === 'error' || s.type === 'staleConnection') {
        opts.logger.warn({ status: s.type, data: 'server' in s ? s.server : undefined }, 'NATS connection trouble');
      } else if (s.type === 'reconnect') {
        opts.logger.info({ server: s.server }, 'NATS reconnected');
      }
    }
  })().catch(() => undefined);
  return nc;
}

const disconnected = new WeakMap<NatsConnection, boolean>();

/** Why a connection from connectNats cannot serve now (readiness), or undefined when it can. */
export function natsProblem(nc: NatsConnection): string | undefined {
  if (nc.isClosed()) return 'NATS connection closed';
  if (disconnected.get(nc)) return 'NATS disconnected; reconnecting';
  return undefined;
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

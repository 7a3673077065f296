import { readFileSync } from 'node:fs';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection, TlsOptions } from '@nats-io/nats-core';
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
  /**
   * PEM file of the CA that signed the NATS servers' certificates (ORANGERY_NATS_CA, a
   * project addition): when set, or when a URL says `tls://`, the connection must be TLS
   * and the server's certificate is verified against it.
   */
  caFile?: string;
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
  /** some URL said `tls://`: the connection must be encrypted */
  tls: boolean;
}

/**
 * Splits credentials out of `nats://user:password@host:port` (or `nats://token@host`), which
 * the client does not read from server URLs itself: ORANGERY_NATS_URL is the only NATS
 * setting of the contract, so an agent's user and password travel in it.
 */
export function natsEndpoints(servers: string): NatsEndpoints {
  const out: NatsEndpoints = { servers: [], tls: false };
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
    if (u.protocol === 'tls:') out.tls = true;
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
  const { servers, user, pass, token, tls: tlsUrl } = natsEndpoints(opts.servers);
  const caFile = opts.caFile ?? (process.env['ORANGERY_NATS_CA']?.trim() || undefined);
  const tls = natsTlsOptions(tlsUrl, caFile);
  opts.logger.info({ servers, user, tls: tls !== undefined }, 'connecting to NATS');
  if (tls !== undefined) await tlsPreflight(servers, tls, opts.logger);
  const nc = await connect({
    servers,
    ...(tls !== undefined ? { tls } : {}),
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
  // nats.js upgrades to TLS when the server offers it and refuses one that does not, before
  // sending CONNECT; a server that offers TLS without requiring it is refused here too, so a
  // secure deployment cannot silently run beside a half-configured node.
  if (tls !== undefined && nc.info?.tls_required !== true) {
    await nc.close().catch(() => undefined);
    throw new Error(`NATS server ${nc.getServer()} does not require TLS, but ORANGERY_NATS_CA or a tls:// URL asks for it`);
  }
  opts.logger.info({ server: nc.getServer() }, 'connected to NATS');
  disconnected.set(nc, false);
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') disconnected.set(nc, true);
      else if (s.type === 'reconnect') disconnected.set(nc, false);
      if (s.type === 'disconnect' || s.type === 'error' || s.type === 'staleConnection') {
        // A permission violation arrives here (the server's text names the subject, never a
        // credential): a user missing a right it needs shows up in the log, not as silence.
        const error = s.type === 'error' ? s.error.message : undefined;
        opts.logger.warn({ status: s.type, data: 'server' in s ? s.server : undefined, error }, 'NATS connection trouble');
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

/**
 * One attempt, no credentials, before the patient connection: the waiting connect retries
 * forever without a word, so a server that has no TLS at all (a configuration mismatch, or
 * someone else's server on that address) would leave the service waiting silently. That is
 * fatal; any other failure (down, certificate refused) is logged and the wait goes on.
 */
async function tlsPreflight(servers: string[], tls: TlsOptions, logger: Logger): Promise<void> {
  try {
    const probe = await connect({ servers, tls, reconnect: false, timeout: 5_000 });
    await probe.close().catch(() => undefined);
  } catch (e) {
    const message = (e as Error).message;
    if (/does not support 'tls'/.test(message)) {
      throw new Error(`NATS server ${servers.join(',')} does not offer TLS, but ORANGERY_NATS_CA or a tls:// URL asks for it`);
    }
    // An authorization error is expected (the probe has no credentials): TLS itself worked.
    if (!/authorization/i.test(message)) logger.warn({ error: message }, 'NATS over TLS failed; retrying (check ORANGERY_NATS_CA and the server certificate)');
  }
}

/**
 * TLS options for the client: undefined when neither a `tls://` URL nor a CA file asks for
 * TLS. The CA is read here, once, so an unreadable file fails at start with its path.
 */
export function natsTlsOptions(tlsUrl: boolean, caFile: string | undefined): TlsOptions | undefined {
  if (caFile === undefined) return tlsUrl ? {} : undefined;
  return { ca: readFileSync(caFile, 'utf8') };
}

/** Validates ORANGERY_NATS_CA (a readable PEM file) without connecting. */
export function natsCaProblem(caFile: string | undefined): string | undefined {
  if (caFile === undefined || caFile.trim() === '') return undefined;
  try {
    const pem = readFileSync(caFile.trim(), 'utf8');
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) return `ORANGERY_NATS_CA '${caFile}' holds no PEM certificate`;
  } catch (e) {
    return `ORANGERY_NATS_CA '${caFile}' cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
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

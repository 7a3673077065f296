import { createServer, type Server } from 'node:http';
import { metricsRegistry, type Logger } from '@orangery/telemetry';
import { ConfigError, type Env } from './config';

/** A readiness check: `undefined` when fine, else a short reason ("not connected"). */
export type ReadinessCheck = () => string | undefined | Promise<string | undefined>;

/** A check that does not answer within this is reported as not ready. */
const CHECK_TIMEOUT_MS = 1_000;

/**
 * What a service needs to do its job (CONTRACT.md "Health and metrics": NATS connected,
 * database reachable and migrated, an agent's engine or vCenter reachable). Wiring
 * `expect`s each dependency up front, so a service still waiting for its first NATS
 * connection reports that, then `set`s the live check once the dependency exists.
 */
export class Readiness {
  private readonly checks = new Map<string, ReadinessCheck>();

  expect(name: string, reason: string): void {
    if (!this.checks.has(name)) this.checks.set(name, () => reason);
  }

  set(name: string, check: ReadinessCheck): void {
    this.checks.set(name, check);
  }

  /** Every check, run concurrently, each bounded by CHECK_TIMEOUT_MS. */
  async report(): Promise<{ ready: boolean; checks: Record<string, string> }> {
    const entries = await Promise.all(
      [...this.checks].map(async ([name, check]): Promise<[string, string]> => {
        let timer: NodeJS.Timeout | undefined;
        try {
          const timeout = new Promise<string>((r) => {
            timer = setTimeout(() => r(`no answer within ${CHECK_TIMEOUT_MS} ms`), CHECK_TIMEOUT_MS);
          });
          const problem = await Promise.race([Promise.resolve().then(check), timeout]);
          return [name, problem ?? 'ok'];
        } catch (e) {
          return [name, (e as Error).message || String(e)];
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    const checks = Object.fromEntries(entries);
    return { ready: entries.every(([, v]) => v === 'ok'), checks };
  }
}

/** The process's readiness: one per process, like its metrics registry. */
export const readiness = new Readiness();

export interface ObserveAddr {
  host: string;
  port: number;
}

/**
 * ORANGERY_OBSERVE_ADDR: `host:port`, `:port` (all interfaces) or empty (off); the
 * service's default port when unset. A malformed value is a configuration error.
 */
export function observeAddrFrom(env: Env, defaultPort: number): ObserveAddr | undefined {
  const raw = env['ORANGERY_OBSERVE_ADDR'];
  if (raw === undefined) return { host: '0.0.0.0', port: defaultPort };
  const v = raw.trim();
  if (v === '') return undefined;
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw new ConfigError(`ORANGERY_OBSERVE_ADDR must be host:port or :port (or empty to turn it off), got '${v}'`);
  const host = (m[1] ?? '').replace(/^\[|\]$/g, '');
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/**
 * Serves /healthz, /readyz and /metrics. Three fixed GET routes, no auth, no body: node's
 * own http module does it in a few lines, where a web framework would add a dependency
 * and a second request pipeline to every service. A port in use is logged and skipped,
 * never fatal (the contract): the service runs on without the endpoint.
 */
export async function startObserveServer(addr: ObserveAddr, logger: Logger, ready: Readiness = readiness): Promise<Server | undefined> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'application/json' }).end('{"error":"method not allowed"}\n');
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}\n');
      return;
    }
    if (path === '/readyz') {
      void ready.report().then((r) => {
        res.writeHead(r.ready ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(r)}\n`);
      });
      return;
    }
    if (path === '/metrics') {
      metricsRegistry
        .metrics()
        .then((text) => res.writeHead(200, { 'content-type': metricsRegistry.contentType }).end(text))
        .catch((e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${String(e)}\n`));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found: /healthz, /readyz and /metrics are served"}\n');
  });
  server.keepAliveTimeout = 5_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  return new Promise((resolve) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      logger.warn({ addr: `${addr.host}:${addr.port}`, code: e.code }, 'health and metrics endpoint not served: could not listen');
      resolve(undefined);
    });
    server.listen(addr.port, addr.host, () => {
      logger.info({ addr: `${addr.host}:${addr.port}` }, 'health and metrics endpoint listening');
      server.unref();
      resolve(server);
    });
  });
}

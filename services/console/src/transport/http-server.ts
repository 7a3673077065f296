import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Type, type TSchema } from '@sinclair/typebox';
import { decode, environmentBytes, isOrangeryError, MAX_ENVIRONMENT_BYTES, parseJsonObject, SUBJECTS } from '@orangery/contracts';
import type { Logger } from '@orangery/telemetry';
import type { NatsGateway } from '../adapters/nats-gateway';
import { matchRoute, queryObject, type Operation } from '../domain/api';
import { ApiError } from '../domain/http-errors';
import { openApiDocument } from '../domain/openapi';
import type { RequestIndex } from '../domain/request-index';
import { bearerToken, type Principal, type TokenTable } from '../domain/tokens';
import { DASHBOARD_HTML, DASHBOARD_JS, DOCS_HTML, DOCS_JS, PAGE_CSS } from './pages';
import { serveEvents } from './sse';

/**
 * Largest request body: a scale request's `environment` alone may be 64 KB (CONTRACT.md),
 * so bodies get twice that; more is 413 PAYLOAD_TOO_LARGE, read no further.
 */
export const MAX_BODY_BYTES = 128 * 1024;
/** At most this many SSE clients at once; one more gets 503. */
export const MAX_SSE_CLIENTS = 256;

/** The environments' subjects (CONTRACT.md v1.1 "Environments", served by every scheduler replica). */
export const ENV_SUBJECTS = {
  put: SUBJECTS.scheduler.envsPut,
  get: SUBJECTS.scheduler.envsGet,
  list: SUBJECTS.scheduler.envsList,
  delete: SUBJECTS.scheduler.envsDelete,
} as const;

export interface HttpServerOptions {
  host: string;
  port: number;
  tokens: TokenTable;
  gateway: NatsGateway;
  index: RequestIndex;
  /** false until the request index has read the streams once: an unknown id is then 503, not 404 */
  indexReady: () => boolean;
  ssePingMs: number;
  version: string;
  logger: Logger;
}

interface Call {
  op: Operation;
  principal: Principal;
  params: Record<string, string>;
  query: Record<string, unknown>;
  body: Record<string, unknown>;
}

type Handler = (call: Call, req: IncomingMessage, res: ServerResponse) => Promise<{ status: number; body: unknown } | undefined>;

const SECURITY_HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
} as const;

/** A parameter checked against its schema, INVALID_REQUEST naming it. */
function checkField(name: string, schema: TSchema, value: unknown): void {
  decode(Type.Object({ [name]: schema }), { [name]: value });
}

export class ConsoleHttpServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private sseClients = 0;
  private readonly openapi: string;
  private readonly handlers: Record<string, Handler>;

  constructor(private readonly o: HttpServerOptions) {
    this.openapi = JSON.stringify(openApiDocument(o.version));
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
    // Slow-loris bounds: headers within 20 s, a whole request within 60 s (SSE responses are not limited).
    this.server.headersTimeout = 20_000;
    this.server.requestTimeout = 60_000;
    this.handlers = this.routeHandlers();
  }

  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.o.port, this.o.host, () => {
        this.server.off('error', reject);
        const a = this.server.address();
        resolve(typeof a === 'object' && a ? { host: a.address, port: a.port } : { host: this.o.host, port: this.o.port });
      });
    });
  }

  /** Stops taking connections; open ones (SSE streams, keep-alive) are ended. */
  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeIdleConnections();
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    let status = 500;
    let actor: string | undefined;
    const url = new URL(req.url ?? '/', 'http://console');
    try {
      if (!url.pathname.startsWith('/api/')) {
        status = this.servePage(req, res, url.pathname);
        return;
      }
      const principal = this.authenticate(req);
      actor = principal.name;
      const match = matchRoute(req.method ?? 'GET', url.pathname);
      if (!match) throw new ApiError('NOT_FOUND', `no route ${req.method} ${url.pathname}`, { path: url.pathname });
      if ('allowed' in match) {
        res.setHeader('Allow', match.allowed.join(', '));
        throw new ApiError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${url.pathname}`, { allowed: match.allowed });
      }
      const { op, params } = match;
      if (op.command && principal.role !== 'operator') {
        throw new ApiError('FORBIDDEN', `the token '${principal.name}' is a viewer's: ${op.method} ${op.path} needs an operator token`, {
          role: principal.role,
        });
      }
      for (const [name, schema] of Object.entries(op.params ?? {})) checkField(name, schema, params[name]);
      const q = queryObject(op, url.searchParams);
      if (q.repeated) throw new ApiError('INVALID_REQUEST', `query parameter '${q.repeated}' is given twice`, { field: q.repeated });
      if (op.query) decode(op.query, q.value);
      else if (Object.keys(q.value).length > 0) decode(Type.Object({}, { additionalProperties: false }), q.value);
      let body: Record<string, unknown> = {};
      if (op.body) {
        body = parseJsonObject(await readBody(req));
        decode(op.body, body);
      }
      const out = await this.handlers[op.id]!({ op, principal, params, query: q.value, body }, req, res);
      if (out) {
        status = out.status;
        sendJson(res, out.status, out.body);
      } else {
        status = res.statusCode;
      }
    } catch (e) {
      const err = toApiError(e);
      status = err.status;
      if (err.code === 'INTERNAL') this.o.logger.error({ err: e, path: url.pathname }, 'request failed with an unexpected error');
      if (res.headersSent) {
        res.destroy();
      } else {
        if (err.status === 413) res.setHeader('Connection', 'close');
        sendJson(res, err.status, err.toBody());
      }
    } finally {
      // Never the query string or headers: they may hold what must not be logged.
      const line = { method: req.method, path: url.pathname, status, actor, ms: Date.now() - started };
      if (req.method !== 'GET' && url.pathname.startsWith('/api/')) this.o.logger.info(line, 'api command');
      else this.o.logger.debug(line, 'http request');
    }
  }

  private authenticate(req: IncomingMessage): Principal {
    const token = bearerToken(req.headers.authorization);
    if (!token) throw new ApiError('UNAUTHORIZED', 'send Authorization: Bearer <token>', {});
    const p = this.o.tokens.authenticate(token);
    if (!p) throw new ApiError('UNAUTHORIZED', 'the bearer token is not valid', {});
    return p;
  }

  private servePage(req: IncomingMessage, res: ServerResponse, path: string): number {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      const err = new ApiError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${path}`, {});
      sendJson(res, err.status, err.toBody());
      return err.status;
    }
    const pages: Record<string, [string, string]> = {
      '/': ['text/html; charset=utf-8', DASHBOARD_HTML],
      '/dashboard.js': ['text/javascript; charset=utf-8', DASHBOARD_JS],
      '/docs': ['text/html; charset=utf-8', DOCS_HTML],
      '/docs.js': ['text/javascript; charset=utf-8', DOCS_JS],
      '/console.css': ['text/css; charset=utf-8', PAGE_CSS],
      '/openapi.json': ['application/json; charset=utf-8', this.openapi],
    };
    const page = pages[path];
    if (!page) {
      const err = new ApiError('NOT_FOUND', `no page ${path}`, { path });
      sendJson(res, err.status, err.toBody());
      return err.status;
    }
    res.writeHead(200, {
      'Content-Type': page[0],
      'Cache-Control': 'no-cache',
      // Our own scripts and styles only; the pages call our own API.
      'Content-Security-Policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
      ...SECURITY_HEADERS,
    });
    res.end(req.method === 'HEAD' ? undefined : page[1]);
    return 200;
  }

  private routeHandlers(): Record<string, Handler> {
    const { gateway, index } = this.o;
    const ask = <T>(subject: string, body: unknown, call: Call) => gateway.request<T>(subject, body, call.principal.name);
    const ok = (body: unknown, status = 200) => ({ status, body });
    return {
      listPools: async (c) => ok(await ask(SUBJECTS.ipam.poolList, c.query, c)),
      createPool: async (c) => ok(await ask(SUBJECTS.ipam.poolCreate, c.body, c), 201),
      getPool: async (c) => ok(await ask(SUBJECTS.ipam.poolGet, { name: c.params['name'] }, c)),
      listHosts: async (c) => ok(await ask(SUBJECTS.scheduler.hostsList, c.query, c)),
      listInstances: async (c) => ok(await ask(SUBJECTS.scheduler.instancesList, c.query, c)),
      scale: async (c) => {
        const environment = c.body['environment'] as Record<string, string> | undefined;
        if (environment && environmentBytes(environment) > MAX_ENVIRONMENT_BYTES) {
          throw new ApiError('INVALID_REQUEST', `field 'environment': more than ${MAX_ENVIRONMENT_BYTES} bytes in all`, {
            field: 'environment',
            reason: `more than ${MAX_ENVIRONMENT_BYTES} bytes in all`,
          });
        }
        const requestId = await gateway.publishScale(c.params['env']!, c.params['app']!, c.body, c.principal.name);
        index.noteRequest(requestId);
        return ok({ requestId }, 202);
      },
      getRequest: async (c) => {
        const id = c.params['requestId']!;
        const s = index.status(id);
        if (s) return ok(s);
        if (!this.o.indexReady()) throw new ApiError('UNAVAILABLE', 'the console is still reading the request history; try again shortly', { requestId: id });
        throw new ApiError('NOT_FOUND', `no scale request '${id}' is known (never published, or older than the console's window)`, { requestId: id });
      },
      migrate: async (c) => ok(await ask(SUBJECTS.migrator.migrate, { instanceId: c.params['instanceId'], ...c.body }, c), 202),
      getMigration: async (c) => ok(await ask(SUBJECTS.migrator.migrationsGet, { migrationId: c.params['id'] }, c)),
      drainHost: async (c) => ok(await ask(SUBJECTS.migrator.drain, { hostId: c.params['hostId'] }, c), 202),
      listEnvs: async (c) => ok(await ask(ENV_SUBJECTS.list, c.query, c)),
      getEnv: async (c) => ok(await ask(ENV_SUBJECTS.get, { name: c.params['name'] }, c)),
      putEnv: async (c) => {
        const name = c.params['name']!;
        if (c.body['name'] !== undefined && c.body['name'] !== name) {
          throw new ApiError('INVALID_REQUEST', `field 'name': '${String(c.body['name'])}' is not the path's '${name}'`, {
            field: 'name',
            reason: 'differs from the path',
          });
        }
        return ok(await ask(ENV_SUBJECTS.put, { ...c.body, name }, c));
      },
      deleteEnv: async (c) => ok(await ask(ENV_SUBJECTS.delete, { name: c.params['name'] }, c)),
      events: async (c, req, res) => {
        const header = req.headers['last-event-id'];
        const fromHeader = typeof header === 'string' && header.trim() !== '' ? header.trim() : undefined;
        if (fromHeader !== undefined && !/^\d{1,15}$/.test(fromHeader)) {
          throw new ApiError('INVALID_REQUEST', 'Last-Event-ID must be a stream sequence (a non-negative integer)', { field: 'Last-Event-ID' });
        }
        const afterSeq = fromHeader !== undefined ? Number(fromHeader) : (c.query['lastEventId'] as number | undefined);
        if (this.sseClients >= MAX_SSE_CLIENTS) throw new ApiError('UNAVAILABLE', `too many event streams open (${MAX_SSE_CLIENTS})`, {});
        this.sseClients++;
        try {
          await serveEvents(
            req,
            res,
            gateway,
            {
              afterSeq,
              history: (c.query['history'] as number | undefined) ?? 0,
              follow: c.query['follow'] !== 'false',
              pingMs: this.o.ssePingMs,
              slowClientMs: 10_000,
            },
            this.o.logger,
          );
        } finally {
          this.sseClients--;
        }
        return undefined;
      },
    };
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
    ...SECURITY_HEADERS,
  });
  res.end(text);
}

function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (isOrangeryError(e)) return new ApiError(e.code, e.message, e.details ?? {});
  return new ApiError('INTERNAL', 'internal error; it was logged', {});
}

/** The request body, at most MAX_BODY_BYTES (413 beyond, without reading the rest). */
function readBody(req: IncomingMessage): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  const tooLarge = () => new ApiError('PAYLOAD_TOO_LARGE', `the body is larger than ${MAX_BODY_BYTES} bytes`, { limitBytes: MAX_BODY_BYTES });
  if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        failed = true;
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', (e) => {
      if (!failed) reject(e);
    });
  });
}

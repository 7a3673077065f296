// HTTP(S) POST of SOAP envelopes with node:http/https: keep-alive agents, a hard timeout per
// call, and `insecure` for self-signed vCenter certificates.
import http from 'node:http';
import https from 'node:https';
import { VsphereTimeoutError, VsphereTransportError } from './errors';

export interface SoapRequest {
  /** vim25 method name: for error messages only. */
  method: string;
  body: string;
  headers: Record<string, string>;
  timeoutMs: number;
}

export interface SoapResponse {
  status: number;
  /** Set-Cookie values, if any. */
  setCookie: string[];
  body: string;
}

/** How envelopes travel. The default speaks HTTP; tests replay recorded responses. */
export type SoapTransport = (req: SoapRequest) => Promise<SoapResponse>;

export interface HttpTransportOptions {
  /** Accept any server certificate (self-signed vCenter). */
  insecure?: boolean;
  /** Concurrent connections to vCenter (default 16). */
  maxSockets?: number;
}

export function httpTransport(url: URL, opts: HttpTransportOptions = {}): SoapTransport & { close(): void } {
  const secure = url.protocol === 'https:';
  if (!secure && url.protocol !== 'http:') throw new Error(`vCenter URL must be http:// or https://, got ${url.protocol}`);
  const lib = secure ? https : http;
  const agent = secure
    ? new https.Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 16, rejectUnauthorized: !opts.insecure })
    : new http.Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 16 });
  const where = `${url.protocol}//${url.host}`;

  const send: SoapTransport = (req) =>
    new Promise<SoapResponse>((resolve, reject) => {
      let settled = false;
      const fail = (e: Error) => {
        if (settled) return;
        settled = true;
        reject(e);
      };
      const r = lib.request(url, { method: 'POST', agent, headers: { ...req.headers, 'Content-Length': Buffer.byteLength(req.body) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e: NodeJS.ErrnoException) => fail(transportError(e, req.method, where)));
        res.on('aborted', () => fail(new VsphereTransportError(`vCenter at ${where} closed the connection during ${req.method}`, req.method, 'ECONNRESET')));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const sc = res.headers['set-cookie'];
          resolve({ status: res.statusCode ?? 0, setCookie: sc ?? [], body: Buffer.concat(chunks).toString('utf8') });
        });
      });
      const timer = setTimeout(() => {
        fail(new VsphereTimeoutError(`${req.method}: no answer from vCenter at ${where} within ${req.timeoutMs} ms`, req.method));
        r.destroy();
      }, req.timeoutMs);
      r.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        fail(transportError(e, req.method, where));
      });
      r.on('close', () => clearTimeout(timer));
      r.end(req.body);
    });
  return Object.assign(send, { close: () => agent.destroy() });
}

function transportError(e: NodeJS.ErrnoException, method: string, where: string): VsphereTransportError {
  const code = e.code ?? 'EIO';
  const what =
    code === 'ECONNREFUSED'
      ? 'connection refused (is vCenter running?)'
      : code === 'ECONNRESET' || e.message === 'socket hang up'
        ? 'connection lost'
        : code.startsWith('ERR_TLS') || code.includes('CERT') || code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || code === 'SELF_SIGNED_CERT_IN_CHAIN'
          ? `TLS certificate not trusted (${code}; set insecure for a self-signed vCenter)`
          : e.message;
  return new VsphereTransportError(`${method}: vCenter at ${where} unreachable: ${what}`, method, code, { cause: e });
}

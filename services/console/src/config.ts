import { ConfigError, intFrom, natsUrlFrom, type Env } from '@orangery/service-kit';
import { TokenConfigError, TokenTable } from './domain/tokens';

export interface ConsoleConfig {
  natsUrl: string;
  host: string;
  port: number;
  tokens: TokenTable;
  /** set when ORANGERY_CONSOLE_TOKENS is unset: printed once at start, never logged */
  generatedToken: string | undefined;
  /** how long a NATS request may take before the API answers 503 */
  requestTimeoutMs: number;
  /** most scale requests (and outcomes) the request index keeps */
  requestIndexSize: number;
  /** seconds between SSE `: ping` comments */
  ssePingSeconds: number;
}

export const DEFAULT_CONSOLE_ADDR = '0.0.0.0:7480';

/** `host:port`, `:port` (all interfaces) or `[v6]:port`. */
export function parseAddr(raw: string, name: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(raw);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`${name} must be host:port, got '${raw}'`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

export function loadConsoleConfig(env: Env): ConsoleConfig {
  const { host, port } = parseAddr(env['ORANGERY_CONSOLE_ADDR']?.trim() || DEFAULT_CONSOLE_ADDR, 'ORANGERY_CONSOLE_ADDR');
  let tokens: TokenTable;
  let generatedToken: string | undefined;
  const raw = env['ORANGERY_CONSOLE_TOKENS']?.trim();
  try {
    if (raw) {
      tokens = TokenTable.parse(raw);
    } else {
      ({ table: tokens, token: generatedToken } = TokenTable.generated());
    }
  } catch (e) {
    if (e instanceof TokenConfigError) throw new ConfigError(e.message);
    throw e;
  }
  return {
    natsUrl: natsUrlFrom(env),
    host,
    port,
    tokens,
    generatedToken,
    requestTimeoutMs: intFrom(env, 'ORANGERY_CONSOLE_REQUEST_TIMEOUT_SECONDS', 15, 1, 600) * 1000,
    requestIndexSize: intFrom(env, 'ORANGERY_CONSOLE_REQUEST_INDEX_SIZE', 100_000, 100, 10_000_000),
    ssePingSeconds: intFrom(env, 'ORANGERY_CONSOLE_SSE_PING_SECONDS', 15, 1, 3600),
  };
}

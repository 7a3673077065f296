import { natsCaProblem, natsUrlProblem } from '@orangery/messaging';
import { parseDbUrl, type DbConfig } from '@orangery/persistence';

/** A configuration the service cannot run with: main prints it on one line and exits 2. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export type Env = Record<string, string | undefined>;

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
export const DEFAULT_DB_URL = 'mysql://orangery:orangery@127.0.0.1:3306/orangery';

export function natsUrlFrom(env: Env): string {
  const url = env['ORANGERY_NATS_URL']?.trim() || DEFAULT_NATS_URL;
  const problem = natsUrlProblem(url) ?? natsCaProblem(env['ORANGERY_NATS_CA']);
  if (problem) throw new ConfigError(problem);
  return url;
}

export function dbFrom(env: Env): DbConfig {
  try {
    return parseDbUrl(env['ORANGERY_DB_URL']?.trim() || DEFAULT_DB_URL);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
}

/** An integer variable within bounds, or its default; anything else is a ConfigError. */
export function intFrom(env: Env, name: string, def: number, min: number, max: number): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === '') return def;
  if (!/^-?\d+$/.test(raw)) throw new ConfigError(`${name} must be an integer, got '${raw}'`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

export function boolFrom(env: Env, name: string, def: boolean): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '') return def;
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
  if (['0', 'false', 'no', 'off'].includes(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got '${raw}'`);
}

export function oneOf<T extends string>(env: Env, name: string, def: T, allowed: readonly T[]): T {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === '') return def;
  if (!(allowed as readonly string[]).includes(raw)) throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got '${raw}'`);
  return raw as T;
}

/** `k=v,k2=v2` -> { k: v, k2: v2 }; keys and values are label-safe. */
export function labelsFrom(env: Env, name: string): Record<string, string> {
  const raw = env[name]?.trim();
  if (!raw) return {};
  const out: Record<string, string> = {};
  for (const pair of raw.split(',')) {
    const m = /^\s*([a-z0-9][a-z0-9._-]{0,62})=([A-Za-z0-9._-]{0,63})\s*$/.exec(pair);
    if (!m) throw new ConfigError(`${name}: '${pair}' is not key=value (lower-case key; letters, digits, . _ - in values)`);
    out[m[1]!] = m[2]!;
  }
  return out;
}

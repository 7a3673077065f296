import { natsUrlProblem } from '@orangery/messaging';
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
  const problem = natsUrlProblem(url);
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

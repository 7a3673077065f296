import type { Backend, ContainerSecurity, EnvPutRequest, EnvRecord, ScaleRequestData } from '@orangery/contracts';
import { OrangeryError } from '@orangery/contracts';

/**
 * Environments (CONTRACT.md v1.1 "Environments", docs/scheduler.md "Environments"): what an
 * env's persisted record decides about a scale request, as pure functions. The judge reads
 * the record when it judges a request and snapshots the outcome into the app's spec, so a
 * later change of the record moves nothing already running: the next request follows it.
 */

/** The part of an env's record the judge applies (the record without its timestamps). */
export type EnvPolicy = Pick<EnvRecord, 'name' | 'backends' | 'pools' | 'hostLabels' | 'defaults' | 'containerSecurity'>;

/** Where the judge reads an env's record: undefined when there is none. Throws when it cannot tell (database away). */
export type EnvSource = (env: string) => Promise<EnvPolicy | undefined>;

/** The most env records kept (envs.put of a new name beyond it: INVALID_REQUEST). */
export const MAX_ENV_RECORDS = 10_000;

/**
 * Checks of a put the schema cannot express: a default backend the env itself forbids
 * would make every request without `backend` fail. INVALID_REQUEST naming the field.
 */
export function checkEnvPut(req: EnvPutRequest): void {
  const d = req.defaults?.backend;
  if (d !== undefined && d !== 'auto' && !req.backends.includes(d)) {
    throw new OrangeryError('INVALID_REQUEST', `field 'defaults.backend': '${d}' is not one of the env's backends (${req.backends.join(', ')})`, {
      field: 'defaults.backend',
      reason: 'must be auto or one of backends',
      allowed: ['auto', ...req.backends],
    });
  }
}

/** The record as stored and answered: the request's fields in a fixed order, lists sorted, empty optionals left out. */
export function normalizeEnv(req: EnvPutRequest): EnvPolicy {
  const order: Backend[] = ['docker', 'vmware', 'swarm'];
  const labels = req.hostLabels && Object.keys(req.hostLabels).length > 0 ? sortedRecord(req.hostLabels) : undefined;
  const defaults = req.defaults && (req.defaults.spread !== undefined || req.defaults.backend !== undefined) ? req.defaults : undefined;
  return {
    name: req.name,
    backends: order.filter((b) => req.backends.includes(b)),
    ...(req.pools !== undefined ? { pools: [...req.pools].sort() } : {}),
    ...(labels ? { hostLabels: labels } : {}),
    ...(defaults
      ? {
          defaults: {
            ...(defaults.spread !== undefined ? { spread: defaults.spread } : {}),
            ...(defaults.backend !== undefined ? { backend: defaults.backend } : {}),
          },
        }
      : {}),
    ...(req.containerSecurity && Object.keys(req.containerSecurity).length > 0 ? { containerSecurity: req.containerSecurity } : {}),
  };
}

function sortedRecord(r: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** What the env's record makes of a request: the request as it is to be judged, and what goes into the app's spec. */
export interface PolicyApplied {
  readonly ok: true;
  /** the request with the env's defaults filled in (backend, spread) */
  readonly data: ScaleRequestData;
  /** the only backends the app may use (undefined: no record; the judge's old rules) */
  readonly allowed?: readonly Backend[];
  readonly hostLabels?: Readonly<Record<string, string>>;
  readonly security?: ContainerSecurity;
  /** the env's default backend was taken (it explains a refusal) */
  readonly defaultBackend: boolean;
}

export interface PolicyViolation {
  readonly ok: false;
  readonly message: string;
  readonly details: { field: 'backend' | 'pool'; allowed: string[] };
}

/**
 * Applies an env's record to a request. Without a record the request is untouched (today's
 * behaviour). With one: an explicit backend outside `backends`, or a pool outside `pools`
 * (when set), is a POLICY_VIOLATION; a missing backend takes `defaults.backend`, a missing
 * spread `defaults.spread`; the hosts must carry `hostLabels`.
 */
export function applyEnvPolicy(data: ScaleRequestData, policy: EnvPolicy | undefined): PolicyApplied | PolicyViolation {
  if (!policy) return { ok: true, data, defaultBackend: false };
  const asked = data.backend;
  if (asked !== undefined && asked !== 'auto' && !policy.backends.includes(asked)) {
    return {
      ok: false,
      message: `env '${data.env}' does not allow backend '${asked}' (allowed: ${policy.backends.join(', ')})`,
      details: { field: 'backend', allowed: [...policy.backends] },
    };
  }
  if (policy.pools !== undefined && !policy.pools.includes(data.pool)) {
    return {
      ok: false,
      message: `env '${data.env}' does not allow pool '${data.pool}' (allowed: ${policy.pools.length > 0 ? policy.pools.join(', ') : 'none'})`,
      details: { field: 'pool', allowed: [...policy.pools] },
    };
  }
  const backend = asked ?? policy.defaults?.backend;
  const spread = data.spread ?? policy.defaults?.spread;
  const resolved: ScaleRequestData = {
    ...data,
    ...(backend !== undefined ? { backend } : {}),
    ...(spread !== undefined ? { spread } : {}),
  };
  return {
    ok: true,
    data: resolved,
    allowed: policy.backends,
    ...(policy.hostLabels && Object.keys(policy.hostLabels).length > 0 ? { hostLabels: policy.hostLabels } : {}),
    ...(policy.containerSecurity ? { security: policy.containerSecurity } : {}),
    defaultBackend: asked === undefined && policy.defaults?.backend !== undefined,
  };
}

/** `a=1, b=2`: the labels as a refusal names them. */
export const labelsText = (labels: Readonly<Record<string, string>>): string =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');

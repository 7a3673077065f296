import { Type, type Static } from '@sinclair/typebox';
import { ContainerSecurity } from './agent';
import { Backend, Name } from './ipam';
import { NextCursorField, PagedRequest } from './paging';

/**
 * Environments (CONTRACT.md v1.1 "Environments"): a persisted record per env naming the
 * backends its instances may use, the pools they may take addresses from, the host labels
 * an eligible host must carry, and defaults for what a scale request leaves out. A scale
 * request for an env without a record behaves as before (docs/scheduler.md "Environments").
 */
const strict = { additionalProperties: false } as const;

export const MAX_ENV_POOLS = 1000;
export const MAX_ENV_HOST_LABELS = 64;
const LabelKey = Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$' });
const LabelValue = Type.String({ maxLength: 63, pattern: '^[!-~]*$' });

export const EnvDefaults = Type.Object(
  {
    spread: Type.Optional(Type.Union([Type.Literal('host'), Type.Literal('none')])),
    backend: Type.Optional(Type.Union([Type.Literal('auto'), Backend])),
  },
  strict,
);
export type EnvDefaults = Static<typeof EnvDefaults>;

export const EnvPutRequest = Type.Object(
  {
    name: Name,
    backends: Type.Array(Backend, { minItems: 1, maxItems: 3, uniqueItems: true, description: 'the backends its instances may use' }),
    pools: Type.Optional(Type.Array(Name, { maxItems: MAX_ENV_POOLS, uniqueItems: true, description: 'the pools it may use (absent: any)' })),
    hostLabels: Type.Optional(
      Type.Record(LabelKey, LabelValue, {
        maxProperties: MAX_ENV_HOST_LABELS,
        // a key outside LabelKey's pattern is refused, not let through unchecked
        additionalProperties: false,
        description: 'an eligible host carries every one of these labels',
      }),
    ),
    defaults: Type.Optional(EnvDefaults),
    /** project addition: what containers of this env may relax of the agents' secure defaults (docs/docker-agent.md "Container hardening") */
    containerSecurity: Type.Optional(ContainerSecurity),
  },
  strict,
);
export type EnvPutRequest = Static<typeof EnvPutRequest>;

export const EnvNameRequest = Type.Object({ name: Name }, strict);
export type EnvNameRequest = Static<typeof EnvNameRequest>;
export const EnvListRequest = PagedRequest({});
export type EnvListRequest = Static<typeof EnvListRequest>;

/** An env's record as the scheduler answers it. */
export const EnvRecord = Type.Object({
  name: Name,
  backends: Type.Array(Backend),
  pools: Type.Optional(Type.Array(Name)),
  hostLabels: Type.Optional(Type.Record(Type.String(), Type.String())),
  defaults: Type.Optional(EnvDefaults),
  containerSecurity: Type.Optional(ContainerSecurity),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});
export type EnvRecord = Static<typeof EnvRecord>;
export const EnvList = Type.Object({ envs: Type.Array(EnvRecord, { description: 'in name order' }), ...NextCursorField });
export type EnvList = Static<typeof EnvList>;

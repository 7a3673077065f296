/** Name rules of CONTRACT.md "Names". */
export const NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
export const HOST_ID_PATTERN = '^[a-z0-9][a-z0-9-]{0,62}$';
export const INSTANCE_ID_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?:(0|[1-9][0-9]{0,3})$';
export const MAX_SLOT = 9999;

export interface Owner {
  env: string;
  app: string;
  slot: number;
}

export const instanceIdOf = (o: Owner): string => `${o.env}:${o.app}:${o.slot}`;

export function ownerOfInstanceId(id: string): Owner | undefined {
  if (!new RegExp(INSTANCE_ID_PATTERN).test(id)) return undefined;
  const [env, app, slot] = id.split(':');
  return { env: env!, app: app!, slot: Number(slot) };
}

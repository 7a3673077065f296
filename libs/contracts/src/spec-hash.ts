import { createHash } from 'node:crypto';
import type { CreateInstanceCommand } from './agent';

/** JSON with object keys sorted: the same value always gives the same text. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/**
 * A stable hash of what defines a container instance: a create for an existing instance id
 * with another hash is INSTANCE_CONFLICT (docs/docker-agent.md). One definition, so the
 * docker-agent and the simulated fleet judge a conflict alike.
 */
export function instanceSpecHash(cmd: CreateInstanceCommand): string {
  const material = canonicalJson([
    cmd.image,
    cmd.resources.cpu,
    cmd.resources.memoryMb,
    cmd.resources.heapMb ?? null,
    cmd.resources.diskMb ?? null,
    cmd.network,
    cmd.environment ?? {},
    cmd.command ?? null,
  ]);
  return createHash('sha256').update(material).digest('hex').slice(0, 16);
}

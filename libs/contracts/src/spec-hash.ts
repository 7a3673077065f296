import { createHash } from 'node:crypto';
import type { ContainerSecurity, CreateInstanceCommand } from './agent';

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
  const parts: unknown[] = [
    cmd.image,
    cmd.resources.cpu,
    cmd.resources.memoryMb,
    cmd.resources.heapMb ?? null,
    cmd.resources.diskMb ?? null,
    cmd.network,
    cmd.environment ?? {},
    cmd.command ?? null,
  ];
  // v1.1: appended only when it relaxes something, so every container created before
  // `security` existed (and every create without it) keeps its hash and is adopted as is.
  const security = relaxations(cmd.security);
  if (security) parts.push({ security });
  return specHashOf(parts);
}

/** 16 hex characters of the SHA-256 of `parts` as canonical JSON: the agents' spec hashes (containers, swarm services). */
export function specHashOf(parts: readonly unknown[]): string {
  return createHash('sha256').update(canonicalJson(parts)).digest('hex').slice(0, 16);
}

/** What `security` changes, in one form (undefined: nothing; same meaning, same hash). */
function relaxations(s: ContainerSecurity | undefined): ContainerSecurity | undefined {
  if (!s) return undefined;
  const out: ContainerSecurity = {};
  if (s.allowPrivilegeEscalation) out.allowPrivilegeEscalation = true;
  if (s.pidsLimit !== undefined) out.pidsLimit = s.pidsLimit;
  if (s.addCapabilities?.length) out.addCapabilities = [...new Set(s.addCapabilities)].sort();
  return Object.keys(out).length ? out : undefined;
}

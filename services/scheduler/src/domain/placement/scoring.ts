import type { Need } from './inventory';
import type { PlacementPolicy } from './types';

/**
 * Ranking: a fit score from the policy, less a penalty per instance of the same app
 * already on the host (spread: host), then rack spread and the host id as tie-breakers.
 * These are the definitions; the engine's hot loop (place.ts) writes the same arithmetic
 * out, and place.spec.ts holds it to them.
 */

/**
 * Larger than the whole range of a fit score (0..1): a host without the app always beats
 * one with it, and among hosts that have it, the one with fewer wins.
 */
export const SPREAD_PENALTY = 2;

/** Scores closer than this are a tie (float noise, not a preference). */
export const SCORE_EPSILON = 1e-9;

/**
 * How full a host would be with the instance: the mean of its cpu and memory utilisation
 * (0 empty, 1 full), "normalized" so a 64-core host and an 8-core one compare fairly.
 * A scale is 1 / capacity (the inventory keeps them, to multiply rather than divide).
 */
export function utilisationAfter(freeCpuMilli: number, cpuScale: number, freeMemoryMb: number, memoryScale: number, need: Need): number {
  return 1 - ((freeCpuMilli - need.cpuMilli) * cpuScale + (freeMemoryMb - need.memoryMb) * memoryScale) / 2;
}

/**
 * 0..1 for a host that fits. binpack prefers fuller hosts (fewer hosts in use, large holes
 * kept for large instances); least-loaded prefers emptier ones (even load). Docker and
 * vmware hosts are scored alike, which is how `backend: auto` chooses between them.
 */
export function fitScore(utilisation: number, policy: PlacementPolicy): number {
  return policy === 'binpack' ? utilisation : 1 - utilisation;
}

export const spreadPenalty = (instancesOnHost: number): number => SPREAD_PENALTY * instancesOnHost;

/**
 * Whether a candidate beats the best so far: a clearly higher score, or a tie and fewer
 * instances of the app in its rack. On a full tie the best so far stays, and since hosts
 * are scanned in id order, the lowest host id wins.
 */
export function outranks(score: number, rackLoad: number, bestScore: number, bestRackLoad: number): boolean {
  if (score > bestScore + SCORE_EPSILON) return true;
  return score >= bestScore - SCORE_EPSILON && rackLoad < bestRackLoad;
}

/**
 * An index of hosts by how free they are, so a decision looks at a few hosts instead of
 * every one (Nomad ranks a bounded sample of feasible nodes; this ranks the hosts that
 * could score best first, and stops when no host left could win).
 *
 * A host's key is its free fraction f = (freeCpu / capacityCpu + freeMemory / capacityMemory) / 2,
 * the number both policies rank by: for a request needing d = (cpu / capacityCpu +
 * memory / capacityMemory) / 2 of the host, least-loaded scores f - d and binpack 1 - f + d
 * (scoring.ts). Hosts sit in BUCKETS buckets by f (a doubly linked list per bucket, a bitmap
 * of the buckets in use), one index per set of hosts the request's fixed facts admit
 * (backends, VLAN: the inventory's verdicts). Moving a host when its free capacity changes
 * is O(1) per index.
 *
 * place.ts walks the buckets from the best end (least-loaded: the freest; binpack: the
 * fullest that could still fit) and stops when either
 * - bound: the best score any host of the next bucket could reach, with the index's
 *   extreme d, is clearly below the best found; up to here the answer is the exhaustive
 *   search's (ties included: place.ts breaks them by rack and host index, which does not
 *   depend on the order hosts are met); or
 * - sample: SAMPLE feasible hosts without the app have been ranked and the best of them
 *   runs no instance of it. The answer is then within one bucket (1 / BUCKETS of free
 *   fraction) plus the spread of d of the exhaustive best: it loses only among hosts that
 *   are nearly tied, which is where the rack and host-id tie-breaks would have chosen.
 * Spread is never traded: the sample stop needs a best without the app, and hosts that run
 * it (at most the app's instances) are ranked but not counted, so whenever any feasible
 * host without the app exists, the walk finds one.
 */
export const BUCKETS = 1024;
const WORDS = BUCKETS / 32;

/** Feasible hosts without the app ranked before the walk may stop short of the bound. */
export const SAMPLE = 32;

/** The bucket of a free fraction (clamped to 0..1: an overcommitted host fits nothing). */
export function bucketOf(f: number): number {
  if (!(f > 0)) return 0; // also NaN
  const b = Math.floor(f * BUCKETS);
  return b >= BUCKETS ? BUCKETS - 1 : b;
}

export class FreeIndex {
  /** the bucket of each host of the inventory, -1 when the index does not hold it */
  readonly bucket: Int32Array;
  readonly next: Int32Array;
  readonly prev: Int32Array;
  readonly head = new Int32Array(BUCKETS).fill(-1);
  readonly tail = new Int32Array(BUCKETS).fill(-1);
  private readonly used = new Uint32Array(WORDS);
  /** extremes of 1 / capacity over the hosts held, for the bounds on d */
  readonly minCpuScale: number;
  readonly maxCpuScale: number;
  readonly minMemoryScale: number;
  readonly maxMemoryScale: number;
  readonly members: number;

  /** `admitted[i]` 1 for the hosts to hold; `freeOf(i)` their free fraction now. */
  constructor(admitted: Uint8Array, cpuScale: Float64Array, memoryScale: Float64Array, freeOf: (i: number) => number) {
    const n = admitted.length;
    this.bucket = new Int32Array(n).fill(-1);
    this.next = new Int32Array(n).fill(-1);
    this.prev = new Int32Array(n).fill(-1);
    let minC = Infinity;
    let maxC = 0;
    let minM = Infinity;
    let maxM = 0;
    let members = 0;
    for (let i = 0; i < n; i++) {
      if (admitted[i] !== 1) continue;
      members++;
      minC = Math.min(minC, cpuScale[i]!);
      maxC = Math.max(maxC, cpuScale[i]!);
      minM = Math.min(minM, memoryScale[i]!);
      maxM = Math.max(maxM, memoryScale[i]!);
      this.link(i, bucketOf(freeOf(i)));
    }
    this.members = members;
    this.minCpuScale = members ? minC : 0;
    this.maxCpuScale = maxC;
    this.minMemoryScale = members ? minM : 0;
    this.maxMemoryScale = maxM;
  }

  /** Host `i`'s free fraction is now in bucket `b`: moves it there (to the bucket's tail). */
  move(i: number, b: number): void {
    const now = this.bucket[i]!;
    if (now < 0 || now === b) return;
    this.unlink(i, now);
    this.link(i, b);
  }

  /** The highest bucket in use at or below `b`, or -1. */
  below(b: number): number {
    for (let w = b >> 5, mask = b & 31; w >= 0; w--, mask = 31) {
      const bits = this.used[w]! & (mask === 31 ? 0xffffffff : (2 ** (mask + 1) - 1) >>> 0);
      if (bits !== 0) return (w << 5) + 31 - Math.clz32(bits);
    }
    return -1;
  }

  /** The lowest bucket in use at or above `b`, or -1. */
  above(b: number): number {
    for (let w = b >> 5, from = b & 31; w < WORDS; w++, from = 0) {
      const bits = (this.used[w]! >>> from) << from;
      if (bits !== 0) return (w << 5) + 31 - Math.clz32(bits & -bits);
    }
    return -1;
  }

  private link(i: number, b: number): void {
    const t = this.tail[b]!;
    this.prev[i] = t;
    this.next[i] = -1;
    if (t < 0) {
      this.head[b] = i;
      this.used[b >> 5]! |= 1 << (b & 31);
    } else this.next[t] = i;
    this.tail[b] = i;
    this.bucket[i] = b;
  }

  private unlink(i: number, b: number): void {
    const p = this.prev[i]!;
    const q = this.next[i]!;
    if (p < 0) this.head[b] = q;
    else this.next[p] = q;
    if (q < 0) this.tail[b] = p;
    else this.prev[q] = p;
    if (this.head[b]! < 0) this.used[b >> 5]! &= ~(1 << (b & 31));
  }
}

/**
 * An index of hosts by how free they are, so a decision looks at a few hosts instead of
 * every one (Nomad ranks a bounded sample of feasible nodes; this ranks first the hosts
 * that could score best, and stops when no host left could win, or after a sample).
 *
 * A host's key is its free fraction f = (freeCpu / capacityCpu + freeMemory / capacityMemory) / 2.
 * For a request needing d = (cpu / capacityCpu + memory / capacityMemory) / 2 of the host,
 * least-loaded scores f - d and binpack 1 - f + d (scoring.ts). d depends on the host's
 * size, so hosts are grouped by shape class (capacities rounded to a quarter power of two:
 * d varies by at most ~9 % inside a class), and inside a class kept in BUCKETS buckets by f
 * (a doubly linked list per bucket, a bitmap of the buckets in use). There is one index per
 * set of hosts the request's fixed facts admit (backends, VLAN: the inventory's verdicts).
 * Moving a host when its free capacity changes is O(1) per index.
 *
 * place.ts walks the buckets of all classes in the order of the best score a host in them
 * could reach (from f's bucket and the class's extreme d), and stops when either
 * - bound: no bucket left could hold a host scoring within SCORE_EPSILON of the best found;
 *   the answer is then the exhaustive search's (ties included: place.ts breaks them by rack
 *   and host index, not by the order hosts are met); or
 * - sample: SAMPLE feasible hosts without the app have been ranked and the best of them
 *   runs no instance of it. Every host not ranked is in a bucket whose bound is at most the
 *   current one, so the answer loses at most one bucket (1 / BUCKETS) plus the spread of d
 *   inside one class to the exhaustive best: only among nearly tied hosts.
 * Spread is never traded: the sample stop needs a best without the app, hosts that run it
 * (at most the app's instances) are ranked but not counted, and a penalised best never
 * meets the bound, so whenever a feasible host without the app exists the walk finds one.
 * The walk is deterministic: no randomness, the lists are in id order when built.
 */
export const BUCKETS = 1024;
const WORDS = BUCKETS / 32;

/** Feasible hosts without the app ranked before the walk may stop short of the bound. */
export const SAMPLE = 8;

/** The bucket of a free fraction (clamped to 0..1: an overcommitted host fits nothing). */
export function bucketOf(f: number): number {
  if (!(f > 0)) return 0; // also NaN
  const b = Math.floor(f * BUCKETS);
  return b >= BUCKETS ? BUCKETS - 1 : b;
}

/**
 * The shape class of a host: its cpu and memory capacities, each rounded to a quarter of a
 * power of two (as a number: the inventory numbers the classes once). d varies by at most
 * 2^(1/8) (~9 %) inside a class, so the bound of a bucket of one class is nearly tight.
 * Fleets have a few shapes; a fleet where every host differs still has few classes.
 */
export function shapeKey(cpuScale: number, memoryScale: number): number {
  const q = (scale: number) => (scale > 0 ? Math.round(-Math.log2(scale) * 4) + 1 : 0);
  return q(cpuScale) * 1024 + q(memoryScale);
}

export class FreeIndex {
  /** the bucket of each host of the inventory, -1 when the index does not hold it */
  readonly bucket: Int32Array;
  /** the shape class of each host (the inventory's) */
  readonly shape: Int32Array;
  readonly next: Int32Array;
  readonly prev: Int32Array;
  /** per class, BUCKETS list heads and tails: [class * BUCKETS + bucket] */
  readonly head: Int32Array;
  readonly tail: Int32Array;
  private readonly used: Uint32Array;
  readonly classes: number;
  /** extremes of 1 / capacity per class, for the bounds on d */
  readonly minCpuScale: Float64Array;
  readonly maxCpuScale: Float64Array;
  readonly minMemoryScale: Float64Array;
  readonly maxMemoryScale: Float64Array;
  readonly members: number;
  /** scratch for the engine's walk, per class: the next bucket, and the lowest and highest d */
  readonly cursor: Int32Array;
  readonly dLow: Float64Array;
  readonly dHigh: Float64Array;

  /**
   * `admitted[i]` 1 for the hosts to hold; `shape[i]` each host's class (0..classes-1, the
   * inventory's); the rest the inventory's columns, for the hosts' free fraction now.
   */
  constructor(
    admitted: Uint8Array,
    shape: Int32Array,
    classes: number,
    cpuScale: Float64Array,
    memoryScale: Float64Array,
    freeCpuMilli: Float64Array,
    freeMemoryMb: Float64Array,
  ) {
    const n = admitted.length;
    this.shape = shape;
    this.bucket = new Int32Array(n).fill(-1);
    this.next = new Int32Array(n);
    this.prev = new Int32Array(n);
    this.classes = classes;
    this.head = new Int32Array(classes * BUCKETS).fill(-1);
    this.tail = new Int32Array(classes * BUCKETS).fill(-1);
    this.used = new Uint32Array(classes * WORDS);
    this.minCpuScale = new Float64Array(classes).fill(Infinity);
    this.maxCpuScale = new Float64Array(classes);
    this.minMemoryScale = new Float64Array(classes).fill(Infinity);
    this.maxMemoryScale = new Float64Array(classes);
    this.cursor = new Int32Array(classes);
    this.dLow = new Float64Array(classes);
    this.dHigh = new Float64Array(classes);
    let members = 0;
    for (let i = 0; i < n; i++) {
      if (admitted[i] !== 1) continue;
      members++;
      const c = shape[i]!;
      const cs = cpuScale[i]!;
      const ms = memoryScale[i]!;
      if (cs < this.minCpuScale[c]!) this.minCpuScale[c] = cs;
      if (cs > this.maxCpuScale[c]!) this.maxCpuScale[c] = cs;
      if (ms < this.minMemoryScale[c]!) this.minMemoryScale[c] = ms;
      if (ms > this.maxMemoryScale[c]!) this.maxMemoryScale[c] = ms;
      this.link(i, bucketOf((freeCpuMilli[i]! * cs + freeMemoryMb[i]! * ms) / 2));
    }
    this.members = members;
  }

  /** Host `i`'s free fraction is now in bucket `b`: moves it there (to the bucket's tail). */
  move(i: number, b: number): void {
    const now = this.bucket[i]!;
    if (now < 0 || now === b) return;
    this.unlink(i, now);
    this.link(i, b);
  }

  /** The highest bucket of class `c` in use at or below `b`, or -1. */
  below(c: number, b: number): number {
    if (b < 0) return -1;
    const base = c * WORDS;
    for (let w = b >> 5, mask = b & 31; w >= 0; w--, mask = 31) {
      const bits = this.used[base + w]! & (mask === 31 ? 0xffffffff : (2 ** (mask + 1) - 1) >>> 0);
      if (bits !== 0) return (w << 5) + 31 - Math.clz32(bits);
    }
    return -1;
  }

  /** The lowest bucket of class `c` in use at or above `b`, or -1. */
  above(c: number, b: number): number {
    if (b >= BUCKETS) return -1;
    const base = c * WORDS;
    for (let w = b >> 5, from = b & 31; w < WORDS; w++, from = 0) {
      const bits = (this.used[base + w]! >>> from) << from;
      if (bits !== 0) return (w << 5) + 31 - Math.clz32(bits & -bits);
    }
    return -1;
  }

  private link(i: number, b: number): void {
    const c = this.shape[i]!;
    const slot = c * BUCKETS + b;
    const t = this.tail[slot]!;
    this.prev[i] = t;
    this.next[i] = -1;
    if (t < 0) {
      this.head[slot] = i;
      this.used[c * WORDS + (b >> 5)]! |= 1 << (b & 31);
    } else this.next[t] = i;
    this.tail[slot] = i;
    this.bucket[i] = b;
  }

  private unlink(i: number, b: number): void {
    const c = this.shape[i]!;
    const slot = c * BUCKETS + b;
    const p = this.prev[i]!;
    const q = this.next[i]!;
    if (p < 0) this.head[slot] = q;
    else this.next[p] = q;
    if (q < 0) this.tail[slot] = p;
    else this.prev[q] = p;
    if (this.head[slot]! < 0) this.used[c * WORDS + (b >> 5)]! &= ~(1 << (b & 31));
  }
}

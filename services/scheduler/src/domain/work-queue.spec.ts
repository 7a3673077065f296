import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backoffDelay, DONE, requeue, terminal, WorkQueue, type Result } from './work-queue';

/** The keyed work queue on fake timers: each test scripts a worker and watches when it runs. */

interface Probe {
  queue: WorkQueue;
  /** key -> fake-clock times (ms since the test started) at which its worker started */
  runs: Map<string, number[]>;
  errors: { key: string; retryInMs: number }[];
  terminals: string[];
}

let t0 = 0;
const now = () => Date.now() - t0;

function probe(work: (key: string, run: number) => Promise<Result> | Result, concurrency = 4): Probe {
  const runs = new Map<string, number[]>();
  const errors: Probe['errors'] = [];
  const terminals: string[] = [];
  const queue = new WorkQueue<string>({
    concurrency,
    worker: async (key) => {
      const list = runs.get(key) ?? [];
      runs.set(key, [...list, now()]);
      return work(key, list.length + 1);
    },
    onError: (key, _e, retryInMs) => errors.push({ key, retryInMs }),
    onTerminal: (key) => terminals.push(key),
  });
  return { queue, runs, errors, terminals };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A worker that takes 100 ms and counts how many of its runs overlap at most. */
function slowWorker() {
  let active = 0;
  const seen = { most: 0 };
  const work = async (): Promise<Result> => {
    seen.most = Math.max(seen.most, ++active);
    await sleep(100);
    active--;
    return DONE;
  };
  return { work, seen };
}

beforeEach(() => {
  vi.useFakeTimers();
  t0 = Date.now();
});

afterEach(() => {
  vi.useRealTimers();
});

describe('WorkQueue', () => {
  it('runs a kicked key at once and not again after done', async () => {
    const p = probe(() => DONE);
    p.queue.kick('a');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(p.runs.get('a')).toEqual([0]);
  });

  it('runs a delayed kick after the delay', async () => {
    const p = probe(() => DONE);
    p.queue.kick('a', 250);
    await vi.advanceTimersByTimeAsync(249);
    expect(p.runs.get('a')).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(p.runs.get('a')).toEqual([250]);
  });

  it('keeps the first timer of a key: a second delayed kick neither adds a run nor moves it', async () => {
    const p = probe(() => DONE);
    p.queue.kick('a', 500);
    p.queue.kick('a', 100);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(p.runs.get('a')).toEqual([500]);
  });

  it('requeues after the delay the worker asks for', async () => {
    const p = probe((_k, run) => (run < 3 ? requeue(1_000) : DONE));
    p.queue.kick('a');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(p.runs.get('a')).toEqual([0, 1_000, 2_000]);
  });

  it('never runs two workers for one key: a kick during a run runs it once more afterwards', async () => {
    const { work, seen } = slowWorker();
    const p = probe(work);
    p.queue.kick('a');
    p.queue.kick('a');
    p.queue.kick('a');
    await vi.advanceTimersByTimeAsync(1_000);
    expect(seen.most).toBe(1);
    // three kicks while the first run lasts collapse into one more run
    expect(p.runs.get('a')).toEqual([0, 100]);
  });

  it('runs different keys concurrently, at most `concurrency` at once', async () => {
    const { work, seen } = slowWorker();
    const p = probe(work, 2);
    for (const k of ['a', 'b', 'c', 'd']) p.queue.kick(k);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(seen.most).toBe(2);
    expect([...p.runs.values()].flat().sort((x, y) => x - y)).toEqual([0, 0, 100, 100]);
  });

  it('retries a failing key with exponential backoff, per key, and resets after a run that succeeds', async () => {
    const p = probe((key, run) => {
      if (key === 'a' && run <= 3) throw new Error('store down');
      if (key === 'a' && run === 5) throw new Error('store down again');
      return run === 4 ? requeue(500) : DONE;
    });
    p.queue.kick('a');
    p.queue.kick('b');
    await vi.advanceTimersByTimeAsync(60_000);
    // 1 s, 2 s, 4 s; then the success resets the count: the next failure waits 1 s again
    expect(p.runs.get('a')).toEqual([0, 1_000, 3_000, 7_000, 7_500, 8_500]);
    expect(p.errors.map((e) => e.retryInMs)).toEqual([1_000, 2_000, 4_000, 1_000]);
    // another key's failures are not its own
    expect(p.runs.get('b')).toEqual([0]);
  });

  it('drops a key that returns terminal and reports it, until it is kicked again', async () => {
    const p = probe((_k, run) => (run === 1 ? terminal('deposed') : DONE));
    p.queue.kick('a');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(p.runs.get('a')).toEqual([0]);
    expect(p.terminals).toEqual(['a']);
    expect(p.errors).toEqual([]);
    p.queue.kick('a');
    await vi.advanceTimersByTimeAsync(0);
    expect(p.runs.get('a')).toEqual([0, 60_000]);
  });

  it('takes no work after stop and cancels pending timers; a running worker finishes', async () => {
    const p = probe(async () => {
      await sleep(100);
      return requeue(1_000);
    });
    p.queue.kick('a');
    p.queue.kick('b', 500);
    await vi.advanceTimersByTimeAsync(10);
    expect(p.queue.isRunning('a')).toBe(true);
    expect(p.queue.busy).toBe(1);
    p.queue.stop();
    p.queue.kick('c');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(p.queue.busy).toBe(0);
    expect([...p.runs.keys()]).toEqual(['a']);
    expect(p.runs.get('a')).toEqual([0]);
  });
});

describe('backoffDelay', () => {
  it.each([
    [1, 1_000],
    [2, 2_000],
    [3, 4_000],
    [5, 16_000],
    [6, 30_000],
    [1_000, 30_000],
  ])('failure %i in a row waits %i ms', (failures, ms) => {
    expect(backoffDelay(failures)).toBe(ms);
  });

  it('follows a given policy', () => {
    expect(backoffDelay(3, { baseMs: 100, maxMs: 250 })).toBe(250);
    expect(backoffDelay(2, { baseMs: 100, maxMs: 250 })).toBe(200);
  });
});

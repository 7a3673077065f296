import { describe, expect, it } from 'vitest';
import { IsolationMonitor, type IsolationStep, type WireSample } from './isolation';

const FENCE_AFTER = 10_000;
const GW = '198.18.0.1';
const GW2 = '198.18.100.1';

const monitor = () => new IsolationMonitor({ fenceAfterMs: FENCE_AFTER, maxSampleGapMs: 3_000 });
const sample = (answers: Record<string, boolean>, carrier: boolean | undefined = true): WireSample => ({
  carrier,
  answers: new Map(Object.entries(answers)),
});
const answering = sample({ [GW]: true });
const silent = sample({ [GW]: false });
const noCarrier = sample({ [GW]: false }, false);

/** Feeds `s` once a second from `from` (inclusive) to `to` (exclusive); the steps that were not steady. */
function feed(m: IsolationMonitor, s: WireSample, from: number, to: number, every = 1_000): { at: number; step: IsolationStep }[] {
  const out: { at: number; step: IsolationStep }[] = [];
  for (let t = from; t < to; t += every) {
    const step = m.observe(s, t);
    if (step.kind !== 'steady') out.push({ at: t, step });
  }
  return out;
}

describe('IsolationMonitor: when the network counts as isolated', () => {
  it.each([
    ['an answering isolation address', answering, false],
    ['an armed address gone silent', silent, true],
    ['no carrier on the uplink', noCarrier, true],
    ['no carrier even while an address seems to answer', sample({ [GW]: true }, false), true],
    ['an unreadable carrier and an answering address', sample({ [GW]: true }, undefined), false],
    ['one of two armed addresses silent, the other answering', sample({ [GW]: false, [GW2]: true }), false],
  ])('%s: isolated = %s', (_what, s, isolated) => {
    const m = monitor();
    m.observe(sample({ [GW]: true, [GW2]: true }), 0); // both armed
    m.observe(s, 1_000);
    expect(m.isolated).toBe(isolated);
  });

  it('an address that never answered proves nothing: its silence never fences', () => {
    const m = monitor();
    expect(feed(m, silent, 0, 10 * FENCE_AFTER)).toEqual([]);
    expect(m.isolated).toBe(false);
    expect(m.armed).toBe(false);
  });

  it('arms on the first answer: from then on silence fences after fenceAfter', () => {
    const m = monitor();
    feed(m, silent, 0, 30_000);
    m.observe(answering, 30_000);
    expect(m.armed).toBe(true);
    const steps = feed(m, silent, 31_000, 31_000 + FENCE_AFTER + 1_000);
    expect(steps).toEqual([{ at: 31_000 + FENCE_AFTER, step: { kind: 'fence', cause: 'no-answer', isolatedForMs: FENCE_AFTER, addresses: [GW] } }]);
  });

  it('a never-answering address next to an armed one: only the armed one counts', () => {
    const m = monitor();
    m.observe(sample({ [GW]: true, [GW2]: false }), 0);
    // GW2 never answered: GW's silence is what fences
    const steps = feed(m, sample({ [GW]: false, [GW2]: false }), 1_000, 1_000 + FENCE_AFTER + 1);
    expect(steps.map((s) => s.step.kind)).toEqual(['fence']);
    // an unarmed address alone left in the set (GW's network removed) does not keep it isolated
    const m2 = monitor();
    m2.observe(sample({ [GW]: true }), 0);
    m2.observe(sample({ [GW2]: false }), 1_000);
    expect(m2.isolated).toBe(false);
  });

  it('a failed probe (absent from the sample) is no evidence of silence', () => {
    const m = monitor();
    m.observe(answering, 0);
    expect(feed(m, sample({}), 1_000, 5 * FENCE_AFTER)).toEqual([]);
    expect(m.isolated).toBe(false);
  });
});

describe('IsolationMonitor: fencing on the monotonic clock', () => {
  it('fences after exactly fenceAfter of continuous isolation, once', () => {
    const m = monitor();
    m.observe(answering, 0);
    const steps = feed(m, silent, 1_000, 60_000);
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ at: 1_000 + FENCE_AFTER, step: { kind: 'fence', cause: 'no-answer' } });
    expect(m.fenced).toBe(true);
  });

  it('carrier loss fences even before any address ever answered', () => {
    const m = monitor();
    const steps = feed(m, noCarrier, 0, FENCE_AFTER + 1);
    expect(steps).toEqual([{ at: FENCE_AFTER, step: { kind: 'fence', cause: 'no-carrier', isolatedForMs: FENCE_AFTER, addresses: [GW] } }]);
  });

  it('an answer before fenceAfter restarts the count', () => {
    const m = monitor();
    m.observe(answering, 0);
    feed(m, silent, 1_000, FENCE_AFTER); // 9 s of silence
    m.observe(answering, FENCE_AFTER);
    expect(m.isolated).toBe(false);
    expect(feed(m, silent, FENCE_AFTER + 1_000, 2 * FENCE_AFTER + 1_000)).toEqual([]);
    expect(feed(m, silent, 2 * FENCE_AFTER + 1_000, 2 * FENCE_AFTER + 2_000).map((s) => s.step.kind)).toEqual(['fence']);
  });

  it('a gap between samples (the agent was frozen) restarts the count: no fence on stale evidence', () => {
    const m = monitor();
    m.observe(answering, 0);
    m.observe(silent, 1_000);
    // SIGSTOP for 25 s: the next sample is silent too, but nothing is known of the time between
    expect(m.observe(silent, 26_000)).toEqual({ kind: 'steady' });
    expect(feed(m, silent, 27_000, 26_000 + FENCE_AFTER)).toEqual([]);
    expect(m.observe(silent, 26_000 + FENCE_AFTER).kind).toBe('fence');
  });

  it('recovers when the network answers again, once; a new isolation fences again', () => {
    const m = monitor();
    m.observe(answering, 0);
    feed(m, silent, 1_000, 1_000 + FENCE_AFTER + 1);
    expect(m.fenced).toBe(true);
    feed(m, silent, 12_000, 40_000); // still isolated: still fenced, no second fence
    expect(m.fenced).toBe(true);
    expect(m.observe(answering, 40_000)).toEqual({ kind: 'recover', fencedForMs: 40_000 - (1_000 + FENCE_AFTER) });
    expect(m.fenced).toBe(false);
    expect(m.observe(answering, 41_000)).toEqual({ kind: 'steady' });
    expect(feed(m, noCarrier, 42_000, 42_000 + FENCE_AFTER + 1).map((s) => s.step.kind)).toEqual(['fence']);
  });

  it('a carrier-loss fence recovers when the carrier is back, even with no address armed', () => {
    const m = monitor();
    feed(m, noCarrier, 0, FENCE_AFTER + 1);
    expect(m.observe(silent, FENCE_AFTER + 1_000).kind).toBe('recover');
  });
});

describe('IsolationMonitor: the never-answered warning', () => {
  it('names each address silent since fenceAfter once, and none that answered', () => {
    const m = monitor();
    m.observe(sample({ [GW]: false, [GW2]: true }), 0);
    expect(m.takeNeverAnswered(FENCE_AFTER - 1)).toEqual([]);
    expect(m.takeNeverAnswered(FENCE_AFTER)).toEqual([GW]);
    expect(m.takeNeverAnswered(2 * FENCE_AFTER)).toEqual([]);
  });
});

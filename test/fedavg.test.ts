import { describe, expect, it } from 'vitest';
import { applyDelta, fedAvg, subtract, WeightedDeltaSum } from '../shared/fedavg.ts';

describe('FedAvg', () => {
  it('weights each update by its example count (hand-computed)', () => {
    // Prepare: w = [1, 2, 3]; Δ1 = [1, 0, -1] with n=100; Δ2 = [4, 2, 2] with n=300.
    const global = Float32Array.from([1, 2, 3]);
    const updates = [
      { delta: Float32Array.from([1, 0, -1]), numExamples: 100 },
      { delta: Float32Array.from([4, 2, 2]), numExamples: 300 },
    ];
    // Σ nΔ / Σ n = ([100,0,-100] + [1200,600,600]) / 400 = [3.25, 1.5, 1.25]
    const expected = [1 + 3.25, 2 + 1.5, 3 + 1.25];
    const actual = fedAvg(global, updates);
    expected.forEach((e, i) => expect(actual[i]).toBeCloseTo(e, 6));
  });

  it('is not a plain mean when counts differ', () => {
    const actual = fedAvg(Float32Array.from([0]), [
      { delta: Float32Array.from([1]), numExamples: 1 },
      { delta: Float32Array.from([0]), numExamples: 3 },
    ]);
    expect(actual[0]).toBeCloseTo(0.25, 6);
  });

  it('streams: adding one at a time equals the one-shot form, in O(model) memory', () => {
    const size = 1000;
    const global = Float32Array.from({ length: size }, (_, i) => Math.sin(i));
    const updates = Array.from({ length: 7 }, (_, k) => ({ delta: Float32Array.from({ length: size }, (_, i) => Math.cos(i * (k + 1)) / 10), numExamples: 10 + k * 13 }));
    const acc = new WeightedDeltaSum(size);
    for (const u of updates) acc.add(u.delta, u.numExamples);
    expect(acc.count).toBe(7);
    expect(acc.totalWeight).toBe(updates.reduce((a, u) => a + u.numExamples, 0));
    const streamed = applyDelta(global, acc.mean()!);
    const oneShot = fedAvg(global, updates);
    for (let i = 0; i < size; i++) expect(streamed[i]).toBeCloseTo(oneShot[i]!, 6);
  });

  it('rejects a wrong-sized update and a non-positive count', () => {
    const acc = new WeightedDeltaSum(3);
    expect(() => acc.add(new Float32Array(2), 5)).toThrow('update has 2 values, expected 3');
    expect(() => acc.add(new Float32Array(3), 0)).toThrow('example count must be a positive number');
    expect(() => acc.add(new Float32Array(3), Number.NaN)).toThrow('example count');
    expect(acc.mean()).toBeUndefined();
  });

  it('Δ = local − global and w + Δ round-trip', () => {
    const g = Float32Array.from([0.5, -1, 2]);
    const l = Float32Array.from([1.5, -3, 2.25]);
    const d = subtract(l, g);
    expect([...d]).toEqual([1, -2, 0.25]);
    expect([...applyDelta(g, d)]).toEqual([...l]);
  });
});

import { describe, expect, it } from 'vitest';
import { clipToNorm, coordinateMedian, l2Norm, trimmedMean } from '../shared/robust.ts';
import { STRATEGIES } from '../server/fl/strategy.ts';
import { runConfigSchema } from '../shared/schemas.ts';
import { encodeWeights } from '../shared/weights.ts';
import { validateUpdate } from '../server/fl/validate.ts';

const f = (...xs: number[]) => Float32Array.from(xs);

describe('robust aggregation', () => {
  it('clips to the L2 bound, keeping the direction', () => {
    const { delta, norm, clipped } = clipToNorm(f(3, 4), 1);
    expect(norm).toBe(5);
    expect(clipped).toBe(true);
    expect(delta[0]).toBeCloseTo(0.6, 6);
    expect(delta[1]).toBeCloseTo(0.8, 6);
    expect(l2Norm(delta)).toBeCloseTo(1, 6);
    expect(clipToNorm(f(0.3, 0.4), 1).clipped).toBe(false);
    expect(clipToNorm(f(30, 40), 0).clipped).toBe(false);
  });

  it('takes the coordinate-wise median (hand-computed)', () => {
    expect([...coordinateMedian([f(1, 10), f(2, -5), f(100, 0)])]).toEqual([2, 0]);
    expect([...coordinateMedian([f(1), f(2), f(3), f(1000)])]).toEqual([2.5]);
  });

  it('trims the extremes before averaging (hand-computed)', () => {
    // 5 updates, β = 0.2: drop 1 at each end per coordinate.
    expect([...trimmedMean([f(1, 0), f(2, 0), f(3, 3), f(4, 6), f(-1000, 9)], 0.2)]).toEqual([2, 3]);
    expect(() => trimmedMean([f(1)], 0.5)).toThrow('must be in [0, 0.5)');
  });

  it('one scaled, sign-flipped update drags FedAvg but not the median', () => {
    const honest = [f(1, 1), f(1.2, 0.8), f(0.8, 1.2)];
    const attack = f(-100, -100);
    const config = runConfigSchema.parse({});
    const run = (name: 'fedavg' | 'median') => {
      const agg = STRATEGIES[name].createAggregator(2, config);
      for (const u of [...honest, attack]) agg.add(u, 100);
      return [...agg.result(f(0, 0))!];
    };
    expect(run('fedavg')[0]).toBeLessThan(-20);
    const median = run('median');
    expect(median[0]).toBeCloseTo(0.9, 5);
    expect(median[1]).toBeCloseTo(0.9, 5);
  });

  it('clipping, done once as updates are validated, bounds what one update can move under any strategy', () => {
    const config = runConfigSchema.parse({ clipNorm: 2 });
    const specs = [{ name: 'w', shape: [2] }];
    const small = validateUpdate(encodeWeights({ specs, values: f(1, 0) }), specs, config);
    const big = validateUpdate(encodeWeights({ specs, values: f(-300, -400) }), specs, config);
    expect(small).toMatchObject({ clipped: false, norm: 1 });
    expect(big).toMatchObject({ clipped: true, norm: 500 });
    const agg = STRATEGIES.fedavg.createAggregator(2, config);
    agg.add(small.delta, 1);
    agg.add(big.delta, 1);
    const result = [...agg.result(f(0, 0))!];
    expect(result[0]).toBeCloseTo((1 - 1.2) / 2, 5);
    expect(result[1]).toBeCloseTo(-1.6 / 2, 5);
  });
});

/**
 * The RDP accountant against reference values. The published one (q = 0.1, z = 1, 100 rounds,
 * δ = 1e-5: ε ≈ 7.90 with the conversion of Balle et al. 2020, ≈ 8.80 with the classic one) and
 * others computed with the formulas of TensorFlow Privacy's rdp_accountant.py (Mironov et al. 2019)
 * and the same conversion, in double precision with scipy's log_ndtr and binom.
 */
import { describe, expect, it } from 'vitest';
import { dpFedAvgAggregator } from '../server/fl/strategy.ts';
import { epsilonAfter, logErfc, rdpOfRound, roundsWithin } from '../shared/privacy/accountant.ts';
import { addGaussianNoise } from '../shared/privacy/noise.ts';
import { validateUpdate } from '../server/fl/validate.ts';
import { runConfigSchema } from '../shared/schemas.ts';
import { encodeWeights } from '../shared/weights.ts';

const close = (a: number, b: number, rel = 1e-9) => expect(Math.abs(a - b)).toBeLessThanOrEqual(rel * Math.max(1, Math.abs(b)));

describe('privacy accountant (RDP of the sampled Gaussian mechanism)', () => {
  it('gives the published ε: 7.90 with the tighter conversion, 8.80 with the classic one', () => {
    expect(epsilonAfter(0.1, 1.0, 100, 1e-5).epsilon).toBeCloseTo(7.9, 2);
    expect(epsilonAfter(0.1, 1.0, 100, 1e-5, { classic: true }).epsilon).toBeCloseTo(8.79, 2);
  });

  it('matches reference values over rates, noise, rounds and δ', () => {
    const cases: [q: number, z: number, rounds: number, delta: number, epsilon: number, rdp25: number, rdp32: number][] = [
      [0.1, 1.0, 100, 1e-5, 7.899255002434629, 0.02350372726106113, 13.623137968522595],
      [0.01, 1.1, 10_000, 1e-5, 5.63199236854841, 0.00016207740933199663, 8.469416433675926],
      [0.06, 0.8, 1000, 1e-6, 25.823342392440992, 0.019887892805275996, 22.095834098828348],
      [0.001, 2, 100, 1e-5, 0.12177815216363011, 3.5508685186936613e-7, 4.5873148985512776e-6],
      [0.1, 0.7, 10, 1e-5, 7.182662519421293, 0.1191441256386982, 30.276199193012076],
      [0.05, 1.5, 500, 1e-5, 4.143754895940468, 0.0017746633175683248, 4.018762682981764],
      [1.0, 5.0, 10, 1e-5, 2.8136532471298397, 0.05, 0.64],
    ];
    for (const [q, z, rounds, delta, epsilon, rdp25, rdp32] of cases) {
      close(rdpOfRound(q, z, 2.5), rdp25, 1e-8); // a fractional order
      close(rdpOfRound(q, z, 32), rdp32, 1e-9); // an integer order
      close(epsilonAfter(q, z, rounds, delta).epsilon, epsilon, 1e-9);
    }
  });

  it('grows with the sampling rate and the rounds, and shrinks with the noise', () => {
    const e = (q: number, z: number, t: number) => epsilonAfter(q, z, t, 1e-5).epsilon;
    for (const q of [0.001, 0.01, 0.05]) expect(e(q * 2, 1, 100)).toBeGreaterThan(e(q, 1, 100));
    for (const z of [0.6, 1, 2]) expect(e(0.05, z * 1.5, 100)).toBeLessThan(e(0.05, z, 100));
    for (const t of [1, 10, 100]) expect(e(0.05, 1, t * 3)).toBeGreaterThan(e(0.05, 1, t));
    expect(e(0.05, 1, 0)).toBe(0);
  });

  it('computes ln erfc far into both tails', () => {
    close(logErfc(0.5), Math.log(0.4795001221869535), 1e-14);
    close(logErfc(10), -102.87988902484493, 1e-13);
    close(logErfc(30), -903.9741171106442, 1e-13);
    close(logErfc(-5), Math.log(2 - 1.5374597944280351e-12), 1e-13);
  });

  it('finds the most rounds a budget allows', () => {
    const t = roundsWithin(8, 0.1, 1.0, 1e-5);
    expect(epsilonAfter(0.1, 1.0, t, 1e-5).epsilon).toBeLessThanOrEqual(8);
    expect(epsilonAfter(0.1, 1.0, t + 1, 1e-5).epsilon).toBeGreaterThan(8);
    expect(() => epsilonAfter(1.5, 1, 1, 1e-5)).toThrow(/sampling rate/);
    expect(() => epsilonAfter(0.1, 0, 1, 1e-5)).toThrow(/noise multiplier/);
  });
});

describe('Gaussian noise for DP', () => {
  it('has mean 0 and the standard deviation asked for, from the cryptographic source', () => {
    const n = 200_000;
    const x = addGaussianNoise(new Float64Array(n), 2.5) as Float64Array;
    const mean = x.reduce((a, b) => a + b, 0) / n;
    const sd = Math.sqrt(x.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
    expect(Math.abs(mean)).toBeLessThan((5 * 2.5) / Math.sqrt(n)); // five standard errors
    expect(Math.abs(sd - 2.5)).toBeLessThan(0.02); // the sd's standard error is 2.5/√(2n) ≈ 0.004
    // tails as a Gaussian's: about 4.55 % beyond 2 sd
    const beyond = x.filter((v) => Math.abs(v) > 5).length / n;
    expect(beyond).toBeGreaterThan(0.043);
    expect(beyond).toBeLessThan(0.048);
    expect(() => addGaussianNoise(new Float64Array(2), -1)).toThrow(/standard deviation/);
  });

  it('the DP aggregator adds noise of sd z·S to the sum and divides by the expected round size', () => {
    const size = 50_000;
    const agg = dpFedAvgAggregator(size, 0.5, 10);
    for (let k = 0; k < 3; k++) agg.add(new Float32Array(size).fill(1), 999); // weights are ignored: each update counts 1
    const out = agg.result(new Float32Array(size))!;
    const mean = out.reduce((a, b) => a + b, 0) / size;
    const sd = Math.sqrt(out.reduce((a, b) => a + (b - mean) ** 2, 0) / (size - 1));
    expect(mean).toBeCloseTo(0.3, 2); // 3 / 10
    expect(sd).toBeCloseTo(0.05, 2); // 0.5 / 10
  });
});

describe('clipping under DP', () => {
  it('bounds every update to dp.clipNorm, whatever clipNorm says', () => {
    const specs = [{ name: 'w', shape: [4] }];
    const config = runConfigSchema.parse({ dp: { noiseMultiplier: 1, clipNorm: 0.5 } });
    const big = validateUpdate(encodeWeights({ specs, values: Float32Array.from([3, 4, 0, 0]) }), specs, config);
    expect(big).toMatchObject({ norm: 5, clipped: true });
    expect(Math.hypot(...big.delta)).toBeCloseTo(0.5, 6);
    const small = validateUpdate(encodeWeights({ specs, values: Float32Array.from([0.3, 0, 0, 0]) }), specs, config);
    expect(small).toMatchObject({ clipped: false });
  });
});

/**
 * Distributed DP under secure aggregation: the Poisson sampler behind the devices' Skellam noise,
 * the integer budget that keeps the noisy sum from wrapping, and the Skellam accountant against
 * reference values computed with the formulas of Agarwal et al. 2021 (Theorem 3.5) and Zhu & Wang
 * 2019 as TensorFlow Federated's distributed_dp accounting writes them, in Python with scipy.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_ORDERS, epsilonOfRounds, rdpOfRound, skellamRdp, subsampledRdp } from '../shared/privacy/accountant.ts';
import { poisson, skellamLambda, skellamLevels, skellamSensitivity, SKELLAM_MAX_LEVELS, type DistributedNoise } from '../shared/privacy/skellam.ts';
import { createRng } from '../shared/rng.ts';
import { addInto, dequantizeSum, quantizeInput, quantLevels, quantProblem, type QuantBounds } from '../shared/secagg/quantize.ts';
import { noisySumBound } from '../server/fl/secagg.ts';

const seeded = (seed: number) => {
  const rng = createRng(seed);
  return () => 1 - rng(); // (0, 1]
};

/** ln of the Poisson pmf */
function logPmf(k: number, lambda: number): number {
  let lf = 0;
  for (let i = 2; i <= k; i++) lf += Math.log(i);
  return -lambda + k * Math.log(lambda) - lf;
}

describe('the Poisson sampler', () => {
  for (const lambda of [0.5, 4, 30, 400]) {
    it(`draws Poisson(${lambda}): a χ² test against the exact pmf passes`, () => {
      const n = 40_000;
      const uniform = seeded(7 + lambda);
      const counts = new Map<number, number>();
      for (let i = 0; i < n; i++) {
        const k = poisson(lambda, uniform);
        counts.set(k, (counts.get(k) ?? 0) + 1);
      }
      // bins of expected count ≥ 20; the tails pooled into the first and last
      const lo = Math.max(0, Math.floor(lambda - 5 * Math.sqrt(lambda)));
      const hi = Math.ceil(lambda + 5 * Math.sqrt(lambda) + 5);
      const bins: { expected: number; observed: number }[] = [];
      let pooled = { expected: 0, observed: 0 };
      let below = 0;
      for (let k = 0; k < lo; k++) below += Math.exp(logPmf(k, lambda));
      pooled.expected = below * n;
      pooled.observed = [...counts].filter(([k]) => k < lo).reduce((s, [, c]) => s + c, 0);
      let mass = below;
      for (let k = lo; k <= hi; k++) {
        const p = Math.exp(logPmf(k, lambda));
        mass += p;
        pooled = { expected: pooled.expected + p * n, observed: pooled.observed + (counts.get(k) ?? 0) };
        if (pooled.expected >= 20) {
          bins.push(pooled);
          pooled = { expected: 0, observed: 0 };
        }
      }
      const above = [...counts].filter(([k]) => k > hi).reduce((s, [, c]) => s + c, 0);
      bins.push({ expected: pooled.expected + (1 - mass) * n, observed: pooled.observed + above });
      const chi2 = bins.reduce((s, b) => s + (b.observed - b.expected) ** 2 / b.expected, 0);
      const df = bins.length - 1;
      // 99.9 % quantile of χ²(df) ≈ df + 3.1·√(2·df) + 10 (Wilson–Hilferty is tighter; this errs loose)
      expect(bins.length).toBeGreaterThan(lambda < 1 ? 2 : 8);
      expect(chi2).toBeLessThan(df + 3.1 * Math.sqrt(2 * df) + 10);
    });
  }

  it('keeps mean and variance at rates far beyond any table (λ = 10⁹)', () => {
    const uniform = seeded(3);
    const lambda = 1e9;
    const n = 20_000;
    let sum = 0;
    let sq = 0;
    for (let i = 0; i < n; i++) {
      const x = poisson(lambda, uniform) - lambda;
      sum += x;
      sq += x * x;
    }
    const mean = sum / n;
    const variance = sq / n - mean * mean;
    expect(Math.abs(mean)).toBeLessThan(5 * Math.sqrt(lambda / n));
    expect(variance / lambda).toBeGreaterThan(0.96);
    expect(variance / lambda).toBeLessThan(1.04);
  });

  it('refuses a rate that is not a finite number ≥ 0', () => {
    expect(() => poisson(-1, Math.random)).toThrow(/Poisson rate/);
    expect(() => poisson(Infinity, Math.random)).toThrow(/Poisson rate/);
    expect(poisson(0, Math.random)).toBe(0);
  });
});

describe('the Skellam accountant', () => {
  const close = (a: number, b: number, rel: number) => expect(Math.abs(a - b)).toBeLessThanOrEqual(rel * Math.max(1, Math.abs(b)));

  it('matches reference values over noise, rates, rounds, δ and sensitivities', () => {
    const cases: [z: number, q: number, rounds: number, delta: number, l2: number, l1: number, epsilon: number, rdp32: number, unsampled7: number][] = [
      [1.0, 0.1, 100, 1e-5, 65617, 65617 * 73, 9.823371303406763, 13.658577078267083, 3.5000000007552203],
      [0.8, 0.01, 1000, 1e-5, 1000, 1e6, 4.371099376592696, 20.281757157388437, 5.468761596679688],
      [1.5, 0.05, 500, 1e-6, 4096, 4096 * 300, 5.919568303508104, 4.054201975790606, 1.5555555951137694],
      [2.0, 1.0, 10, 1e-5, 100, 2000, 8.087989753831664, 4.0001003125, 0.8750221875],
      [0.7, 0.1, 10, 1e-5, 10, 100, 10.160163234489923, 31.030088944662488, 7.340691378592253],
    ];
    for (const [z, q, rounds, delta, l2, l1, epsilon, rdp32, unsampled7] of cases) {
      const s = { l2, l1 };
      close(skellamRdp(7, z, s), unsampled7, 1e-12);
      close(subsampledRdp(q, 32, (a) => skellamRdp(a, z, s)), rdp32, 1e-9);
      close(epsilonOfRounds([{ q, rounds, skellam: s }], z, delta).epsilon, epsilon, 1e-9);
    }
  });

  it("tends to the Gaussian's RDP as the sensitivity grows, and never beats the exact sampled Gaussian", () => {
    for (const alpha of [2, 8, 32]) {
      expect(skellamRdp(alpha, 1, { l2: 1e6, l1: 1e9 }) / (alpha / 2)).toBeCloseTo(1, 9);
      expect(skellamRdp(alpha, 1, { l2: 10, l1: 100 })).toBeGreaterThan(alpha / 2);
      // Zhu & Wang's bound holds for any mechanism, so it is at least the sampled Gaussian's exact RDP
      for (const q of [0.01, 0.1, 0.5]) expect(subsampledRdp(q, alpha, (a) => a / 2)).toBeGreaterThanOrEqual(rdpOfRound(q, 1, alpha) * (1 - 1e-12));
    }
  });

  it('grows with q and the rounds and shrinks with z; only integer orders count', () => {
    const s = { l2: 65_000, l1: 65_000 * 100 };
    const e = (q: number, z: number, t: number) => epsilonOfRounds([{ q, rounds: t, skellam: s }], z, 1e-5).epsilon;
    for (const q of [0.01, 0.05, 0.2]) expect(e(q * 2, 1, 100)).toBeGreaterThan(e(q, 1, 100));
    for (const z of [0.7, 1, 2]) expect(e(0.05, z * 1.5, 100)).toBeLessThan(e(0.05, z, 100));
    for (const t of [1, 10, 100]) expect(e(0.05, 1, t * 3)).toBeGreaterThan(e(0.05, 1, t));
    // distributed noise costs some ε over central noise of the same z (the general subsampling bound is looser)
    expect(e(0.1, 1, 100)).toBeGreaterThan(epsilonOfRounds([{ q: 0.1, rounds: 100 }], 1, 1e-5).epsilon);
    expect(DEFAULT_ORDERS.filter(Number.isInteger).length).toBeGreaterThan(60);
  });
});

describe('the noisy integer sum', () => {
  const noise: DistributedNoise = { noiseMultiplier: 1, minInputs: 8, parameters: 4000 };
  const bounds: QuantBounds = { maxInputs: 10, maxWeight: 1, clipNorm: 2, noise };

  it('has at most 2¹⁶ levels, fewer when many inputs must fit, and refuses weights above 1', () => {
    expect(quantLevels(bounds)).toBe(SKELLAM_MAX_LEVELS);
    expect(skellamLevels(100_000, { ...noise, minInputs: 80_000 })).toBeLessThan(SKELLAM_MAX_LEVELS);
    expect(quantProblem({ ...bounds, maxWeight: 100 })).toMatch(/every device weighs 1/);
    expect(quantProblem({ ...bounds, noise: { ...noise, minInputs: 11 } })).toMatch(/calibrated for 11 inputs in a round of at most 10/);
    expect(() => quantizeInput(new Float32Array(4000), 3, bounds, createRng(1))).toThrow(/weight 3 is outside 1..1/);
  });

  it('carries Skellam noise of the variance the accountant charges, and does not wrap with every input at its bound', () => {
    const d = noise.parameters;
    const levels = quantLevels(bounds);
    const lambda = skellamLambda(noise, levels);
    const { l2 } = skellamSensitivity(levels, d);
    // the variance per device is 1/minInputs of (z·Δ₂)²
    expect((2 * lambda * noise.minInputs) / (noise.noiseMultiplier * l2) ** 2).toBeCloseTo(1, 12);
    // ten devices at the worst place: all of each one's norm in entry 0, the same sign
    const sum = new Uint32Array(d + 1);
    const rng = createRng(5);
    for (let i = 0; i < bounds.maxInputs; i++) {
      const delta = new Float32Array(d);
      delta[0] = bounds.clipNorm;
      addInto(sum, quantizeInput(delta, 1, bounds, rng));
    }
    const { sum: total, totalWeight } = dequantizeSum(sum, 10, bounds);
    expect(totalWeight).toBe(10);
    const std = (noise.noiseMultiplier * l2 * Math.sqrt(10 / noise.minInputs) * bounds.clipNorm) / levels; // in update units
    expect(Math.abs(total[0]! - 10 * bounds.clipNorm)).toBeLessThan(6 * std);
    // the rest of the entries are pure noise: their spread is the noise's
    let sq = 0;
    for (let i = 1; i < d; i++) sq += total[i]! ** 2;
    const measured = Math.sqrt(sq / (d - 1));
    expect(measured / std).toBeGreaterThan(0.95);
    expect(measured / std).toBeLessThan(1.05);
  });

  it("lets the server tell a sum of clipped, noised inputs from one that a device's oversized input broke", () => {
    const d = noise.parameters;
    const rng = createRng(9);
    const l2 = (v: Float32Array) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));
    const honest = new Uint32Array(d + 1);
    for (let i = 0; i < bounds.maxInputs; i++) {
      const delta = Float32Array.from({ length: d }, () => rng() - 0.5);
      const norm = l2(delta);
      addInto(honest, quantizeInput(delta.map((x) => (x / norm) * bounds.clipNorm), 1, bounds, rng));
    }
    const limit = noisySumBound(bounds, bounds.maxInputs);
    expect(l2(dequantizeSum(honest, 10, bounds).sum)).toBeLessThan(limit);
    // a selected device that skips clipping: 2²⁰ levels in every entry (the noise hides anything much
    // smaller: without range proofs, the check catches gross violations only)
    const hostile = Uint32Array.from(honest);
    const raw = new Uint32Array(d + 1);
    raw.fill(1 << 20);
    raw[d] = 0;
    addInto(hostile, raw);
    expect(l2(dequantizeSum(hostile, 10, bounds).sum)).toBeGreaterThan(limit);
  });
});

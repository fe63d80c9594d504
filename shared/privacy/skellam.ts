/**
 * Distributed differential privacy under secure aggregation: every device adds its share of the
 * noise to its own quantized update before masking, so that no party — the server included — ever
 * sees a sum without noise. The noise is Skellam (the difference of two Poisson variables; Agarwal,
 * Kairouz, Liu 2021): integer, so it goes through the 32-bit masked sum exactly, and closed under
 * summation, so m devices each adding Skellam of variance σ²/m give the sum Skellam of variance σ².
 *
 * The round's integer budget: each of n inputs holds a coordinate in [−L, L] (L levels for the clip
 * bound S), the sum's noise has standard deviation z·Δ₂·√(n/m) when n devices (of the m it is
 * calibrated for) add theirs, and n·L plus 20 such deviations must fit below 2³¹ so that the sum
 * cannot wrap (a Skellam variable passes 20σ with probability below e^−190). L is at most 2¹⁶:
 * rounding adds at most √d to the sensitivity, under 2 % for the paper's CNN, and the quantization
 * error stays far below the noise.
 */
import type { SkellamSensitivity } from './accountant.ts';
import { cryptoUniforms } from './noise.ts';

/** What a round's plan tells its devices about distributed noise. */
export interface DistributedNoise {
  /** z: the sum's noise has standard deviation z·Δ₂ (Δ₂: the L2 sensitivity in quantized units) */
  noiseMultiplier: number;
  /** the fewest inputs the round sums (it is not released with fewer): each device adds 1/minInputs of the variance */
  minInputs: number;
  /** entries of the update (the model's parameters) */
  parameters: number;
}

export const SKELLAM_MAX_LEVELS = 2 ** 16;
const TAIL = 20;
const INT_LIMIT = 2 ** 31 - 1;

/** Quantized levels for the clip bound, with room for `inputs` devices' values and the noise's tail in a 32-bit sum. */
export function skellamLevels(inputs: number, noise: DistributedNoise): number {
  const spread = TAIL * noise.noiseMultiplier * Math.sqrt(Math.max(1, inputs / noise.minInputs));
  return Math.min(SKELLAM_MAX_LEVELS, Math.floor((INT_LIMIT - inputs - spread * (Math.sqrt(noise.parameters) + 1)) / (inputs + spread)));
}

/**
 * The L2 and L1 norm bounds of one device's integer vector: ‖Δ‖ ≤ S scales to L (with float slack),
 * stochastic rounding moves each of d entries by less than 1 (‖e‖ < √d), and the weight word is 1.
 * An integer vector's L1 norm is at most its squared L2 norm, and at most √(d+1) times it.
 */
export function skellamSensitivity(levels: number, parameters: number): SkellamSensitivity {
  const l2 = levels * (1 + 1e-6) + Math.sqrt(parameters) + 1;
  return { l2, l1: Math.min(l2 * l2, Math.sqrt(parameters + 1) * l2) };
}

/** Each device's Skellam(λ, λ): variance 2λ = (z·Δ₂)² / minInputs. */
export const skellamLambda = (noise: DistributedNoise, levels: number): number => (noise.noiseMultiplier * skellamSensitivity(levels, noise.parameters).l2) ** 2 / (2 * noise.minInputs);

/** ln Γ(x) for x ≥ 1 by Stirling's series (exact enough for Poisson acceptance tests; as numpy's random_loggam). */
const STIRLING = [8.333333333333333e-2, -2.777777777777778e-3, 7.936507936507937e-4, -5.952380952380952e-4, 8.417508417508418e-4, -1.917526917526918e-3, 6.41025641025641e-3, -2.955065359477124e-2, 1.796443723688307e-1, -1.3924322169059];
function logGamma(x: number): number {
  if (x === 1 || x === 2) return 0;
  const n = x < 7 ? Math.floor(7 - x) : 0;
  let x0 = x + n;
  const x2 = 1 / (x0 * x0);
  let series = STIRLING[9]!;
  for (let k = 8; k >= 0; k--) series = series * x2 + STIRLING[k]!;
  let gl = series / x0 + 0.5 * Math.log(2 * Math.PI) + (x0 - 0.5) * Math.log(x0) - x0;
  for (let k = 1; k <= n; k++) {
    gl -= Math.log(x0 - 1);
    x0 -= 1;
  }
  return gl;
}

/**
 * A Poisson(λ) draw from uniforms in (0, 1]: by multiplication below λ = 10, else by Hörmann's
 * transformed rejection with squeeze (PTRS, 1993), constant time for any λ.
 */
export function poisson(lambda: number, uniform: () => number): number {
  if (!(lambda >= 0) || !Number.isFinite(lambda)) throw new RangeError(`noise: a Poisson rate must be a finite number ≥ 0, got ${lambda}`);
  if (lambda === 0) return 0;
  if (lambda < 10) {
    const limit = Math.exp(-lambda);
    let k = 0;
    for (let p = uniform(); p > limit; p *= uniform()) k++;
    return k;
  }
  const slam = Math.sqrt(lambda);
  const loglam = Math.log(lambda);
  const b = 0.931 + 2.53 * slam;
  const a = -0.059 + 0.02483 * b;
  const invAlpha = 1.1239 + 1.1328 / (b - 3.4);
  const vr = 0.9277 - 3.6224 / (b - 2);
  for (;;) {
    const u = uniform() - 0.5;
    const v = uniform();
    const us = 0.5 - Math.abs(u);
    const k = Math.floor(((2 * a) / us + b) * u + lambda + 0.43);
    if (us >= 0.07 && v <= vr) return k;
    if (k < 0 || (us < 0.013 && v > us)) continue;
    if (Math.log(v) + Math.log(invAlpha) - Math.log(a / (us * us) + b) <= -lambda + k * loglam - logGamma(k + 1)) return k;
  }
}

/** Adds Skellam(λ, λ) noise (Poisson(λ) − Poisson(λ), from the cryptographic random source) to the first `count` words, mod 2³². */
export function addSkellamNoise(words: Uint32Array, count: number, lambda: number): void {
  if (count > words.length) throw new RangeError(`noise: ${count} entries asked of a vector of ${words.length}`);
  const uniform = cryptoUniforms();
  for (let i = 0; i < count; i++) words[i] = (words[i]! + poisson(lambda, uniform) - poisson(lambda, uniform)) >>> 0;
}

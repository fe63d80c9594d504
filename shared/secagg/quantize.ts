/**
 * Fixed-point arithmetic for masked sums. A device's input is its clipped update scaled by its
 * weight w (examples, capped by maxExamplesPerDevice), quantized with stochastic rounding to signed
 * integers held mod 2^32, followed by w itself. The scale is chosen from the round's bounds so that
 * the sum of every device's input cannot wrap: each coordinate of w·Δ lies in [−B, B] with
 * B = maxWeight · clipNorm (‖Δ‖ ≤ clipNorm bounds every coordinate), so with at most K inputs
 * K · (B · scale + 1) < 2^31.
 *
 * Under distributed DP (privacy/skellam.ts) every weight is 1, the levels leave room for the noise,
 * and each device adds its Skellam share to its quantized input before masking.
 */
import { addSkellamNoise, skellamLambda, skellamLevels, type DistributedNoise } from '../privacy/skellam.ts';
import type { Rng } from '../rng.ts';

const INT_LIMIT = 2 ** 31 - 1;
/** below this many levels per device coordinate (12 bits) the quantization error is not worth it */
const MIN_LEVELS = 2 ** 12;

export interface QuantBounds {
  /** the most inputs a round can sum (its selected devices) */
  maxInputs: number;
  /** the most a device's update weighs */
  maxWeight: number;
  /** the L2 bound every device clips its update to */
  clipNorm: number;
  /** distributed DP: the noise the devices add (maxWeight is then 1) */
  noise?: DistributedNoise;
}

/** Why these bounds cannot be summed without wrapping or losing precision, or undefined when they can. */
export function quantProblem(b: QuantBounds): string | undefined {
  if (!(b.clipNorm > 0)) return 'secure aggregation needs clipNorm > 0: it bounds every value a device can add to the masked sum';
  if (b.noise && b.maxWeight !== 1) return 'under distributed DP every device weighs 1';
  if (b.noise && !(b.noise.minInputs >= 1 && b.noise.minInputs <= b.maxInputs)) return `distributed DP calibrated for ${b.noise.minInputs} inputs in a round of at most ${b.maxInputs}`;
  if (b.maxInputs * b.maxWeight > INT_LIMIT) return `${b.maxInputs} devices × ${b.maxWeight} examples each would wrap the 32-bit sum of weights`;
  if (levels(b) < MIN_LEVELS) return `${b.maxInputs} devices in a round leave fewer than 12 bits per value in a 32-bit masked sum`;
  return undefined;
}

/** integer levels for one device's coordinate in [−B, B] */
const levels = (b: QuantBounds): number => (b.noise ? skellamLevels(b.maxInputs, b.noise) : Math.floor((INT_LIMIT - b.maxInputs) / b.maxInputs));

/** The levels the clip bound maps to (what distributed DP's sensitivity follows from). */
export function quantLevels(b: QuantBounds): number {
  const problem = quantProblem(b);
  if (problem) throw new Error(problem);
  return levels(b);
}

/** quantized units per unit of w·Δ */
export const quantScale = (b: QuantBounds): number => quantLevels(b) / (b.maxWeight * b.clipNorm);

/**
 * The input vector: round(w · Δ · scale) stochastically (unbiased; the error is below one level),
 * as uint32 two's complement, then w. Δ must already be clipped to clipNorm; values beyond the
 * bound are clamped so that no input can wrap the sum. Under distributed DP the device's share of
 * the Skellam noise is added last (the levels leave room for it).
 */
export function quantizeInput(delta: Float32Array, weight: number, b: QuantBounds, rng: Rng): Uint32Array {
  if (!Number.isInteger(weight) || weight < 1 || weight > b.maxWeight) throw new Error(`secure aggregation: weight ${weight} is outside 1..${b.maxWeight}`);
  const scale = quantScale(b);
  const limit = levels(b);
  const out = new Uint32Array(delta.length + 1);
  for (let i = 0; i < delta.length; i++) {
    const x = delta[i]! * weight * scale;
    const floor = Math.floor(x);
    const q = Math.max(-limit, Math.min(limit, floor + (rng() < x - floor ? 1 : 0)));
    out[i] = q >>> 0;
  }
  out[delta.length] = weight;
  if (b.noise) addSkellamNoise(out, delta.length, skellamLambda(b.noise, limit));
  return out;
}

/** a += b mod 2^32 (or a −= b) */
export function addInto(a: Uint32Array, b: Uint32Array, sign: 1 | -1 = 1): void {
  if (a.length !== b.length) throw new Error(`secure aggregation: vectors of ${a.length} and ${b.length} words`);
  if (sign === 1) for (let i = 0; i < a.length; i++) a[i] = (a[i]! + b[i]!) >>> 0;
  else for (let i = 0; i < a.length; i++) a[i] = (a[i]! - b[i]!) >>> 0;
}

/**
 * The unmasked sum back to FedAvg's weighted mean Δ̄ = Σ w·Δ / Σ w. Its sum of weights must lie in
 * [inputs, inputs · maxWeight], else some input broke the bounds (or the unmasking went wrong).
 */
export function dequantizeMean(sum: Uint32Array, inputs: number, b: QuantBounds): { mean: Float32Array; totalWeight: number } {
  const totalWeight = sum[sum.length - 1]!;
  return { mean: dequantizeSum(sum, inputs, b, totalWeight).sum, totalWeight };
}

/** The unmasked sum back to Σ w·Δ / `over` (noisy under distributed DP), its sum of weights checked as for the mean. */
export function dequantizeSum(sum: Uint32Array, inputs: number, b: QuantBounds, over = 1): { sum: Float32Array; totalWeight: number } {
  const totalWeight = sum[sum.length - 1]!;
  if (totalWeight < inputs || totalWeight > inputs * b.maxWeight) throw new Error(`secure aggregation: the recovered sum of weights ${totalWeight} is outside what ${inputs} devices can hold (${inputs}..${inputs * b.maxWeight})`);
  const scale = quantScale(b);
  const out = new Float32Array(sum.length - 1);
  for (let i = 0; i < out.length; i++) out[i] = (sum[i]! | 0) / scale / over;
  return { sum: out, totalWeight };
}

/** The most the mean can differ from the exact FedAvg mean per coordinate: one level per input. */
export const quantErrorBound = (b: QuantBounds, inputs: number, totalWeight: number): number => inputs / (quantScale(b) * totalWeight);

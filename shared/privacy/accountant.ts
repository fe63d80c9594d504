/**
 * The privacy accountant of DP-FedAvg: Rényi differential privacy of the sampled Gaussian mechanism
 * (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism"),
 * composed over rounds by adding RDP, and converted to (ε, δ) with the conversion of Balle et al.
 * 2020 ("Hypothesis testing interpretations and Rényi differential privacy", Theorem 21), which is
 * tighter than the classic ε = RDP − ln δ / (α − 1). Everything in log space, with a log-erfc that
 * stays finite far into the tails, so large orders and small sampling rates do not overflow.
 *
 * The mechanism accounted for: each round, every device is in the round independently with
 * probability q (Poisson sampling), its update is clipped to L2 norm S, and the sum of the round's
 * updates gets Gaussian noise of standard deviation z·S. Or, under secure aggregation, the sum of
 * integer vectors gets Skellam noise from the devices (Agarwal, Kairouz, Liu 2021): its RDP at
 * integer orders, amplified by Poisson sampling with the general bound of Zhu & Wang 2019.
 */

/** Opacus's orders: 1.1 … 10.9 in steps of 0.1, then 12 … 63, and 128, 256, 512. */
export const DEFAULT_ORDERS: readonly number[] = [...Array.from({ length: 99 }, (_, x) => 1 + (x + 1) / 10), ...Array.from({ length: 52 }, (_, x) => 12 + x), 128, 256, 512];

export function logAdd(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  const hi = Math.max(a, b);
  return hi + Math.log1p(Math.exp(Math.min(a, b) - hi));
}

/** log(e^a − e^b), for a ≥ b */
function logSub(a: number, b: number): number {
  if (b === -Infinity) return a;
  if (a < b) throw new RangeError('accountant: log of a negative difference');
  if (a === b) return -Infinity;
  return Math.log(Math.expm1(a - b)) + b;
}

/** erf by its Taylor series: accurate to double precision for |x| < 2.5 */
function erfSeries(x: number): number {
  let term = x;
  let sum = x;
  for (let n = 1; n < 200; n++) {
    term *= (-x * x) / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

/** ln erfc(x) for x ≥ 2: erfc(x) = e^{−x²}/√π · 1/K(x), K the continued fraction x + ½/(x + 1/(x + 3/2/(x + …))) */
function logErfcTail(x: number): number {
  let k = x;
  for (let n = 120; n >= 1; n--) k = x + n / 2 / k;
  return -x * x - 0.5 * Math.log(Math.PI) - Math.log(k);
}

/** ln erfc(x), finite for every finite x (erfc(40) ≈ 1e-697 is still ln −1,603.6) */
export function logErfc(x: number): number {
  if (x >= 2) return logErfcTail(x);
  if (x >= 0) return Math.log1p(-erfSeries(x));
  if (x > -2) return Math.log1p(erfSeries(-x));
  return Math.log(2 - Math.exp(logErfcTail(-x)));
}

/** ln A_α for an integer order (Mironov et al. 2019, section 3.3) */
function logAInt(q: number, sigma: number, alpha: number): number {
  let logA = -Infinity;
  let logBinom = 0; // ln C(α, i)
  for (let i = 0; i <= alpha; i++) {
    if (i > 0) logBinom += Math.log(alpha - i + 1) - Math.log(i);
    const s = logBinom + i * Math.log(q) + (alpha - i) * Math.log1p(-q) + (i * i - i) / (2 * sigma * sigma);
    logA = logAdd(logA, s);
  }
  return logA;
}

/** ln A_α for a fractional order (Mironov et al. 2019, section 3.3), summed until its terms vanish */
function logAFrac(q: number, sigma: number, alpha: number): number {
  let logA0 = -Infinity;
  let logA1 = -Infinity;
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  let logAbsBinom = 0; // ln |C(α, i)|
  let sign = 1;
  for (let i = 0; ; i++) {
    if (i > 0) {
      const f = alpha - i + 1;
      logAbsBinom += Math.log(Math.abs(f)) - Math.log(i);
      if (f < 0) sign = -sign;
    }
    const j = alpha - i;
    const logT0 = logAbsBinom + i * Math.log(q) + j * Math.log1p(-q);
    const logT1 = logAbsBinom + j * Math.log(q) + i * Math.log1p(-q);
    const logE0 = Math.log(0.5) + logErfc((i - z0) / (Math.SQRT2 * sigma));
    const logE1 = Math.log(0.5) + logErfc((z0 - j) / (Math.SQRT2 * sigma));
    const logS0 = logT0 + (i * i - i) / (2 * sigma * sigma) + logE0;
    const logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1;
    if (sign > 0) {
      logA0 = logAdd(logA0, logS0);
      logA1 = logAdd(logA1, logS1);
    } else {
      logA0 = logSub(logA0, logS0);
      logA1 = logSub(logA1, logS1);
    }
    if (Math.max(logS0, logS1) < -30 || i > 10_000) break;
  }
  return logAdd(logA0, logA1);
}

/** RDP of one round of the sampled Gaussian mechanism at order α (rate q, noise multiplier z). */
export function rdpOfRound(q: number, noiseMultiplier: number, alpha: number): number {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`accountant: the sampling rate must be in [0, 1], got ${q}`);
  if (!(noiseMultiplier > 0)) throw new RangeError(`accountant: the noise multiplier must be > 0, got ${noiseMultiplier}`);
  if (!(alpha > 1)) throw new RangeError(`accountant: orders must be > 1, got ${alpha}`);
  if (q === 0) return 0;
  if (q === 1) return alpha / (2 * noiseMultiplier * noiseMultiplier);
  const logA = Number.isInteger(alpha) ? logAInt(q, noiseMultiplier, alpha) : logAFrac(q, noiseMultiplier, alpha);
  return logA / (alpha - 1);
}

export interface PrivacySpent {
  epsilon: number;
  delta: number;
  /** the order at which ε is smallest */
  order: number;
}

/** (ε, δ) after `rounds` rounds, at the best of `orders`; `classic` uses ε = RDP − ln δ / (α − 1). */
export function epsilonAfter(q: number, noiseMultiplier: number, rounds: number, delta: number, options: { classic?: boolean } = {}): PrivacySpent {
  if (!(rounds >= 0)) throw new RangeError(`accountant: rounds must be ≥ 0, got ${rounds}`);
  return epsilonOfRounds(rounds > 0 ? [{ q, rounds }] : [], noiseMultiplier, delta, options);
}

/**
 * What the Skellam mechanism's accounting needs beyond z: the L2 and L1 sensitivity of the integer
 * vector one device adds to the sum (distributed.ts); its noise has variance (z·l2)².
 */
export interface SkellamSensitivity {
  l2: number;
  l1: number;
}

/**
 * RDP at integer order α of Skellam noise of variance σ² = (z·Δ₂)² on a sum of integer vectors of
 * L2 sensitivity Δ₂ and L1 sensitivity Δ₁ (Agarwal, Kairouz, Liu 2021, "The Skellam Mechanism for
 * Differentially Private Federated Learning", Theorem 3.5): the Gaussian's α/(2z²) plus a term that
 * vanishes as Δ₂ grows.
 */
export function skellamRdp(alpha: number, noiseMultiplier: number, s: SkellamSensitivity): number {
  const variance = (noiseMultiplier * s.l2) ** 2;
  return (alpha * s.l2 * s.l2) / (2 * variance) + Math.min(((2 * alpha - 1) * s.l2 * s.l2 + 6 * s.l1) / (4 * variance * variance), (3 * s.l1) / (2 * variance));
}

/**
 * RDP at integer order α of a mechanism run on a Poisson sample of rate q, from its RDP `eps` at
 * orders 2..α (Zhu & Wang 2019, "Poisson Subsampled Rényi Differential Privacy", the general upper
 * bound, as TensorFlow Federated's distributed-DP accounting uses it); never more than unsampled.
 */
export function subsampledRdp(q: number, alpha: number, eps: (order: number) => number): number {
  if (!Number.isInteger(alpha) || alpha < 2) throw new RangeError(`accountant: the subsampling bound needs an integer order ≥ 2, got ${alpha}`);
  if (q === 0) return 0;
  if (q === 1) return eps(alpha);
  const lq = Math.log(q);
  const l1q = Math.log1p(-q);
  let logSum = (alpha - 1) * l1q + Math.log(alpha * q - q + 1);
  let logBinom = Math.log(alpha) + Math.log(alpha - 1) - Math.LN2; // ln C(α, 2)
  logSum = logAdd(logSum, logBinom + 2 * lq + (alpha - 2) * l1q + eps(2));
  for (let l = 3; l <= alpha; l++) {
    logBinom += Math.log(alpha - l + 1) - Math.log(l);
    logSum = logAdd(logSum, Math.log(3) + logBinom + (alpha - l) * l1q + l * lq + (l - 1) * eps(l));
  }
  return Math.min(logSum / (alpha - 1), eps(alpha));
}

/** RDP of one round of the sampled Skellam mechanism at order α: integer orders only (∞ at the others, which the conversion skips). */
export function skellamRdpOfRound(q: number, noiseMultiplier: number, s: SkellamSensitivity, alpha: number): number {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`accountant: the sampling rate must be in [0, 1], got ${q}`);
  if (!(noiseMultiplier > 0)) throw new RangeError(`accountant: the noise multiplier must be > 0, got ${noiseMultiplier}`);
  if (!(s.l2 >= 1 && s.l1 >= s.l2)) throw new RangeError(`accountant: integer sensitivities need l1 ≥ l2 ≥ 1, got l2 = ${s.l2}, l1 = ${s.l1}`);
  if (!Number.isInteger(alpha)) return Infinity;
  return subsampledRdp(q, alpha, (order) => skellamRdp(order, noiseMultiplier, s));
}

/** The RDP of one round at every order of `DEFAULT_ORDERS` (remembered: a run's rate repeats round after round). */
const curves = new Map<string, readonly number[]>();
export function rdpCurve(q: number, noiseMultiplier: number, skellam?: SkellamSensitivity): readonly number[] {
  const key = `${q}|${noiseMultiplier}|${skellam ? `${skellam.l2}|${skellam.l1}` : 'gaussian'}`;
  let curve = curves.get(key);
  if (!curve) {
    if (curves.size > 1000) curves.clear();
    curve = DEFAULT_ORDERS.map((alpha) => (skellam ? skellamRdpOfRound(q, noiseMultiplier, skellam, alpha) : rdpOfRound(q, noiseMultiplier, alpha)));
    curves.set(key, curve);
  }
  return curve;
}

/** RDP composes by adding: a run's curve after `rounds` more rounds at rate q (Gaussian noise, or Skellam noise of these sensitivities). */
export const composeRdp = (curve: readonly number[] | undefined, q: number, noiseMultiplier: number, rounds = 1, skellam?: SkellamSensitivity): number[] =>
  rdpCurve(q, noiseMultiplier, skellam).map((r, i) => (curve?.[i] ?? 0) + rounds * r);

/** (ε, δ) of an RDP curve over `DEFAULT_ORDERS` (Balle et al. 2020; `classic`: ε = RDP − ln δ / (α − 1)). */
export function epsilonFromRdp(curve: readonly number[] | undefined, delta: number, classic = false): PrivacySpent {
  if (!(delta > 0 && delta < 1)) throw new RangeError(`accountant: δ must be in (0, 1), got ${delta}`);
  if (!curve || curve.every((r) => r === 0)) return { epsilon: 0, delta, order: Number.NaN }; // nothing was released
  let best: PrivacySpent = { epsilon: Infinity, delta, order: Number.NaN };
  DEFAULT_ORDERS.forEach((alpha, i) => {
    const rdp = curve[i]!;
    const epsilon = classic ? rdp - Math.log(delta) / (alpha - 1) : rdp - (Math.log(delta) + Math.log(alpha)) / (alpha - 1) + Math.log((alpha - 1) / alpha);
    if (Number.isFinite(epsilon) && epsilon < best.epsilon) best = { epsilon: Math.max(0, epsilon), delta, order: alpha };
  });
  return best;
}

/**
 * (ε, δ) after rounds with different sampling rates (RDP composes by adding): a federation's rate
 * is its expected round size over the devices present, which changes as devices come and go.
 */
export function epsilonOfRounds(rounds: readonly { q: number; rounds: number; skellam?: SkellamSensitivity }[], noiseMultiplier: number, delta: number, options: { classic?: boolean } = {}): PrivacySpent {
  let curve: number[] | undefined;
  for (const r of rounds) if (r.rounds > 0 && r.q > 0) curve = composeRdp(curve, r.q, noiseMultiplier, r.rounds, r.skellam);
  return epsilonFromRdp(curve, delta, options.classic);
}

/** The most rounds that keep ε within `budget` (a run stops before the round that would pass it). */
export function roundsWithin(budget: number, q: number, noiseMultiplier: number, delta: number): number {
  let lo = 0;
  let hi = 1;
  while (epsilonAfter(q, noiseMultiplier, hi, delta).epsilon <= budget) {
    lo = hi;
    hi *= 2;
    if (hi > 1e9) return Infinity;
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (epsilonAfter(q, noiseMultiplier, mid, delta).epsilon <= budget) lo = mid;
    else hi = mid;
  }
  return lo;
}

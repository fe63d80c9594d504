/**
 * Fairness across devices: how the worst-served devices do, not only the mean (the metrics of Li
 * et al. 2020, "Fair Resource Allocation in Federated Learning"), and q-FFL, their strategy that
 * weighs devices with a higher loss more. Pure math, no TF.js.
 */

export interface Fairness {
  /** devices the figures are over */
  devices: number;
  mean: number;
  /** the mean of the worst ⌈10 %⌉ of the devices (at least one) */
  worst10: number;
  /** the mean of the best ⌈10 %⌉ */
  best10: number;
  /** the population variance */
  variance: number;
}

/** The spread of per-device accuracies; null for none. */
export function fairnessOf(accuracies: readonly number[]): Fairness | null {
  const n = accuracies.length;
  if (n === 0) return null;
  const sorted = [...accuracies].sort((a, b) => a - b);
  const tail = Math.max(1, Math.ceil(n * 0.1));
  const avg = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const mean = avg(sorted);
  return { devices: n, mean, worst10: avg(sorted.slice(0, tail)), best10: avg(sorted.slice(n - tail)), variance: avg(sorted.map((a) => (a - mean) ** 2)) };
}

/**
 * A device's loss as q-FFL uses it, bounded to what the devices' cross-entropy can be (its
 * probabilities are clipped at 1e-7, so at most −ln 1e-7 ≈ 16.12) and kept off 0: a device claims
 * it, and cannot claim more weight than the worst possible loss gives.
 */
export const QFFL_MAX_LOSS = -Math.log(1e-7);
const QFFL_MIN_LOSS = 1e-6;
export const qfflLoss = (claimed: number): number => (Number.isFinite(claimed) ? Math.min(QFFL_MAX_LOSS, Math.max(QFFL_MIN_LOSS, claimed)) : QFFL_MAX_LOSS);

/** A device's weight in q-FFL's sum: F^q. */
export const qfflWeight = (loss: number, q: number): number => qfflLoss(loss) ** q;

/**
 * q-FFL's step (Li et al. 2020, ICLR, Algorithm 2 with Δw_k = L(w − w̄_k) = −L·Δ_k):
 *
 *   w ← w − Σ F_k^q Δw_k / Σ h_k,   h_k = q F_k^(q−1) ‖Δw_k‖² + L F_k^q,   L = 1/η
 *
 * = w + s · (Σ F_k^q Δ_k / Σ F_k^q), the F^q-weighted mean of the updates scaled by
 * s = L Σ F_k^q / Σ h_k. Given each counted update's loss and L2 norm, this returns s
 * (q = 0: s = 1, FedAvg with equal weights).
 */
export function qfflScale(updates: readonly { loss: number; norm: number }[], q: number, learningRate: number): number {
  if (updates.length === 0) return 1;
  const L = 1 / learningRate;
  let weights = 0;
  let h = 0;
  for (const u of updates) {
    const f = qfflLoss(u.loss);
    const fq = f ** q;
    weights += fq;
    h += q * f ** (q - 1) * L * L * u.norm * u.norm + L * fq;
  }
  return (L * weights) / h;
}

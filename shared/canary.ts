/**
 * Canary promotion's test (as KFServing's canary splits traffic, here a share of devices): the canary
 * devices evaluate the candidate and the live model on the same held-out examples and report, per
 * device, only how many examples each got right that the other got wrong — b (candidate right, live
 * wrong) and c (live right, candidate wrong) — with their example count n. Pooled over the devices:
 *
 *   d  = (b − c) / n                       the candidate's accuracy minus the live model's
 *   se = √(b + c − (b − c)²/n) / n         the standard error of a difference of paired proportions
 *   promote when d − z₁₋α·se > −margin      (a one-sided Wald test of non-inferiority at level α)
 *
 * i.e. when the lower confidence bound of the difference is above −margin: the candidate is not
 * worse than the live model by the margin. Pooling treats the examples as independent, which
 * devices with different data are not; the device-level spread is reported beside it. Pure.
 */

export interface PairedCounts {
  /** held-out examples both models were evaluated on */
  n: number;
  /** the candidate right and the live model wrong */
  b: number;
  /** the live model right and the candidate wrong */
  c: number;
}

export interface NonInferiority {
  n: number;
  /** candidate accuracy − live accuracy */
  difference: number;
  standardError: number;
  /** the one-sided lower confidence bound of the difference at level α */
  lowerBound: number;
  margin: number;
  alpha: number;
  decision: 'promote' | 'roll back';
}

/** Counts of disagreement between two models' predictions of the same labelled examples. */
export function pairedCounts(labels: ArrayLike<number>, live: ArrayLike<number>, candidate: ArrayLike<number>): PairedCounts {
  if (live.length !== labels.length || candidate.length !== labels.length) throw new RangeError(`paired counts: ${labels.length} labels, ${live.length} and ${candidate.length} predictions`);
  let b = 0;
  let c = 0;
  for (let i = 0; i < labels.length; i++) {
    const l = live[i] === labels[i];
    const k = candidate[i] === labels[i];
    if (k && !l) b++;
    else if (l && !k) c++;
  }
  return { n: labels.length, b, c };
}

/** The pooled test over the canary devices' counts. */
export function nonInferiority(counts: readonly PairedCounts[], margin: number, alpha: number): NonInferiority {
  if (!(margin >= 0 && margin < 1) || !(alpha > 0 && alpha < 0.5)) throw new RangeError(`canary test: margin must be in [0, 1) and alpha in (0, 0.5), got ${margin} and ${alpha}`);
  const n = counts.reduce((a, x) => a + x.n, 0);
  const b = counts.reduce((a, x) => a + x.b, 0);
  const c = counts.reduce((a, x) => a + x.c, 0);
  if (n === 0) return { n, difference: 0, standardError: Number.POSITIVE_INFINITY, lowerBound: Number.NEGATIVE_INFINITY, margin, alpha, decision: 'roll back' };
  const difference = (b - c) / n;
  const standardError = Math.sqrt(Math.max(0, b + c - (b - c) ** 2 / n)) / n;
  const lowerBound = difference - normalQuantile(1 - alpha) * standardError;
  return { n, difference, standardError, lowerBound, margin, alpha, decision: lowerBound > -margin ? 'promote' : 'roll back' };
}

/** The standard normal's quantile (Acklam's rational approximation, relative error < 1.2e-9). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`normal quantile of ${p}`);
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
  const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const low = 0.02425;
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  }
  if (p > 1 - low) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) / (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
}

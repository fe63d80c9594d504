/**
 * Defences against hostile updates, framework-free: an L2 bound on each update, and robust
 * coordinate-wise aggregation (median, trimmed mean) that one scaled or sign-flipped update cannot
 * drag far (Yin et al. 2018, "Byzantine-Robust Distributed Learning"). Unlike FedAvg's running
 * sum, these need every update of the round at once: memory O(model × updates).
 */

export function l2Norm(values: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += (values[i] as number) * (values[i] as number);
  return Math.sqrt(sum);
}

/** Δ scaled down so that ‖Δ‖₂ ≤ maxNorm (unchanged when already within, or when maxNorm is 0 = off). */
export function clipToNorm(delta: Float32Array, maxNorm: number): { delta: Float32Array; norm: number; clipped: boolean } {
  const norm = l2Norm(delta);
  if (!(maxNorm > 0) || norm <= maxNorm) return { delta, norm, clipped: false };
  const scale = maxNorm / norm;
  const out = new Float32Array(delta.length);
  for (let i = 0; i < out.length; i++) out[i] = (delta[i] as number) * scale;
  return { delta: out, norm, clipped: true };
}

function byCoordinate(updates: readonly Float32Array[], reduce: (column: Float64Array) => number): Float32Array {
  const k = updates.length;
  if (k === 0) throw new RangeError('robust aggregation: no updates');
  const size = (updates[0] as Float32Array).length;
  for (const u of updates) if (u.length !== size) throw new RangeError(`robust aggregation: update has ${u.length} values, expected ${size}`);
  const out = new Float32Array(size);
  const column = new Float64Array(k);
  for (let i = 0; i < size; i++) {
    for (let j = 0; j < k; j++) column[j] = (updates[j] as Float32Array)[i] as number;
    column.sort();
    out[i] = reduce(column);
  }
  return out;
}

/** The coordinate-wise median (the mean of the two middle values for an even count). */
export function coordinateMedian(updates: readonly Float32Array[]): Float32Array {
  return byCoordinate(updates, (c) => {
    const m = c.length >> 1;
    return c.length % 2 ? (c[m] as number) : ((c[m - 1] as number) + (c[m] as number)) / 2;
  });
}

/** The coordinate-wise mean after dropping the ⌊β·k⌋ smallest and largest values (β < 0.5). */
export function trimmedMean(updates: readonly Float32Array[], beta: number): Float32Array {
  if (!(beta >= 0 && beta < 0.5)) throw new RangeError(`trimmed mean: the trimmed fraction must be in [0, 0.5), got ${beta}`);
  const drop = Math.floor(beta * updates.length);
  return byCoordinate(updates, (c) => {
    let sum = 0;
    for (let j = drop; j < c.length - drop; j++) sum += c[j] as number;
    return sum / (c.length - 2 * drop);
  });
}

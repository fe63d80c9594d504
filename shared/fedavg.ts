/**
 * FedAvg (McMahan et al. 2017, Algorithm 1) over flat Float32Array weights, framework-free.
 * A device sends Δ_k = w_local − w_global with its example count n_k; the server computes
 * w ← w + Σ n_k Δ_k / Σ n_k. The running sum keeps memory O(model), whatever the number of clients.
 */
/** A share of a round's FedAvg sum: Σ n_k Δ_k over some updates, Σ n_k, and how many. */
export interface PartialSum {
  sum: Float64Array;
  weight: number;
  updates: number;
}

export class WeightedDeltaSum {
  private readonly sum: Float64Array;
  private weight = 0;
  private updates = 0;

  constructor(readonly size: number) {
    this.sum = new Float64Array(size);
  }

  get count(): number {
    return this.updates;
  }

  get totalWeight(): number {
    return this.weight;
  }

  add(delta: Float32Array, numExamples: number): void {
    if (delta.length !== this.size) throw new RangeError(`fedavg: update has ${delta.length} values, expected ${this.size}`);
    if (!(numExamples > 0) || !Number.isFinite(numExamples)) throw new RangeError(`fedavg: example count must be a positive number, got ${numExamples}`);
    const sum = this.sum;
    for (let i = 0; i < sum.length; i++) sum[i] = (sum[i] as number) + numExamples * (delta[i] as number);
    this.weight += numExamples;
    this.updates += 1;
  }

  /** The running sum as it stands, to be merged elsewhere (a thread's share of a round's sum). */
  partial(): PartialSum {
    return { sum: this.sum, weight: this.weight, updates: this.updates };
  }

  /** Adds another running sum of the same size (O(model), whatever the updates in it). */
  merge(p: PartialSum): void {
    if (p.sum.length !== this.size) throw new RangeError(`fedavg: partial sum has ${p.sum.length} values, expected ${this.size}`);
    if (p.updates === 0) return;
    const sum = this.sum;
    for (let i = 0; i < sum.length; i++) sum[i] = (sum[i] as number) + (p.sum[i] as number);
    this.weight += p.weight;
    this.updates += p.updates;
  }

  /** Σ n_k Δ_k / Σ n_k, or undefined when nothing was added. */
  mean(): Float32Array | undefined {
    if (this.updates === 0) return undefined;
    const out = new Float32Array(this.size);
    const inv = 1 / this.weight;
    for (let i = 0; i < out.length; i++) out[i] = (this.sum[i] as number) * inv;
    return out;
  }
}

/** w + Δ, as a new array. */
export function applyDelta(global: Float32Array, delta: Float32Array): Float32Array {
  if (global.length !== delta.length) throw new RangeError(`fedavg: delta has ${delta.length} values, model has ${global.length}`);
  const out = new Float32Array(global.length);
  for (let i = 0; i < out.length; i++) out[i] = (global[i] as number) + (delta[i] as number);
  return out;
}

/** w_local − w_global, as a new array. */
export function subtract(local: Float32Array, global: Float32Array): Float32Array {
  if (local.length !== global.length) throw new RangeError(`fedavg: local model has ${local.length} values, global has ${global.length}`);
  const out = new Float32Array(local.length);
  for (let i = 0; i < out.length; i++) out[i] = (local[i] as number) - (global[i] as number);
  return out;
}

/** One-shot FedAvg of a list of updates (the streaming form is WeightedDeltaSum). */
export function fedAvg(global: Float32Array, updates: readonly { delta: Float32Array; numExamples: number }[]): Float32Array {
  const acc = new WeightedDeltaSum(global.length);
  for (const u of updates) acc.add(u.delta, u.numExamples);
  const mean = acc.mean();
  return mean ? applyDelta(global, mean) : global.slice();
}

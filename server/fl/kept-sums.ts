/**
 * Validated updates kept where they were decoded, until the coordinator's verdict: added to their
 * round's running FedAvg sum with the weight it gave them, or dropped. A round's share of the sum
 * leaves once, when the round is aggregated: O(model) per round, whatever the number of updates.
 * Used by each work thread (work-thread.ts) and, without threads, on the event loop (work-pool.ts).
 */
import { WeightedDeltaSum, type PartialSum } from '../../shared/fedavg.ts';

export class KeptSums {
  private readonly kept = new Map<number, Float32Array>();
  private readonly sums = new Map<string, WeightedDeltaSum>();

  keep(id: number, delta: Float32Array): void {
    this.kept.set(id, delta);
  }

  add(of: number, key: string, weight: number): void {
    const delta = this.kept.get(of);
    if (!delta) throw new Error(`no kept update ${of}`);
    this.kept.delete(of);
    let sum = this.sums.get(key);
    if (!sum) this.sums.set(key, (sum = new WeightedDeltaSum(delta.length)));
    sum.add(delta, weight);
  }

  drop(of: number): void {
    this.kept.delete(of);
  }

  /** the round's share of the sum (empty when nothing was added), and forget it */
  take(key: string, size: number): PartialSum {
    const p = this.sums.get(key)?.partial() ?? { sum: new Float64Array(size), weight: 0, updates: 0 };
    this.sums.delete(key);
    return p;
  }

  /** updates kept and neither added nor dropped */
  get outstanding(): number {
    return this.kept.size;
  }
}

/**
 * Personalization on the device, the global model untouched: the device's personal model is the
 * global one fine-tuned on its own data (the round's local training: global + E epochs), and it
 * serves predictions from a mix of the two whose weight is its label distribution's distance to
 * the population's — a device that looks like everyone trusts the global model, one that looks
 * like no one its own.
 *
 *   distance  d = TV(p_device, p_population) = ½ Σ |p_device(c) − p_population(c)|  ∈ [0, 1]
 *   mix       α = d;  prediction = α · p_personal(y | x) + (1 − α) · p_global(y | x)
 *
 * The population's distribution is the sum of the connected devices' label histograms, normalized,
 * published to the devices only when at least POPULATION_MIN_DEVICES devices make it up (so it is
 * never one device's histogram).
 */
import * as tf from '@tensorflow/tfjs';
import { setFlatWeights } from './models.ts';
import type { LocalData } from './train.ts';
import type { FlatWeights } from './weights.ts';

export const POPULATION_MIN_DEVICES = 3;

/** A histogram as a distribution (all zeros: uniform). */
export function normalize(histogram: readonly number[]): number[] {
  const total = histogram.reduce((a, b) => a + Math.max(0, b), 0);
  return total > 0 ? histogram.map((h) => Math.max(0, h) / total) : histogram.map(() => 1 / histogram.length);
}

/** Total variation distance between two label histograms (normalized first), in [0, 1]. */
export function totalVariation(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) throw new RangeError(`label histograms of ${a.length} and ${b.length} classes`);
  const p = normalize(a);
  const q = normalize(b);
  return Math.min(1, 0.5 * p.reduce((s, pi, i) => s + Math.abs(pi - q[i]!), 0));
}

/** The personal model's share of the mix for a device at distance `d` from the population. */
export const mixWeight = (distance: number): number => Math.min(1, Math.max(0, distance));

/** The population's label distribution from the devices' histograms; undefined when fewer than POPULATION_MIN_DEVICES. */
export function populationOf(histograms: readonly (readonly number[])[]): number[] | undefined {
  if (histograms.length < POPULATION_MIN_DEVICES) return undefined;
  const sum = new Array<number>(histograms[0]!.length).fill(0);
  for (const h of histograms) h.forEach((v, i) => (sum[i] = sum[i]! + Math.max(0, v)));
  return normalize(sum);
}

/** Class probabilities of a model with these weights on held-out data, [n × classes] flat. */
async function probabilities(model: tf.LayersModel, weights: FlatWeights, data: LocalData, batch = 100): Promise<Float32Array> {
  setFlatWeights(model, weights);
  const parts: Float32Array[] = [];
  for (let start = 0; start < data.count; start += batch) {
    const n = Math.min(batch, data.count - start);
    const probs = tf.tidy(() => model.predict(data.pixels ? tf.tensor4d(data.pixels.subarray(start * 784, (start + n) * 784), [n, 28, 28, 1]) : data.x.slice([start, 0, 0, 0], [n, 28, 28, 1])) as tf.Tensor);
    parts.push((await probs.data()) as Float32Array);
    probs.dispose();
  }
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The accuracy of α·personal + (1 − α)·global for each α asked (the model's weights are overwritten). */
export async function mixedAccuracies(model: tf.LayersModel, global: FlatWeights, personal: FlatWeights, heldOut: LocalData, alphas: readonly number[]): Promise<number[]> {
  if (heldOut.count === 0) return alphas.map(() => 0);
  const pg = await probabilities(model, global, heldOut);
  const pp = await probabilities(model, personal, heldOut);
  const labels = heldOut.labels ?? ((await heldOut.y.data()) as Int32Array);
  const classes = pg.length / heldOut.count;
  return alphas.map((a) => {
    let correct = 0;
    for (let i = 0; i < heldOut.count; i++) {
      let best = 0;
      let bestP = -1;
      for (let c = 0; c < classes; c++) {
        const p = a * pp[i * classes + c]! + (1 - a) * pg[i * classes + c]!;
        if (p > bestP) {
          bestP = p;
          best = c;
        }
      }
      if (best === labels[i]) correct++;
    }
    return correct / heldOut.count;
  });
}

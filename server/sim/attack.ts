/**
 * The gradient-inversion demonstration (`npm run attack`, and its test): devices train the 2NN with
 * the device's own code (shared/train.ts) from one global model, and the attack of
 * shared/privacy/attack.ts reads device 0's training digits back from three views of a round:
 *   plain   device 0's update, as a server without secure aggregation receives it
 *   secure  the sum of the round's K updates: all a server learns under secure aggregation
 *   dp      that sum with each update clipped to S and N(0, (z·S)²) added (DP-FedAvg's release)
 */
import { gatherSamples } from '../../shared/dataset.ts';
import { candidateInputs, matchOriginals, type Recovery } from '../../shared/privacy/attack.ts';
import { addGaussianNoise } from '../../shared/privacy/noise.ts';
import { buildModel, initialWeights } from '../../shared/models.ts';
import { createRng, shuffleInPlace } from '../../shared/rng.ts';
import { clipToNorm } from '../../shared/robust.ts';
import { computeUpdate, disposeData, toTensors } from '../../shared/train.ts';
import type { MnistSplit } from '../data/mnist.ts';

export interface AttackOptions {
  /** devices in the round (the secure sum's size) */
  devices: number;
  /** training examples per device */
  examples: number;
  batch: number;
  epochs: number;
  lr: number;
  /** DP: clip bound and noise multiplier of the dp view */
  clipNorm: number;
  noiseMultiplier: number;
  seed: number;
}

export interface AttackResult {
  originals: Float32Array[];
  views: { name: 'plain' | 'secure' | 'dp'; recovery: Recovery }[];
}

/** Trains the round's devices and attacks each view of it. */
export async function runAttack(train: MnistSplit, o: AttackOptions): Promise<AttackResult> {
  const order = shuffleInPlace(Array.from({ length: train.count }, (_, i) => i), createRng(o.seed));
  const global = initialWeights('mlp', o.seed);
  const model = buildModel('mlp');
  const deltas: Float32Array[] = [];
  let originals: Float32Array[] = [];
  let specs = global.specs;
  try {
    for (let d = 0; d < o.devices; d++) {
      const samples = gatherSamples(train.images, train.labels, order.slice(d * o.examples, (d + 1) * o.examples));
      const data = toTensors(samples);
      try {
        const u = await computeUpdate(model, global, data, data, { localEpochs: o.epochs, batchSize: o.batch, learningRate: o.lr, seed: o.seed + d });
        deltas.push(u.delta.values);
        specs = u.delta.specs;
        if (d === 0) originals = Array.from({ length: o.examples }, (_, k) => (data.pixels as Float32Array).slice(k * 784, (k + 1) * 784));
      } finally {
        disposeData(data);
      }
    }
  } finally {
    model.dispose();
  }
  // the first dense layer: its kernel [784 × units], then its bias
  const kernelAt = specs.findIndex((s) => s.shape.length === 2 && s.shape[0] === 784);
  if (kernelAt < 0) throw new Error('attack: the model has no dense layer on the 784 pixels');
  const units = specs[kernelAt]!.shape[1]!;
  const offset = specs.slice(0, kernelAt).reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
  const firstLayer = (v: Float32Array) => ({ kernel: v.subarray(offset, offset + 784 * units), bias: v.subarray(offset + 784 * units, offset + 784 * units + units), inputs: 784, units });
  const sum = (vs: Float32Array[]) => vs.reduce((acc, v) => {
    for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + v[i]!;
    return acc;
  }, new Float32Array(vs[0]!.length));
  const noisy = sum(deltas.map((v) => clipToNorm(v, o.clipNorm).delta));
  addGaussianNoise(noisy, o.noiseMultiplier * o.clipNorm);
  const attack = (v: Float32Array) => matchOriginals(originals, candidateInputs(firstLayer(v)));
  return {
    originals,
    views: [
      { name: 'plain', recovery: attack(deltas[0]!) },
      { name: 'secure', recovery: attack(sum(deltas)) },
      { name: 'dp', recovery: attack(noisy) },
    ],
  };
}


/**
 * The model architectures, chosen by name in the run config. Layers carry explicit names so that
 * weight names are stable across processes (they appear in the wire manifest and in model.json).
 */
import * as tf from '@tensorflow/tfjs';
import type { FlatWeights, TensorSpec } from './weights.ts';
import { totalSize } from './weights.ts';
import { createRng } from './rng.ts';

import type { ModelName } from './models-names.ts';
export { MODEL_NAMES, type ModelName } from './models-names.ts';

export const IMAGE_SIZE = 28;
export const NUM_CLASSES = 10;

export function buildModel(name: ModelName): tf.LayersModel {
  const model = tf.sequential({ name });
  switch (name) {
    case 'cnn-small':
      // 5,258 parameters: small enough for ~200 samples/s on software WebGL, ≥ 98 % on MNIST trained centrally.
      model.add(tf.layers.conv2d({ name: 'conv1', inputShape: [IMAGE_SIZE, IMAGE_SIZE, 1], filters: 8, kernelSize: 3, activation: 'relu' }));
      model.add(tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2 }));
      model.add(tf.layers.conv2d({ name: 'conv2', filters: 16, kernelSize: 3, activation: 'relu' }));
      model.add(tf.layers.maxPooling2d({ name: 'pool2', poolSize: 2 }));
      model.add(tf.layers.flatten({ name: 'flatten' }));
      model.add(tf.layers.dense({ name: 'output', units: NUM_CLASSES, activation: 'softmax' }));
      break;
    case 'cnn':
      // McMahan et al. 2017, MNIST CNN: 1,663,370 parameters.
      model.add(tf.layers.conv2d({ name: 'conv1', inputShape: [IMAGE_SIZE, IMAGE_SIZE, 1], filters: 32, kernelSize: 5, padding: 'same', activation: 'relu' }));
      model.add(tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2 }));
      model.add(tf.layers.conv2d({ name: 'conv2', filters: 64, kernelSize: 5, padding: 'same', activation: 'relu' }));
      model.add(tf.layers.maxPooling2d({ name: 'pool2', poolSize: 2 }));
      model.add(tf.layers.flatten({ name: 'flatten' }));
      model.add(tf.layers.dense({ name: 'dense1', units: 512, activation: 'relu' }));
      model.add(tf.layers.dense({ name: 'output', units: NUM_CLASSES, activation: 'softmax' }));
      break;
    case 'mlp':
      // McMahan et al. 2017, "2NN": 199,210 parameters.
      model.add(tf.layers.flatten({ name: 'flatten', inputShape: [IMAGE_SIZE, IMAGE_SIZE, 1] }));
      model.add(tf.layers.dense({ name: 'dense1', units: 200, activation: 'relu' }));
      model.add(tf.layers.dense({ name: 'dense2', units: 200, activation: 'relu' }));
      model.add(tf.layers.dense({ name: 'output', units: NUM_CLASSES, activation: 'softmax' }));
      break;
    default: {
      const never: never = name;
      throw new Error(`unknown model ${String(never)}`);
    }
  }
  return model;
}

export function weightSpecs(model: tf.LayersModel): TensorSpec[] {
  return model.weights.map((w) => ({ name: w.originalName, shape: [...w.shape] as number[] }));
}

/** Reads every weight into one flat Float32Array (manifest order = model.weights order). */
export function getFlatWeights(model: tf.LayersModel): FlatWeights {
  const specs = weightSpecs(model);
  const values = new Float32Array(totalSize(specs));
  let offset = 0;
  for (const w of model.weights) {
    const data = w.read().dataSync() as Float32Array;
    values.set(data, offset);
    offset += data.length;
  }
  return { specs, values };
}

/** Writes flat weights into the model; the specs must match the model's exactly. */
export function setFlatWeights(model: tf.LayersModel, weights: FlatWeights): void {
  const expected = weightSpecs(model);
  if (weights.specs.length !== expected.length || weights.specs.some((s, i) => s.name !== expected[i]?.name || s.shape.join('x') !== expected[i]?.shape.join('x'))) {
    throw new Error(`weights do not match model ${model.name}`);
  }
  let offset = 0;
  const tensors = expected.map((s) => {
    const n = totalSize([s]);
    const t = tf.tensor(weights.values.subarray(offset, offset + n), s.shape, 'float32');
    offset += n;
    return t;
  });
  model.setWeights(tensors);
  tf.dispose(tensors);
}

export function countParams(name: ModelName): number {
  const model = buildModel(name);
  const n = model.countParams();
  model.dispose();
  return n;
}

/**
 * Seeded initial weights (Glorot-uniform kernels, zero biases), so a run's starting model is a
 * function of its seed alone, in Node and in the browser.
 */
export function initialWeights(name: ModelName, seed: number): FlatWeights {
  const model = buildModel(name);
  const specs = weightSpecs(model);
  model.dispose();
  const rng = createRng(seed);
  const values = new Float32Array(totalSize(specs));
  let offset = 0;
  for (const s of specs) {
    const n = totalSize([s]);
    if (s.name.endsWith('/kernel')) {
      const receptive = s.shape.slice(0, -2).reduce((a, b) => a * b, 1);
      const fanIn = (s.shape[s.shape.length - 2] as number) * receptive;
      const fanOut = (s.shape[s.shape.length - 1] as number) * receptive;
      const limit = Math.sqrt(6 / (fanIn + fanOut));
      for (let i = 0; i < n; i++) values[offset + i] = (rng() * 2 - 1) * limit;
    }
    offset += n;
  }
  return { specs, values };
}

/** The model's topology as TF.js's layers-model format wants it in model.json. */
export function modelTopology(name: ModelName): object {
  const model = buildModel(name);
  const topology = model.toJSON(undefined, false) as object;
  model.dispose();
  return topology;
}

/**
 * Multiply-add FLOPs (2 per MAC) of one sample's forward pass through the conv and dense layers
 * (pooling and activations are a rounding error); a training step costs about 3× that: the forward
 * pass, the gradient with respect to the inputs and the gradient with respect to the weights.
 */
export function forwardFlopsPerSample(model: tf.LayersModel): number {
  let flops = 0;
  for (const layer of model.layers) {
    const cls = layer.getClassName();
    if (cls !== 'Conv2D' && cls !== 'Dense') continue;
    const kernel = layer.getWeights()[0];
    if (!kernel) continue;
    const out = layer.outputShape as (number | null)[];
    const outputPositions = out.slice(1, -1).reduce<number>((a, d) => a * (d ?? 1), 1);
    flops += 2 * outputPositions * kernel.size; // kernel.size = kh·kw·Cin·Cout (conv) or in·out (dense)
  }
  return flops;
}

export const trainingFlopsPerSample = (model: tf.LayersModel): number => 3 * forwardFlopsPerSample(model);

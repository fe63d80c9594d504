/**
 * Local training and evaluation with TF.js — one implementation for the browser device and for
 * Node. No DOM: the caller injects how to yield to its event loop.
 */
import * as tf from '@tensorflow/tfjs';
import { subtract } from './fedavg.ts';
import { getFlatWeights, setFlatWeights } from './models.ts';
import type { TrainingPlan } from './protocol.ts';
import { createRng, shuffleInPlace } from './rng.ts';
import { PIXELS, type Samples } from './dataset.ts';
import type { FlatWeights } from './weights.ts';

export interface LocalData {
  x: tf.Tensor4D;
  /** labels as int32 */
  y: tf.Tensor1D;
  count: number;
  /**
   * The same pixels (scaled to 0..1) and labels in JS memory: evaluation builds its batches from
   * these, because slicing a large tensor on the wasm backend reads the whole tensor back each time
   * (`npm run bench`: the server's evaluation of cnn-small on 10,000 images took 6,990 ms per round
   * that way, 789 ms with batches built from these arrays).
   */
  pixels?: Float32Array;
  labels?: Int32Array;
}

export function toTensors(samples: Samples): LocalData {
  const count = samples.labels.length;
  const scaled = new Float32Array(samples.pixels.length); // a loop: Float32Array.from(…, fn) is ~10x slower
  for (let i = 0; i < scaled.length; i++) scaled[i] = (samples.pixels[i] as number) / 255;
  const labels = Int32Array.from(samples.labels);
  const x = tf.tidy(() => tf.tensor4d(scaled, [count, 28, 28, 1]));
  const y = tf.tensor1d(labels, 'int32');
  return { x, y, count, pixels: scaled, labels };
}

export function disposeData(d: LocalData): void {
  tf.dispose([d.x, d.y]);
}

function crossEntropy(probs: tf.Tensor, labels: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => probs.mul(tf.oneHot(labels, 10)).sum(1).clipByValue(1e-7, 1).log().neg().mean() as tf.Scalar);
}

export interface EvalMetrics {
  accuracy: number;
  loss: number;
}

/**
 * Accuracy and cross-entropy over `data`, in batches (100 images a batch: measured ~5x faster than
 * 1,000 on the wasm backend, by `npm run bench`'s server evaluation time). `yieldToHost`, if given,
 * runs between batches so a long evaluation does not stall the host's event loop.
 */
export async function evaluateLocal(model: tf.LayersModel, data: LocalData, batchSize = 100, yieldToHost?: () => Promise<void>, predictions?: Int32Array): Promise<EvalMetrics> {
  if (data.count === 0) return { accuracy: 0, loss: 0 };
  if (predictions && predictions.length !== data.count) throw new RangeError(`evaluation: room for ${predictions.length} predictions, ${data.count} examples`);
  let correct = 0;
  let lossSum = 0;
  for (let start = 0; start < data.count; start += batchSize) {
    const n = Math.min(batchSize, data.count - start);
    const [hits, loss, predicted] = tf.tidy(() => {
      const x = data.pixels ? tf.tensor4d(data.pixels.subarray(start * 784, (start + n) * 784), [n, 28, 28, 1]) : data.x.slice([start, 0, 0, 0], [n, 28, 28, 1]);
      const y = data.labels ? tf.tensor1d(data.labels.subarray(start, start + n), 'int32') : data.y.slice([start], [n]);
      const probs = model.predict(x) as tf.Tensor2D;
      const labels = probs.argMax(1);
      return [labels.equal(y).sum(), crossEntropy(probs, y).mul(n), predictions ? labels : undefined];
    });
    correct += (await hits.data())[0] as number;
    lossSum += (await loss.data())[0] as number;
    if (predicted) predictions!.set(await predicted.data() as Int32Array, start);
    tf.dispose([hits, loss, ...(predicted ? [predicted] : [])]);
    if (yieldToHost) await yieldToHost();
  }
  return { accuracy: correct / data.count, loss: lossSum / data.count };
}

export interface TrainHooks {
  /** called at most every `progressEveryMs` with batches done / total and the latest batch loss */
  onProgress?: (done: number, total: number, loss: number) => void;
  progressEveryMs?: number;
  /** asked between batches; true stops training early */
  shouldStop?: () => boolean;
  /** lets the host's event loop run (the page stays responsive); called between batches */
  yieldToHost?: () => Promise<void>;
}

export interface TrainResult {
  batches: number;
  loss: number;
  stopped: boolean;
}

/**
 * The loss a device minimizes on a batch: cross-entropy, plus FedProx's proximal term
 * μ/2·‖w − w_global‖² (Li et al. 2020) when `prox` is given — `anchors` are the global model's
 * trainable weights, in the order of `model.trainableWeights`. Its gradient adds μ(w − w_global).
 */
export function localLoss(model: tf.LayersModel, x: tf.Tensor, y: tf.Tensor1D, prox?: { mu: number; anchors: readonly tf.Tensor[] }): tf.Scalar {
  const ce = crossEntropy(model.apply(x, { training: true }) as tf.Tensor, y);
  if (!prox || prox.mu === 0) return ce;
  const weights = model.trainableWeights;
  if (weights.length !== prox.anchors.length) throw new Error(`fedprox: ${prox.anchors.length} anchors for ${weights.length} trainable weights`);
  const distance = tf.addN(weights.map((w, i) => tf.sum(tf.square(tf.sub(w.read(), prox.anchors[i]!)))));
  return tf.add(ce, tf.mul(prox.mu / 2, distance)) as tf.Scalar;
}

/**
 * SCAFFOLD's correction of every step (scaffold.ts), y ← y − η·(g − c_i + c): the flat c − c_i cut
 * into the model's tensors (in `model.weights` order, as flat weights are), scaled by η once.
 */
function correctionTensors(model: tf.LayersModel, correction: Float32Array, learningRate: number): tf.Tensor[] {
  if (model.weights.some((w) => !w.trainable)) throw new Error(`scaffold: model ${model.name} has weights that do not train`);
  let offset = 0;
  const tensors = model.weights.map((w) => {
    const n = w.shape.reduce((a: number, b) => a * (b ?? 1), 1);
    const t = tf.tidy(() => tf.tensor(correction.subarray(offset, offset + n), w.shape as number[], 'float32').mul(learningRate));
    offset += n;
    return t;
  });
  if (offset !== correction.length) {
    tf.dispose(tensors);
    throw new Error(`scaffold: the correction has ${correction.length} values, model ${model.name} ${offset}`);
  }
  return tensors;
}

/**
 * The examples order[from..to) as a batch: copied from the JS arrays when `data` has them (a
 * tf.gather is a per-element loop on wasm, 0.36 ms a batch of 10 images against ~0.02 ms for the
 * copy), else gathered from the tensors.
 */
function batchTensors(data: LocalData, order: readonly number[], from: number, to: number): [tf.Tensor4D, tf.Tensor1D] {
  const n = to - from;
  if (data.pixels && data.labels) {
    const pixels = new Float32Array(n * PIXELS);
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const k = order[from + i]!;
      pixels.set(data.pixels.subarray(k * PIXELS, (k + 1) * PIXELS), i * PIXELS);
      labels[i] = data.labels[k]!;
    }
    return [tf.tensor4d(pixels, [n, 28, 28, 1]), tf.tensor1d(labels, 'int32')];
  }
  return tf.tidy(() => {
    const idx = tf.tensor1d(Int32Array.from(order.slice(from, to)), 'int32');
    return [tf.gather(data.x, idx), tf.gather(data.y, idx) as tf.Tensor1D];
  });
}

/**
 * E epochs of minibatch SGD (batch B, learning rate η) in a seeded order; with plan.mu, FedProx's
 * local problem around the weights it starts from; with `correction` (c − c_i), SCAFFOLD's
 * corrected steps — the loss reported stays the local objective without SCAFFOLD's linear term.
 */
export async function trainLocal(model: tf.LayersModel, data: LocalData, plan: Omit<TrainingPlan, 'codec'>, hooks: TrainHooks = {}, correction?: Float32Array): Promise<TrainResult> {
  const optimizer = tf.train.sgd(plan.learningRate);
  // FedProx: the global model's weights, as training starts from them
  const anchors = plan.mu ? model.trainableWeights.map((w) => tf.keep(w.read().clone())) : undefined;
  const prox = anchors && plan.mu ? { mu: plan.mu, anchors } : undefined;
  const shift = correction ? correctionTensors(model, correction, plan.learningRate) : undefined;
  const rng = createRng(plan.seed);
  const perEpoch = Math.ceil(data.count / plan.batchSize);
  const total = perEpoch * plan.localEpochs;
  let done = 0;
  let lastLoss = NaN;
  let lastReport = 0;
  const every = hooks.progressEveryMs ?? 250;
  try {
    for (let epoch = 0; epoch < plan.localEpochs; epoch++) {
      const order = shuffleInPlace(Array.from({ length: data.count }, (_, i) => i), rng);
      for (let b = 0; b < perEpoch; b++) {
        if (hooks.shouldStop?.()) return { batches: done, loss: lastLoss, stopped: true };
        const [x, y] = batchTensors(data, order, b * plan.batchSize, Math.min(data.count, (b + 1) * plan.batchSize));
        const cost = optimizer.minimize(() => localLoss(model, x, y, prox), true);
        tf.dispose([x, y]);
        if (shift) tf.tidy(() => model.weights.forEach((w, i) => w.write(tf.sub(w.read(), shift[i]!))));
        done++;
        const now = Date.now();
        if (cost && (now - lastReport >= every || done === total)) {
          lastLoss = (await cost.data())[0] as number;
          lastReport = now;
          hooks.onProgress?.(done, total, lastLoss);
        }
        cost?.dispose();
        if (hooks.yieldToHost) await hooks.yieldToHost();
      }
    }
    return { batches: done, loss: lastLoss, stopped: false };
  } finally {
    optimizer.dispose();
    if (anchors) tf.dispose(anchors);
    if (shift) tf.dispose(shift);
  }
}

export interface UpdateResult {
  delta: FlatWeights;
  numExamples: number;
  before: EvalMetrics;
  after: EvalMetrics;
  evaluateMs: number;
  trainMs: number;
  stopped: boolean;
  /** local steps taken (SCAFFOLD's K) */
  steps: number;
}

/**
 * One device's part of a FedAvg round: load the global model, evaluate it on held-out data
 * (before training, as GBoard does), train locally, evaluate again, and return Δ = w_local − w_global.
 */
export async function computeUpdate(model: tf.LayersModel, global: FlatWeights, train: LocalData, heldOut: LocalData, plan: Omit<TrainingPlan, 'codec'>, hooks: TrainHooks & { onPhase?: (phase: 'evaluating' | 'training') => void } = {}, correction?: Float32Array): Promise<UpdateResult> {
  setFlatWeights(model, global);
  hooks.onPhase?.('evaluating');
  const t0 = performance.now();
  const before = await evaluateLocal(model, heldOut);
  const t1 = performance.now();
  hooks.onPhase?.('training');
  const result = await trainLocal(model, train, plan, hooks, correction);
  const t2 = performance.now();
  const after = await evaluateLocal(model, heldOut);
  const local = getFlatWeights(model);
  return {
    delta: { specs: local.specs, values: subtract(local.values, global.values) },
    numExamples: train.count,
    before,
    after,
    evaluateMs: t1 - t0 + (performance.now() - t2),
    trainMs: t2 - t1,
    stopped: result.stopped,
    steps: result.batches,
  };
}

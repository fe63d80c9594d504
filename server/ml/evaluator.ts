/**
 * Evaluates a global model on the full MNIST test set (10,000 images) with TF.js in Node, with the
 * same evaluation as the devices (shared/train.ts). The server evaluates in a worker thread
 * (`startWorkerEvaluator`), so the event loop keeps answering devices meanwhile; `createEvaluator`
 * evaluates in-process, yielding between batches (quick to start, for tests and tools).
 */
import type * as tf from '@tensorflow/tfjs';
import { buildModel, setFlatWeights, type ModelName } from '../../shared/models.ts';
import { evaluateLocal, toTensors, type LocalData } from '../../shared/train.ts';
import type { FlatWeights } from '../../shared/weights.ts';
import type { MnistSplit } from '../data/mnist.ts';
import { WorkerPool } from '../sim/pool.ts';

export interface EvalResult {
  accuracy: number;
  loss: number;
  examples: number;
}

export interface Evaluator {
  evaluate(model: ModelName, weights: FlatWeights): Promise<EvalResult>;
}

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export function createEvaluator(test: MnistSplit, limit = test.count): Evaluator {
  const models = new Map<ModelName, tf.LayersModel>();
  const count = Math.min(limit, test.count);
  let data: LocalData | undefined; // built on first use: 10,000 images as float32 is 31 MB
  const evaluate = async (name: ModelName, weights: FlatWeights): Promise<EvalResult> => {
    data ??= toTensors({ pixels: test.images.subarray(0, count * 784), labels: test.labels.subarray(0, count) });
    let model = models.get(name);
    if (!model) {
      model = buildModel(name);
      models.set(name, model);
    }
    setFlatWeights(model, weights);
    const r = await evaluateLocal(model, data, undefined, yieldToLoop);
    return { accuracy: r.accuracy, loss: r.loss, examples: count };
  };
  // One evaluation at a time: they share a model per name and yield between batches, so two
  // interleaved evaluations would overwrite each other's weights.
  let queue: Promise<unknown> = Promise.resolve();
  return {
    evaluate(name, weights) {
      const run = queue.then(() => evaluate(name, weights));
      queue = run.catch(() => undefined);
      return run;
    },
  };
}

/** Evaluates on the first `count` test images, split between the pool's workers (each keeps its range as tensors). */
export function poolEvaluator(pool: WorkerPool, count: number): Evaluator {
  return {
    async evaluate(model: ModelName, weights: FlatWeights): Promise<EvalResult> {
      const parts = pool.size;
      const jobs = Array.from({ length: parts }, (_, i) => {
        const from = Math.floor((i * count) / parts);
        const to = Math.floor(((i + 1) * count) / parts);
        return pool.evaluate({ type: 'evaluate', model, specs: weights.specs, weights: weights.values, from, count: to - from });
      });
      const done = await Promise.all(jobs);
      const correct = done.reduce((a, d) => a + d.correct, 0);
      const lossSum = done.reduce((a, d) => a + d.lossSum, 0);
      return { accuracy: correct / count, loss: lossSum / count, examples: count };
    },
  };
}

const NO_TRAINING_DATA: MnistSplit = { images: new Uint8Array(0), labels: new Uint8Array(0), count: 0 };

/** The server's evaluator: one worker thread (TF.js wasm) holding the test set; `close` stops it. */
export async function startWorkerEvaluator(test: MnistSplit, limit = test.count, workers = 1): Promise<Evaluator & { close(): Promise<void> }> {
  const pool = await WorkerPool.start(NO_TRAINING_DATA, test, workers);
  return { ...poolEvaluator(pool, Math.min(limit, test.count)), close: () => pool.close() };
}

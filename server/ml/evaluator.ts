/**
 * Evaluates a global model on the full MNIST test set (10,000 images) with TF.js in Node, with the
 * same evaluation as the devices (shared/train.ts), yielding to the event loop between batches so
 * a slow model does not stall the server.
 */
import type * as tf from '@tensorflow/tfjs';
import { buildModel, setFlatWeights, type ModelName } from '../../shared/models.ts';
import { evaluateLocal, toTensors, type LocalData } from '../../shared/train.ts';
import type { FlatWeights } from '../../shared/weights.ts';
import type { MnistSplit } from '../data/mnist.ts';

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

import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadMnist } from '../server/data/mnist.ts';
import { buildModel, getFlatWeights, initialWeights, MODEL_NAMES } from '../shared/models.ts';
import { computeUpdate, evaluateLocal, toTensors } from '../shared/train.ts';
import { useWasm } from './support/server.ts';

describe('models and local training', () => {
  beforeAll(useWasm);

  it('builds the three models with the parameter counts of the paper', () => {
    const counts = Object.fromEntries(MODEL_NAMES.map((n) => {
      const m = buildModel(n);
      const c = m.countParams();
      m.dispose();
      return [n, c];
    }));
    expect(counts).toEqual({ 'cnn-small': 5258, cnn: 1_663_370, mlp: 199_210 });
  });

  it('initial weights are a function of the seed', () => {
    expect(initialWeights('cnn-small', 3).values).toEqual(initialWeights('cnn-small', 3).values);
    expect(initialWeights('cnn-small', 3).values).not.toEqual(initialWeights('cnn-small', 4).values);
  });

  it('a local update improves held-out accuracy, is deterministic for a seed, and leaks no tensors', async () => {
    const { train } = loadMnist();
    const slice = (from: number, n: number) => toTensors({ pixels: train.images.slice(from * 784, (from + n) * 784), labels: train.labels.slice(from, from + n) });
    const data = slice(0, 300);
    const heldOut = slice(300, 100);
    const model = buildModel('cnn-small');
    const global = initialWeights('cnn-small', 1);
    const plan = { localEpochs: 2, batchSize: 10, learningRate: 0.1, seed: 5 };
    const first = await computeUpdate(model, global, data, heldOut, plan);
    const tensorsAfterFirst = tf.memory().numTensors;
    const second = await computeUpdate(model, global, data, heldOut, plan);
    expect(tf.memory().numTensors).toBe(tensorsAfterFirst);
    expect(first.after.accuracy).toBeGreaterThan(first.before.accuracy + 0.2);
    expect(first.numExamples).toBe(300);
    let worst = 0;
    for (let i = 0; i < first.delta.values.length; i++) worst = Math.max(worst, Math.abs(first.delta.values[i]! - second.delta.values[i]!));
    expect(worst).toBeLessThan(1e-5);
    // Δ is w_local − w_global
    const local = getFlatWeights(model).values;
    expect(local[10]! - global.values[10]!).toBeCloseTo(second.delta.values[10]!, 6);
    expect((await evaluateLocal(model, heldOut)).accuracy).toBeCloseTo(second.after.accuracy, 6);
    tf.dispose([data.x, data.y, heldOut.x, heldOut.y]);
    model.dispose();
  });
});

import { beforeAll, describe, expect, it } from 'vitest';
import { loadMnist } from '../server/data/mnist.ts';
import { createEvaluator, startWorkerEvaluator } from '../server/ml/evaluator.ts';
import { initialWeights } from '../shared/models.ts';
import { useWasm } from './support/server.ts';

describe('evaluator', () => {
  beforeAll(useWasm);

  it('gives each of two overlapping evaluations the result of its own weights', async () => {
    const evaluator = createEvaluator(loadMnist().test, 500);
    const a = initialWeights('cnn-small', 1);
    const b = initialWeights('cnn-small', 2);
    const alone = [await evaluator.evaluate('cnn-small', a), await evaluator.evaluate('cnn-small', b)];
    const together = await Promise.all([evaluator.evaluate('cnn-small', a), evaluator.evaluate('cnn-small', b)]);
    expect(together).toEqual(alone);
    expect(alone[0]).not.toEqual(alone[1]);
    expect(alone[0]!.examples).toBe(500);
  });

  it('evaluates in a worker thread as it does in-process', async () => {
    const test = loadMnist().test;
    const inProcess = createEvaluator(test, 2000);
    const worker = await startWorkerEvaluator(test, 2000);
    try {
      for (const seed of [1, 2]) {
        const w = initialWeights('cnn-small', seed);
        const [a, b] = [await inProcess.evaluate('cnn-small', w), await worker.evaluate('cnn-small', w)];
        expect(b.examples).toBe(2000);
        expect(b.accuracy).toBeCloseTo(a.accuracy, 3);
        expect(b.loss).toBeCloseTo(a.loss, 4);
      }
    } finally {
      await worker.close();
    }
  }, 120_000);
});

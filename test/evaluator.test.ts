import { beforeAll, describe, expect, it } from 'vitest';
import { loadMnist } from '../server/data/mnist.ts';
import { createEvaluator } from '../server/ml/evaluator.ts';
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
});

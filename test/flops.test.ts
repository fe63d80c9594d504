import { describe, expect, it } from 'vitest';
import { buildModel, forwardFlopsPerSample, trainingFlopsPerSample } from '../shared/models.ts';

describe('FLOPs per sample', () => {
  it('counts the paper models by hand', () => {
    // 2NN: 784·200 + 200·200 + 200·10 multiply-adds.
    const mlp = buildModel('mlp');
    expect(forwardFlopsPerSample(mlp)).toBe(2 * (784 * 200 + 200 * 200 + 200 * 10));
    // CNN: conv1 28·28·(5·5·1·32), conv2 14·14·(5·5·32·64), dense 3136·512, output 512·10.
    const cnn = buildModel('cnn');
    const expected = 2 * (28 * 28 * 25 * 32 + 14 * 14 * 25 * 32 * 64 + 3136 * 512 + 512 * 10);
    expect(forwardFlopsPerSample(cnn)).toBe(expected);
    expect(trainingFlopsPerSample(cnn)).toBe(3 * expected);
    mlp.dispose();
    cnn.dispose();
  });
});

import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { createRng } from '../shared/rng.ts';
import { conv2dBackpropFilterViaConv2d, registerWasmTrainingKernels } from '../shared/wasm-kernels.ts';

/** The filter gradient for a given dy, from the reference `cpu` backend. */
async function cpuFilterGrad(x: Float32Array, xShape: number[], dy: Float32Array, dyShape: number[], filterShape: [number, number, number, number], stride: number, pad: 'same' | 'valid') {
  await tf.setBackend('cpu');
  const xt = tf.tensor4d(x, xShape as [number, number, number, number]);
  const dyt = tf.tensor4d(dy, dyShape as [number, number, number, number]);
  const w = tf.zeros(filterShape) as tf.Tensor4D;
  const g = tf.grad((f) => tf.conv2d(xt, f as tf.Tensor4D, stride, pad).mul(dyt).sum())(w);
  const out = g.dataSync().slice();
  tf.dispose([xt, dyt, w, g]);
  return out;
}

describe('wasm Conv2DBackpropFilter', () => {
  beforeAll(() => registerWasmTrainingKernels());

  it('matches the cpu backend on random shapes, strides and paddings (max abs error ≤ 1e-4)', async () => {
    const rng = createRng(42);
    const int = (lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));
    let worst = 0;
    for (let t = 0; t < 40; t++) {
      const [b, h, w, ci, co, k, s] = [int(1, 3), int(5, 12), int(5, 12), int(1, 4), int(1, 5), int(1, 5), int(1, 3)];
      const pad = rng() < 0.5 ? 'same' : 'valid';
      if (pad === 'valid' && (k > h || k > w)) continue;
      const x = Float32Array.from({ length: b * h * w * ci }, () => rng() - 0.5);
      await tf.setBackend('cpu');
      const outShape = tf.conv2d(tf.zeros([b, h, w, ci]) as tf.Tensor4D, tf.zeros([k, k, ci, co]) as tf.Tensor4D, s, pad).shape;
      const dy = Float32Array.from({ length: outShape.reduce((a, c) => a * c, 1) }, () => rng() - 0.5);
      const expected = await cpuFilterGrad(x, [b, h, w, ci], dy, outShape, [k, k, ci, co], s, pad);
      await tf.setBackend('wasm');
      const actual = conv2dBackpropFilterViaConv2d(tf.tensor4d(x, [b, h, w, ci]), tf.tensor4d(dy, outShape as [number, number, number, number]), { strides: s, pad, dataFormat: 'NHWC', filterShape: [k, k, ci, co] }).dataSync();
      expect(actual.length).toBe(expected.length);
      for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
    }
    expect(worst).toBeLessThanOrEqual(1e-4);
  });

  it('lets tf.grad of a conv2d run on wasm', async () => {
    await tf.setBackend('wasm');
    const x = tf.randomNormal([2, 8, 8, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
    const w = tf.randomNormal([3, 3, 3, 4], 0, 1, 'float32', 2) as tf.Tensor4D;
    const g = tf.grad((f) => tf.conv2d(x, f as tf.Tensor4D, 1, 'same').square().sum())(w);
    expect(g.shape).toEqual([3, 3, 3, 4]);
    expect(g.dataSync().every(Number.isFinite)).toBe(true);
  });
});

import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { createRng } from '../shared/rng.ts';
import { conv2dBackpropFilterViaConv2d, conv2dBackpropInputViaConv2d, matMulUntransposed, maxPoolGradValues, registerWasmTrainingKernels } from '../shared/wasm-kernels.ts';
import { buildModel, initialWeights } from '../shared/models.ts';
import { computeUpdate, disposeData, toTensors } from '../shared/train.ts';

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

/** Runs `f` on the cpu backend and on wasm (with the kernels above registered) and returns both results. */
async function onBoth(f: () => tf.Tensor): Promise<[Float32Array, Float32Array]> {
  await tf.setBackend('cpu');
  const ref = tf.tidy(f);
  const expected = ref.dataSync().slice() as Float32Array;
  ref.dispose();
  await tf.setBackend('wasm');
  const got = tf.tidy(f);
  const actual = got.dataSync().slice() as Float32Array;
  got.dispose();
  return [expected, actual];
}

const maxAbs = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
};

describe('the faster wasm training kernels', () => {
  beforeAll(() => registerWasmTrainingKernels());

  it('Conv2DBackpropInput (stride 1, same and valid) matches the cpu backend', async () => {
    const rng = createRng(7);
    const int = (lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));
    for (let t = 0; t < 20; t++) {
      const [b, h, w, ci, co, k] = [int(1, 3), int(5, 10), int(5, 10), int(1, 4), int(1, 5), int(1, 5)];
      const pad = t % 2 ? 'same' : 'valid';
      const x = Float32Array.from({ length: b * h * w * ci }, () => rng() - 0.5);
      const f = Float32Array.from({ length: k * k * ci * co }, () => rng() - 0.5);
      const [expected, actual] = await onBoth(() => tf.grad((xt) => tf.conv2d(xt as tf.Tensor4D, tf.tensor4d(f, [k, k, ci, co]), 1, pad).square().sum())(tf.tensor4d(x, [b, h, w, ci])));
      expect(maxAbs(expected, actual)).toBeLessThanOrEqual(1e-4);
    }
  });

  it('BatchMatMul with transposed operands, rank 2 and 3, matches the cpu backend', async () => {
    const rng = createRng(3);
    for (const [batch, m, k, n] of [[0, 10, 784, 200], [0, 200, 30, 10], [3, 4, 5, 6], [2, 9, 3, 1]] as const) {
      for (const [ta, tb] of [[true, false], [false, true], [true, true]] as const) {
        const shape = (r: number, c: number) => (batch ? [batch, r, c] : [r, c]);
        const aShape = ta ? shape(k, m) : shape(m, k);
        const bShape = tb ? shape(n, k) : shape(k, n);
        const a = Float32Array.from({ length: aShape.reduce((p, q) => p * q, 1) }, () => rng() - 0.5);
        const b = Float32Array.from({ length: bShape.reduce((p, q) => p * q, 1) }, () => rng() - 0.5);
        const [expected, actual] = await onBoth(() => tf.matMul(tf.tensor(a, aShape), tf.tensor(b, bShape), ta, tb));
        expect(maxAbs(expected, actual)).toBeLessThanOrEqual(1e-4);
      }
    }
  });

  it('MaxPoolGrad routes each gradient to the first maximum, ties included, as the cpu backend', async () => {
    const rng = createRng(5);
    for (const [h, pool, stride, pad] of [[8, 2, 2, 'valid'], [7, 3, 2, 'same'], [9, 3, 1, 'valid'], [26, 2, 2, 'valid']] as const) {
      // values on a coarse grid (many ties) and a relu's zeros
      const x = Float32Array.from({ length: 2 * h * h * 3 }, () => Math.max(0, Math.round((rng() - 0.3) * 4)));
      const dy = (shape: number[]) => tf.tensor(Float32Array.from({ length: shape.reduce((p, q) => p * q, 1) }, (_, i) => Math.sin(i + 1)), shape);
      const [expected, actual] = await onBoth(() => tf.grad((xt) => {
        const y = tf.maxPool(xt as tf.Tensor4D, pool, stride, pad);
        return y.mul(dy(y.shape)).sum();
      })(tf.tensor4d(x, [2, h, h, 3])));
      expect(maxAbs(expected, actual)).toBeLessThanOrEqual(1e-6);
    }
  });

  it('Identity shares the data: a clone outlives its original and keeps its values', async () => {
    await tf.setBackend('wasm');
    const buffers = () => tf.engine().backend.numDataIds();
    const before = buffers();
    const a = tf.tensor1d([1, 2, 3]);
    const b = tf.clone(a);
    expect(buffers() - before).toBe(1); // one buffer for both
    a.dispose();
    expect(Array.from(b.dataSync())).toEqual([1, 2, 3]);
    b.dispose();
    expect(buffers()).toBe(before);
  });
});

describe('local training on wasm with these kernels', () => {
  beforeAll(() => registerWasmTrainingKernels());

  it('the kernels themselves, called directly, agree with the cpu backend', async () => {
    const rng = createRng(11);
    const x = Float32Array.from({ length: 2 * 6 * 6 * 3 }, () => Math.round(rng() * 3));
    const dy = Float32Array.from({ length: 2 * 3 * 3 * 3 }, () => rng() - 0.5);
    await tf.setBackend('cpu');
    const expected = tf.grad((xt) => tf.maxPool(xt as tf.Tensor4D, 2, 2, 'valid').mul(tf.tensor4d(dy, [2, 3, 3, 3])).sum())(tf.tensor4d(x, [2, 6, 6, 3])).dataSync() as Float32Array;
    expect(maxAbs(expected, maxPoolGradValues(x, [2, 6, 6, 3], dy, { filterSize: 2, strides: 2, pad: 'valid' }))).toBe(0);
    await tf.setBackend('wasm');
    const f = tf.tensor4d(Float32Array.from({ length: 3 * 3 * 3 * 4 }, () => rng() - 0.5), [3, 3, 3, 4]);
    const g = tf.tensor4d(Float32Array.from({ length: 2 * 6 * 6 * 4 }, () => rng() - 0.5), [2, 6, 6, 4]);
    const direct = conv2dBackpropInputViaConv2d(g, f, { strides: 1, pad: 'same', dataFormat: 'NHWC', inputShape: [2, 6, 6, 3] })!;
    expect(direct.shape).toEqual([2, 6, 6, 3]);
    expect(conv2dBackpropInputViaConv2d(g, f, { strides: 2, pad: 'same', dataFormat: 'NHWC', inputShape: [2, 12, 12, 3] })).toBeUndefined(); // stride 2: the backend's own kernel
    const a = tf.tensor2d([1, 2, 3, 4, 5, 6], [3, 2]);
    expect(Array.from(matMulUntransposed(a, a, true, false).dataSync())).toEqual([35, 44, 44, 56]);
    tf.dispose([f, g, direct, a]);
  });

  it('the registered kernels are the ones that run: a transposed multiply and a stride-1 input gradient run XNNPACK kernels inside them', async () => {
    await tf.setBackend('wasm');
    const names = async (f: () => tf.Tensor) => (await tf.profile(() => tf.tidy(f))).kernels.map((k) => k.name);
    const a = tf.ones([4, 3]);
    expect(await names(() => tf.matMul(a, a, true, false))).toEqual(['Transpose', 'BatchMatMul', 'BatchMatMul']); // inner kernels are listed first; the backend's own: ['BatchMatMul']
    const x = tf.ones([1, 5, 5, 2]) as tf.Tensor4D;
    const f = tf.ones([3, 3, 2, 4]) as tf.Tensor4D;
    const inputGrad = await names(() => tf.grad((xt) => tf.conv2d(xt as tf.Tensor4D, f, 1, 'same').sum())(x));
    expect(inputGrad).toContain('Conv2DBackpropInput');
    expect(inputGrad.filter((k) => k === 'Conv2D')).toHaveLength(2); // the forward pass, and the one inside the input gradient
    tf.dispose([a, x, f]);
  });

  it('trains every model to the same update as the cpu backend, from the same seed (float tolerance)', async () => {
    const rng = createRng(9);
    const count = 40;
    const samples = { pixels: Uint8Array.from({ length: count * 784 }, () => Math.floor(rng() * 256)), labels: Uint8Array.from({ length: count }, (_, i) => i % 10) };
    const plan = { localEpochs: 2, batchSize: 10, learningRate: 0.05, seed: 4 };
    for (const name of ['mlp', 'cnn-small', 'cnn'] as const) {
      const few = name === 'cnn' ? { pixels: samples.pixels.subarray(0, 10 * 784), labels: samples.labels.subarray(0, 10) } : samples; // the paper CNN is slow on cpu: one step
      const deltas: Float32Array[] = [];
      for (const backend of ['cpu', 'wasm']) {
        await tf.setBackend(backend);
        const model = buildModel(name);
        const start = initialWeights(name, 1);
        const data = toTensors(few);
        const r = await computeUpdate(model, start, data, data, name === 'cnn' ? { ...plan, localEpochs: 1 } : plan);
        deltas.push(r.delta.values);
        disposeData(data);
        model.dispose();
      }
      const scale = deltas[0]!.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      expect(scale).toBeGreaterThan(1e-3); // it trained
      expect(maxAbs(deltas[0]!, deltas[1]!) / scale).toBeLessThanOrEqual(1e-3);
    }
  }, 120_000);

  it('builds batches from the JS arrays exactly as it would gather them from the tensors', async () => {
    await tf.setBackend('wasm');
    const rng = createRng(2);
    const samples = { pixels: Uint8Array.from({ length: 25 * 784 }, () => Math.floor(rng() * 256)), labels: Uint8Array.from({ length: 25 }, (_, i) => (i * 3) % 10) };
    const plan = { localEpochs: 1, batchSize: 10, learningRate: 0.1, seed: 8 };
    const run = async (arrays: boolean) => {
      const model = buildModel('mlp');
      const data = toTensors(samples);
      const r = await computeUpdate(model, initialWeights('mlp', 2), arrays ? data : { x: data.x, y: data.y, count: data.count }, data, plan);
      disposeData(data);
      model.dispose();
      return r.delta.values;
    };
    expect(maxAbs(await run(true), await run(false))).toBe(0);
  });
});

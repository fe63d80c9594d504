/**
 * Training throughput on one backend, measured two ways on the same data: raw `model.fit`, and
 * the device's own training step (shared/train.ts, with its yielding and progress reports). The
 * ratio is the device's overhead. Loaded on demand by the page's test API; never by a normal visit.
 */
import * as tf from '@tensorflow/tfjs';
import { buildModel, trainingFlopsPerSample, type ModelName } from '../../shared/models.ts';
import { trainLocal, toTensors, disposeData } from '../../shared/train.ts';
import type { Samples } from '../../shared/dataset.ts';
import { createYielder } from '../../shared/yield.ts';

export interface TrainingBench {
  backend: string;
  model: ModelName;
  samples: number;
  rawSamplesPerS: number;
  deviceSamplesPerS: number;
  /** the longest the page's event loop went without running a 10 ms timer, during the device step */
  maxStallMs: number;
  /** forward + backward FLOPs of one training sample (3 × forward), and the rates raw training and the device step reached */
  trainingFlopsPerSample: number;
  trainingGflops: number;
  deviceGflops: number;
  /** a 512×512 float32 matrix multiply on the same backend, in the same page: what the backend can do */
  matmulGflops: number;
}

/** GFLOP/s of an n×n matrix multiply (2n³ FLOPs), median of `reps` after a warm-up. */
export async function benchMatmul(n = 512, reps = 9): Promise<number> {
  const a = tf.randomNormal([n, n]);
  const b = tf.randomNormal([n, n]);
  try {
    const once = async () => {
      const t0 = performance.now();
      const c = tf.matMul(a, b);
      await c.data();
      c.dispose();
      return performance.now() - t0;
    };
    await once();
    const times: number[] = [];
    for (let i = 0; i < reps; i++) times.push(await once());
    times.sort((x, y) => x - y);
    return (2 * n ** 3) / ((times[reps >> 1] as number) / 1000) / 1e9;
  } finally {
    tf.dispose([a, b]);
  }
}

const yieldToHost = createYielder();

export async function benchTraining(backend: string, modelName: ModelName, data: Samples, batchSize = 10): Promise<TrainingBench> {
  if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} is not available`);
  await tf.ready();
  const local = toTensors(data);
  const model = buildModel(modelName);
  const yOneHot = tf.oneHot(local.y, 10);
  // Warm-up outside both timings: shader compilation, wasm initialisation, XNNPACK's first operators,
  // the JIT — a few steps are not enough (the first hundred steps of the 2NN run at half speed).
  const warmCount = Math.min(local.count, batchSize * 30);
  const warm = { x: local.x.slice(0, warmCount), y: local.y.slice(0, warmCount), yOneHot: yOneHot.slice(0, warmCount) };
  try {
    model.compile({ optimizer: tf.train.sgd(0.05), loss: 'categoricalCrossentropy' });
    await model.fit(warm.x, warm.yOneHot, { batchSize, epochs: 1, verbose: 0 });
    await trainLocal(model, { x: warm.x, y: warm.y, count: warmCount, pixels: local.pixels!.subarray(0, warmCount * 784), labels: local.labels!.subarray(0, warmCount) }, { localEpochs: 1, batchSize, learningRate: 0.05, seed: 1 });

    let t0 = performance.now();
    await model.fit(local.x, yOneHot, { batchSize, epochs: 1, shuffle: true, verbose: 0 });
    const raw = local.count / ((performance.now() - t0) / 1000);

    let lastTick = performance.now();
    let maxStallMs = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxStallMs = Math.max(maxStallMs, now - lastTick);
      lastTick = now;
    }, 10);
    t0 = performance.now();
    await trainLocal(model, local, { localEpochs: 1, batchSize, learningRate: 0.05, seed: 1 }, { onProgress: () => undefined, yieldToHost });
    const device = local.count / ((performance.now() - t0) / 1000);
    clearInterval(timer);
    const flops = trainingFlopsPerSample(model);
    const matmulGflops = await benchMatmul();
    return { backend, model: modelName, samples: local.count, rawSamplesPerS: raw, deviceSamplesPerS: device, maxStallMs, trainingFlopsPerSample: flops, trainingGflops: (raw * flops) / 1e9, deviceGflops: (device * flops) / 1e9, matmulGflops };
  } finally {
    model.dispose();
    tf.dispose([yOneHot, warm.x, warm.y, warm.yOneHot]);
    disposeData(local);
  }
}

/**
 * Chooses the TF.js backend a device trains on. Each candidate (webgl, wasm, cpu) must initialise
 * and compute a correct convolution filter gradient (checked against `cpu`); among those that do,
 * a short measured probe — a few SGD steps of the model about to be trained — picks the fastest.
 * On a GPU that is WebGL; on a machine whose WebGL is software-rendered it is usually wasm.
 * `?backend=` forces one. The reason is shown to the user and sent to the server.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgl';
import '@tensorflow/tfjs-backend-wasm';
import { getThreadsCount, setThreadsCount, setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { buildModel, type ModelName } from '../../shared/models.ts';
import { registerWasmTrainingKernels } from '../../shared/wasm-kernels.ts';

export type BackendName = 'webgpu' | 'webgl' | 'wasm' | 'cpu';
export const CANDIDATES: readonly BackendName[] = ['webgl', 'wasm', 'cpu'];

export interface BackendChoice {
  backend: BackendName;
  reason: string;
  /** samples/s measured by the probe, per backend that trains correctly */
  probe: Partial<Record<BackendName, number>>;
  /** XNNPACK threads of the wasm backend: more than 1 only on a cross-origin-isolated page */
  wasmThreads?: number;
}

/** The wasm backend's thread count, once it has initialised. */
function wasmThreads(): number | undefined {
  try {
    return tf.findBackend('wasm') ? getThreadsCount() : undefined;
  } catch {
    return undefined;
  }
}

setWasmPaths('/vendor/tfjs-wasm/');
// On a cross-origin-isolated page the wasm backend can run XNNPACK on threads; TF.js would use half
// the cores (one, on two), so ask for all of them.
if (globalThis.crossOriginIsolated) setThreadsCount(Math.max(1, navigator.hardwareConcurrency || 1));
registerWasmTrainingKernels();

function probeGradient(): Float32Array {
  return tf.tidy(() => {
    const x = tf.tensor4d(Float32Array.from({ length: 2 * 6 * 6 * 2 }, (_, i) => Math.sin(i)), [2, 6, 6, 2]);
    const w = tf.tensor4d(Float32Array.from({ length: 3 * 3 * 2 * 3 }, (_, i) => Math.cos(i) / 4), [3, 3, 2, 3]);
    return tf.grad((f) => tf.conv2d(x, f as tf.Tensor4D, 1, 'same').relu().square().sum())(w).dataSync() as Float32Array;
  });
}

async function trainsCorrectly(name: BackendName, reference: Float32Array): Promise<string | undefined> {
  try {
    if (!(await tf.setBackend(name))) return `${name} did not initialise`;
    await tf.ready();
    const got = probeGradient();
    const worst = got.reduce((m, v, i) => Math.max(m, Math.abs(v - (reference[i] as number))), 0);
    return worst <= 1e-3 ? undefined : `${name} computed a wrong gradient (error ${worst.toExponential(1)})`;
  } catch (err) {
    return `${name} cannot train: ${err instanceof Error ? (err.message.split('\n')[0] ?? '') : String(err)}`;
  }
}

/** Samples/s of SGD steps (batch 10) on the current backend, after one warm-up step. */
async function measure(modelName: ModelName, steps = 4, batch = 10): Promise<number> {
  const model = buildModel(modelName);
  const optimizer = tf.train.sgd(0.01);
  const x = tf.randomUniform([batch, 28, 28, 1]);
  const y = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => i % 10), 'int32'), 10);
  const stepOnce = async () => {
    const cost = optimizer.minimize(() => tf.losses.softmaxCrossEntropy(y, model.apply(x) as tf.Tensor).mean() as tf.Scalar, true);
    await cost?.data();
    cost?.dispose();
  };
  try {
    await stepOnce();
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) await stepOnce();
    return (steps * batch) / ((performance.now() - t0) / 1000);
  } finally {
    tf.dispose([x, y]);
    optimizer.dispose();
    model.dispose();
  }
}

export async function chooseBackend(forced?: BackendName, modelName: ModelName = 'cnn-small'): Promise<BackendChoice> {
  await tf.setBackend('cpu');
  const reference = probeGradient();
  if (forced) {
    const problem = await trainsCorrectly(forced, reference);
    const threads = forced === 'wasm' ? wasmThreads() : undefined;
    if (!problem) return { backend: forced, reason: `${forced} forced by ?backend=${forced}${threads ? ` (${threads} thread${threads > 1 ? 's' : ''})` : ''}`, probe: {}, ...(threads ? { wasmThreads: threads } : {}) };
    await tf.setBackend('cpu');
    return { backend: 'cpu', reason: `?backend=${forced} asked for, but ${problem}; using cpu`, probe: {} };
  }
  const problems: string[] = [];
  const probe: Partial<Record<BackendName, number>> = {};
  for (const name of CANDIDATES) {
    const problem = await trainsCorrectly(name, reference);
    if (problem) problems.push(problem);
    else probe[name] = await measure(modelName);
  }
  const ranked = (Object.entries(probe) as [BackendName, number][]).sort((a, b) => b[1] - a[1]);
  const best = ranked[0]?.[0] ?? 'cpu';
  await tf.setBackend(best);
  const threads = probe.wasm !== undefined ? wasmThreads() : undefined;
  const figures = ranked.map(([n, sps]) => `${n}${n === 'wasm' && threads && threads > 1 ? ` (${threads} threads)` : ''} ${Math.round(sps)}/s`).join(', ');
  const reason = `fastest in a training probe (${figures})${problems.length ? `; ${problems.join('; ')}` : ''}`;
  return { backend: best, reason, probe, ...(threads ? { wasmThreads: threads } : {}) };
}

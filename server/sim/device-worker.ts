/**
 * A simulation worker: trains simulated devices and evaluates global models with TF.js on wasm,
 * through the very functions the browser device runs (shared/train.ts computeUpdate,
 * evaluateLocal). One job at a time; the data arrives once, shared between workers.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { parentPort, workerData } from 'node:worker_threads';
import { encodeWithFeedback } from '../../shared/codec.ts';
import { createRng } from '../../shared/rng.ts';
import { PIXELS, type Samples } from '../../shared/dataset.ts';
import { buildModel, setFlatWeights, type ModelName } from '../../shared/models.ts';
import { computeUpdate, disposeData, evaluateLocal, toTensors, type LocalData } from '../../shared/train.ts';
import { registerWasmTrainingKernels } from '../../shared/wasm-kernels.ts';
import type { WorkerInit, WorkerJob, WorkerReply } from './messages.ts';

const port = parentPort;
if (!port) throw new Error('device-worker: must run as a worker thread');
const data = workerData as WorkerInit;

const models = new Map<ModelName, tf.LayersModel>();
const model = (name: ModelName): tf.LayersModel => {
  let m = models.get(name);
  if (!m) {
    m = buildModel(name);
    models.set(name, m);
  }
  return m;
};

/** test-set ranges this worker evaluates, kept as tensors: every round evaluates the same range */
const testParts = new Map<string, LocalData>();

function gather(images: Uint8Array, labels: Uint8Array, indices: Int32Array): Samples {
  const pixels = new Uint8Array(indices.length * PIXELS);
  const out = new Uint8Array(indices.length);
  indices.forEach((idx, i) => {
    pixels.set(images.subarray(idx * PIXELS, (idx + 1) * PIXELS), i * PIXELS);
    out[i] = labels[idx] as number;
  });
  return { pixels, labels: out };
}

async function run(job: WorkerJob): Promise<WorkerReply> {
  switch (job.type) {
    case 'train': {
      const train = toTensors(gather(data.trainImages, data.trainLabels, job.train));
      const heldOut = toTensors(gather(data.trainImages, data.trainLabels, job.heldOut));
      try {
        const u = await computeUpdate(model(job.model), { specs: job.specs, values: job.weights }, train, heldOut, job.plan);
        const t0 = performance.now();
        const encoded = encodeWithFeedback(u.delta, job.residual, job.codec, createRng(job.codecSeed));
        const encodeMs = performance.now() - t0;
        return { type: 'train', job: job.job, payload: encoded.payload, residual: encoded.residual, encodeMs, numExamples: u.numExamples, accuracyBefore: u.before.accuracy, lossBefore: u.before.loss, accuracyAfter: u.after.accuracy, lossAfter: u.after.loss, evaluateMs: u.evaluateMs, trainMs: u.trainMs };
      } finally {
        disposeData(train);
        disposeData(heldOut);
      }
    }
    case 'evaluate': {
      const m = model(job.model);
      setFlatWeights(m, { specs: job.specs, values: job.weights });
      const key = `${job.from}+${job.count}`;
      let test = testParts.get(key);
      if (!test) {
        test = toTensors({ pixels: data.testImages.subarray(job.from * PIXELS, (job.from + job.count) * PIXELS), labels: data.testLabels.subarray(job.from, job.from + job.count) });
        testParts.set(key, test);
      }
      const r = await evaluateLocal(m, test);
      return { type: 'evaluate', job: job.job, correct: Math.round(r.accuracy * job.count), lossSum: r.loss * job.count, count: job.count };
    }
    default: {
      const never: never = job;
      throw new Error(`device-worker: unknown job ${JSON.stringify(never)}`);
    }
  }
}

registerWasmTrainingKernels();
await tf.setBackend('wasm');
await tf.ready();
port.on('message', (job: WorkerJob) => {
  run(job).then(
    (reply) => port.postMessage(reply, reply.type === 'train' ? [reply.payload.buffer as ArrayBuffer, ...(reply.residual ? [reply.residual.buffer as ArrayBuffer] : [])] : []),
    (err: unknown) => port.postMessage({ type: 'error', job: job.job, message: err instanceof Error ? err.message : String(err) } satisfies WorkerReply),
  );
});
port.postMessage({ type: 'ready', backend: tf.getBackend() } satisfies WorkerReply);

/**
 * A simulation worker: runs simulated devices' rounds and evaluates global models with TF.js on
 * wasm, through the very code the browser device runs (shared/device.ts runDeviceRound, shared/
 * train.ts evaluateLocal). One job at a time; the data arrives once, shared between workers.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { parentPort, workerData } from 'node:worker_threads';
import { gatherSamples, PIXELS } from '../../shared/dataset.ts';
import { simDeviceSamples } from './device-data.ts';
import { memoryInProcess, runDeviceRound } from '../../shared/device.ts';
import { buildModel, setFlatWeights, type ModelName } from '../../shared/models.ts';
import { disposeData, evaluateLocal, toTensors, type LocalData } from '../../shared/train.ts';
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

async function run(job: WorkerJob): Promise<WorkerReply> {
  switch (job.type) {
    case 'train': {
      // the same samples the simulation measured the device's data quality on (simDeviceSamples)
      const train = toTensors(simDeviceSamples({ images: data.trainImages, labels: data.trainLabels }, { train: job.train, slot: job.slot ?? 0, ...(job.corrupt ? { corrupt: job.corrupt } : {}) }));
      const heldOut = toTensors(gatherSamples(data.trainImages, data.trainLabels, job.heldOut));
      try {
        const memory = memoryInProcess({ model: job.held, residual: job.residual, control: job.control });
        const r = await runDeviceRound(job.round, { deviceId: job.deviceId, model: model(job.round.model), train, heldOut, memory });
        return { type: 'train', job: job.job, submission: r.submission, residual: r.residual, control: r.control, held: memory.model(), encodeMs: r.encodeMs };
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
    (reply) => port.postMessage(reply, reply.type === 'train' ? [reply.residual, reply.control].filter((v) => v !== undefined).map((v) => v.buffer as ArrayBuffer) : []),
    (err: unknown) => port.postMessage({ type: 'error', job: job.job, message: err instanceof Error ? err.message : String(err) } satisfies WorkerReply),
  );
});
port.postMessage({ type: 'ready', backend: tf.getBackend() } satisfies WorkerReply);

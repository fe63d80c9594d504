/**
 * Trains a model centrally on all 60,000 MNIST training images (TF.js wasm in Node, with the
 * project's filter-gradient kernel) and reports test accuracy per epoch — the reference that
 * `cnn-small` reaches ≥ 98 %.
 *
 *   npm run train:central -- --model cnn-small --epochs 3 --lr 0.1 --batch 32
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { loadMnist } from '../server/data/mnist.ts';
import { buildModel, initialWeights, MODEL_NAMES, setFlatWeights, type ModelName } from '../shared/models.ts';
import { evaluateLocal, toTensors, trainLocal } from '../shared/train.ts';
import { registerWasmTrainingKernels } from '../shared/wasm-kernels.ts';
import { parseArgs } from './lib/harness.ts';

const args = parseArgs(process.argv.slice(2), { model: 'cnn-small', epochs: '3', lr: '0.1', batch: '32', seed: '1' });
const name = args.model as ModelName;
if (!MODEL_NAMES.includes(name)) throw new Error(`--model must be one of ${MODEL_NAMES.join(', ')}`);
registerWasmTrainingKernels();
await tf.setBackend('wasm');
const { train, test } = loadMnist();
const trainData = toTensors({ pixels: train.images, labels: train.labels });
const testData = toTensors({ pixels: test.images, labels: test.labels });
const model = buildModel(name);
setFlatWeights(model, initialWeights(name, Number(args.seed)));
process.stdout.write(`${name}: ${model.countParams()} parameters, SGD lr ${args.lr}, batch ${args.batch}\n`);
for (let epoch = 1; epoch <= Number(args.epochs); epoch++) {
  const t0 = performance.now();
  await trainLocal(model, trainData, { localEpochs: 1, batchSize: Number(args.batch), learningRate: Number(args.lr), seed: Number(args.seed) * 1000 + epoch });
  const seconds = (performance.now() - t0) / 1000;
  const r = await evaluateLocal(model, testData);
  process.stdout.write(`epoch ${epoch}: test accuracy ${(r.accuracy * 100).toFixed(2)} %, loss ${r.loss.toFixed(4)}, ${(trainData.count / seconds).toFixed(0)} samples/s\n`);
}

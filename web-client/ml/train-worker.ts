/// <reference lib="webworker" />
/**
 * The device's local training, in a Web Worker: the page's main thread only renders progress and
 * talks to the server, so it never freezes while the model trains (a batch of the paper's CNN holds
 * a thread for ~30 ms on wasm and seconds on cpu). The worker chooses its backend as the page did
 * (backend.ts: WebGL runs here through OffscreenCanvas), reads the tab's data from the tab's own
 * IndexedDB database, and runs the very round code the page and the Node simulation run
 * (shared/device.ts runDeviceRound), keeping the held model in the same database.
 */
import * as tf from '@tensorflow/tfjs';
import { runDeviceRound, type DeviceRound } from '../../shared/device.ts';
import { buildModel, type ModelName } from '../../shared/models.ts';
import { toTensors, type LocalData } from '../../shared/train.ts';
import { createYielder } from '../../shared/yield.ts';
import { indexedDbMemory, loadDataset, readMeta, useDatabase } from '../data/store.ts';
import { chooseBackend } from './backend.ts';
import { transferablesOf, type TrainerReply, type TrainerRequest } from './trainer-messages.ts';

const scope = self as unknown as DedicatedWorkerGlobalScope;
const reply = (message: TrainerReply, transfer: Transferable[] = []) => scope.postMessage(message, transfer);
// lets the 'stop' message in between batches (a worker has no page to keep responsive)
const yieldToHost = createYielder(50);

let data: { train: LocalData; heldOut: LocalData } | undefined;
const models = new Map<ModelName, tf.LayersModel>();
let stopped = false;
let busy = false;

function model(name: ModelName): tf.LayersModel {
  let m = models.get(name);
  if (!m) {
    m = buildModel(name);
    models.set(name, m);
  }
  return m;
}

async function init({ database, backend }: TrainerRequest & { type: 'init' }): Promise<void> {
  useDatabase(database);
  const choice = await chooseBackend(backend);
  const meta = await readMeta();
  if (!meta) throw new Error(`the tab's database ${database} holds no data`);
  const dataset = await loadDataset(meta);
  data = { train: toTensors(dataset.train), heldOut: toTensors(dataset.heldOut) };
  reply({ type: 'ready', choice, examples: data.train.count, heldOut: data.heldOut.count });
}

async function round({ deviceId, msg }: TrainerRequest & { type: 'round' }): Promise<DeviceRound> {
  if (!data) throw new Error('the training worker has no data yet');
  return runDeviceRound(msg, {
    deviceId,
    model: model(msg.model),
    train: data.train,
    heldOut: data.heldOut,
    memory: indexedDbMemory,
    hooks: {
      onPhase: (phase) => reply({ type: 'phase', phase }),
      onProgress: (done, total, loss) => reply({ type: 'progress', done, total, loss }),
      shouldStop: () => stopped,
      yieldToHost,
    },
  });
}

scope.onmessage = (event: MessageEvent<TrainerRequest>) => {
  const request = event.data;
  const failed = (err: unknown) => reply({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
  switch (request.type) {
    case 'init':
      init(request).catch(failed);
      break;
    case 'round':
      if (busy) {
        failed(new Error('the training worker is already training a round'));
        break;
      }
      busy = true;
      stopped = false;
      round(request)
        .then((r) => reply({ type: 'done', round: r }, transferablesOf(r)), failed)
        .finally(() => {
          busy = false;
        });
      break;
    case 'stop':
      stopped = true;
      break;
    default: {
      const never: never = request;
      failed(new Error(`unknown request ${JSON.stringify(never)}`));
    }
  }
};

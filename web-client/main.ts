/** The demo page: one device of the federation. */
import * as tf from '@tensorflow/tfjs';
import { decodeDataset, type DeviceDataset } from '../shared/dataset.ts';
import type { ModelName } from '../shared/models-names.ts';
import { PARTITIONS } from '../shared/partition.ts';
import type { TrainingBench } from './ml/bench.ts';
import { toTensors, disposeData } from '../shared/train.ts';
import { clearDataset, deviceIdentity, ensureDataset, indexedDbMemory, type SliceSpec } from './data/store.ts';
import { DeviceClient, type DeviceSnapshot } from './fl/client.ts';
import { faultsFromQuery, faultyDevice, type Fault } from './fl/faults.ts';
import { chooseBackend, type BackendChoice, type BackendName } from './ml/backend.ts';
import { barChart, lineChart } from './ui/charts.ts';
import { byId } from './ui/dom.ts';
import { renderFacts, renderHistory, renderProgress, renderSamples, renderState } from './ui/device.ts';

/** A small, typed, read-only API for scripts and tests (instead of scraping the page). */
export interface DeviceTestApi {
  ready: boolean;
  deviceId?: string;
  backend?: BackendChoice;
  examples?: number;
  heldOut?: number;
  source?: 'indexeddb' | 'provisioned';
  snapshot?: DeviceSnapshot;
  /** loads a model with tf.loadLayersModel and returns its parameter count */
  loadModel(url: string): Promise<number>;
  /** measures training samples/s on a backend: raw model.fit vs the device's training step */
  benchTraining(backend: string, model: ModelName, examples: number): Promise<TrainingBench>;
  /** the faults injected by ?faultSilent/faultLate, round by round (simulation only) */
  faults: { round: number; fault: Fault }[];
  /** live TF.js tensors on this page */
  tensors(): number;
}
declare global {
  interface Window {
    __fl: DeviceTestApi;
  }
}
window.__fl = {
  ready: false,
  faults: [],
  tensors: () => tf.memory().numTensors,
  loadModel: async (url) => {
    const model = await tf.loadLayersModel(url);
    const n = model.countParams();
    model.dispose();
    return n;
  },
  benchTraining: async (backend, model, examples) => {
    const { benchTraining } = await import('./ml/bench.ts');
    const data = await fetchSlice({ partition: 'iid', clients: 10, client: 0, examples, seed: 1, alpha: 1 });
    return benchTraining(backend, model, data.train);
  },
};

const params = new URLSearchParams(location.search);
const form = byId<HTMLFormElement>('join-form');
const errorLine = byId('error');
const joinButton = byId<HTMLButtonElement>('join');
const leaveButton = byId<HTMLButtonElement>('leave');
const clearButton = byId<HTMLButtonElement>('clear');

// Query parameters pre-fill the form: partition, clients, client, examples, seed, alpha, backend.
for (const name of ['partition', 'clients', 'client', 'examples', 'seed', 'alpha', 'backend']) {
  const value = params.get(name);
  const field = form.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement | null;
  if (value !== null && field) field.value = value;
}

function readSpec(): { spec: SliceSpec; backend?: BackendName } {
  const data = new FormData(form);
  const int = (name: string, min: number) => {
    const v = Number(data.get(name));
    if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be an integer ≥ ${min}, got "${String(data.get(name))}"`);
    return v;
  };
  const partition = String(data.get('partition'));
  if (!(PARTITIONS as readonly string[]).includes(partition)) throw new Error(`partition must be one of ${PARTITIONS.join(', ')}`);
  const spec: SliceSpec = { partition, clients: int('clients', 1), client: int('client', 0), examples: int('examples', 1), seed: int('seed', 0), alpha: Number(data.get('alpha')) };
  if (spec.client >= spec.clients) throw new Error(`client must be less than clients (${spec.clients})`);
  if (!(spec.alpha > 0)) throw new Error('alpha must be a positive number');
  const backend = String(data.get('backend') ?? '');
  if (backend && !['webgl', 'wasm', 'cpu', 'webgpu'].includes(backend)) throw new Error(`backend must be webgl, wasm or cpu, got "${backend}"`);
  return { spec, ...(backend ? { backend: backend as BackendName } : {}) };
}

async function fetchSlice(spec: SliceSpec): Promise<DeviceDataset> {
  const q = new URLSearchParams(Object.entries(spec).map(([k, v]) => [k, String(v)]));
  const res = await fetch(`/api/data/slice?${q}`);
  if (!res.ok) throw new Error(`data provisioning failed: ${((await res.json().catch(() => ({}))) as { error?: string }).error ?? res.statusText}`);
  return decodeDataset(new Uint8Array(await res.arrayBuffer()));
}

const histogramChart = barChart(byId<HTMLCanvasElement>('histogram'), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'], 'examples', '#2f6fde');
const historyChart = lineChart(byId<HTMLCanvasElement>('history-chart'), [], [
  { label: 'global model on held-out data (before training)', color: '#b26a00' },
  { label: 'local model on held-out data (after training)', color: '#1f8a4c' },
], 1);

let client: DeviceClient | undefined;

function render(s: DeviceSnapshot): void {
  window.__fl.snapshot = s;
  renderState(byId('connection'), byId('state'), s);
  renderProgress(byId('progress'), byId('progress-line'), byId('round-line'), s);
  byId('global-line').textContent = s.globalModel ? `Latest global model: version ${s.globalModel.version} (round ${s.globalModel.round}), test accuracy ${s.globalModel.testAccuracy === null ? '—' : (s.globalModel.testAccuracy * 100).toFixed(2) + ' %'}` : 'No global model published yet.';
  renderHistory(byId<HTMLTableElement>('history'), s.history);
  const trained = s.history.filter((h) => h.accuracyBefore !== null);
  historyChart.data.labels = trained.map((h) => `r${h.round}`);
  historyChart.data.datasets[0]!.data = trained.map((h) => h.accuracyBefore);
  historyChart.data.datasets[1]!.data = trained.map((h) => h.accuracyAfter);
  historyChart.update();
  errorLine.textContent = s.error ?? '';
}

async function join(): Promise<void> {
  errorLine.textContent = '';
  const { spec, backend } = readSpec();
  joinButton.disabled = true;
  for (const field of Array.from(form.elements)) (field as HTMLInputElement).disabled = true;
  const choice = await chooseBackend(backend);
  const identity = await deviceIdentity();
  const id = identity.deviceId;
  const { meta, data, source } = await ensureDataset(spec, fetchSlice);
  renderFacts(byId('facts'), { deviceId: id, backend: choice.backend, backendReason: choice.reason, examples: meta.trainCount, heldOut: meta.heldOutCount, source: source === 'indexeddb' ? 'read from IndexedDB' : 'provisioned once, stored in IndexedDB', slice: `${spec.partition}, slice ${spec.client} of ${spec.clients}, seed ${spec.seed}` });
  histogramChart.data.datasets[0]!.data = meta.histogram;
  histogramChart.update();
  renderSamples(byId('samples'), data.train);
  const train = toTensors(data.train);
  const heldOut = toTensors(data.heldOut);
  const joinToken = params.get('joinToken') ?? undefined;
  const faults = faultsFromQuery(params);
  client = new DeviceClient({ identity, hello: { backend: choice.backend, backendReason: choice.reason.slice(0, 300), examples: meta.trainCount, heldOut: meta.heldOutCount, labelHistogram: meta.histogram, ...(joinToken ? { joinToken: joinToken.slice(0, 200) } : {}) }, train, heldOut, memory: indexedDbMemory, ...(faults ? { beforeSubmit: faultyDevice(faults, (fault, round) => window.__fl.faults.push({ round, fault })) } : {}) });
  const unsubscribe = client.subscribe(render);
  client.join();
  Object.assign(window.__fl, { ready: true, deviceId: id, backend: choice, examples: meta.trainCount, heldOut: meta.heldOutCount, source });
  leaveButton.disabled = false;
  leaveButton.onclick = async () => {
    const leaving = client;
    client = undefined;
    leaveButton.disabled = true;
    window.__fl.ready = false;
    await leaving?.leave(); // the round in progress unwinds first: its data may be disposed then
    unsubscribe();
    if (leaving) render(leaving.snapshot);
    disposeData(train);
    disposeData(heldOut);
    joinButton.disabled = false;
    for (const field of Array.from(form.elements)) (field as HTMLInputElement).disabled = false;
  };
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  join().catch((err: unknown) => {
    errorLine.textContent = err instanceof Error ? err.message : String(err);
    joinButton.disabled = false;
    for (const field of Array.from(form.elements)) (field as HTMLInputElement).disabled = false;
  });
});
clearButton.addEventListener('click', () => {
  if (client) leaveButton.click();
  clearDataset().then(
    () => (errorLine.textContent = 'Local data cleared; it will be provisioned again on the next join.'),
    (err: unknown) => (errorLine.textContent = String(err)),
  );
});
// Leave cleanly when the tab closes or reloads; the server also sees the socket close.
window.addEventListener('pagehide', () => void client?.leave());

if (params.get('autojoin') === '1') form.requestSubmit();

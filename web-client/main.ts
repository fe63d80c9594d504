/**
 * The demo page: this tab is one device of the federation. Each tab has its own identity and its
 * own database (data/tab.ts), and a reload rejoins with the same slice.
 */
import * as tf from '@tensorflow/tfjs';
import { decodeDataset, type DeviceDataset } from '../shared/dataset.ts';
import type { ModelName } from '../shared/models-names.ts';
import { PARTITIONS } from '../shared/partition.ts';
import type { TrainingBench } from './ml/bench.ts';
import { toTensors, disposeData } from '../shared/train.ts';
import { clearDataset, deviceIdentity, ensureDataset, indexedDbMemory, readMeta, sameSpec, useDatabase, type SliceSpec } from './data/store.ts';
import { databaseOf, loadTabJoin, saveTabJoin, tabSlot } from './data/tab.ts';
import { DeviceClient, type DeviceSnapshot } from './fl/client.ts';
import { faultsFromQuery, faultyDevice, type Fault } from './fl/faults.ts';
import { chooseBackend, type BackendChoice, type BackendName } from './ml/backend.ts';
import { WorkerTrainer } from './ml/trainer.ts';
import { barChart, lineChart } from './ui/charts.ts';
import { byId } from './ui/dom.ts';
import { drawingPad, toMnist } from './ui/draw.ts';
import { qualityOf, type DataQuality, type QualityReference } from '../shared/data-quality.ts';
import { predictDigit } from './ml/predict.ts';
import { describeSlice, renderFacts, renderHistory, renderProgress, renderSamples, renderState } from './ui/device.ts';

/** A small, typed, read-only API for scripts and tests (instead of scraping the page). */
export interface DeviceTestApi {
  ready: boolean;
  /** this tab's slot and database: each tab is its own device */
  slot?: string;
  database?: string;
  deviceId?: string;
  backend?: BackendChoice;
  /** where local training runs: the tab's Web Worker, or (?worker=0, or no worker) the page's main thread */
  trainingIn?: 'worker' | 'page';
  examples?: number;
  heldOut?: number;
  source?: 'indexeddb' | 'provisioned';
  spec?: SliceSpec;
  snapshot?: DeviceSnapshot;
  /** the scores of this tab's data (data-quality.ts) */
  quality?: DataQuality;
  /** the drawing pad's last prediction */
  prediction?: { digit: number; probabilities: number[]; version: number };
  /** loads a model with tf.loadLayersModel and returns its parameter count */
  loadModel(url: string): Promise<number>;
  /** measures training samples/s on a backend: raw model.fit vs the device's training step */
  benchTraining(backend: string, model: ModelName, examples: number): Promise<TrainingBench>;
  /** the faults injected by ?faultSilent/faultLate, round by round (simulation only) */
  faults: { round: number; attempt: number; fault: Fault }[];
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
const statusLine = byId('join-status');
const joinButton = byId<HTMLButtonElement>('join');
const leaveButton = byId<HTMLButtonElement>('leave');
const clearButton = byId<HTMLButtonElement>('clear');
const FIELDS = ['partition', 'clients', 'client', 'examples', 'seed', 'alpha', 'backend', 'corrupt'] as const;

interface JoinSpec {
  spec: SliceSpec;
  backend?: BackendName;
}

const setField = (name: string, value: string) => {
  const field = form.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement | null;
  if (field) field.value = value;
};
const fillForm = (j: JoinSpec) => {
  for (const [k, v] of Object.entries(j.spec)) setField(k, String(v));
  setField('backend', j.backend ?? '');
};

/** A field's label as the page shows it ("This slice (0-based)"), so the form's messages use the words a person reads. */
const labelOf = (name: string): string => {
  const field = form.elements.namedItem(name) as HTMLElement | null;
  return field?.closest('label')?.firstChild?.textContent?.trim() || name;
};

function readSpec(): JoinSpec {
  const data = new FormData(form);
  const int = (name: string, min: number) => {
    const v = Number(data.get(name));
    if (!Number.isInteger(v) || v < min) throw new Error(`${labelOf(name)} must be a whole number of at least ${min}, got "${String(data.get(name))}"`);
    return v;
  };
  const partition = String(data.get('partition'));
  if (!(PARTITIONS as readonly string[]).includes(partition)) throw new Error(`${labelOf('partition')} must be one of ${PARTITIONS.join(', ')}`);
  const spec: SliceSpec = { partition, clients: int('clients', 1), client: int('client', 0), examples: int('examples', 1), seed: int('seed', 0), alpha: Number(data.get('alpha')) };
  if (spec.client >= spec.clients) throw new Error(`${labelOf('client')} must be less than ${labelOf('clients')}: with ${spec.clients} slices they are numbered 0 to ${spec.clients - 1}`);
  if (!(spec.alpha > 0)) throw new Error(`${labelOf('alpha')} must be a positive number`);
  const corrupt = String(data.get('corrupt') ?? '').trim();
  if (corrupt) spec.corrupt = corrupt;
  const backend = String(data.get('backend') ?? '');
  if (backend && !['webgl', 'wasm', 'cpu', 'webgpu'].includes(backend)) throw new Error(`${labelOf('backend')} must be auto, webgl, wasm or cpu, got "${backend}"`);
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
  { label: 'personal model on held-out data (fine-tuned here)', color: '#1f8a4c' },
], 1);

let client: DeviceClient | undefined;
let joining = false;

// ─── the drawing pad: the device's current model predicts what a person draws ───
const probabilitiesChart = barChart(byId<HTMLCanvasElement>('probabilities'), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'], 'probability', '#1f8a4c');
const pad = drawingPad(byId<HTMLCanvasElement>('pad'), () => void predictDrawn());
byId('pad-clear').addEventListener('click', () => {
  pad.clear();
  probabilitiesChart.data.datasets[0]!.data = [];
  probabilitiesChart.update();
  // no drawing, no probabilities: the chart goes with its data rather than showing an empty axis
  byId('probabilities-wrap').hidden = true;
  byId('prediction').textContent = 'Draw a digit from 0 to 9 with the mouse, a pen or a finger.';
});
async function predictDrawn(): Promise<void> {
  const canvas = byId<HTMLCanvasElement>('pad');
  const pixels = toMnist(canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data, canvas.width, canvas.height);
  const line = byId('prediction');
  if (!pixels) return;
  const serving = await client?.servingModel();
  if (!serving) {
    line.textContent = 'No model on this device yet: join, and it gets one in its first round (or a canary).';
    return;
  }
  const probs = predictDigit(serving.model, pixels);
  const best = probs.indexOf(Math.max(...probs));
  probabilitiesChart.data.datasets[0]!.data = probs;
  byId('probabilities-wrap').hidden = false;
  probabilitiesChart.update();
  const why = client?.snapshot.serving?.why === 'canary' ? ' (a candidate this device tries in a canary)' : '';
  line.textContent = `It is a ${best}: ${(probs[best]! * 100).toFixed(1)} % sure, says model v${serving.version}${why}.`;
  window.__fl.prediction = { digit: best, probabilities: probs, version: serving.version };
}

/** what each stage of a secure round means, in the page's words */
const SECURE_STAGES: Record<NonNullable<DeviceSnapshot['secure']>, string> = {
  keys: 'keys advertised; waiting for the neighbours',
  shares: 'secrets shared with the neighbours',
  masking: 'masking the update',
  unmasking: 'masked update sent; waiting to reveal shares for the sum',
  done: 'shares revealed: the server can remove the masks from the sum only',
};

function render(s: DeviceSnapshot | undefined): void {
  window.__fl.snapshot = s;
  renderState(byId('connection'), byId('state'), s);
  renderProgress(byId('progress'), byId('progress-line'), byId('round-line'), s);
  const g = s?.globalModel;
  const ev = s?.evaluations.at(-1);
  byId('serving-line').textContent = !s ? '' : [s.serving ? `Predictions come from model v${s.serving.version}${s.serving.why === 'canary' ? ', a candidate this device tries in a canary' : s.serving.why === 'live' ? ', the live model' : ''}.` : '', ev ? `Evaluation ${ev.evalId} (${ev.purpose}): ${ev.results.map((r) => `v${r.version} ${(r.accuracy * 100).toFixed(1)} %`).join(', ')} on held-out data, ${ev.outcome}${ev.message ? ` (${ev.message})` : ''}.` : ''].filter(Boolean).join(' ');
  byId('global-line').textContent = !s || s.connection === 'offline' ? '' : g ? `Latest global model: version ${g.version}${g.round > 0 ? ` (after round ${g.round})` : ' (initial)'}, test accuracy ${g.testAccuracy === null ? 'not measured yet' : (g.testAccuracy * 100).toFixed(2) + ' %'}` : 'No global model yet: no run has started.';
  // personalization: the latest round this tab trained, global against personal, and the mix its label distance sets
  const p = [...(s?.history ?? [])].reverse().find((h) => h.accuracyBefore !== null);
  byId('personal-line').textContent = p
    ? `Personal model (the global one fine-tuned here), kept in IndexedDB: held-out accuracy ${pct1(p.accuracyAfter)} against the global model's ${pct1(p.accuracyBefore)}` +
      (p.labelDistance === null ? '.' : `; this tab's labels are at distance ${p.labelDistance.toFixed(2)} from the population's, so predictions mix ${Math.round(p.labelDistance * 100)} % personal with the global model: ${pct1(p.accuracyMixed)}.`)
    : '';
  const stage = s?.secure;
  byId('secure-line').textContent = stage ? `Secure aggregation: ${SECURE_STAGES[stage]}` : '';
  const history = s?.history ?? [];
  renderHistory(byId<HTMLTableElement>('history'), history);
  // The chart shows the latest run only: rounds of different runs do not continue each other.
  const latest = history.at(-1)?.runId;
  const trained = history.filter((h) => h.runId === latest && h.accuracyBefore !== null);
  byId('history-empty').hidden = history.length > 0;
  byId('history').hidden = history.length === 0;
  byId('history-chart-wrap').hidden = trained.length === 0;
  byId('history-run').hidden = trained.length === 0;
  byId('history-run').textContent = `Run ${latest}: held-out accuracy of the global model before local training, and of this tab's personal model (the global one fine-tuned here) after it.`;
  historyChart.data.labels = trained.map((h) => (h.attempt > 1 ? `r${h.round}.${h.attempt}` : `r${h.round}`));
  historyChart.data.datasets[0]!.data = trained.map((h) => h.accuracyBefore);
  historyChart.data.datasets[1]!.data = trained.map((h) => h.accuracyAfter);
  historyChart.update();
  if (s?.error) errorLine.textContent = s.error;
}

const pct1 = (v: number | null) => (v === null ? '—' : `${(v * 100).toFixed(1)} %`);

function setBusy(busy: boolean): void {
  joinButton.disabled = busy || client !== undefined;
  for (const field of Array.from(form.elements)) if (field !== joinButton) (field as HTMLInputElement).disabled = busy || client !== undefined;
  byId('progress').classList.toggle('indeterminate', busy);
}

/**
 * Where this device trains: in a Web Worker, which chooses its own backend and reads the tab's
 * data from IndexedDB, so the page never freezes while the model trains; the page then uses the
 * same backend for what it computes itself (predictions, evaluation rounds). `?worker=0`, or a
 * worker that cannot start, trains on the page's main thread, and the backend's reason says so.
 */
async function startTraining(forced: BackendName | undefined): Promise<{ choice: BackendChoice; trainer?: WorkerTrainer }> {
  let problem = 'asked for by ?worker=0';
  if (params.get('worker') !== '0') {
    try {
      const trainer = await WorkerTrainer.start(window.__fl.database!, forced);
      let onPage: string = trainer.choice.backend;
      if (!(await tf.setBackend(onPage).catch(() => false))) {
        await tf.setBackend('cpu');
        onPage = 'cpu';
      }
      const choice = { ...trainer.choice, reason: `${trainer.choice.reason}; training in a Web Worker${onPage !== trainer.choice.backend ? ` (the page itself computes on ${onPage})` : ''}` };
      return { choice, trainer };
    } catch (err) {
      problem = `the training worker could not start: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
  const choice = await chooseBackend(forced);
  return { choice: { ...choice, reason: `${choice.reason}; training on the page's main thread (${problem})` } };
}

/** Joins with `j`; `replace` confirms that a different slice may replace the tab's stored one. */
async function join(j: JoinSpec, replace: boolean): Promise<void> {
  if (joining || client) return;
  const stored = await readMeta();
  if (stored && !sameSpec(stored.spec, j.spec) && !replace) {
    byId('replace-text').textContent = `This tab holds ${describeSlice(stored.spec)} (${stored.trainCount} training examples). Joining with ${describeSlice(j.spec)} replaces it, and this device's data with it.`;
    byId('replace-warning').hidden = false;
    return;
  }
  byId('replace-warning').hidden = true;
  joining = true;
  errorLine.textContent = '';
  setBusy(true);
  try {
    const identity = await deviceIdentity();
    statusLine.textContent = stored && sameSpec(stored.spec, j.spec) ? 'Reading this tab’s data from IndexedDB…' : 'Fetching this tab’s slice of MNIST (once) and storing it in IndexedDB…';
    const { meta, data, source } = await ensureDataset(j.spec, fetchSlice);
    statusLine.textContent = j.backend ? `Starting the training worker on the ${j.backend} backend…` : 'Starting the training worker: choosing the fastest backend that trains correctly (webgl, wasm, cpu)…';
    const { choice, trainer } = await startTraining(j.backend);
    // the data-quality checks, here on the device: only the scores go to the server
    const reference = await fetch('/api/data/reference').then((r) => (r.ok ? (r.json() as Promise<QualityReference>) : undefined)).catch(() => undefined);
    const quality = qualityOf(data.train, { reference });
    window.__fl.quality = quality;
    renderFacts(byId('facts'), { deviceId: identity.deviceId, slot: window.__fl.slot ?? '', backend: choice.backend, backendReason: choice.reason, examples: meta.trainCount, heldOut: meta.heldOutCount, source: source === 'indexeddb' ? 'read from IndexedDB' : 'provisioned once, stored in IndexedDB', slice: describeSlice(j.spec), quality });
    byId('device-empty').hidden = true;
    byId('histogram-wrap').hidden = false;
    histogramChart.data.datasets[0]!.data = meta.histogram;
    histogramChart.update();
    renderSamples(byId('samples'), data.train);
    statusLine.textContent = 'Connecting, and proving this device’s identity…';
    const train = toTensors(data.train);
    const heldOut = toTensors(data.heldOut);
    const joinToken = params.get('joinToken') ?? undefined;
    const faults = faultsFromQuery(params);
    const device = new DeviceClient({ identity, hello: { backend: choice.backend, backendReason: choice.reason.slice(0, 300), examples: meta.trainCount, heldOut: meta.heldOutCount, labelHistogram: meta.histogram, quality: { conformity: quality.conformity!, uniqueness: quality.uniqueness!, completeness: quality.completeness!, coherence: quality.coherence }, ...(joinToken ? { joinToken: joinToken.slice(0, 200) } : {}) }, train, heldOut, memory: indexedDbMemory, ...(trainer ? { runRound: trainer.run } : {}), ...(faults ? { beforeSubmit: faultyDevice(faults, (fault, round, attempt) => window.__fl.faults.push({ round, attempt, fault })) } : {}) });
    client = device;
    saveTabJoin({ spec: j, joined: true });
    const unsubscribe = device.subscribe((s) => {
      render(s);
      if (s.connection === 'connected') statusLine.textContent = '';
    });
    device.join();
    Object.assign(window.__fl, { ready: true, deviceId: identity.deviceId, backend: choice, trainingIn: trainer ? 'worker' : 'page', examples: meta.trainCount, heldOut: meta.heldOutCount, source, spec: j.spec });
    leaveButton.disabled = false;
    leaveButton.onclick = async () => {
      client = undefined;
      leaveButton.disabled = true;
      window.__fl.ready = false;
      saveTabJoin({ spec: j, joined: false });
      await device.leave(); // the round in progress unwinds first: its data may be disposed then
      trainer?.terminate();
      unsubscribe();
      render(undefined);
      disposeData(train);
      disposeData(heldOut);
      setBusy(false);
    };
  } finally {
    joining = false;
    setBusy(false);
  }
}

const fail = (err: unknown) => {
  errorLine.textContent = err instanceof Error ? err.message : String(err);
  statusLine.textContent = '';
};

form.addEventListener('submit', (event) => {
  event.preventDefault();
  try {
    join(readSpec(), false).catch(fail);
  } catch (err) {
    fail(err);
  }
});
byId('replace-yes').addEventListener('click', () => {
  try {
    join(readSpec(), true).catch(fail);
  } catch (err) {
    fail(err);
  }
});
byId('replace-no').addEventListener('click', () => {
  byId('replace-warning').hidden = true;
  void readMeta().then((m) => m && fillForm({ spec: m.spec, ...(readSpec().backend ? { backend: readSpec().backend as BackendName } : {}) }));
});
clearButton.addEventListener('click', async () => {
  if (client) leaveButton.click();
  try {
    await clearDataset();
    saveTabJoin({ spec: readSpec(), joined: false });
    errorLine.textContent = '';
    statusLine.textContent = 'This tab’s data was cleared; it will be provisioned again on the next join.';
  } catch (err) {
    fail(err);
  }
});
// Leave cleanly when the tab closes or reloads; the server also sees the socket close.
window.addEventListener('pagehide', () => void client?.leave());

async function start(): Promise<void> {
  const slot = await tabSlot();
  useDatabase(databaseOf(slot));
  Object.assign(window.__fl, { slot, database: databaseOf(slot) });
  // The form: defaults, then the query's values, then what this tab joined with before (a reload).
  for (const name of FIELDS) {
    const value = params.get(name);
    if (value !== null) setField(name, value);
  }
  const saved = loadTabJoin<JoinSpec>();
  if (saved) fillForm(saved.spec);
  render(undefined);
  // A reload rejoins by itself; so does a scripted visit (autojoin=1), whose query decides the slice.
  if (saved?.joined || params.get('autojoin') === '1') await join(readSpec(), params.get('autojoin') === '1');
}
start().catch(fail);

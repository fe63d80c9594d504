/**
 * The admin page: sign in with the admin token, launch and stop runs over the HTTP API, and watch
 * everything live over the authenticated `/admin` socket.io channel (no polling, no reload).
 */
import { io, type Socket } from 'socket.io-client';
import type { AdminSnapshot } from '../../shared/api.ts';
import { ADMIN_NAMESPACE, type AdminClientToServerEvents, type AdminServerToClientEvents } from '../../shared/protocol.ts';
import { MODEL_NAMES } from '../../shared/models-names.ts';
import { AGGREGATIONS, DOWNLINKS, runConfigSchema, validateRunConfig, type RunConfigInput } from '../../shared/schemas.ts';
import { renderDevices, renderLog, renderModels, renderRounds, renderTimeline, type DeviceRow, type LogEntry, type ModelRow, type RoundRow, type Timeline } from '../ui/admin.ts';
import { barChart, Chart, lineChart } from '../ui/charts.ts';
import { byId, el, pct } from '../ui/dom.ts';

const TOKEN_KEY = 'fl-admin-token';
const defaults = runConfigSchema.parse({});
type Field = keyof typeof defaults;
const FIELDS: { name: Field; label: string; step?: string }[] = [
  { name: 'model', label: 'Model' },
  { name: 'rounds', label: 'Rounds' },
  { name: 'clientsPerRound', label: 'Clients per round (K)' },
  { name: 'overSelect', label: 'Over-selection', step: '0.1' },
  { name: 'minUpdates', label: 'Min updates' },
  { name: 'localEpochs', label: 'Local epochs (E)' },
  { name: 'batchSize', label: 'Batch size (B)' },
  { name: 'learningRate', label: 'Learning rate (η)', step: 'any' },
  { name: 'roundTimeoutMs', label: 'Round deadline (ms)' },
  { name: 'selectionTimeoutMs', label: 'Selection wait (ms)' },
  { name: 'maxRoundRetries', label: 'Round retries' },
  { name: 'seed', label: 'Seed' },
  { name: 'aggregation', label: 'Aggregation' },
  { name: 'trimFraction', label: 'Trimmed fraction', step: '0.05' },
  { name: 'clipNorm', label: 'L2 bound (0 = off)', step: 'any' },
  { name: 'maxExamplesPerDevice', label: 'Max examples counted per device' },
  { name: 'joinToken', label: 'Device join token (optional)' },
  { name: 'updateCodec', label: 'Update codec' },
  { name: 'topkFraction', label: 'Top-k fraction', step: 'any' },
  { name: 'randFraction', label: 'Random-mask fraction', step: 'any' },
  { name: 'quantBlock', label: 'Quantization block (0 = per tensor)' },
  { name: 'downlink', label: 'Model download' },
];
/** the codecs offered in the form; the API takes any pipeline [topk+|rand+](float32|float16|q8|q4|q2)[+deflate] */
const CODECS = ['float32', 'float16', 'q8', 'q4', 'q2+deflate', 'topk', 'topk+q8', 'topk+q4', 'topk+q8+deflate', 'topk+q4+deflate', 'rand+q2+deflate', 'rand+q4+deflate'] as const;
/** free-text fields (sent as strings, omitted when empty) */
const TEXT: ReadonlySet<Field> = new Set(['joinToken']);
const CHOICES: Partial<Record<Field, readonly string[]>> = { model: MODEL_NAMES, aggregation: AGGREGATIONS, updateCodec: CODECS, downlink: DOWNLINKS };

const PRESETS: Record<string, { config: RunConfigInput; hint: string }> = {
  quick: { config: { model: 'cnn-small', rounds: 5, clientsPerRound: 4, minUpdates: 2, localEpochs: 1, batchSize: 10, learningRate: 0.1 }, hint: 'Open / in 4 or more tabs (or run npm run simulate).' },
  compressed: { config: { model: 'cnn-small', rounds: 5, clientsPerRound: 4, minUpdates: 2, localEpochs: 1, batchSize: 10, learningRate: 0.1, updateCodec: 'topk+q8+deflate', topkFraction: 0.05, downlink: 'delta' }, hint: 'Updates as the top 5 % of entries, 8-bit, deflated, with error feedback; models downloaded as deltas. Watch the bytes per round.' },
  'paper-iid': { config: { model: 'cnn', rounds: 20, clientsPerRound: 10, minUpdates: 8, localEpochs: 5, batchSize: 10, learningRate: 0.05, roundTimeoutMs: 1_800_000 }, hint: 'McMahan et al. 2017, CNN, C=0.1 of 100 clients: devices join with /?partition=iid&clients=100&client=K.' },
  'paper-noniid': { config: { model: 'cnn', rounds: 50, clientsPerRound: 10, minUpdates: 8, localEpochs: 5, batchSize: 10, learningRate: 0.05, roundTimeoutMs: 1_800_000 }, hint: 'Pathological non-IID (2 label shards per client): devices join with /?partition=shards&clients=100&client=K.' },
};

// ─── launch form ─────────────────────────────────────────────────────────────
const launch = byId<HTMLFormElement>('launch');
for (const f of FIELDS) {
  const choices = CHOICES[f.name];
  const input = choices
      ? el('select', { name: f.name, id: `f-${f.name}`, 'aria-describedby': `e-${f.name}` }, ...choices.map((m) => el('option', { value: m, selected: m === defaults[f.name] }, m)))
      : TEXT.has(f.name)
        ? el('input', { name: f.name, id: `f-${f.name}`, type: 'password', autocomplete: 'off', 'aria-describedby': `e-${f.name}`, title: 'when set, only devices that join with ?joinToken=… are selected' })
        : el('input', { name: f.name, id: `f-${f.name}`, type: 'number', value: String(defaults[f.name]), step: f.step ?? '1', 'aria-describedby': `e-${f.name}`, title: `default ${defaults[f.name]}` });
  launch.append(el('label', { for: `f-${f.name}` }, f.label, input, el('span', { class: 'field-error', id: `e-${f.name}`, 'aria-live': 'polite' })));
}

const setField = (name: Field, value: string | number | undefined) => {
  (launch.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement).value = value === undefined ? '' : String(value);
};
byId<HTMLSelectElement>('preset').addEventListener('change', (event) => {
  const preset = PRESETS[(event.target as HTMLSelectElement).value];
  if (!preset) return;
  const config = runConfigSchema.parse(preset.config);
  for (const f of FIELDS) setField(f.name, config[f.name]);
  byId('preset-hint').textContent = preset.hint;
  clearFieldErrors();
});

let token = sessionStorage.getItem(TOKEN_KEY) ?? '';
const api = async <T>(path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> => {
  const res = await fetch(path, { ...init, headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.headers ?? {}) } });
  return { status: res.status, body: (await res.json().catch(() => ({}))) as T };
};

function clearFieldErrors(): void {
  for (const f of FIELDS) byId(`e-${f.name}`).textContent = '';
}

function signedOut(message: string): void {
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  byId('signin-card').hidden = false;
  byId('signin-error').textContent = message;
  byId<HTMLInputElement>('token').focus();
}

launch.addEventListener('submit', (event) => {
  event.preventDefault();
  clearFieldErrors();
  byId('launch-error').textContent = '';
  byId('launch-error').classList.remove('ok');
  const data = new FormData(launch);
  const body: Record<string, unknown> = {};
  for (const f of FIELDS) {
    const raw = String(data.get(f.name) ?? '').trim();
    if (raw === '') continue;
    body[f.name] = CHOICES[f.name] || TEXT.has(f.name) ? raw : Number(raw);
  }
  // The same rules as the API, so the messages next to the fields are the API's.
  const checked = validateRunConfig(body);
  if (!checked.ok) {
    for (const issue of checked.issues) {
      const target = document.getElementById(`e-${issue.field}`);
      if (target) target.textContent = issue.message;
      else byId('launch-error').textContent = issue.message;
    }
    byId('launch-error').textContent ||= 'Fix the fields marked above.';
    return;
  }
  api<{ id?: number; error?: string; issues?: { field: string; message: string }[] }>('/api/runs', { method: 'POST', body: JSON.stringify(body) }).then(({ status, body: res }) => {
    if (status === 201) {
      byId('launch-error').textContent = `Run ${res.id} launched.`;
      byId('launch-error').classList.add('ok');
    }
    else if (status === 401) signedOut('Sign in with the admin token first.');
    else {
      for (const issue of res.issues ?? []) {
        const target = document.getElementById(`e-${issue.field}`);
        if (target) target.textContent = issue.message;
      }
      byId('launch-error').textContent = res.error ?? `launch failed (${status})`;
    }
  }, (err: unknown) => (byId('launch-error').textContent = String(err)));
});

byId('stop').addEventListener('click', () => {
  api<{ error?: string }>('/api/runs/current/stop', { method: 'POST' }).then(({ status, body }) => {
    if (status === 401) signedOut('Sign in with the admin token first.');
    else byId('launch-error').textContent = status === 200 ? 'Run stopped.' : (body.error ?? `stop failed (${status})`);
  }, (err: unknown) => (byId('launch-error').textContent = String(err)));
});

// ─── charts ──────────────────────────────────────────────────────────────────
const accuracyChart = lineChart(byId<HTMLCanvasElement>('accuracy-chart'), [], [
  { label: 'test accuracy', color: '#1f8a4c' },
  { label: 'test loss', color: '#c0392b' },
]);
const spreadChart = new Chart<'scatter', { x: number; y: number }[]>(byId<HTMLCanvasElement>('spread-chart'), {
  type: 'scatter',
  data: {
    datasets: [
      { label: 'before local training (global model)', data: [], backgroundColor: '#b26a00', pointRadius: 4 },
      { label: 'after local training', data: [], backgroundColor: '#1f8a4c', pointRadius: 4 },
    ],
  },
  options: { scales: { x: { title: { display: true, text: 'round' }, ticks: { stepSize: 1 } }, y: { min: 0, max: 1 } }, plugins: { legend: { position: 'bottom' } } },
});
const bytesChart = barChart(byId<HTMLCanvasElement>('bytes-chart'), [], 'bytes up', '#2f6fde');
bytesChart.data.datasets.push({ label: 'bytes down', data: [], backgroundColor: '#8a94a6' });
bytesChart.options.plugins = { legend: { display: true, position: 'bottom' } };
const PHASES: [keyof NonNullable<RoundRow['timings']>, string, string][] = [
  ['selectionMs', 'selection', '#8a94a6'],
  ['downloadMs', 'download', '#f0a830'],
  ['evaluateMs', 'device evaluation', '#9b59b6'],
  ['trainMs', 'local training', '#2f6fde'],
  ['uploadMs', 'upload', '#e67e22'],
  ['aggregationMs', 'aggregation', '#b26a00'],
  ['evaluationMs', 'server evaluation', '#1f8a4c'],
];
const timeChart = new Chart<'bar', number[], string>(byId<HTMLCanvasElement>('time-chart'), {
  type: 'bar',
  data: { labels: [], datasets: PHASES.map(([, label, color]) => ({ label, data: [] as number[], backgroundColor: color })) },
  options: { scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: 'seconds (device phases: median)' } } }, plugins: { legend: { position: 'bottom' } } },
});

function renderCharts(rounds: readonly RoundRow[]): void {
  const done = rounds.filter((r) => r.status === 'completed');
  const labels = done.map((r) => String(r.round));
  accuracyChart.data.labels = labels;
  accuracyChart.data.datasets[0]!.data = done.map((r) => r.testAccuracy);
  accuracyChart.data.datasets[1]!.data = done.map((r) => r.testLoss);
  accuracyChart.update();
  spreadChart.data.datasets[0]!.data = done.flatMap((r) => (r.devices ?? []).map((d) => ({ x: r.round - 0.08, y: d.accuracyBefore })));
  spreadChart.data.datasets[1]!.data = done.flatMap((r) => (r.devices ?? []).map((d) => ({ x: r.round + 0.08, y: d.accuracyAfter })));
  spreadChart.update();
  bytesChart.data.labels = rounds.map((r) => (r.attempt > 1 ? `${r.round}.${r.attempt}` : String(r.round)));
  bytesChart.data.datasets[0]!.data = rounds.map((r) => r.bytesUp);
  bytesChart.data.datasets[1]!.data = rounds.map((r) => r.bytesDown);
  bytesChart.update();
  timeChart.data.labels = labels;
  PHASES.forEach(([key], i) => (timeChart.data.datasets[i]!.data = done.map((r) => (r.timings?.[key] ?? 0) / 1000)));
  timeChart.update();
}

// ─── live channel ────────────────────────────────────────────────────────────
type Snapshot = AdminSnapshot;

let log: LogEntry[] = [];
let last: Snapshot | undefined;
let clockSkew = 0;

function renderSnapshot(s: Snapshot): void {
  last = s;
  clockSkew = s.now - Date.now();
  byId('phase').textContent = s.phase;
  byId('phase').className = `pill ${s.phase}`;
  byId('run-line').textContent = s.run ? `run ${s.run.id} · ${s.run.config.model} · round ${s.run.round} of ${s.run.config.rounds}` : 'no run yet';
  const facts: [string, string][] = s.round
    ? [['Round', `${s.round.round}${s.round.attempt > 1 ? ` (try ${s.round.attempt})` : ''}`], ['Selected', String(s.round.selected)], ['Updates in', String(s.round.accepted)], ['Refused', String(s.round.refused)], ['Dropped', String(s.round.dropped)], ['Deadline in', `${Math.max(0, Math.round((s.round.deadline - s.now) / 1000))} s`]]
    : [['Phase', s.phase], ['Reason', s.run?.reason ?? '—']];
  if (s.waiting) facts.unshift(['Waiting', s.waiting]);
  facts.push(['Live model', s.modelVersion === null ? '—' : `v${s.modelVersion}`], ['Rejected / late / bad', `${s.counters.rejectedUpdates} / ${s.counters.lateUpdates} / ${s.counters.badMessages}`]);
  byId('status').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  renderTimeline(byId('timeline'), s.timeline, s.now);
  renderDevices(byId<HTMLTableElement>('devices'), s.devices, s.now);
}

let roundsFor: number | undefined;
let refreshing: Promise<void> | undefined;
let refreshAgain = false;
/** Refreshes rounds, charts and models; calls that arrive while one runs coalesce into one more run, so an older answer never overwrites a newer one. */
function refreshHistory(): Promise<void> {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = loadHistory()
    .catch((err: unknown) => console.warn('dashboard: refresh failed', err))
    .finally(() => {
      refreshing = undefined;
      if (refreshAgain) {
        refreshAgain = false;
        void refreshHistory();
      }
    });
  return refreshing;
}

async function loadHistory(): Promise<void> {
  const { body: runs } = await api<{ id: number; config: RunConfigInput }[]>('/api/runs');
  const configs = new Map(runs.map((r) => [r.id, `${r.config.model} · ${r.config.rounds} rounds · K=${r.config.clientsPerRound} · E=${r.config.localEpochs} · B=${r.config.batchSize} · η=${r.config.learningRate}${r.config.aggregation && r.config.aggregation !== 'fedavg' ? ` · ${r.config.aggregation}` : ''}${r.config.updateCodec && r.config.updateCodec !== 'float32' ? ` · ${r.config.updateCodec}${r.config.updateCodec.startsWith('topk') ? ` (${+((r.config.topkFraction ?? 0) * 100).toFixed(2)} %)` : ''}` : ''}`]));
  const runId = last?.run?.id ?? runs.at(-1)?.id;
  if (runId !== undefined) {
    roundsFor = runId;
    const { body: rounds } = await api<RoundRow[]>(`/api/runs/${runId}/rounds`);
    renderRounds(byId<HTMLTableElement>('rounds'), rounds);
    renderCharts(rounds);
    const lastDone = rounds.filter((r) => r.status === 'completed').at(-1);
    if (lastDone) byId('run-line').textContent = `${byId('run-line').textContent?.split(' · last')[0] ?? ''} · last test accuracy ${pct(lastDone.testAccuracy, 2)}`;
  }
  const { body: models } = await api<ModelRow[]>('/api/models');
  renderModels(byId<HTMLTableElement>('models'), models, last?.modelVersion ?? null, configs);
}

let socket: Socket<AdminServerToClientEvents, AdminClientToServerEvents> | undefined;
function connectLive(): void {
  socket?.disconnect();
  byId('signin-card').hidden = true;
  socket = io(ADMIN_NAMESPACE, { auth: { token }, transports: ['websocket'] });
  socket.on('connect', () => {
    byId('live').textContent = 'live';
    byId('live').className = 'pill connected';
    void refreshHistory();
  });
  socket.on('disconnect', () => {
    byId('live').textContent = 'reconnecting…';
    byId('live').className = 'pill disconnected';
  });
  socket.on('connect_error', (err) => {
    if (err.message.startsWith('unauthorized')) {
      socket?.disconnect();
      signedOut('That token is not the admin token.');
    }
  });
  socket.on('admin:snapshot', (s) => {
    const runChanged = s.run?.id !== last?.run?.id;
    renderSnapshot(s);
    if (runChanged || roundsFor === undefined) void refreshHistory();
  });
  socket.on('admin:events', (entries) => {
    log = entries;
    renderLog(byId('log'), log);
  });
  socket.on('admin:event', (e) => {
    log = [...log.slice(-199), e];
    renderLog(byId('log'), log);
    if (e.kind === 'round:completed' || e.kind === 'round:failed' || e.kind === 'run:started' || e.kind === 'run:finished') void refreshHistory();
  });
}

byId<HTMLFormElement>('signin').addEventListener('submit', (event) => {
  event.preventDefault();
  const candidate = byId<HTMLInputElement>('token').value.trim();
  fetch('/api/admin/session', { headers: { authorization: `Bearer ${candidate}` } }).then((res) => {
    if (res.status === 401) {
      byId('signin-error').textContent = 'That token is not the admin token.';
      return;
    }
    token = candidate;
    sessionStorage.setItem(TOKEN_KEY, token);
    byId('signin-error').textContent = '';
    connectLive();
  }, (err: unknown) => (byId('signin-error').textContent = String(err)));
});

// The deadline countdown and the timeline's running segment advance between snapshots.
setInterval(() => {
  if (last && (last.phase === 'training' || last.phase === 'selecting' || last.phase === 'aggregating' || last.phase === 'evaluating')) renderSnapshot({ ...last, now: Date.now() + clockSkew });
}, 1000);

if (token) connectLive();
else byId<HTMLInputElement>('token').focus();

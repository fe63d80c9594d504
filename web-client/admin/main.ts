/**
 * The admin page: sign in with the admin token, launch and stop runs over the HTTP API, and watch
 * everything live over the authenticated `/admin` socket.io channel (no polling, no reload). What
 * is live comes first — the current round, the global model's accuracy, the devices — then the
 * runs; the launch form opens in a drawer.
 */
import { io, type Socket } from 'socket.io-client';
import type { AdminSnapshot, Deployment, EvaluationRecord, FederationEvent, ModelCard, ModelRecord, RoundRecord, RunSummary } from '../../shared/api.ts';
import { MODEL_NAMES } from '../../shared/models-names.ts';
import { ROUND_PHASES, phaseKey } from '../../shared/phases.ts';
import { ADMIN_NAMESPACE, type AdminClientToServerEvents, type AdminServerToClientEvents } from '../../shared/protocol.ts';
import { AGGREGATIONS, DOWNLINKS, STRATEGY_NAMES, RUN_CONFIG_DEFAULTS, runConfigSchema, validateRunConfig, type RunConfig, type RunConfigInput } from '../../shared/schemas.ts';
import { PHASE_COLORS, renderComparison, renderDeployment, renderDevices, renderEvaluations, renderLineage, renderMonitorFlags, renderLog, renderModels, renderRounds, renderRuns, renderTimeline } from '../ui/admin.ts';
import { lineageTree } from '../ui/lineage.ts';
import { barChart, Chart, lineChart, scatterChart } from '../ui/charts.ts';
import { byId, el, pct } from '../ui/dom.ts';
import { inFormWords } from '../ui/form-words.ts';

/** A read-only view for tests: what the rounds table and the phase chart show, as numbers. */
export interface DashboardTestApi {
  /** the phase chart's total per round (its stacked segments summed), ms */
  phaseChartTotals(): { round: string; totalMs: number }[];
  /** the ε the accuracy chart plots, round by round (6 decimals) */
  epsilonSeries(): (number | null)[];
}
declare global {
  interface Window {
    __dash: DashboardTestApi;
  }
}

const TOKEN_KEY = 'fl-admin-token';
const SIGN_IN_FIRST = 'sign in first: launching a run needs the admin token';
/** the form's fields: every run-config field but the objects `dp`, `labels`, `canary`, `dataQuality` and `monitor` (dp's fields, dataQuality's action and monitor's quarantine are flat below; the rest is set through the API) */
type Field = Exclude<keyof RunConfig, 'dp' | 'labels' | 'canary' | 'dataQuality' | 'monitor'>;
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
  { name: 'initialVersion', label: 'Start from model version' },
  { name: 'strategy', label: 'Strategy' },
  { name: 'serverLearningRate', label: 'Server learning rate', step: 'any' },
  { name: 'beta1', label: 'Server β1 (momentum)', step: 'any' },
  { name: 'beta2', label: 'Server β2', step: 'any' },
  { name: 'tau', label: 'Server τ (adaptivity)', step: 'any' },
  { name: 'mu', label: 'FedProx μ', step: 'any' },
  { name: 'q', label: 'q-FFL q', step: 'any' },
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
  { name: 'downlinkCodec', label: 'Download codec' },
  { name: 'downlinkTopkFraction', label: 'Download top-k fraction', step: 'any' },
  { name: 'secureAggregation', label: 'Secure aggregation' },
  { name: 'secAggNeighbours', label: 'Secure aggregation: neighbours (0 = auto)' },
  { name: 'secAggThreshold', label: 'Secure aggregation: threshold (0 = majority)' },
];
/** `dp`'s fields, flat in the form (empty noise multiplier: no DP) */
const DP_FIELDS: { name: `dp.${'noiseMultiplier' | 'clipNorm' | 'targetDelta' | 'epsilonBudget' | 'dropoutTolerance'}`; label: string; placeholder: string }[] = [
  { name: 'dp.noiseMultiplier', label: 'DP noise multiplier z', placeholder: 'empty: no DP' },
  { name: 'dp.clipNorm', label: 'DP clip bound S', placeholder: 'a number, or adaptive' },
  { name: 'dp.targetDelta', label: 'DP δ', placeholder: '0.00001 (default)' },
  { name: 'dp.epsilonBudget', label: 'DP ε budget', placeholder: 'none (default)' },
  { name: 'dp.dropoutTolerance', label: 'DP dropout tolerance (with secure aggregation)', placeholder: '0.2 (default)' },
];
const LABELS = new Map([...FIELDS, ...DP_FIELDS].map((f) => [f.name as string, f.label]));

/** the codecs offered in the form; the API takes any pipeline [topk+|rand+](float32|float16|q8|q4|q2)[+deflate] */
const CODECS = ['float32', 'float16', 'q8', 'q4', 'q2+deflate', 'topk', 'topk+q8', 'topk+q4', 'topk+q8+deflate', 'topk+q4+deflate', 'rand+q2+deflate', 'rand+q4+deflate'] as const;
/** free-text fields (sent as strings, omitted when empty) */
const TEXT: ReadonlySet<Field> = new Set(['joinToken']);
/** the download codecs offered: exact (float32), or compressed steps with error feedback on the server */
const DOWNLINK_CODECS = ['float32', 'q8+deflate', 'q4+deflate', 'topk+q8+deflate', 'topk+q4+deflate'] as const;
const CHOICES: Partial<Record<Field, readonly string[]>> = { model: MODEL_NAMES, strategy: STRATEGY_NAMES, aggregation: AGGREGATIONS, updateCodec: CODECS, downlink: DOWNLINKS, downlinkCodec: DOWNLINK_CODECS, secureAggregation: ['false', 'true'] };
/** yes/no fields: a select of "false"/"true", sent as a boolean */
const BOOLEAN: ReadonlySet<Field> = new Set(['secureAggregation']);

const PRESETS: Record<string, { config: RunConfigInput; hint: string }> = {
  quick: { config: { model: 'cnn-small', rounds: 5, clientsPerRound: 4, minUpdates: 2, localEpochs: 1, batchSize: 10, learningRate: 0.1 }, hint: 'Open / in 4 or more tabs (or run npm run simulate).' },
  compressed: { config: { model: 'cnn-small', rounds: 5, clientsPerRound: 4, minUpdates: 2, localEpochs: 1, batchSize: 10, learningRate: 0.1, updateCodec: 'rand+q2+deflate', randFraction: 0.15, downlink: 'delta', downlinkCodec: 'topk+q4+deflate', downlinkTopkFraction: 0.02 }, hint: 'Updates as a random 15 % of entries, 2-bit, deflated; new models as compressed steps (the top 2 %, 4-bit) that the server and devices apply alike. Watch the bytes per round.' },
  secure: { config: { model: 'cnn-small', rounds: 3, clientsPerRound: 5, overSelect: 1, minUpdates: 3, localEpochs: 1, batchSize: 10, learningRate: 0.1, clipNorm: 5, secureAggregation: true }, hint: 'Updates masked so that the server learns only their sum (SecAgg+); devices clip to L2 5. Open / in 5 or more tabs.' },
  'paper-iid': { config: { model: 'cnn', rounds: 20, clientsPerRound: 10, minUpdates: 8, localEpochs: 5, batchSize: 10, learningRate: 0.05, roundTimeoutMs: 1_800_000 }, hint: 'McMahan et al. 2017, CNN, C=0.1 of 100 clients: devices join with /?partition=iid&clients=100&client=K.' },
  'paper-noniid': { config: { model: 'cnn', rounds: 50, clientsPerRound: 10, minUpdates: 8, localEpochs: 5, batchSize: 10, learningRate: 0.05, roundTimeoutMs: 1_800_000 }, hint: 'Pathological non-IID (2 label shards per client): devices join with /?partition=shards&clients=100&client=K.' },
};

// ─── launch drawer ───────────────────────────────────────────────────────────
const launch = byId<HTMLFormElement>('launch');
const drawer = byId('launch-drawer');
for (const f of FIELDS) {
  const choices = CHOICES[f.name];
  const fallback = RUN_CONFIG_DEFAULTS[f.name];
  const input = choices
    ? el('select', { name: f.name, id: `f-${f.name}`, 'aria-describedby': `e-${f.name}` }, ...choices.map((m) => el('option', { value: m, selected: m === String(fallback) }, BOOLEAN.has(f.name) ? (m === 'true' ? 'on' : 'off') : m)))
    : TEXT.has(f.name)
      ? el('input', { name: f.name, id: `f-${f.name}`, type: 'password', autocomplete: 'off', 'aria-describedby': `e-${f.name}`, title: 'when set, only devices that join with ?joinToken=… are selected' })
      : el('input', { name: f.name, id: `f-${f.name}`, type: 'number', placeholder: f.name === 'initialVersion' ? 'empty: a fresh model' : fallback === undefined ? 'per strategy (default)' : `${fallback} (default)`, step: f.step ?? '1', 'aria-describedby': `e-${f.name}`, title: fallback === undefined ? 'default: fedavgm 1, fedadagrad 0.1, fedadam 0.01, fedyogi 0.01, scaffold 1' : `default ${fallback}` });
  launch.append(el('label', { for: `f-${f.name}` }, f.label, input, el('span', { class: 'field-error', id: `e-${f.name}`, 'aria-live': 'polite' })));
}
/** a field of a nested config object, flat in the form: a select of values and their words */
const choiceField = (name: string, label: string, options: [value: string, words: string][]) =>
  el('label', { for: `f-${name}` }, label, el('select', { name, id: `f-${name}`, 'aria-describedby': `e-${name}` }, ...options.map(([value, words], i) => el('option', { value, selected: i === 0 }, words))), el('span', { class: 'field-error', id: `e-${name}`, 'aria-live': 'polite' }));
launch.append(
  choiceField('dataQuality.action', 'Devices whose data fails the quality rules', [['flag', 'flagged (default)'], ['exclude', 'left out of selection']]),
  choiceField('monitor.quarantine', 'Devices the update monitor flags', [['false', 'shown only (default)'], ['true', 'quarantined']]),
);
for (const f of DP_FIELDS) {
  const input = el('input', { name: f.name, id: `f-${f.name}`, type: f.name === 'dp.clipNorm' ? 'text' : 'number', step: 'any', inputmode: 'decimal', placeholder: f.placeholder, 'aria-describedby': `e-${f.name}` });
  launch.append(el('label', { for: `f-${f.name}` }, f.label, input, el('span', { class: 'field-error', id: `e-${f.name}`, 'aria-live': 'polite' })));
}
const field = (name: Field) => launch.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement;
const setField = (name: Field, value: string | number | boolean | undefined) => {
  const f = field(name);
  // Number fields left at their default stay empty: the grey default shows through.
  f.value = value === undefined || (!CHOICES[name] && value === RUN_CONFIG_DEFAULTS[name]) ? (CHOICES[name] ? String(RUN_CONFIG_DEFAULTS[name]) : '') : String(value);
};
const presetSelect = byId<HTMLSelectElement>('preset');
const formBody = (): Record<string, unknown> => {
  const data = new FormData(launch);
  const body: Record<string, unknown> = {};
  for (const f of FIELDS) {
    const raw = String(data.get(f.name) ?? '').trim();
    if (raw === '') continue;
    body[f.name] = BOOLEAN.has(f.name) ? raw === 'true' : CHOICES[f.name] || TEXT.has(f.name) ? raw : Number(raw);
  }
  // any DP field filled asks for DP: the rules then name what is missing
  const dp: Record<string, number | string> = {};
  for (const f of DP_FIELDS) {
    const raw = String(data.get(f.name) ?? '').trim();
    if (raw !== '') dp[f.name.slice(3)] = raw === 'adaptive' ? raw : Number(raw);
  }
  if (Object.keys(dp).length) body.dp = dp;
  if (String(data.get('dataQuality.action') ?? 'flag') === 'exclude') body.dataQuality = { action: 'exclude' };
  if (String(data.get('monitor.quarantine') ?? 'false') === 'true') body.monitor = { quarantine: true };
  return body;
};
presetSelect.addEventListener('change', () => {
  const preset = PRESETS[presetSelect.value];
  if (!preset) return;
  const config = runConfigSchema.parse(preset.config);
  for (const f of FIELDS) setField(f.name, config[f.name]);
  for (const f of DP_FIELDS) (launch.elements.namedItem(f.name) as HTMLInputElement).value = '';
  byId('preset-hint').textContent = preset.hint;
  clearFieldErrors();
  byId('launch-error').textContent = '';
});
// Editing a field makes the settings "custom" unless they still match the preset.
launch.addEventListener('input', () => {
  const preset = PRESETS[presetSelect.value];
  if (!preset) return;
  const now = validateRunConfig(formBody());
  const want = runConfigSchema.parse(preset.config);
  if (!now.ok || FIELDS.some((f) => now.config[f.name] !== want[f.name])) {
    presetSelect.value = 'custom';
    byId('preset-hint').textContent = '';
  }
});
const openDrawer = (open: boolean) => {
  drawer.hidden = !open;
  byId('open-launch').setAttribute('aria-expanded', String(open));
  if (open) field('rounds').focus();
};
byId('open-launch').addEventListener('click', () => openDrawer(drawer.hidden === true));
byId('close-launch').addEventListener('click', () => openDrawer(false));

let token = sessionStorage.getItem(TOKEN_KEY) ?? '';
const api = async <T>(path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> => {
  const res = await fetch(path, { ...init, headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.headers ?? {}) } });
  return { status: res.status, body: (await res.json().catch(() => ({}))) as T };
};

/** presets saved by npm run tune (GET /api/presets), offered after the built-in ones */
async function loadSavedPresets(): Promise<void> {
  const { status, body } = await api<{ presets?: { name: string; label: string; hint: string; config: RunConfigInput }[] }>('/api/presets');
  const saved = status === 200 ? (body.presets ?? []) : [];
  presetSelect.querySelector('optgroup[data-saved]')?.remove();
  if (saved.length === 0) return;
  const group = el('optgroup', { label: 'Saved by npm run tune', 'data-saved': true });
  for (const p of saved) {
    PRESETS[`saved:${p.name}`] = { config: p.config, hint: p.hint };
    group.append(el('option', { value: `saved:${p.name}` }, p.label));
  }
  presetSelect.append(group);
}
void loadSavedPresets();

function clearFieldErrors(): void {
  for (const f of [...FIELDS, ...DP_FIELDS]) byId(`e-${f.name}`).textContent = '';
}

/** Launch acts only when it can: signed in (else the API answers 401) and no run active (else 409); its title says why not. */
function setLaunchable(why: string | undefined): void {
  const button = byId<HTMLButtonElement>('launch-button');
  button.disabled = why !== undefined;
  button.title = why ?? '';
}

function signedOut(message: string): void {
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  setLaunchable(SIGN_IN_FIRST);
  byId('signin-card').hidden = false;
  byId('signin-error').textContent = message;
  byId<HTMLInputElement>('token').focus();
}

/** A short message about what an action did, near the header; errors in red, the rest in green. */
let sayTimer: ReturnType<typeof setTimeout> | undefined;
function say(message: string, ok: boolean): void {
  const line = byId('action-line');
  line.hidden = false;
  line.textContent = message;
  line.classList.toggle('ok', ok);
  // What an action did matters for a moment; what a run came to stays in the header and the runs list.
  if (sayTimer) clearTimeout(sayTimer);
  sayTimer = setTimeout(() => (line.hidden = true), 15_000);
}

const showIssues = (issues: { field: string; message: string }[]) => {
  for (const issue of issues) {
    const target = document.getElementById(`e-${issue.field}`);
    if (target) target.textContent = inFormWords(issue.message, LABELS);
    else byId('launch-error').textContent = inFormWords(issue.message, LABELS);
  }
};

launch.addEventListener('submit', (event) => {
  event.preventDefault();
  clearFieldErrors();
  byId('launch-error').textContent = '';
  if (!token) {
    byId('launch-error').textContent = 'Sign in with the admin token first.';
    return;
  }
  const body = formBody();
  // The same rules as the API, so the messages next to the fields are the API's (in the form's words).
  const checked = validateRunConfig(body);
  if (!checked.ok) {
    showIssues(checked.issues);
    byId('launch-error').textContent ||= 'Fix the fields marked above.';
    return;
  }
  api<{ id?: number; error?: string; issues?: { field: string; message: string }[] }>('/api/runs', { method: 'POST', body: JSON.stringify(body) }).then(({ status, body: res }) => {
    if (status === 201) {
      openDrawer(false);
      say(`Run ${res.id} launched.`, true);
      selectedRun = res.id;
    } else if (status === 401) signedOut('Sign in with the admin token first.');
    else {
      showIssues(res.issues ?? []);
      byId('launch-error').textContent = res.error ?? `launch failed (${status})`;
    }
  }, (err: unknown) => (byId('launch-error').textContent = String(err)));
});

byId('stop').addEventListener('click', () => {
  api<{ error?: string }>('/api/runs/current/stop', { method: 'POST' }).then(({ status, body }) => {
    if (status === 401) signedOut('Sign in with the admin token first.');
    else say(status === 200 ? 'Run stopped.' : (body.error ?? `stop failed (${status})`), status === 200);
  }, (err: unknown) => say(String(err), false));
});

// ─── charts ──────────────────────────────────────────────────────────────────
const accuracyChart = lineChart(byId<HTMLCanvasElement>('accuracy-chart'), [], [
  { label: 'test accuracy', color: '#1f8a4c' },
  { label: 'test loss', color: '#c0392b' },
]);
// A private run's ε spent, on its own axis beside accuracy and loss.
accuracyChart.data.datasets.push({ label: 'ε spent (δ as set)', data: [], borderColor: '#6b3fa0', backgroundColor: '#6b3fa0', yAxisID: 'epsilon', hidden: true } as (typeof accuracyChart.data.datasets)[number]);
// a run without DP has no ε: its legend entry goes with the hidden series rather than showing struck through
accuracyChart.options.plugins = { legend: { position: 'bottom', labels: { filter: (item, data) => !data.datasets[item.datasetIndex ?? 0]?.hidden } } };
accuracyChart.options.scales = { x: { title: { display: true, text: 'round' } }, y: { min: 0 }, epsilon: { position: 'right', min: 0, display: false, title: { display: true, text: 'ε' }, grid: { drawOnChartArea: false } } };
const spreadChart = new Chart<'scatter', { x: number; y: number }[]>(byId<HTMLCanvasElement>('spread-chart'), {
  type: 'scatter',
  data: {
    datasets: [
      { label: 'before local training (global model)', data: [], backgroundColor: '#b26a00', pointRadius: 4 },
      { label: 'after local training', data: [], backgroundColor: '#1f8a4c', pointRadius: 4 },
      { label: 'personal mix (by label distance)', data: [], backgroundColor: '#6b3fa0', pointRadius: 3, pointStyle: 'triangle' },
      // fairness: how the round's global model serves the devices (round records' `fairness`)
      { label: 'global model: worst 10 %', data: [], borderColor: '#c0392b', backgroundColor: '#c0392b', showLine: true, pointRadius: 0, borderWidth: 2 },
      { label: 'mean', data: [], borderColor: '#5a5a5a', backgroundColor: '#5a5a5a', showLine: true, pointRadius: 0, borderWidth: 2 },
      { label: 'best 10 %', data: [], borderColor: '#2f6fde', backgroundColor: '#2f6fde', showLine: true, pointRadius: 0, borderWidth: 2 },
    ],
  },
  options: { maintainAspectRatio: false, scales: { x: { title: { display: true, text: 'round' }, ticks: { stepSize: 1 } }, y: { min: 0, max: 1 } }, plugins: { legend: { position: 'bottom', labels: { boxWidth: 10, font: { size: 11 } } } } },
});
const bytesChart = barChart(byId<HTMLCanvasElement>('bytes-chart'), [], 'bytes up', '#2f6fde');
bytesChart.data.datasets.push({ label: 'bytes down', data: [], backgroundColor: '#8a94a6' });
bytesChart.options.plugins = { legend: { display: true, position: 'bottom' } };
// The same phases, colours and names as the live timeline (phases.ts); they add up to the round's duration.
const timeChart = new Chart<'bar', number[], string>(byId<HTMLCanvasElement>('time-chart'), {
  type: 'bar',
  data: { labels: [], datasets: ROUND_PHASES.map((p) => ({ label: p, data: [] as number[], backgroundColor: PHASE_COLORS[p] })) },
  options: { scales: { x: { stacked: true, title: { display: true, text: 'round' } }, y: { stacked: true, title: { display: true, text: 'seconds' } } }, plugins: { legend: { position: 'bottom', labels: { boxWidth: 12 } } } },
});
window.__dash = {
  epsilonSeries: () => (accuracyChart.data.datasets[2]?.data ?? []).map((v) => (typeof v === 'number' ? Number(v.toFixed(6)) : null)),
  phaseChartTotals: () => (timeChart.data.labels ?? []).map((round, i) => ({ round: String(round), totalMs: timeChart.data.datasets.reduce((a, d) => a + ((d.data[i] as number) ?? 0), 0) * 1000 })),
};

const monitorChart = scatterChart(byId<HTMLCanvasElement>('monitor-chart'), [
  { label: 'a counted device: its largest |z|', color: '#2f6fde' },
  { label: 'out of control', color: '#c0392b' },
  { label: 'control limit L', color: '#5d6678' },
], 'round', 'largest robust |z| over the features');
/** The update monitor's chart: each counted device's largest |z| per round against the limit; the flagged device-rounds listed. */
function renderMonitor(rounds: readonly RoundRecord[]): void {
  const done = rounds.filter((r) => r.status === 'completed' && r.monitoring);
  const worst = (d: NonNullable<RoundRecord['monitoring']>['devices'][number]) => Math.max(0, ...Object.values(d.z).map((z) => Math.abs(z!)));
  const points = done.flatMap((r) => r.monitoring!.devices.filter((d) => Object.keys(d.z).length).map((d) => ({ x: r.round, y: worst(d), flagged: d.reasons.length > 0 })));
  const flaggedDevices = new Set(done.flatMap((r) => r.monitoring!.devices.filter((d) => d.flagged).map((d) => d.id)));
  monitorChart.data.datasets[0]!.data = points.filter((p) => !p.flagged);
  monitorChart.data.datasets[1]!.data = points.filter((p) => p.flagged);
  monitorChart.data.datasets[2]!.data = done.filter((r) => r.monitoring!.limit !== null).map((r) => ({ x: r.round, y: r.monitoring!.limit! }));
  (monitorChart.data.datasets[2] as { showLine?: boolean; borderDash?: number[] }).showLine = true;
  (monitorChart.data.datasets[2] as { borderDash?: number[] }).borderDash = [6, 4];
  monitorChart.update();
  // an empty chart is hidden: the line above says there is no monitored round yet (or that it warms up)
  byId('monitor-chart-wrap').hidden = points.length === 0 && monitorChart.data.datasets[2]!.data.length === 0;
  const flags = renderMonitorFlags(byId<HTMLTableElement>('monitor-flags'), done);
  const last = done.at(-1)?.monitoring;
  const alerts = done.flatMap((r) => (r.monitoring!.ks ?? []).filter((k) => k.alert).map((k) => `round ${r.round}: ${k.feature} (D = ${k.d.toFixed(2)}, p = ${k.p.toExponential(1)})`));
  byId('monitor-line').textContent = !last
    ? 'No monitored round yet.'
    : last.phase === 'warming up'
      ? `Learning what normal updates look like (cold start): round ${done.length} of the run's warm-up.`
      : `Control limit |z| ≤ ${last.limit!.toFixed(2)}; isolation score ≤ ${last.isolationThreshold?.toFixed(2) ?? '—'}. ${flags.length} device-round${flags.length === 1 ? '' : 's'} out of control in this run; ${flaggedDevices.size} device${flaggedDevices.size === 1 ? '' : 's'} flagged (out of control in 2 of its last 3 rounds).${alerts.length ? ` Distributions unlike the reference (KS): ${alerts.slice(-3).join('; ')}.` : ''}`;
}

function renderCharts(rounds: readonly RoundRecord[]): void {
  renderMonitor(rounds);
  const done = rounds.filter((r) => r.status === 'completed');
  const label = (r: RoundRecord) => (r.attempt > 1 ? `${r.round}.${r.attempt}` : String(r.round));
  const evaluated = done.filter((r) => r.testAccuracy !== null);
  byId('acc-empty').hidden = evaluated.length > 0;
  byId('accuracy-wrap').hidden = evaluated.length === 0;
  accuracyChart.data.labels = evaluated.map(label);
  accuracyChart.data.datasets[0]!.data = evaluated.map((r) => r.testAccuracy);
  accuracyChart.data.datasets[1]!.data = evaluated.map((r) => r.testLoss);
  const privateRun = evaluated.some((r) => r.privacy);
  accuracyChart.data.datasets[2]!.data = evaluated.map((r) => r.privacy?.epsilon ?? null);
  accuracyChart.data.datasets[2]!.hidden = !privateRun;
  (accuracyChart.options.scales!['epsilon'] as { display: boolean }).display = privateRun;
  byId('acc-epsilon').textContent = privateRun ? `ε = ${evaluated.at(-1)?.privacy?.epsilon.toFixed(2) ?? '—'} after round ${evaluated.at(-1)?.round} (δ = ${evaluated.at(-1)?.privacy?.delta})` : '';
  accuracyChart.update();
  spreadChart.data.datasets[0]!.data = done.flatMap((r) => r.devices.map((d) => ({ x: r.round - 0.08, y: d.accuracyBefore })));
  spreadChart.data.datasets[1]!.data = done.flatMap((r) => r.devices.map((d) => ({ x: r.round + 0.08, y: d.accuracyAfter })));
  spreadChart.data.datasets[2]!.data = done.flatMap((r) => r.devices.filter((d) => d.accuracyMixed !== undefined).map((d) => ({ x: r.round + 0.16, y: d.accuracyMixed! })));
  const fair = done.filter((r) => r.fairness);
  (['worst10', 'mean', 'best10'] as const).forEach((k, i) => (spreadChart.data.datasets[3 + i]!.data = fair.map((r) => ({ x: r.round, y: r.fairness![k] }))));
  spreadChart.update();
  const f = fair.at(-1);
  byId('fairness-note').textContent = f?.fairness ? `Round ${f.round}, global model over ${f.fairness.devices} devices: worst 10 % ${pct(f.fairness.worst10, 1)}, mean ${pct(f.fairness.mean, 1)}, best 10 % ${pct(f.fairness.best10, 1)}, variance ${f.fairness.variance.toFixed(4)}.${f.personalization ? ` Personal models: worst 10 % ${pct(f.personalization.personal.worst10, 1)}, mean ${pct(f.personalization.personal.mean, 1)}; mixed by label distance (mean ${f.personalization.meanDistance.toFixed(2)}): worst 10 % ${pct(f.personalization.mixed.worst10, 1)}, mean ${pct(f.personalization.mixed.mean, 1)}.` : ''}` : '';
  bytesChart.data.labels = rounds.map(label);
  bytesChart.data.datasets[0]!.data = rounds.map((r) => r.bytesUp);
  bytesChart.data.datasets[1]!.data = rounds.map((r) => r.bytesDown);
  bytesChart.update();
  for (const note of Array.from(document.querySelectorAll<HTMLElement>('[data-empty-for]'))) {
    note.hidden = done.length > 0;
    // an empty chart shows its note alone: no axis, no legend
    byId(note.dataset.emptyFor!).style.visibility = done.length > 0 ? '' : 'hidden';
  }
  timeChart.data.labels = done.map(label);
  ROUND_PHASES.forEach((p, i) => (timeChart.data.datasets[i]!.data = done.map((r) => r.phases[phaseKey(p)] / 1000)));
  timeChart.update();
}

// ─── live channel ────────────────────────────────────────────────────────────
let log: FederationEvent[] = [];
let last: AdminSnapshot | undefined;
let clockSkew = 0;
let runs: RunSummary[] = [];
/** the run whose rounds, charts and versions are shown: the current one unless another was chosen */
let selectedRun: number | undefined;
let showAllModels = false;
let showAllRuns = false;
/** how many runs the list shows until "Show all" */
const RUNS_SHOWN = 10;
const openRounds = new Set<string>();
const ACTIVE = new Set(['selecting', 'training', 'aggregating', 'evaluating']);

function renderRunLine(): void {
  const id = last?.run?.id ?? runs.at(-1)?.id;
  const summary = runs.find((r) => r.id === id);
  if (!last?.run && !summary) {
    byId('run-line').textContent = 'no run yet';
    return;
  }
  const run = last?.run;
  const parts = [`run ${id}`, run?.config.model ?? summary?.config.model];
  if (run && ACTIVE.has(last?.phase ?? '')) parts.push(`round ${run.round} of ${run.config.rounds}${run.attempt > 1 ? ` (try ${run.attempt})` : ''}`);
  else if (summary) parts.push(`${summary.status}, ${summary.roundsCompleted} of ${summary.config.rounds} rounds`);
  if (summary?.finalTestAccuracy !== null && summary?.finalTestAccuracy !== undefined) parts.push(`${ACTIVE.has(last?.phase ?? '') ? 'latest' : 'final'} test accuracy ${pct(summary.finalTestAccuracy, 2)}`);
  byId('run-line').textContent = parts.filter(Boolean).join(' · ');
}

function renderSnapshot(s: AdminSnapshot): void {
  last = s;
  clockSkew = s.now - Date.now();
  const active = ACTIVE.has(s.phase);
  byId('phase').textContent = s.stage;
  byId('phase').className = `pill ${s.phase}`;
  byId('phase').title = s.waiting ?? s.run?.reason ?? '';
  byId<HTMLButtonElement>('stop').disabled = !active;
  setLaunchable(!token ? SIGN_IN_FIRST : active ? 'a run is active: stop it first' : undefined);
  const facts: [string, string][] = [['Now', s.waiting ?? s.stage]];
  if (s.round) {
    facts.push(['Round', `${s.round.round}${s.round.attempt > 1 ? ` (try ${s.round.attempt})` : ''} of ${s.run?.config.rounds ?? '?'}`]);
    facts.push(['Updates', `${s.round.accepted} counted of ${s.run?.config.clientsPerRound ?? '?'} wanted (${s.round.selected} selected, min ${s.run?.config.minUpdates ?? '?'})`]);
    facts.push(['Dropped / refused', `${s.round.dropped} / ${s.round.refused}`]);
    facts.push(['Deadline in', `${Math.max(0, Math.round((s.round.deadline - s.now) / 1000))} s`]);
  } else if (s.run) facts.push(['Run', `${s.run.id}: ${s.phase}${s.run.reason ? ` — ${s.run.reason}` : ''}`]);
  facts.push(['Live model', s.modelVersion === null ? '—' : `v${s.modelVersion}`], ['Rejected / late / bad', `${s.counters.rejectedUpdates} / ${s.counters.lateUpdates} / ${s.counters.badMessages}`]);
  byId('status').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  renderTimeline(byId('timeline'), s.timeline, s.now);
  renderDevices(byId<HTMLTableElement>('devices'), s.devices, s.now);
  renderRunLine();
}

let refreshing: Promise<void> | undefined;
let refreshAgain = false;
/** Refreshes runs, rounds, charts and models; calls that arrive while one runs coalesce into one more run, so an older answer never overwrites a newer one. */
/** the version whose record was just saved: its refilled form keeps saying so */
let justSaved: number | undefined;
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
  ({ body: runs } = await api<RunSummary[]>('/api/runs'));
  const runId = selectedRun ?? last?.run?.id ?? runs.at(-1)?.id;
  // the latest runs, and all of them on demand: a list that stops silently would hide the older ones
  renderRuns(byId<HTMLTableElement>('runs'), showAllRuns ? runs : runs.slice(-RUNS_SHOWN), runId, (id) => {
    selectedRun = id;
    showAllModels = false;
    void refreshHistory();
  });
  const moreRuns = byId<HTMLButtonElement>('runs-more');
  moreRuns.hidden = runs.length <= RUNS_SHOWN;
  moreRuns.textContent = showAllRuns ? `Show the latest ${RUNS_SHOWN}` : `Show all ${runs.length} runs`;
  renderRunLine();
  const runLabel = runId === undefined ? '' : `· run ${runId}`;
  for (const id of ['acc-run', 'rounds-run', 'models-run', 'monitor-run']) byId(id).textContent = runLabel;
  const { body: models } = await api<ModelRecord[]>('/api/models');
  registryModels = models;
  void renderRegistry();
  void renderCanary();
  const ofRun = models.filter((m) => m.runId === runId);
  const shown = showAllModels ? ofRun : ofRun.slice(-10);
  renderModels(byId<HTMLTableElement>('models'), shown, last?.modelVersion ?? null);
  const more = byId<HTMLButtonElement>('models-more');
  more.hidden = ofRun.length <= 10;
  more.textContent = showAllModels ? 'Show the latest 10' : `Show all ${ofRun.length} versions of this run`;
  if (runId === undefined) {
    // no run yet: every chart shows its note, not an empty axis
    renderRounds(byId<HTMLTableElement>('rounds'), [], openRounds);
    renderCharts([]);
    return;
  }
  const { body: rounds } = await api<RoundRecord[]>(`/api/runs/${runId}/rounds`);
  renderRounds(byId<HTMLTableElement>('rounds'), rounds, openRounds);
  renderCharts(rounds);
}
// ─── the model registry: lineage tree, records side by side, the admin's edits ───
let registryModels: ModelRecord[] = [];
/** the versions selected in the tree: the latest two, the last one is the one edited */
let selectedVersions: number[] = [];
async function renderRegistry(): Promise<void> {
  renderLineage(byId('lineage'), lineageTree(registryModels, new Set(selectedVersions)), selectedVersions, (v) => {
    selectedVersions = selectedVersions.includes(v) ? selectedVersions.filter((x) => x !== v) : [...selectedVersions, v].slice(-2);
    void renderRegistry();
    void renderCanary();
  });
  const cards = (await Promise.all(selectedVersions.map((v) => api<ModelCard>(`/api/models/${v}`)))).filter((r) => r.status === 200).map((r) => r.body);
  renderComparison(byId('compare'), cards);
  const edited = cards.at(-1);
  const form = byId<HTMLFormElement>('model-edit');
  form.hidden = !edited || !token;
  if (!edited || form.dataset.version === String(edited.version)) return;
  form.dataset.version = String(edited.version);
  byId('model-edit-title').textContent = `Edit v${edited.version}`;
  byId<HTMLInputElement>('meta-name').value = edited.name ?? '';
  byId<HTMLInputElement>('meta-owner').value = edited.owner ?? '';
  // the version's own labels (the record also shows those of its run, which are the run's to set)
  const own = registryModels.find((m) => m.version === edited.version)?.meta.labels ?? {};
  byId<HTMLInputElement>('meta-labels').value = Object.entries(own).map(([k, v]) => `${k}=${v}`).join(', ');
  byId<HTMLTextAreaElement>('meta-description').value = edited.description ?? '';
  // refilled from the record just saved: it says so, whichever refresh refills it
  byId('meta-error').textContent = justSaved === edited.version ? 'Saved.' : '';
  justSaved = undefined;
}
// ─── the live model, the canary, evaluation rounds ───
let deployment: Deployment | undefined;
async function renderCanary(): Promise<void> {
  const [d, evaluations] = await Promise.all([api<Deployment>('/api/canary'), api<EvaluationRecord[]>('/api/evaluations')]);
  if (d.status === 200) {
    deployment = d.body;
    renderDeployment(byId('deployment-line'), byId('canary-result'), d.body);
  }
  if (evaluations.status === 200) renderEvaluations(byId<HTMLTableElement>('evaluations'), evaluations.body);
  const admin = Boolean(token);
  byId('canary-promote').hidden = byId('canary-rollback').hidden = !admin || !deployment?.candidate;
  byId<HTMLButtonElement>('canary-start').disabled = !admin || selectedVersions.length === 0;
  byId<HTMLButtonElement>('evaluate-start').disabled = !admin || selectedVersions.length === 0;
}
/** an admin action on the canary; its answer or error shows under the buttons */
async function canaryAction(path: string, body?: unknown): Promise<void> {
  const { status, body: answer } = await api<{ error?: string }>(path, { method: 'POST', ...(body ? { body: JSON.stringify(body) } : {}) });
  byId('canary-error').textContent = status < 300 ? '' : (answer.error ?? `HTTP ${status}`);
  await refreshHistory();
}
const optionalNumber = (id: string) => {
  const raw = byId<HTMLInputElement>(id).value.trim();
  return raw === '' ? undefined : Number(raw);
};
byId('canary-promote').addEventListener('click', () => void canaryAction('/api/canary/promote'));
byId('canary-rollback').addEventListener('click', () => void canaryAction('/api/canary/rollback'));
byId('canary-start').addEventListener('click', () => {
  const share = optionalNumber('canary-share');
  const margin = optionalNumber('canary-margin');
  void canaryAction('/api/canary', { version: selectedVersions.at(-1), ...(share !== undefined ? { share } : {}), ...(margin !== undefined ? { margin } : {}) });
});
byId('evaluate-start').addEventListener('click', () => void canaryAction('/api/evaluations', { versions: selectedVersions }));

byId<HTMLFormElement>('model-edit').addEventListener('submit', (e) => {
  e.preventDefault();
  const version = byId<HTMLFormElement>('model-edit').dataset.version;
  const labels: Record<string, string> = {};
  for (const pair of byId<HTMLInputElement>('meta-labels').value.split(',').map((p) => p.trim()).filter(Boolean)) {
    const at = pair.indexOf('=');
    labels[(at < 0 ? pair : pair.slice(0, at)).trim()] = at < 0 ? '' : pair.slice(at + 1).trim();
  }
  const body = { name: byId<HTMLInputElement>('meta-name').value, owner: byId<HTMLInputElement>('meta-owner').value, description: byId<HTMLTextAreaElement>('meta-description').value, labels };
  void api<{ error?: string }>(`/api/models/${version}`, { method: 'PATCH', body: JSON.stringify(body) }).then(({ status, body: answer }) => {
    byId('meta-error').className = status === 200 ? 'saved' : 'field-error';
    if (status !== 200) {
      byId('meta-error').textContent = answer.error ?? `could not save (HTTP ${status})`;
      return;
    }
    justSaved = Number(version);
    byId('meta-error').textContent = 'Saved.';
    delete byId<HTMLFormElement>('model-edit').dataset.version; // filled again from the saved record
    void refreshHistory();
  });
});

byId('runs-more').addEventListener('click', () => {
  showAllRuns = !showAllRuns;
  void refreshHistory();
});
byId('models-more').addEventListener('click', () => {
  showAllModels = !showAllModels;
  void refreshHistory();
});

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
    if (runChanged) selectedRun = undefined; // a new run is what one wants to watch
    renderSnapshot(s);
    if (runChanged) void refreshHistory();
  });
  socket.on('admin:events', (entries) => {
    log = entries;
    renderLog(byId('log'), log);
  });
  socket.on('admin:event', (e) => {
    log = [...log.slice(-199), e];
    renderLog(byId('log'), log);
    if (e.kind === 'round:completed' || e.kind === 'round:evaluated' || e.kind === 'round:failed' || e.kind === 'round:stopped' || e.kind === 'run:started' || e.kind === 'run:finished') void refreshHistory();
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

// The deadline countdown and the timeline's running segment advance between snapshots; a finished run's stay still.
setInterval(() => {
  if (last && ACTIVE.has(last.phase)) renderSnapshot({ ...last, now: Date.now() + clockSkew });
}, 1000);

// Until the history arrives (before sign-in too), the charts are empty: they show their notes.
renderCharts([]);
if (token) connectLive();
else byId<HTMLInputElement>('token').focus();

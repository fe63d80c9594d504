/** The admin page: sign in, launch and stop runs, watch devices and rounds (polls the API). */
import { MODEL_NAMES } from '../../shared/models-names.ts';
import { runConfigSchema } from '../../shared/schemas.ts';
import { renderDevices, renderModels, renderRounds, type DeviceRow, type ModelRow, type RoundRow } from '../ui/admin.ts';
import { lineChart } from '../ui/charts.ts';
import { byId, el, pct } from '../ui/dom.ts';

const TOKEN_KEY = 'fl-admin-token';
const defaults = runConfigSchema.parse({});
const FIELDS: { name: keyof typeof defaults; label: string; step?: string }[] = [
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
];

const launch = byId<HTMLFormElement>('launch');
for (const f of FIELDS) {
  const input =
    f.name === 'model'
      ? el('select', { name: f.name, id: `f-${f.name}` }, ...MODEL_NAMES.map((m) => el('option', { value: m, selected: m === defaults.model }, m)))
      : el('input', { name: f.name, id: `f-${f.name}`, type: 'number', value: String(defaults[f.name]), step: f.step ?? '1', 'aria-describedby': `e-${f.name}` });
  launch.append(el('label', { for: `f-${f.name}` }, f.label, input, el('span', { class: 'field-error', id: `e-${f.name}`, 'aria-live': 'polite' })));
}

let token = sessionStorage.getItem(TOKEN_KEY) ?? '';
const api = async <T>(path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> => {
  const res = await fetch(path, { ...init, headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.headers ?? {}) } });
  return { status: res.status, body: (await res.json().catch(() => ({}))) as T };
};

byId<HTMLFormElement>('signin').addEventListener('submit', (event) => {
  event.preventDefault();
  const candidate = byId<HTMLInputElement>('token').value.trim();
  fetch('/api/admin/session', { headers: { authorization: `Bearer ${candidate}` } })
    .then((res) => {
      if (res.status === 401) {
        byId('signin-error').textContent = 'That token is not the admin token.';
        return;
      }
      token = candidate;
      sessionStorage.setItem(TOKEN_KEY, token);
      showSignedIn();
    })
    .catch((err: unknown) => (byId('signin-error').textContent = String(err)));
});

function showSignedIn(): void {
  byId('signin-card').hidden = Boolean(token);
}
showSignedIn();

function clearFieldErrors(): void {
  for (const f of FIELDS) byId(`e-${f.name}`).textContent = '';
}

launch.addEventListener('submit', (event) => {
  event.preventDefault();
  clearFieldErrors();
  byId('launch-error').textContent = '';
  const data = new FormData(launch);
  const body: Record<string, unknown> = {};
  for (const f of FIELDS) {
    const raw = String(data.get(f.name) ?? '').trim();
    if (raw === '') continue;
    body[f.name] = f.name === 'model' ? raw : Number(raw);
  }
  const checked = runConfigSchema.safeParse(body);
  if (!checked.success) {
    for (const issue of checked.error.issues) {
      const field = String(issue.path[0] ?? '');
      const target = document.getElementById(`e-${field}`);
      if (target) target.textContent = issue.message;
      else byId('launch-error').textContent = issue.message;
    }
    return;
  }
  api<{ id?: number; error?: string; issues?: { field: string; message: string }[] }>('/api/runs', { method: 'POST', body: JSON.stringify(body) }).then(({ status, body: res }) => {
    if (status === 201) byId('launch-error').textContent = `Run ${res.id} launched.`;
    else if (status === 401) {
      token = '';
      sessionStorage.removeItem(TOKEN_KEY);
      showSignedIn();
      byId('launch-error').textContent = 'Sign in with the admin token first.';
    } else {
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
    byId('launch-error').textContent = status === 200 ? 'Run stopped.' : status === 401 ? 'Sign in with the admin token first.' : (body.error ?? `stop failed (${status})`);
  }, (err: unknown) => (byId('launch-error').textContent = String(err)));
});

const chart = lineChart(byId<HTMLCanvasElement>('accuracy-chart'), [], [
  { label: 'test accuracy', color: '#1f8a4c' },
  { label: 'test loss', color: '#c0392b' },
]);

interface Status {
  phase: string;
  run: { id: number; round: number; attempt: number; config: { rounds: number; model: string }; reason: string | null } | null;
  round: { round: number; attempt: number; selected: number; accepted: number; dropped: number; deadline: number } | null;
  modelVersion: number | null;
  devices: DeviceRow[];
}

let shownRun: number | undefined;

async function refresh(): Promise<void> {
  const { body: status } = await api<Status>('/api/status');
  byId('phase').textContent = status.phase;
  byId('phase').className = `pill ${status.phase}`;
  byId('run-line').textContent = status.run ? `run ${status.run.id} · ${status.run.config.model} · round ${status.run.round} of ${status.run.config.rounds}` : 'no run yet';
  const facts: [string, string][] = status.round
    ? [['Round', `${status.round.round}${status.round.attempt > 1 ? ` (try ${status.round.attempt})` : ''}`], ['Selected', String(status.round.selected)], ['Updates in', String(status.round.accepted)], ['Dropped', String(status.round.dropped)], ['Deadline in', `${Math.max(0, Math.round((status.round.deadline - Date.now()) / 1000))} s`]]
    : [['Phase', status.phase], ['Reason', status.run?.reason ?? '—']];
  facts.push(['Live model', status.modelVersion === null ? '—' : `v${status.modelVersion}`]);
  byId('status').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  renderDevices(byId<HTMLTableElement>('devices'), status.devices);

  const runs = await api<{ id: number }[]>('/api/runs');
  const latestRun = status.run?.id ?? runs.body.at(-1)?.id;
  if (latestRun !== undefined) {
    const { body: rounds } = await api<RoundRow[]>(`/api/runs/${latestRun}/rounds`);
    renderRounds(byId<HTMLTableElement>('rounds'), rounds);
    const done = rounds.filter((r) => r.status === 'completed');
    if (shownRun !== latestRun || chart.data.labels?.length !== done.length) {
      shownRun = latestRun;
      chart.data.labels = done.map((r) => String(r.round));
      chart.data.datasets[0]!.data = done.map((r) => r.testAccuracy);
      chart.data.datasets[1]!.data = done.map((r) => r.testLoss);
      chart.update();
    }
    const last = done.at(-1);
    if (last) byId('run-line').textContent += ` · last test accuracy ${pct(last.testAccuracy, 2)}`;
  }
  const { body: models } = await api<ModelRow[]>('/api/models');
  renderModels(byId<HTMLTableElement>('models'), models, status.modelVersion);
}

async function loop(): Promise<void> {
  for (;;) {
    await refresh().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1000));
  }
}
void loop();

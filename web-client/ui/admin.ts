/** Render functions of the admin page. */
import { bytes, el, ms, num, pct } from './dom.ts';

export interface DeviceRow {
  id: string;
  backend: string;
  backendReason: string;
  examples: number;
  labelHistogram: number[];
  state: string;
  progress: number | null;
  rounds: number;
  lastAccuracyBefore: number | null;
  lastAccuracyAfter: number | null;
  lastSeen: number;
}

export interface RoundRow {
  round: number;
  attempt: number;
  status: string;
  reason: string | null;
  participants: number;
  completed: number;
  dropped: number;
  late: number;
  rejected: number;
  durationMs: number;
  bytesUp: number;
  bytesDown: number;
  testAccuracy: number | null;
  testLoss: number | null;
  localAccuracyBefore: number | null;
  localAccuracyAfter: number | null;
  modelVersion: number | null;
  timings: Record<string, number> | null;
}

export interface ModelRow {
  version: number;
  runId: number | null;
  round: number;
  model: string;
  createdAt: number;
  testAccuracy: number | null;
  testLoss: number | null;
}

const table = (target: HTMLTableElement, headers: string[], rows: HTMLTableRowElement[], empty: string) => {
  target.replaceChildren(el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', { scope: 'col' }, h)))), el('tbody', {}, ...(rows.length ? rows : [el('tr', {}, el('td', { colspan: headers.length, class: 'muted' }, empty))])));
};

export function renderDevices(target: HTMLTableElement, devices: readonly DeviceRow[]): void {
  table(
    target,
    ['Device', 'Backend', 'Examples', 'Labels', 'State', 'Rounds', 'Acc. before', 'Acc. after'],
    devices.map((d) => {
      const state = d.state === 'training' && d.progress !== null ? `training ${Math.round(d.progress * 100)} %` : d.state;
      const max = Math.max(1, ...d.labelHistogram);
      const spark = d.labelHistogram.map((c) => '▁▂▃▄▅▆▇█'[Math.min(7, Math.floor((c / max) * 7.999))]).join('');
      return el('tr', { 'data-device': d.id }, el('td', {}, d.id), el('td', { title: d.backendReason }, d.backend), el('td', {}, d.examples), el('td', { title: d.labelHistogram.join(', '), style: 'font-family: monospace' }, spark), el('td', {}, el('span', { class: `pill ${d.state}` }, state)), el('td', {}, d.rounds), el('td', {}, pct(d.lastAccuracyBefore)), el('td', {}, pct(d.lastAccuracyAfter)));
    }),
    'No device is connected. Open the demo page (/) in a few tabs.',
  );
}

export function renderRounds(target: HTMLTableElement, rounds: readonly RoundRow[]): void {
  table(
    target,
    ['Round', 'Status', 'Selected', 'Counted', 'Dropped', 'Late', 'Test acc.', 'Test loss', 'Local before → after', 'Duration', 'Train (median)', 'Aggregate', 'Evaluate', 'Up', 'Down', 'Model v'],
    [...rounds].reverse().map((r) =>
      el('tr', {}, el('td', {}, r.attempt > 1 ? `${r.round} (try ${r.attempt})` : r.round), el('td', { title: r.reason ?? '' }, el('span', { class: `pill ${r.status}` }, r.status)), el('td', {}, r.participants), el('td', {}, r.completed), el('td', {}, r.dropped), el('td', {}, r.late), el('td', {}, pct(r.testAccuracy, 2)), el('td', {}, num(r.testLoss)), el('td', {}, `${pct(r.localAccuracyBefore)} → ${pct(r.localAccuracyAfter)}`), el('td', {}, ms(r.durationMs)), el('td', {}, ms(r.timings?.trainMs)), el('td', {}, ms(r.timings?.aggregationMs)), el('td', {}, ms(r.timings?.evaluationMs)), el('td', {}, bytes(r.bytesUp)), el('td', {}, bytes(r.bytesDown)), el('td', {}, r.modelVersion ?? '—')),
    ),
    'No round yet.',
  );
}

export function renderModels(target: HTMLTableElement, models: readonly ModelRow[], live: number | null): void {
  table(
    target,
    ['Version', 'Run', 'Round', 'Model', 'Test acc.', 'Test loss', 'Created', 'Download'],
    [...models].reverse().slice(0, 50).map((m) =>
      el('tr', {}, el('td', {}, m.version === live ? `${m.version} (live)` : m.version), el('td', {}, m.runId ?? '—'), el('td', {}, m.round), el('td', {}, m.model), el('td', {}, pct(m.testAccuracy, 2)), el('td', {}, num(m.testLoss)), el('td', {}, new Date(m.createdAt).toLocaleTimeString()), el('td', {}, el('a', { href: `/api/models/${m.version}/model.json` }, 'model.json'))),
    ),
    'No model yet.',
  );
}

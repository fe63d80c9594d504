/** Render functions of the admin page. */
import type { DeviceInfo, ModelRecord, RoundRecord, RoundTimeline } from '../../shared/api.ts';
import { bytes, el, ms, num, pct } from './dom.ts';

export type DeviceRow = DeviceInfo;
export type RoundRow = RoundRecord;
export type ModelRow = ModelRecord;
export type Timeline = RoundTimeline;




const table = (target: HTMLTableElement, headers: string[], rows: HTMLTableRowElement[], empty: string) => {
  target.replaceChildren(el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', { scope: 'col' }, h)))), el('tbody', {}, ...(rows.length ? rows : [el('tr', {}, el('td', { colspan: headers.length, class: 'muted' }, empty))])));
};

const ago = (t: number, now: number) => {
  const s = Math.max(0, Math.round((now - t) / 1000));
  return s < 2 ? 'now' : s < 120 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
};

export function renderDevices(target: HTMLTableElement, devices: readonly DeviceRow[], now: number): void {
  table(
    target,
    ['Device', 'Backend', 'Examples', 'Labels', 'State', 'Rounds', 'Acc. before', 'Acc. after', 'Last seen'],
    [...devices].sort((a, b) => Number(b.connected) - Number(a.connected) || a.id.localeCompare(b.id)).map((d) => {
      const state = !d.connected ? 'disconnected' : d.state === 'training' && d.progress !== null ? `training ${Math.round(d.progress * 100)} %` : d.state;
      const stateClass = d.connected ? d.state : 'disconnected';
      const max = Math.max(1, ...d.labelHistogram);
      const spark = d.labelHistogram.map((c) => '▁▂▃▄▅▆▇█'[Math.min(7, Math.floor((c / max) * 7.999))]).join('');
      return el('tr', { 'data-device': d.id, class: d.connected ? undefined : 'disconnected' }, el('td', {}, d.id), el('td', { title: d.backendReason }, d.backend), el('td', {}, d.examples), el('td', { title: `examples per label 0–9: ${d.labelHistogram.join(', ')}`, style: 'font-family: monospace' }, spark), el('td', {}, el('span', { class: `pill ${stateClass}`, 'data-state': stateClass }, state)), el('td', {}, d.rounds), el('td', {}, pct(d.lastAccuracyBefore)), el('td', {}, pct(d.lastAccuracyAfter)), el('td', {}, ago(d.lastSeen, now)));
    }),
    'No device is connected. Open the demo page (/) in a few tabs.',
  );
}

export function renderRounds(target: HTMLTableElement, rounds: readonly RoundRow[]): void {
  table(
    target,
    ['Round', 'Status', 'Selected', 'Counted', 'Dropped', 'Late', 'Clipped', 'Test acc.', 'Test loss', 'Local before → after', 'Duration', 'Train (median)', 'Aggregate', 'Evaluate', 'Up', 'Up / device', 'Down', 'Model v'],
    [...rounds].reverse().map((r) =>
      el('tr', {}, el('td', {}, r.attempt > 1 ? `${r.round} (try ${r.attempt})` : r.round), el('td', { title: r.reason ?? '' }, el('span', { class: `pill ${r.status}` }, r.status)), el('td', {}, r.participants), el('td', {}, r.completed), el('td', {}, r.dropped), el('td', {}, r.late), el('td', {}, r.clipped ?? 0), el('td', {}, pct(r.testAccuracy, 2)), el('td', {}, num(r.testLoss)), el('td', {}, `${pct(r.localAccuracyBefore)} → ${pct(r.localAccuracyAfter)}`), el('td', {}, ms(r.durationMs)), el('td', {}, ms(r.timings?.trainMs)), el('td', {}, ms(r.timings?.aggregationMs)), el('td', {}, ms(r.timings?.evaluationMs)), el('td', {}, bytes(r.bytesUp)), el('td', {}, r.completed ? bytes(Math.round(r.bytesUp / r.completed)) : '—'), el('td', {}, bytes(r.bytesDown)), el('td', {}, r.modelVersion ?? '—')),
    ),
    'No round yet.',
  );
}

export function renderModels(target: HTMLTableElement, models: readonly ModelRow[], live: number | null, configs: ReadonlyMap<number, string>): void {
  table(
    target,
    ['Version', 'Run', 'Round', 'Model', 'Test acc.', 'Test loss', 'Created', 'Run config', 'Download'],
    [...models].reverse().slice(0, 50).map((m) =>
      el('tr', {}, el('td', {}, m.version === live ? el('strong', {}, `${m.version} (live)`) : m.version), el('td', {}, m.runId ?? '—'), el('td', {}, m.round), el('td', {}, m.model), el('td', {}, pct(m.testAccuracy, 2)), el('td', {}, num(m.testLoss)), el('td', {}, new Date(m.createdAt).toLocaleTimeString()), el('td', { class: 'muted' }, m.runId === null ? '—' : (configs.get(m.runId) ?? '—')), el('td', {}, el('a', { href: `/api/models/${m.version}/model.json`, download: `model-v${m.version}.json`, 'aria-label': `download model version ${m.version} (TF.js)` }, 'model.json'))),
    ),
    'No model yet.',
  );
}


/** The current round's phases as proportional segments, each labelled with its duration. */
export function renderTimeline(target: HTMLElement, t: Timeline | null, now: number): void {
  if (!t) {
    target.replaceChildren(el('div', { class: 'selection', style: 'flex: 1' }, 'no round yet'));
    return;
  }
  // Device phases are as the first device of the round reported them: download until one starts
  // evaluating/training, training until one starts uploading, upload until the round closes.
  const devicesEnd = t.closedAt ?? t.failedAt;
  const trainingStart = t.trainingStartedAt ?? (devicesEnd !== undefined ? t.selectedAt : undefined);
  const uploadStart = t.uploadStartedAt ?? (devicesEnd !== undefined ? trainingStart : undefined);
  const segments: [string, string, number, number | undefined][] = [
    ['selection', 'selection', t.selectionStartedAt, t.selectedAt],
    ['download', 'download', t.selectedAt ?? now, trainingStart],
    ['devices', 'local training', trainingStart ?? now, uploadStart],
    ['upload', 'upload', uploadStart ?? now, devicesEnd],
    ['aggregation', 'aggregate', t.closedAt ?? now, t.aggregatedAt],
    ['evaluation', 'evaluate', t.aggregatedAt ?? now, t.evaluatedAt],
  ];
  const parts: HTMLElement[] = [];
  let previousDone = true;
  for (const [cls, label, start, end] of segments) {
    if (!previousDone) break;
    const stop = end ?? (t.failedAt ?? now);
    const d = Math.max(0, stop - start);
    const failedHere = t.failedAt !== undefined && cls === 'upload';
    parts.push(el('div', { class: failedHere ? 'failed' : cls, style: `flex: ${Math.max(d, 1)}`, title: `${label}: ${ms(d)}${end === undefined ? ' (so far)' : ''}${failedHere ? ' — the round failed' : ''}` }, `${label} ${ms(d)}`));
    previousDone = end !== undefined && !failedHere;
  }
  target.replaceChildren(...parts);
}

export interface LogEntry {
  at: number;
  level: 'info' | 'warn';
  message: string;
}

export function renderLog(target: HTMLElement, entries: readonly LogEntry[]): void {
  target.replaceChildren(...[...entries].reverse().slice(0, 200).map((e) => el('li', { class: e.level }, el('time', { datetime: new Date(e.at).toISOString() }, new Date(e.at).toLocaleTimeString()), e.message)));
}

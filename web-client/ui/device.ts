/** Render functions of the demo page; they take elements and data, never TF.js. */
import type { DeviceSnapshot, RoundHistoryEntry } from '../fl/client.ts';
import { PIXELS, type Samples } from '../../shared/dataset.ts';
import { bytes, el, ms, pct } from './dom.ts';

export interface DeviceFacts {
  deviceId: string;
  backend: string;
  backendReason: string;
  examples: number;
  heldOut: number;
  source: string;
  slice: string;
}

export function renderFacts(dl: HTMLElement, f: DeviceFacts): void {
  const rows: [string, string][] = [
    ['Device id', f.deviceId],
    ['Backend', f.backend],
    ['Why', f.backendReason],
    ['Training examples', String(f.examples)],
    ['Held-out examples', String(f.heldOut)],
    ['Data', f.source],
    ['Slice', f.slice],
  ];
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { 'data-fact': k }, v)]));
}

export function renderSamples(container: HTMLElement, samples: Samples, count = 16): void {
  const n = Math.min(count, samples.labels.length);
  const cells: HTMLElement[] = [];
  for (let i = 0; i < n; i++) {
    const canvas = el('canvas', { width: 28, height: 28, title: `label ${samples.labels[i]}` });
    const ctx = canvas.getContext('2d');
    if (ctx) {
      const img = ctx.createImageData(28, 28);
      for (let p = 0; p < PIXELS; p++) {
        const v = samples.pixels[i * PIXELS + p] as number;
        img.data.set([v, v, v, 255], p * 4);
      }
      ctx.putImageData(img, 0, 0);
    }
    cells.push(canvas);
  }
  container.replaceChildren(...cells);
}

export function renderState(connection: HTMLElement, state: HTMLElement, s: DeviceSnapshot): void {
  connection.textContent = s.connection;
  connection.className = `pill ${s.connection}`;
  const label = s.state === 'training' && s.progress !== null ? `training ${Math.round(s.progress * 100)} %` : s.state;
  state.textContent = label;
  state.className = `pill ${s.state}`;
}

export function renderProgress(bar: HTMLElement, line: HTMLElement, roundLine: HTMLElement, s: DeviceSnapshot): void {
  const p = s.progress ?? (s.state === 'idle' ? 0 : null);
  const inner = bar.firstElementChild as HTMLElement;
  // Download, evaluation and upload have no byte-level progress over socket.io: show them as busy.
  const busy = s.state === 'downloading' || s.state === 'uploading' || s.state === 'evaluating' || s.state === 'selected';
  bar.classList.toggle('indeterminate', busy);
  inner.style.width = busy ? '30%' : `${Math.round((p ?? 0) * 100)}%`;
  bar.setAttribute('aria-valuenow', String(Math.round((p ?? 0) * 100)));
  line.textContent = s.batches ? `batch ${s.batches.done} / ${s.batches.total} · loss ${s.loss?.toFixed(4) ?? '—'}` : s.state === 'idle' ? '' : `${s.state}…`;
  roundLine.textContent = s.current ? `Run ${s.current.runId}, round ${s.current.round}: ${s.state}` : s.connection === 'connected' ? 'Waiting to be selected for a round.' : 'Not connected.';
}

export function renderHistory(table: HTMLTableElement, history: readonly RoundHistoryEntry[]): void {
  const head = el('tr', {}, ...['Run', 'Round', 'Model v', 'Acc. before', 'Acc. after', 'Train', 'Down', 'Up', 'Outcome'].map((h) => el('th', { scope: 'col' }, h)));
  const rows = [...history].reverse().map((h) =>
    el('tr', {}, el('td', {}, h.runId), el('td', {}, h.attempt > 1 ? `${h.round} (try ${h.attempt})` : h.round), el('td', {}, h.modelVersion), el('td', {}, pct(h.accuracyBefore)), el('td', {}, pct(h.accuracyAfter)), el('td', {}, ms(h.trainMs)), el('td', {}, bytes(h.bytesDown)), el('td', {}, bytes(h.bytesUp)), el('td', {}, el('span', { class: `pill ${h.outcome.replace(' ', '-')}`, title: h.message }, h.outcome))),
  );
  table.replaceChildren(el('thead', {}, head), el('tbody', {}, ...rows));
}

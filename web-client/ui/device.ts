/** Render functions of the demo page; they take elements and data, never TF.js. */
import type { DeviceSnapshot, RoundHistoryEntry } from '../fl/client.ts';
import { PIXELS, type Samples } from '../../shared/dataset.ts';
import { bytes, el, ms, pct } from './dom.ts';
import type { DataQuality } from '../../shared/data-quality.ts';

export interface DeviceFacts {
  deviceId: string;
  /** the tab's slot: its own database */
  slot: string;
  backend: string;
  backendReason: string;
  examples: number;
  heldOut: number;
  source: string;
  slice: string;
  /** the scores of its data, measured here (data-quality.ts) */
  quality?: DataQuality;
}

export function renderFacts(dl: HTMLElement, f: DeviceFacts): void {
  const rows: [string, string][] = [
    ['Device id', f.deviceId],
    ['This tab', `slot ${f.slot} (its own identity and data)`],
    ['Backend', f.backend],
    ['Why', f.backendReason],
    ['Training examples', String(f.examples)],
    ['Held-out examples', String(f.heldOut)],
    ['Data', f.source],
    ['Slice', f.slice],
    ...(f.quality ? ([['Data quality', `conformity ${f.quality.conformity?.toFixed(2)}, uniqueness ${f.quality.uniqueness?.toFixed(2)}, completeness ${f.quality.completeness?.toFixed(2)}, coherence ${f.quality.coherence === null ? 'not measured' : f.quality.coherence.toFixed(2)} (measured here; only these scores are sent)`]] as [string, string][]) : []),
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

/** A slice in words: "slice 1 of 4 of the iid partition (seed 1, 600 examples)". */
export function describeSlice(s: { partition: string; clients: number; client: number; examples: number; seed: number; alpha: number; corrupt?: string }): string {
  return `slice ${s.client} of ${s.clients} of the ${s.partition}${s.partition === 'dirichlet' ? ` (α ${s.alpha})` : ''} partition, seed ${s.seed}, up to ${s.examples} examples${s.corrupt ? `, corrupted (${s.corrupt})` : ''}`;
}

/** Before joining, one pill says so; once joined, the connection and the device's state. */
export function renderState(connection: HTMLElement, state: HTMLElement, s: DeviceSnapshot | undefined): void {
  const joined = s !== undefined && s.connection !== 'offline';
  connection.textContent = joined ? s.connection : 'not joined';
  connection.className = `pill ${joined ? s.connection : 'idle'}`;
  state.hidden = !joined || s.connection !== 'connected';
  if (!s) return;
  const label = s.state === 'training' && s.progress !== null ? `training ${Math.round(s.progress * 100)} %` : s.state;
  state.textContent = label;
  state.className = `pill ${s.state}`;
}

export function renderProgress(bar: HTMLElement, line: HTMLElement, roundLine: HTMLElement, s: DeviceSnapshot | undefined): void {
  if (!s) {
    (bar.firstElementChild as HTMLElement).style.width = '0%';
    line.textContent = '';
    roundLine.textContent = 'Not joined.';
    return;
  }
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
  // Columns marked optional give way on narrow screens.
  const cols: [string, boolean][] = [['Run', false], ['Round', false], ['Model v', true], ['Global', false], ['Personal', false], ['Mix', true], ['Train', true], ['Down', true], ['Up', true], ['Outcome', false]];
  const head = el('tr', {}, ...cols.map(([h, opt]) => el('th', { scope: 'col', class: opt ? 'opt' : undefined }, h)));
  const rows = [...history].reverse().map((h) => {
    const cells = [h.runId, h.attempt > 1 ? `${h.round} (try ${h.attempt})` : h.round, h.modelVersion, pct(h.accuracyBefore), pct(h.accuracyAfter), pct(h.accuracyMixed), ms(h.trainMs), bytes(h.bytesDown), bytes(h.bytesUp), el('span', { class: `pill ${h.outcome.replace(' ', '-')}`, title: h.message }, h.outcome)];
    return el('tr', {}, ...cells.map((c, i) => el('td', { class: cols[i]?.[1] ? 'opt' : undefined }, c)));
  });
  table.replaceChildren(el('thead', {}, head), el('tbody', {}, ...rows));
}

/** Render functions of the admin page: they take elements and data, never the network. */
import type { Deployment, DeviceInfo, EvaluationRecord, FederationEvent, ModelCard, ModelRecord, RoundRecord, RunSummary } from '../../shared/api.ts';
import type { LineageNode } from './lineage.ts';
import { phaseKey, phaseSpans, ROUND_PHASES, type RoundPhase, type RoundTimeline } from '../../shared/phases.ts';
import { bytes, el, ms, num, pct } from './dom.ts';

/** A column of a table; `optional` ones are hidden on narrow screens. */
interface Column<T> {
  head: string;
  cell: (row: T) => Node | string | number;
  optional?: boolean;
  /** a cell of prose: it wraps instead of widening the table */
  wrap?: boolean;
  title?: (row: T) => string;
}

function table<T>(target: HTMLTableElement, columns: Column<T>[], rows: readonly T[], empty: string, rowAttrs: (row: T) => Record<string, string | undefined> = () => ({}), after?: (row: T) => HTMLTableRowElement | undefined): void {
  const cls = (c: Column<T>) => [c.optional ? 'opt' : '', c.wrap ? 'wrap' : ''].filter(Boolean).join(' ') || undefined;
  const body: HTMLTableRowElement[] = [];
  for (const r of rows) {
    body.push(el('tr', rowAttrs(r), ...columns.map((c) => el('td', { class: cls(c), title: c.title?.(r) }, c.cell(r)))));
    const extra = after?.(r);
    if (extra) body.push(extra);
  }
  target.replaceChildren(el('thead', {}, el('tr', {}, ...columns.map((c) => el('th', { scope: 'col', class: cls(c) }, c.head)))), el('tbody', {}, ...(body.length ? body : [el('tr', {}, el('td', { colspan: columns.length, class: 'muted' }, empty))])));
}

const ago = (t: number, now: number) => {
  const s = Math.max(0, Math.round((now - t) / 1000));
  return s < 2 ? 'now' : s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
};

export const duration = (x: number): string => (x < 1000 ? `${Math.round(x)} ms` : x < 120_000 ? `${(x / 1000).toFixed(1)} s` : `${Math.floor(x / 60_000)} min ${Math.round((x % 60_000) / 1000)} s`);

const shortId = (id: string) => (id.length > 14 ? `${id.slice(0, 12)}…` : id);

export function renderDevices(target: HTMLTableElement, devices: readonly DeviceInfo[], now: number): void {
  const sorted = [...devices].sort((a, b) => Number(b.connected) - Number(a.connected) || a.id.localeCompare(b.id));
  table<DeviceInfo>(
    target,
    [
      { head: 'Device', cell: (d) => shortId(d.id), title: (d) => d.id },
      { head: 'Backend', cell: (d) => d.backend, title: (d) => d.backendReason, optional: true },
      { head: 'Examples', cell: (d) => d.examples, optional: true },
      {
        head: 'Labels',
        optional: true,
        title: (d) => `examples per label 0–9: ${d.labelHistogram.join(', ')}`,
        cell: (d) => {
          const max = Math.max(1, ...d.labelHistogram);
          return el('span', { class: 'spark' }, d.labelHistogram.map((c) => '▁▂▃▄▅▆▇█'[Math.min(7, Math.floor((c / max) * 7.999))]).join(''));
        },
      },
      {
        head: 'State',
        cell: (d) => {
          const state = !d.connected ? 'disconnected' : d.state === 'training' && d.progress !== null ? `training ${Math.round(d.progress * 100)} %` : d.state;
          const cls = d.connected ? d.state : 'disconnected';
          return el('span', { class: `pill ${cls}`, 'data-state': cls }, state);
        },
      },
      {
        head: 'Data quality',
        optional: true,
        title: (d) => (d.quality ? `conformity ${d.quality.conformity?.toFixed(2)}, uniqueness ${d.quality.uniqueness?.toFixed(2)}, completeness ${d.quality.completeness?.toFixed(2)}, integrity ${d.quality.integrity?.toFixed(2) ?? '—'}, coherence ${d.quality.coherence?.toFixed(2) ?? '—'}` : 'the device reported no scores'),
        cell: (d) =>
          d.qualityFlags.length
            ? el('span', { class: `pill ${d.qualityAction === 'exclude' ? 'failed' : 'warn'}`, 'data-quality': d.qualityAction ?? 'flag' }, `${d.qualityAction === 'exclude' ? 'excluded' : 'flagged'}: ${d.qualityFlags.join(', ')}`)
            : d.quality
              ? el('span', { 'data-quality': 'ok' }, 'ok')
              : '—',
      },
      { head: 'Updates', optional: true, title: () => 'the update monitor\'s verdict in this run (see Update monitor)', cell: (d) => (d.monitor ? el('span', { class: `pill ${d.monitor === 'quarantined' ? 'failed' : 'warn'}`, 'data-monitor': d.monitor }, d.monitor) : 'ok') },
      { head: 'Rounds', cell: (d) => d.rounds, optional: true },
      { head: 'Held-out acc. before → after', cell: (d) => (d.lastAccuracyBefore === null ? '—' : `${pct(d.lastAccuracyBefore)} → ${pct(d.lastAccuracyAfter)}`), optional: true },
      // A connected device says when it last reported; a disconnected one since when it is gone.
      { head: 'Connection', cell: (d) => (d.connected ? `connected · active ${ago(d.lastSeen, now)}` : `disconnected ${ago(d.lastSeen, now)}`) },
    ],
    sorted,
    'No device is connected. Open the demo page (/) in a few tabs: each tab is a device.',
    (d) => ({ 'data-device': d.id, class: d.connected ? undefined : 'disconnected' }),
  );
}

/** The runs list, newest first (the caller chooses how many): selecting a run shows its rounds, charts and model versions. */
export function renderRuns(target: HTMLTableElement, runs: readonly RunSummary[], selected: number | undefined, onSelect: (id: number) => void): void {
  const configLine = (r: RunSummary) => {
    const c = r.config;
    return `${c.model} · K=${c.clientsPerRound} · E=${c.localEpochs} · B=${c.batchSize} · η=${c.learningRate}${c.strategy !== 'fedavg' ? ` · ${c.strategy}` : ''}${c.aggregation !== 'fedavg' ? ` · ${c.aggregation}` : ''}${c.updateCodec !== 'float32' ? ` · ${c.updateCodec}` : ''}`;
  };
  table<RunSummary>(
    target,
    [
      { head: 'Run', cell: (r) => r.id },
      { head: 'Status', cell: (r) => el('span', { class: `pill ${r.status === 'done' ? 'completed' : r.status}` }, r.status), title: (r) => r.reason ?? '' },
      { head: 'Rounds', cell: (r) => `${r.roundsCompleted} of ${r.config.rounds}${r.failedAttempts ? ` (+${r.failedAttempts} failed)` : ''}` },
      { head: 'Final test acc.', cell: (r) => pct(r.finalTestAccuracy, 2) },
      { head: 'Duration', cell: (r) => duration(r.durationMs), optional: true },
      { head: 'Config', cell: (r) => configLine(r), optional: true },
      // why it ended (completed, stopped by the admin, failed and why); on narrow screens the status pill's title says it
      { head: 'Why it ended', cell: (r) => r.reason ?? (r.status === 'running' ? 'still running' : '—'), optional: true, wrap: true },
      { head: '', cell: (r) => (r.id === selected ? el('span', { class: 'muted' }, 'shown') : el('button', { type: 'button', class: 'secondary small', 'data-run': r.id }, 'Show')) },
    ],
    [...runs].reverse(),
    'No run yet. Launch one with “New run”.',
    (r) => ({ 'data-run-row': String(r.id), class: r.id === selected ? 'selected' : undefined }),
  );
  for (const b of Array.from(target.querySelectorAll<HTMLButtonElement>('button[data-run]'))) b.onclick = () => onSelect(Number(b.dataset.run));
}

const PHASE_CLASS: Record<RoundPhase, string> = { 'waiting for devices': 'selection', 'devices at work': 'devices', 'waiting for the close': 'waiting', aggregation: 'aggregation', evaluation: 'evaluation' };
export const PHASE_COLORS: Record<RoundPhase, string> = { 'waiting for devices': '#8a94a6', 'devices at work': '#2f6fde', 'waiting for the close': '#c7a047', aggregation: '#b26a00', evaluation: '#1f8a4c' };

/** The rounds of a run: a compact row each, the rest of its record in a detail row that opens on demand. */
export function renderRounds(target: HTMLTableElement, rounds: readonly RoundRecord[], open: Set<string>): void {
  const key = (r: RoundRecord) => `${r.runId}:${r.round}:${r.attempt}`;
  const detail = (r: RoundRecord): HTMLTableRowElement | undefined => {
    if (!open.has(key(r))) return undefined;
    const facts: [string, string][] = [
      ['Reason', r.reason ?? '—'],
      ['Phases', ROUND_PHASES.map((p) => `${p} ${duration(r.phases[phaseKey(p)])}`).join(' · ')],
      ['Devices (medians)', r.timings ? `download ${ms(r.timings.downloadMs)} · evaluation ${ms(r.timings.evaluateMs)} · training ${ms(r.timings.trainMs)} · upload ${ms(r.timings.uploadMs)}` : '—'],
      ['Answers', `${r.completed} counted, ${r.refused} refused, ${r.dropped} dropped, ${r.unanswered} unanswered, ${r.late} late, ${r.clipped} clipped, ${r.rejected} rejected`],
      ['Test loss', num(r.testLoss)],
      ['Held-out acc. before → after', `${pct(r.localAccuracyBefore)} → ${pct(r.localAccuracyAfter)}`],
      ['Bytes', `up ${bytes(r.bytesUp)}, down ${bytes(r.bytesDown)}`],
    ];
    const p = r.privacy;
    if (p) facts.push(['Privacy', `ε = ${p.epsilon.toFixed(3)} at δ = ${p.delta} after this round · noise z = ${p.noiseMultiplier}, clip S = ${Number(p.clipNorm.toPrecision(4))}${p.adaptiveClipping ? ' (adaptive)' : ''} · sampling q = ${p.samplingRate.toFixed(4)} (expected ${p.expectedDevices.toFixed(1)} devices)`]);
    if (p?.distributed) facts.push(['Distributed noise', `added by the devices (Skellam), calibrated for ${p.distributed.minInputs} inputs, ${p.distributed.inputs} in the sum · ε against the server (which knows who was sampled) = ${p.distributed.epsilonAgainstServer.toFixed(2)}`]);
    const s = r.secureAggregation;
    if (s) {
      facts.push(
        ['Secure aggregation', `on: ${s.neighbours} neighbours per device, any ${s.threshold} rebuild its secrets (tolerates ${s.neighbours - s.threshold} out per neighbourhood)`],
        ['Devices per stage', `${s.selected} selected → ${s.advertised} advertised keys → ${s.shared} shared → ${s.inputs} masked inputs → ${s.revealed} revealed`],
        ['Stages', `keys ${duration(s.stageMs.keys)} · shares ${duration(s.stageMs.shares)} · inputs ${duration(s.stageMs.inputs)} · unmask ${duration(s.stageMs.unmask)}`],
      );
    }
    return el('tr', { class: 'detail' }, el('td', { colspan: 8 }, el('dl', { class: 'facts' }, ...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]))));
  };
  table<RoundRecord>(
    target,
    [
      { head: 'Round', cell: (r) => (r.attempt > 1 ? `${r.round} (try ${r.attempt})` : r.round) },
      { head: 'Status', cell: (r) => el('span', { class: `pill ${r.status}` }, r.status), title: (r) => r.reason ?? '' },
      { head: 'Counted', cell: (r) => `${r.completed}/${r.participants}`, title: (r) => `${r.completed} counted of ${r.participants} selected`, optional: true },
      { head: 'Test acc.', cell: (r) => (r.evaluationPending ? el('span', { class: 'muted', title: 'its model is being evaluated on the test set while the next round runs' }, 'evaluating…') : pct(r.testAccuracy, 2)) },
      { head: 'Duration', cell: (r) => duration(r.durationMs) },
      { head: 'Up / device', cell: (r) => (r.completed ? bytes(Math.round(r.bytesUp / r.completed)) : '—'), optional: true },
      { head: 'Model', cell: (r) => (r.modelVersion === null ? '—' : `v${r.modelVersion}`), optional: true },
      { head: '', cell: (r) => el('button', { type: 'button', class: 'secondary small', 'data-round': key(r), 'aria-expanded': String(open.has(key(r))) }, open.has(key(r)) ? 'Less' : 'More') },
    ],
    [...rounds].reverse(),
    'No round yet.',
    (r) => ({ 'data-round-row': key(r), 'data-duration-ms': String(r.durationMs) }),
    detail,
  );
  for (const b of Array.from(target.querySelectorAll<HTMLButtonElement>('button[data-round]'))) {
    b.onclick = () => {
      const k = b.dataset.round as string;
      if (open.has(k)) open.delete(k);
      else open.add(k);
      renderRounds(target, rounds, open);
    };
  }
}


/** The model versions of a run; each downloads as one archive (model.json, weights.bin, model card) or as the TF.js files. */
export function renderModels(target: HTMLTableElement, models: readonly ModelRecord[], live: number | null): void {
  table<ModelRecord>(
    target,
    [
      { head: 'Version', cell: (m) => (m.version === live ? el('strong', {}, `v${m.version} (live)`) : `v${m.version}`) },
      { head: 'Round', cell: (m) => (m.round === 0 ? 'initial' : m.round) },
      { head: 'Test acc.', cell: (m) => pct(m.testAccuracy, 2) },
      { head: 'Test loss', cell: (m) => num(m.testLoss), optional: true },
      { head: 'Created', cell: (m) => new Date(m.createdAt).toLocaleTimeString(), optional: true },
      {
        head: 'Download',
        cell: (m) =>
          el('span', { class: 'links' },
            el('a', { href: `/api/models/${m.version}/model.zip`, download: `fedbrowser-model-v${m.version}.zip`, 'aria-label': `download model version ${m.version}: model.json, weights.bin and model card, zipped` }, 'model.zip'),
            el('a', { href: `/api/models/${m.version}/model.json`, 'aria-label': `model version ${m.version}, TF.js model.json` }, 'model.json'),
            el('a', { href: `/api/models/${m.version}/card.json`, 'aria-label': `model card of version ${m.version}` }, 'card')),
      },
    ],
    [...models].reverse(),
    'No model yet.',
    (m) => ({ 'data-version': String(m.version) }),
  );
}

/** The round's phases as proportional segments, each labelled with its name and duration (phases.ts). */
export function renderTimeline(target: HTMLElement, t: RoundTimeline | null, now: number): void {
  if (!t) {
    target.replaceChildren(el('div', { class: 'selection', style: 'flex: 1' }, 'no round yet'));
    return;
  }
  const spans = phaseSpans(t, now);
  const parts = spans.map((s, i) => {
    const d = Math.max(0, s.end - s.start);
    const last = i === spans.length - 1;
    const failed = last && (t.outcome === 'failed' || t.outcome === 'stopped');
    const label = `${s.phase} ${duration(d)}${!s.done && !failed ? ' (so far)' : ''}${failed ? ` — ${t.outcome}` : ''}`;
    return el('div', { class: failed ? 'failed' : PHASE_CLASS[s.phase], 'data-phase': s.phase, style: `flex: ${Math.max(d, 1)}`, title: label }, label);
  });
  target.replaceChildren(...parts);
}

export type LogEntry = FederationEvent;

export function renderLog(target: HTMLElement, entries: readonly LogEntry[]): void {
  target.replaceChildren(...[...entries].reverse().slice(0, 200).map((e) => el('li', { class: e.level }, el('time', { datetime: new Date(e.at).toISOString() }, new Date(e.at).toLocaleTimeString()), e.message)));
}

/** The registry's lineage (lineage.ts): each version a button that selects it for the details and the comparison (at most two). */
export function renderLineage(target: HTMLElement, nodes: readonly LineageNode[], selected: readonly number[], onSelect: (version: number) => void): void {
  const item = (n: LineageNode): HTMLLIElement => {
    const m = n.model;
    const on = selected.includes(m.version);
    const what = [m.runId === null ? 'no run' : `run ${m.runId}`, m.round === 0 ? 'initial' : `round ${m.round}`, m.testAccuracy === null ? null : pct(m.testAccuracy, 2)].filter(Boolean).join(' · ');
    const button = el('button', { type: 'button', class: on ? 'version selected' : 'version', 'aria-pressed': on ? 'true' : 'false', 'data-version': String(m.version) }, `v${m.version}`);
    button.onclick = () => onSelect(m.version);
    return el(
      'li',
      {},
      n.folded ? el('span', { class: 'folded muted' }, `⋮ ${n.folded} version${n.folded === 1 ? '' : 's'}`) : null,
      el('span', { class: 'node' }, button, ' ', what, m.meta.name ? el('strong', {}, ` ${m.meta.name}`) : null, ...Object.entries(m.meta.labels).map(([k, v]) => el('span', { class: 'chip' }, `${k}=${v}`))),
      n.children.length ? el('ul', {}, ...n.children.map(item)) : null,
    );
  };
  target.replaceChildren(nodes.length ? el('ul', { class: 'tree' }, ...nodes.map(item)) : el('p', { class: 'muted' }, 'No model yet.'));
}

const distribution = (d: readonly number[] | null) => {
  if (!d) return '—';
  const total = d.reduce((a, b) => a + b, 0) || 1;
  return d.map((c, i) => `${i}:${Math.round((c / total) * 100)}%`).join(' ');
};

/** One or two registry records side by side; rows where two differ are marked. */
export function renderComparison(target: HTMLElement, cards: readonly ModelCard[]): void {
  if (cards.length === 0) {
    target.replaceChildren(el('p', { class: 'muted' }, 'Select a version in the tree to see its record; select a second to compare them.'));
    return;
  }
  const c = (f: (x: ModelCard) => unknown) => (x: ModelCard) => {
    const v = f(x);
    return v === null || v === undefined || v === '' ? '—' : String(v);
  };
  const rows: [string, (x: ModelCard) => string][] = [
    ['Name', c((x) => x.name)],
    ['Description', c((x) => x.description)],
    ['Owner', c((x) => x.owner)],
    ['Labels', c((x) => Object.entries(x.labels).map(([k, v]) => `${k}=${v}`).join(', '))],
    ['Run · round', c((x) => `${x.runId === null ? 'no run' : `run ${x.runId}`} · ${x.round === 0 ? 'initial' : `round ${x.round}`}`)],
    ['Parent', c((x) => (x.parentVersion === null ? 'fresh initialization' : `v${x.parentVersion}`))],
    ['Children', c((x) => x.children.map((v) => `v${v}`).join(', '))],
    ['Created', c((x) => new Date(x.createdAt).toLocaleString())],
    ['Test accuracy', c((x) => pct(x.testAccuracy, 2))],
    ['Test loss', c((x) => num(x.testLoss))],
    ['Devices\' evaluation (mean / worst 10 %)', c((x) => (x.federatedEvaluation ? `${pct(x.federatedEvaluation.mean, 1)} / ${pct(x.federatedEvaluation.worst10, 1)} over ${x.federatedEvaluation.devices} devices (round ${x.federatedEvaluation.round})` : null))],
    ['Model · parameters', c((x) => `${x.model} · ${x.parameters.toLocaleString()}`)],
    ['Strategy · aggregation · codec', c((x) => (x.strategy ? `${x.strategy} · ${x.aggregation} · ${x.codec}` : null))],
    ['η · E · B · K', c((x) => (x.config ? `${x.config.learningRate} · ${x.config.localEpochs} · ${x.config.batchSize} · ${x.config.clientsPerRound}` : null))],
    ['Trained by (this round)', c((x) => (x.trainedBy ? `${x.trainedBy.devices} devices, ${x.trainedBy.examples.toLocaleString()} examples` : null))],
    ['Its labels (declared)', c((x) => distribution(x.trainedBy?.labelDistribution ?? null))],
    ['Lineage', c((x) => `${x.lineage.rounds} rounds, ${x.lineage.deviceRounds} device-rounds of ${x.lineage.devices} devices, ${x.lineage.examples.toLocaleString()} examples`)],
    ['Privacy', c((x) => (x.privacy ? `ε = ${x.privacy.epsilon.toFixed(2)} (δ = ${x.privacy.delta})` : 'not private'))],
    ['Framework', c((x) => `${x.framework.name} ${x.framework.version}`)],
  ];
  const differs = (f: (x: ModelCard) => string) => cards.length === 2 && f(cards[0]!) !== f(cards[1]!);
  target.replaceChildren(
    el(
      'table',
      { class: 'compare' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Version'), ...cards.map((x) => el('th', { scope: 'col' }, `v${x.version}`)))),
      el('tbody', {}, ...rows.map(([head, f]) => el('tr', { class: differs(f) ? 'differs' : undefined, 'data-row': head }, el('th', { scope: 'row' }, head), ...cards.map((x) => el('td', {}, f(x)))))),
    ),
  );
}

/** The deployment: what is live, the candidate under a canary, and the last canary's test. */
export function renderDeployment(line: HTMLElement, result: HTMLElement, d: Deployment): void {
  line.textContent = `${d.live === null ? 'No version was put live yet: latest serves the newest version.' : `Live: v${d.live} (served as /api/models/latest/model.json).`}${d.candidate ? ` Candidate: v${d.candidate.version}, tried on ${Math.round(d.candidate.share * 100)} % of the devices${d.candidate.evalId ? ` (evaluation ${d.candidate.evalId})` : ' — no device could try it: decide below'}.` : ''}`;
  const c = d.last?.canary;
  if (!d.last || !c) {
    result.replaceChildren();
    return;
  }
  const acc = (v: number) => d.last!.results.find((r) => r.version === v)?.accuracy ?? null;
  result.replaceChildren(
    el(
      'table',
      { class: 'compare', id: 'canary-table' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, `Last canary (evaluation ${d.last.id})`), el('th', { scope: 'col' }, `live v${c.live}`), el('th', { scope: 'col' }, `candidate v${c.candidate}`))),
      el(
        'tbody',
        {},
        el('tr', {}, el('th', { scope: 'row' }, 'Held-out accuracy (devices, examples)'), el('td', {}, `${pct(acc(c.live), 2)}`), el('td', {}, `${pct(acc(c.candidate), 2)} — ${d.last.reported} of ${d.last.selected} devices, ${c.n} examples`)),
        el('tr', {}, el('th', { scope: 'row' }, 'Difference, one-sided lower bound'), el('td', { colspan: 2 }, `${(c.difference * 100).toFixed(2)} pp; ${Number.isFinite(c.lowerBound) ? `${(c.lowerBound * 100).toFixed(2)} pp` : '—'} at level α = ${c.alpha}, against a margin of −${(c.margin * 100).toFixed(2)} pp (Wald test of paired proportions)`)),
        el('tr', { 'data-row': 'outcome' }, el('th', { scope: 'row' }, 'Outcome'), el('td', { colspan: 2 }, el('strong', {}, c.outcome), ` — ${d.last.reason}`)),
      ),
    ),
  );
}

/** Every evaluation round: what it evaluated, on how many devices, and each version's weighted accuracy and spread. */
export function renderEvaluations(target: HTMLTableElement, records: readonly EvaluationRecord[]): void {
  table<EvaluationRecord>(
    target,
    [
      { head: 'Evaluation', cell: (r) => `${r.id} · ${r.purpose}` },
      { head: 'Devices', cell: (r) => `${r.reported} of ${r.selected}` },
      { head: 'Held-out accuracy (worst 10 %)', cell: (r) => r.results.map((x) => `v${x.version}: ${pct(x.accuracy, 2)}${x.spread ? ` (${pct(x.spread.worst10, 1)})` : ''}`).join(' · ') },
      { head: 'Outcome', cell: (r) => r.canary?.outcome ?? '—' },
      { head: 'Ended', cell: (r) => `${new Date(r.endedAt).toLocaleTimeString()} — ${r.reason}`, optional: true },
    ],
    [...records].reverse().slice(0, 20),
    'No evaluation round yet.',
  );
}

/** One row per flagged device-round: when, who, why. */
export interface MonitorFlag {
  round: number;
  device: string;
  reasons: string[];
  flagged: boolean;
}

/** The update monitor of a run: the flagged device-rounds, newest first. */
export function renderMonitorFlags(target: HTMLTableElement, rounds: readonly RoundRecord[]): MonitorFlag[] {
  const flags = rounds.flatMap((r) => (r.monitoring?.devices ?? []).filter((d) => d.reasons.length).map((d) => ({ round: r.round, device: d.id, reasons: d.reasons, flagged: d.flagged === true })));
  table<MonitorFlag>(
    target,
    [
      { head: 'Round', cell: (f) => f.round },
      { head: 'Device', cell: (f) => shortId(f.device), title: (f) => f.device },
      { head: 'Out of control', cell: (f) => f.reasons.join('; ') },
      { head: 'Device', cell: (f) => (f.flagged ? el('span', { class: 'pill failed' }, 'flagged (2 of its last 3 rounds)') : 'a lone excursion') },
    ],
    [...flags].reverse().slice(0, 50),
    'No device out of control in this run.',
    (f) => ({ 'data-flagged': f.device }),
  );
  return flags;
}

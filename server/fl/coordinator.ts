/**
 * The round coordinator: a pure reducer `step(state, event, now) → { state, effects }`.
 * It owns a round's state and its time — who was selected, who answered, what each update weighs,
 * the round's ledger (bytes, timings, metrics), when the round must close, and the record that
 * is stored. It knows nothing of sockets, timers, storage or tensors: time comes in with each
 * event, and what must happen in the world goes out as effects, performed by the federation
 * service (federation.ts), which reports every outcome — success or failure — back as an event.
 *
 *   idle ─run:start→ selecting ─enough devices→ training ─K updates, all answered, or deadline→
 *        aggregating → selecting (next round) … → (last round) evaluating → done
 *   training ─deadline with < minUpdates, or too many dropped→ selecting (retry) or failed
 *   aggregating ─failure or timeout→ selecting (retry) or failed
 *   evaluating ─failure or timeout→ the round is recorded without test metrics; the run ends
 *
 * A round's new model is evaluated on the test set off the critical path: the round is recorded and
 * its model published at once (`evaluationPending`), the next round starts, and the metrics are
 * written into the same record when they arrive (or the failure, or the timeout). Only the run's
 * last round waits for its evaluation, in the evaluating phase, so a finished run has its metrics.
 *   any active phase ─run:stop→ stopped
 *
 * A round with secure aggregation (SecAgg+, secagg/) runs its protocol inside these phases:
 *   training:    keys (every selected device advertises keys) → shares (neighbours named, sealed
 *                shares sent) → inputs (masked updates, as the updates above)
 *   aggregating: unmask (the devices in the sum reveal shares) → aggregation
 * The keys, shares and unmask stages each wait at most SECAGG_STAGE_MS for devices that are slow.
 *
 * Every step ends with one `timer:set` effect: the next moment at which time alone changes
 * something (or null), recomputed from the state. The interpreter arms exactly that, so a tick
 * that comes early, late or twice can never lose a deadline.
 */
import type { DeviceTimings, Phase, PrivacyRecord, RoundRecord, RoundTimeline, SecAggRecord, Stage } from '../../shared/api.ts';
import { composeRdp, epsilonFromRdp, type SkellamSensitivity } from '../../shared/privacy/accountant.ts';
import { skellamSensitivity } from '../../shared/privacy/skellam.ts';
import { quantLevels, quantProblem, type QuantBounds } from '../../shared/secagg/quantize.ts';
import { phaseDurations } from '../../shared/phases.ts';
import { qfflScale, qfflWeight } from '../../shared/fairness.ts';
import { strategyFor } from './strategy.ts';
import type { ErrorCode } from '../../shared/protocol.ts';
import { createRng, shuffleInPlace } from '../../shared/rng.ts';
import type { DeviceHello, RunConfig, UpdateMetrics } from '../../shared/schemas.ts';
import { deviceQuality } from '../../shared/data-quality.ts';
import { cosine, emptyReference, flagDevices, monitorRound, type Features, type MonitorReference } from '../../shared/monitor.ts';
import { coordinateMedian } from '../../shared/robust.ts';
import { populationOf } from '../../shared/personalize.ts';
import { keepRebuildable, ringNeighbours, roundShape, unmaskRequest } from '../../shared/secagg/plan.ts';
import type { UnmaskRequest } from '../../shared/secagg/device.ts';

const ACTIVE: ReadonlySet<Phase> = new Set(['selecting', 'training', 'aggregating', 'evaluating']);

/** After its deadline a round waits this long for updates that arrived in time and are still being validated. */
export const VALIDATION_GRACE_MS = 10_000;
/** Aggregating or evaluating longer than this is a failure of that step (the run goes on). */
export const WORK_TIMEOUT_MS = 10 * 60_000;
/** How long a secure-aggregation stage (keys, shares, unmask) waits for devices that have not answered. */
export const SECAGG_STAGE_MS = 15_000;

export interface DeviceSlot {
  busy: boolean;
  joinToken?: string;
  /** training examples the device declared when it joined */
  examples: number;
  /** the label histogram of its training data, as it declared it when it joined */
  labelHistogram?: readonly number[];
  /** the scores of its data it measured (data-quality.ts); integrity is computed here from the histogram */
  quality?: DeviceHello['quality'];
}

/** One counted update, as the ledger keeps it. */
export interface Contribution {
  deviceId: string;
  numExamples: number;
  /** what it weighs in FedAvg: numExamples, capped by the run's maxExamplesPerDevice */
  weight: number;
  norm: number;
  clipped: boolean;
  bytes: number;
  arrivedAt: number;
  metrics: UpdateMetrics;
  /** the update's count sketch (monitor.ts), for its cosine to the round's aggregate; absent where the server cannot see it */
  sketch?: Float32Array;
}

interface Submission {
  submission: number;
  deviceId: string;
  numExamples: number;
  bytes: number;
  arrivedAt: number;
  metrics: UpdateMetrics;
}

export interface RoundState {
  runId: number;
  round: number;
  attempt: number;
  selectionStartedAt: number;
  selectedAt: number;
  deadline: number;
  selected: readonly string[];
  /** examples each selected device had declared when it was selected: the most its update may claim */
  declared: Readonly<Record<string, number>>;
  /** the label histograms the selected devices had declared: the counted ones' sum is the data the round trained on */
  histograms: Readonly<Record<string, readonly number[]>>;
  /** updates that passed the round's checks and are being decoded and validated */
  validating: readonly Submission[];
  accepted: readonly Contribution[];
  /** selected devices whose update was refused (malformed, or claiming more than declared) */
  refused: readonly string[];
  dropped: readonly string[];
  late: number;
  rejected: number;
  bytesDown: number;
  bytesUp: number;
  closedBy?: 'quorum' | 'all answered' | 'deadline';
  /** selected devices that answered after the round closed (each counts once, as late; the ones still silent are silentDevices) */
  answeredLate?: readonly string[];
  /** when the current step (aggregation, evaluation) began: its timeout runs from here */
  workStartedAt?: number;
  modelVersion?: number;
  /** the secure-aggregation protocol of this round, when the run asks for it */
  secagg?: SecAggState;
  /** under DP: each present device's chance to be in the round, the expected number of devices, the bound updates are clipped to and the noise on their sum */
  privacy?: RoundPrivacy;
}

export interface RoundPrivacy {
  q: number;
  expected: number;
  clip: number;
  /** the noise's standard deviation on the sum, in update units (under distributed DP: when exactly minInputs devices add theirs) */
  noiseStd: number;
  /** under secure aggregation the devices add the noise (Skellam, privacy/skellam.ts): the sum's integer bounds and sensitivity */
  distributed?: { bounds: QuantBounds; minInputs: number; sensitivity: SkellamSensitivity };
}

export type SecAggStage = 'keys' | 'shares' | 'inputs' | 'unmask' | 'done';

export interface SecAggState {
  stage: SecAggStage;
  /** when the keys, shares or unmask stage stops waiting */
  stageEnds: number;
  /** when each stage began */
  began: Partial<Record<SecAggStage, number>>;
  /** devices whose keys were taken (U1), whose shares were (then those of them whose secrets can be rebuilt: U2), that revealed */
  advertised: readonly string[];
  shared: readonly string[];
  survivors: readonly string[];
  revealed: readonly string[];
  /** devices in the sum that left before revealing */
  lost: readonly string[];
  /** neighbours per device and shares needed, fixed when the keys stage ends */
  k: number;
  t: number;
  neighbours: Readonly<Record<string, readonly string[]>>;
}

export interface RunState {
  id: number;
  config: RunConfig;
  /** the round being run (1-based) */
  round: number;
  attempt: number;
  /** when the current selection phase began */
  selectingSince: number;
  reason?: string;
  /** under DP: the secret seed of the Poisson sampling, and the RDP the run's released rounds spent (accountant.ts; undefined: none yet) */
  privacy?: {
    samplingSeed: number;
    rdp: readonly number[] | undefined;
    clip: number;
    /** under distributed DP: the model's parameters (the noise's sensitivity follows from them), and the RDP the server itself saw (no sampling: it knows who was in each round) */
    parameters?: number;
    serverRdp?: readonly number[] | undefined;
  };
  /** the update monitor's reference, learned in the run's first rounds (monitor.ts) */
  monitor?: MonitorReference;
  /** each device's recent judged rounds (out of control or not), for the flagging rule */
  monitorHistory?: Readonly<Record<string, readonly boolean[]>>;
  /** devices the monitor flagged; left out of selection when the run quarantines */
  flagged?: readonly string[];
}

export interface CoordinatorState {
  phase: Phase;
  /** connected devices → whether each is busy in a round, its join token and declared examples */
  devices: ReadonlyMap<string, DeviceSlot>;
  run?: RunState;
  current?: RoundState;
  /** the moments that divide the current (or last) round into its phases (phases.ts): the record and the dashboard read them */
  timeline?: RoundTimeline;
  /** published models being evaluated while later rounds run, with the records their metrics complete */
  evaluations?: readonly PendingEvaluation[];
}

export interface PendingEvaluation {
  runId: number;
  round: number;
  attempt: number;
  version: number;
  startedAt: number;
  record: RoundRecord;
  /** the round's selected devices that have not answered it: a late answer from one of them still counts in the record */
  silent: readonly string[];
}

interface RoundRef {
  runId: number;
  round: number;
  attempt: number;
}

export type CoordinatorEvent =
  | { type: 'device:joined'; deviceId: string; examples: number; joinToken?: string; labelHistogram?: readonly number[]; quality?: DeviceHello['quality'] }
  | { type: 'device:left'; deviceId: string }
  /** accepted updates that can no longer be summed (the cluster node holding them died): they count as dropped, never twice */
  | { type: 'updates:lost'; deviceIds: readonly string[]; reason: string }
  | { type: 'run:start'; runId: number; config: RunConfig; fromRound?: number; fromAttempt?: number; samplingSeed?: number; released?: readonly ReleasedRound[]; clip?: number; parameters?: number }
  | { type: 'run:stop'; reason?: string }
  | { type: 'tick' }
  | ({ type: 'round:sent'; bytesDown: number } & RoundRef)
  | ({ type: 'update:submitted'; submission: number; deviceId: string; numExamples: number; bytes: number; metrics: UpdateMetrics } & RoundRef)
  | { type: 'update:validated'; submission: number; norm: number; clipped: boolean; sketch?: Float32Array }
  | { type: 'update:invalid'; submission: number; reason: string }
  /** a secure-aggregation message whose signature and shape the service has checked (or not: `invalid`) */
  | ({ type: 'secagg:received'; what: 'keys' | 'shares' | 'reveal'; message: number; deviceId: string; bytes: number; invalid?: string } & RoundRef)
  /** `unclippedShare`: under adaptive clipping, the noisy share of the round's updates the bound left unclipped */
  | ({ type: 'round:aggregated'; version: number; unclippedShare?: number } & RoundRef)
  | ({ type: 'round:aggregation-failed'; reason: string } & RoundRef)
  | ({ type: 'round:evaluated'; version: number; accuracy: number; loss: number } & RoundRef)
  | ({ type: 'round:evaluation-failed'; version: number; reason: string } & RoundRef)
  /** an effect the service could not perform (the store refused a write, …) */
  | { type: 'effect:failed'; effect: Effect['type']; reason: string };

export type Effect =
  | ({ type: 'round:start'; deviceIds: readonly string[]; deadline: number; privacy?: RoundPrivacy } & RoundRef)
  | { type: 'update:validate'; submission: number; deviceId: string }
  | { type: 'update:accept'; submission: number; deviceId: string; weight: number; metrics: UpdateMetrics }
  /** `submission` is absent for a refusal decided before the update was taken in */
  | { type: 'update:reject'; submission: number; deviceId: string; code: ErrorCode; message: string; late: boolean }
  | ({ type: 'round:notify-end'; deviceIds: readonly string[]; counted: readonly string[]; outcome: 'completed' | 'failed' | 'stopped' } & RoundRef)
  /** `scale`: q-FFL's step is this times the weighted mean of the updates */
  | ({ type: 'round:aggregate'; updates: number; failures: number; scale?: number; clipCount?: { unclipped: number; noiseStd: number; expected: number }; secagg?: { t: number; neighbours: Readonly<Record<string, readonly string[]>>; shared: readonly string[]; inputs: readonly string[] } } & RoundRef)
  /** keep (ok) or drop a secure-aggregation message, and answer its sender */
  | { type: 'secagg:answer'; message: number; deviceId: string; error?: { code: ErrorCode; message: string } }
  | ({ type: 'secagg:neighbours'; neighbours: Readonly<Record<string, readonly string[]>> } & RoundRef)
  | ({ type: 'secagg:forward'; survivors: readonly string[] } & RoundRef)
  | ({ type: 'secagg:unmask'; requests: Readonly<Record<string, UnmaskRequest>> } & RoundRef)
  | ({ type: 'model:evaluate'; version: number } & RoundRef)
  /** `evaluated`: the rewrite of a completed round's record with the metrics of its evaluation off the critical path */
  | { type: 'round:record'; record: RoundRecord; willRetry: boolean; evaluated?: true }
  | { type: 'model:publish'; version: number; runId: number; round: number; testAccuracy: number | null; testLoss: number | null }
  | { type: 'run:finished'; runId: number; status: 'done' | 'failed' | 'stopped'; reason: string }
  | { type: 'timer:set'; at: number | null };

export interface StepResult {
  state: CoordinatorState;
  effects: Effect[];
}

export function initialState(): CoordinatorState {
  return { phase: 'idle', devices: new Map() };
}

export const isActive = (state: CoordinatorState): boolean => ACTIVE.has(state.phase);

export const selectionSize = (config: RunConfig): number => Math.ceil(config.clientsPerRound * config.overSelect - 1e-9);

const same = (a: RoundRef, b: RoundRef): boolean => a.runId === b.runId && a.round === b.round && a.attempt === b.attempt;

const ids = (xs: readonly { deviceId: string }[]): string[] => xs.map((x) => x.deviceId);

function withDevice(devices: ReadonlyMap<string, DeviceSlot>, id: string, value: DeviceSlot | undefined): Map<string, DeviceSlot> {
  const next = new Map(devices);
  if (value) next.set(id, value);
  else next.delete(id);
  return next;
}

function freeAll(devices: ReadonlyMap<string, DeviceSlot>, selected: readonly string[]): Map<string, DeviceSlot> {
  const next = new Map(devices);
  for (const id of selected) {
    const slot = next.get(id);
    if (slot) next.set(id, { ...slot, busy: false });
  }
  return next;
}

const idleDevices = (state: CoordinatorState, config: RunConfig): string[] => {
  const excluded = config.dataQuality.action === 'exclude' ? excludedByQuality(state, config) : undefined;
  const quarantined = config.monitor.quarantine ? new Set(state.run?.flagged ?? []) : undefined;
  return [...state.devices].filter(([id, d]) => !d.busy && (config.joinToken === undefined || d.joinToken === config.joinToken) && !excluded?.has(id) && !quarantined?.has(id)).map(([id]) => id);
};

/**
 * The monitor's features of each counted update: its norm, its cosine to the round's robust
 * aggregate — the coordinate-wise median of the updates' sketches, not their mean: one −10× update
 * among five drags the mean its own way (the honest ones then look reversed), not the median — and
 * what its device reported.
 */
function featuresOf(cur: RoundState): { id: string; features: Features }[] {
  const m = cur.accepted;
  const aggregate = m.length > 0 && m.every((x) => x.sketch) ? coordinateMedian(m.map((x) => x.sketch!)) : undefined;
  return m.map((x) => ({
    id: x.deviceId,
    features: {
      norm: cur.secagg ? null : x.norm,
      cosine: aggregate && x.sketch ? cosine(x.sketch, aggregate) : null,
      lossBefore: x.metrics.lossBefore,
      lossAfter: x.metrics.lossAfter,
      accuracyBefore: x.metrics.accuracyBefore,
      accuracyAfter: x.metrics.accuracyAfter,
    },
  }));
}

/** The devices whose data fails the run's quality rules: their own scores, and integrity against the connected devices' population. */
export function excludedByQuality(state: CoordinatorState, config: RunConfig): Set<string> {
  const population = populationOf([...state.devices.values()].flatMap((d) => (d.labelHistogram ? [d.labelHistogram] : [])));
  const out = new Set<string>();
  for (const [id, d] of state.devices) if (deviceQuality(config.dataQuality, d.quality, d.labelHistogram, population).flags.length) out.add(id);
  return out;
}

// ─── time ────────────────────────────────────────────────────────────────────
/** The next moment at which time alone changes the state, or null: a function of the state and the time only. */
export function nextWake(state: CoordinatorState, now: number): number | null {
  const own = phaseWake(state, now);
  const evaluations = (state.evaluations ?? []).map((e) => e.startedAt + WORK_TIMEOUT_MS);
  const all = [...(own === null ? [] : [own]), ...evaluations];
  return all.length ? Math.min(...all) : null;
}

function phaseWake(state: CoordinatorState, now: number): number | null {
  const { run, current } = state;
  switch (state.phase) {
    case 'selecting': {
      if (!run) return null;
      // Until the selection wait ends, the round may start with fewer devices then; after it, only a join can start it.
      const waitEnds = run.selectingSince + run.config.selectionTimeoutMs;
      return now < waitEnds ? waitEnds : null;
    }
    case 'training':
      if (!current) return null;
      if (current.secagg && current.secagg.stage !== 'inputs') return now < current.secagg.stageEnds ? current.secagg.stageEnds : null;
      return now < current.deadline ? current.deadline : current.deadline + VALIDATION_GRACE_MS;
    case 'aggregating':
      if (current?.secagg?.stage === 'unmask') return now < current.secagg.stageEnds ? current.secagg.stageEnds : null;
      return current?.workStartedAt !== undefined ? current.workStartedAt + WORK_TIMEOUT_MS : null;
    case 'evaluating':
      return current?.workStartedAt !== undefined ? current.workStartedAt + WORK_TIMEOUT_MS : null;
    case 'idle':
    case 'done':
    case 'failed':
    case 'stopped':
      return null;
    default: {
      const never: never = state.phase;
      throw new Error(`coordinator: unknown phase ${String(never)}`);
    }
  }
}

/** What the federation is doing, finer than the phase: a round in training is either waiting for its devices' updates or, with minUpdates in, for its deadline. */
export function stageOf(state: CoordinatorState): Stage {
  switch (state.phase) {
    case 'selecting':
      return 'waiting for devices';
    case 'training':
      return state.current && state.run && state.current.accepted.length >= state.run.config.minUpdates ? 'waiting for the deadline' : 'devices at work';
    case 'idle':
    case 'done':
    case 'failed':
    case 'stopped':
    case 'aggregating':
    case 'evaluating':
      return state.phase;
    default: {
      const never: never = state.phase;
      throw new Error(`coordinator: unknown phase ${String(never)}`);
    }
  }
}

/** Why the federation is waiting, in words for the dashboard (null when it is not). */
export function describeWaiting(state: CoordinatorState, now: number): string | null {
  const { run, current } = state;
  if (!run) return null;
  const { config } = run;
  switch (state.phase) {
    case 'selecting': {
      const idle = idleDevices(state, config).length;
      const left = run.selectingSince + config.selectionTimeoutMs - now;
      const excluded = config.dataQuality.action === 'exclude' ? excludedByQuality(state, config).size : 0;
      const why = excluded ? ` (${excluded} left out by the data-quality rules)` : '';
      if (left > 0) return `selecting: need ${config.clientsPerRound} idle device${config.clientsPerRound === 1 ? '' : 's'}, have ${idle}${why}${idle >= config.minUpdates ? `; starts with ${idle} in ${Math.ceil(left / 1000)} s` : ''}`;
      return `waiting for devices: need at least ${config.minUpdates} idle, have ${idle}${why}`;
    }
    case 'training': {
      if (!current) return null;
      const s = current.secagg;
      if (s?.stage === 'keys') return `secure aggregation, keys: ${s.advertised.length} of ${current.selected.length - current.dropped.length} selected devices advertised (waits until ${Math.max(0, Math.ceil((s.stageEnds - now) / 1000))} s from now)`;
      if (s?.stage === 'shares') return `secure aggregation, shares: ${s.shared.length} of ${s.advertised.length} devices sent theirs (k = ${s.k}, t = ${s.t})`;
      const answered = current.accepted.length + current.refused.length + current.dropped.length;
      const of = `${answered} of ${current.selected.length} selected answered`;
      if (now >= current.deadline) return `deadline passed: validating ${current.validating.length} update${current.validating.length === 1 ? '' : 's'} that arrived in time`;
      if (s && current.accepted.length >= config.clientsPerRound) return `secure aggregation: ${current.accepted.length} inputs in, waiting for more until every device's masks can be removed (t = ${s.t} of its ${s.k} neighbours in the sum); ${of}`;
      if (current.accepted.length >= config.minUpdates) return `waiting for the deadline: ${of}, ${current.accepted.length} counted (closes at ${config.clientsPerRound})`;
      return `waiting for updates: ${current.accepted.length} of the ${config.minUpdates} required in; ${of}`;
    }
    case 'aggregating':
      if (current?.secagg?.stage === 'unmask') return `secure aggregation, unmasking: ${current.secagg.revealed.length} of ${current.accepted.length} devices revealed their shares`;
      return `aggregating ${current?.accepted.length ?? 0} updates`;
    case 'evaluating':
      return `evaluating model v${current?.modelVersion ?? '?'} on the test set`;
    default:
      return null;
  }
}

// ─── records ─────────────────────────────────────────────────────────────────
const median = (xs: number[]): number => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};
const mean = (xs: number[]): number | null => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

/** The record of a round, from its ledger and its timeline (which must be ended: evaluated, failed or stopped). */
function roundRecord(config: RunConfig, cur: RoundState, timeline: RoundTimeline, outcome: { status: RoundRecord['status']; reason: string | null; testAccuracy: number | null; testLoss: number | null }): RoundRecord {
  const m = cur.accepted;
  const end = timeline.evaluatedAt ?? timeline.endedAt ?? timeline.selectionStartedAt;
  const timings: DeviceTimings | null = m.length
    ? {
        downloadMs: median(m.map((x) => x.metrics.downloadMs)),
        evaluateMs: median(m.map((x) => x.metrics.evaluateMs)),
        trainMs: median(m.map((x) => x.metrics.trainMs)),
        uploadMs: median(m.map((x) => Math.max(0, x.arrivedAt - cur.selectedAt - x.metrics.downloadMs - x.metrics.evaluateMs - x.metrics.trainMs))),
      }
    : null;
  return {
    runId: cur.runId,
    round: cur.round,
    attempt: cur.attempt,
    status: outcome.status,
    reason: outcome.reason,
    participants: cur.selected.length,
    completed: m.length,
    refused: cur.refused.length,
    unanswered: silentDevices(cur).length,
    dropped: cur.dropped.length,
    late: cur.late,
    rejected: cur.rejected,
    clipped: m.filter((x) => x.clipped).length,
    startedAt: timeline.selectionStartedAt,
    durationMs: end - timeline.selectionStartedAt,
    phases: phaseDurations(timeline, end),
    timings,
    bytesUp: cur.bytesUp,
    bytesDown: cur.bytesDown,
    testAccuracy: outcome.testAccuracy,
    testLoss: outcome.testLoss,
    localAccuracyBefore: mean(m.map((x) => x.metrics.accuracyBefore)),
    localAccuracyAfter: mean(m.map((x) => x.metrics.accuracyAfter)),
    // how the round's global model serves each counted device (its held-out accuracy before training)
    // the strategy's last hook: the devices' evaluations summed up (fairness, personalization)
    ...strategyFor(config).aggregateEvaluate(m.map((x) => x.metrics)),
    devices: m.map((x) => ({ id: x.deviceId, numExamples: x.numExamples, weight: cur.secagg ? null : x.weight, accuracyBefore: x.metrics.accuracyBefore, accuracyAfter: x.metrics.accuracyAfter, trainMs: x.metrics.trainMs, ...(x.metrics.labelDistance !== undefined ? { labelDistance: x.metrics.labelDistance } : {}), ...(x.metrics.accuracyMixed !== undefined ? { accuracyMixed: x.metrics.accuracyMixed } : {}), ...(x.metrics.accuracyHalfMix !== undefined ? { accuracyHalfMix: x.metrics.accuracyHalfMix } : {}) })),
    labelDistribution: labelDistributionOf(m.map((x) => cur.histograms[x.deviceId])),
    modelVersion: outcome.status === 'completed' ? (cur.modelVersion ?? null) : null,
    secureAggregation: cur.secagg ? secAggRecord(cur, end) : null,
    privacy: null,
  };
}

/** The counted devices' declared label histograms, summed (null when one of them declared none). */
function labelDistributionOf(histograms: readonly (readonly number[] | undefined)[]): number[] | null {
  if (histograms.length === 0 || histograms.some((h) => !h)) return null;
  const sum = new Array<number>(histograms[0]!.length).fill(0);
  for (const h of histograms) h!.forEach((v, i) => (sum[i] = (sum[i] ?? 0) + v));
  return sum;
}

function secAggRecord(cur: RoundState, end: number): SecAggRecord {
  const s = cur.secagg as SecAggState;
  const span = (from: SecAggStage, to: SecAggStage | 'done') => {
    const a = s.began[from];
    return a === undefined ? 0 : (s.began[to] ?? end) - a;
  };
  return {
    neighbours: s.k,
    threshold: s.t,
    selected: cur.selected.length,
    advertised: s.advertised.length,
    shared: s.survivors.length,
    inputs: cur.accepted.length,
    revealed: s.revealed.length,
    stageMs: { keys: span('keys', 'shares'), shares: span('shares', 'inputs'), inputs: span('inputs', 'unmask'), unmask: span('unmask', 'done') },
  };
}

// ─── transitions ─────────────────────────────────────────────────────────────
/** Starts a round when enough idle devices are here (or enough for minUpdates once selection has waited long enough). */
function trySelect(state: CoordinatorState, now: number): StepResult {
  const run = state.run;
  if (state.phase !== 'selecting' || !run) return { state, effects: [] };
  const { config } = run;
  // A run that requires a join token selects only the devices that presented it.
  const idle = idleDevices(state, config).sort();
  const waitedEnough = now - run.selectingSince >= config.selectionTimeoutMs;
  if (idle.length < config.clientsPerRound && !(waitedEnough && idle.length >= config.minUpdates)) return { state, effects: [] };
  let selected: string[];
  let privacy: RoundState['privacy'];
  if (config.dp && run.privacy) {
    // Poisson sampling, as the accountant assumes: each present device is in the round with chance q,
    // drawn from the run's secret seed (the config's seed is public)
    const q = Math.min(1, config.clientsPerRound / idle.length);
    const sample = createRng((run.privacy.samplingSeed ^ Math.imul(run.round, 0x9e3779b1) ^ Math.imul(run.attempt, 0x85ebca6b)) >>> 0);
    selected = idle.filter(() => sample() < q);
    const expected = q * idle.length;
    privacy = { q, expected, clip: run.privacy.clip, noiseStd: updateNoise(config.dp, expected) * run.privacy.clip };
    if (config.secureAggregation) {
      const distributed = distributedNoise(config, run.privacy.clip, run.privacy.parameters ?? 0, selected.length);
      if (typeof distributed === 'string') return failRound(startedWith(state, run, now, selected, privacy), now, distributed);
      privacy = { ...privacy, distributed, noiseStd: (config.dp.noiseMultiplier * distributed.sensitivity.l2 * run.privacy.clip) / quantLevels(distributed.bounds) };
    }
    // the budget is checked before anything of the round is released (the sample's size tells nothing of any device's data)
    const next = epsilonFromRdp(composeRdp(run.privacy.rdp, q, config.dp.noiseMultiplier, 1, privacy.distributed?.sensitivity), config.dp.targetDelta);
    if (config.dp.epsilonBudget !== undefined && next.epsilon > config.dp.epsilonBudget) {
      const spent = epsilonFromRdp(run.privacy.rdp, config.dp.targetDelta).epsilon;
      const reason = `privacy budget: round ${run.round} would bring ε from ${spent.toFixed(3)} to ${next.epsilon.toFixed(3)}, over the budget of ${config.dp.epsilonBudget} (δ = ${config.dp.targetDelta})`;
      return { state: { ...state, phase: 'done', current: undefined, run: { ...run, reason } }, effects: [{ type: 'run:finished', runId: run.id, status: 'done', reason }] };
    }
  } else {
    const rng = createRng(config.seed * 7919 + run.round * 31 + run.attempt);
    selected = shuffleInPlace(idle, rng).slice(0, selectionSize(config));
  }
  const started = startedWith(state, run, now, selected, privacy);
  // Poisson sampling can draw nobody: the round is redone at once, having released nothing
  if (privacy && selected.length === 0) return failRound(started, now, `no device was sampled (each of the ${idle.length} present had chance q = ${privacy.q.toFixed(3)})`);
  return {
    state: started,
    effects: [{ type: 'round:start', runId: run.id, round: run.round, attempt: run.attempt, deviceIds: selected, deadline: (started.current as RoundState).deadline, ...(privacy ? { privacy } : {}) }],
  };
}

/** The state of a round that has just selected its devices. */
function startedWith(state: CoordinatorState, run: RunState, now: number, selected: string[], privacy: RoundPrivacy | undefined): CoordinatorState {
  const { config } = run;
  const deadline = now + config.roundTimeoutMs;
  const devices = new Map(state.devices);
  const declared: Record<string, number> = {};
  const histograms: Record<string, readonly number[]> = {};
  for (const id of selected) {
    const slot = state.devices.get(id) as DeviceSlot;
    devices.set(id, { ...slot, busy: true });
    declared[id] = slot.examples;
    if (slot.labelHistogram) histograms[id] = slot.labelHistogram;
  }
  const current: RoundState = { runId: run.id, round: run.round, attempt: run.attempt, selectionStartedAt: run.selectingSince, selectedAt: now, deadline, selected, declared, histograms, validating: [], accepted: [], refused: [], dropped: [], late: 0, rejected: 0, bytesDown: 0, bytesUp: 0 };
  if (privacy) current.privacy = privacy;
  if (config.secureAggregation) {
    current.secagg = { stage: 'keys', stageEnds: Math.min(now + SECAGG_STAGE_MS, deadline), began: { keys: now }, advertised: [], shared: [], survivors: [], revealed: [], lost: [], k: 0, t: 0, neighbours: {} };
  }
  return { ...state, phase: 'training', devices, current, timeline: { runId: run.id, round: run.round, attempt: run.attempt, selectionStartedAt: run.selectingSince, selectedAt: now } };
}

/**
 * Distributed DP's round: the devices add Skellam noise calibrated for the fewest inputs the round
 * may sum, ⌈(1 − dropoutTolerance)·sampled⌉ (at least minUpdates and 3); with fewer the round is
 * not released. A string: why this sample cannot make a round.
 */
function distributedNoise(config: RunConfig, clip: number, parameters: number, sampled: number): NonNullable<RoundPrivacy['distributed']> | string {
  const dp = config.dp!;
  const floor = Math.max(3, config.minUpdates);
  if (sampled < floor) return `${sampled} devices were sampled; a secure round needs at least ${floor}`;
  if (!(parameters > 0)) return 'distributed DP: the model size is unknown';
  const minInputs = Math.min(sampled, Math.max(floor, Math.ceil((1 - dp.dropoutTolerance) * sampled - 1e-9)));
  const bounds: QuantBounds = { maxInputs: sampled, maxWeight: 1, clipNorm: clip, noise: { noiseMultiplier: dp.noiseMultiplier, minInputs, parameters } };
  const problem = quantProblem(bounds);
  if (problem) return `distributed DP: ${problem}`;
  return { bounds, minInputs, sensitivity: skellamSensitivity(quantLevels(bounds), parameters) };
}

/** The fewest updates a round can close with: minUpdates, or under distributed DP the inputs its noise is calibrated for. */
const requiredUpdates = (cur: RoundState, config: RunConfig): number => Math.max(config.minUpdates, cur.privacy?.distributed?.minInputs ?? 0);

/** A released round as a resumed run's accountant needs it. */
export interface ReleasedRound {
  q: number;
  rounds: number;
  skellam?: SkellamSensitivity;
}

/**
 * Adaptive clipping (Andrew et al. 2021) also releases a noisy count of the updates the bound left
 * unclipped. Its noise, σ_b on a sum of bits centred on ½ (sensitivity ½), and the updates' noise
 * z_Δ·S together make one Gaussian mechanism of multiplier z — what the accountant charges — when
 * z_Δ = (z⁻² − (2σ_b)⁻²)^(−½). σ_b is the paper's expected/20, at least z (so z_Δ ≤ 1.16 z).
 */
const countNoise = (dp: NonNullable<RunConfig['dp']>, expected: number): number => Math.max(expected / 20, dp.noiseMultiplier);
function updateNoise(dp: NonNullable<RunConfig['dp']>, expected: number): number {
  if (dp.clipNorm !== 'adaptive') return dp.noiseMultiplier;
  const sigmaB = countNoise(dp, expected);
  return 1 / Math.sqrt(dp.noiseMultiplier ** -2 - (2 * sigmaB) ** -2);
}

/** A new selection phase for `round`/`attempt`, which starts at once if the devices are there. */
function select(state: CoordinatorState, now: number, round: number, attempt: number): StepResult {
  const run = state.run as RunState;
  const timeline: RoundTimeline = { runId: run.id, round, attempt, selectionStartedAt: now };
  return trySelect({ ...state, phase: 'selecting', current: undefined, run: { ...run, round, attempt, selectingSince: now }, timeline }, now);
}

const notifyEnd = (cur: RoundState, outcome: 'completed' | 'failed' | 'stopped'): Effect => ({
  type: 'round:notify-end',
  runId: cur.runId,
  round: cur.round,
  attempt: cur.attempt,
  deviceIds: cur.selected.filter((id) => !cur.dropped.includes(id)),
  counted: outcome === 'completed' ? ids(cur.accepted) : [],
  outcome,
});

/** Stops taking updates: what is still being validated arrived too late to count. */
function lateValidations(cur: RoundState): Effect[] {
  return cur.validating.map((v) => ({ type: 'update:reject', submission: v.submission, deviceId: v.deviceId, code: 'ROUND_FULL', message: `update from device ${v.deviceId} for round ${cur.round}: the round closed while it was being validated`, late: true }));
}

function closeRound(state: CoordinatorState, now: number, closedBy: NonNullable<RoundState['closedBy']>): StepResult {
  const cur = state.current as RoundState;
  const closed: RoundState = { ...cur, validating: [], late: cur.late + cur.validating.length, answeredLate: [...(cur.answeredLate ?? []), ...ids(cur.validating)], closedBy, workStartedAt: now };
  if (cur.secagg) {
    // the masked inputs are in: the devices in the sum now reveal what removes the masks
    const inputs = new Set(ids(closed.accepted));
    const shared = new Set(cur.secagg.survivors);
    const requests = Object.fromEntries([...inputs].map((id) => [id, unmaskRequest(id, cur.secagg!.neighbours, shared, inputs)]));
    // a device whose input is in but which has left cannot reveal: do not wait for it
    const lost = [...inputs].filter((id) => !state.devices.has(id));
    const secagg: SecAggState = { ...cur.secagg, stage: 'unmask', stageEnds: now + SECAGG_STAGE_MS, began: { ...cur.secagg.began, unmask: now }, lost };
    const unmasking: CoordinatorState = { ...state, phase: 'aggregating', devices: freeAll(state.devices, cur.selected), current: { ...closed, secagg }, timeline: { ...(state.timeline as RoundTimeline), closedAt: now } };
    const settled = settleUnmask(unmasking, now);
    return { state: settled.state, effects: [...lateValidations(cur), { type: 'secagg:unmask', runId: cur.runId, round: cur.round, attempt: cur.attempt, requests }, ...settled.effects] };
  }
  return {
    state: { ...state, phase: 'aggregating', devices: freeAll(state.devices, cur.selected), current: closed, timeline: { ...(state.timeline as RoundTimeline), closedAt: now } },
    effects: [...lateValidations(cur), notifyEnd(closed, 'completed'), { type: 'round:aggregate', runId: cur.runId, round: cur.round, attempt: cur.attempt, updates: closed.accepted.length, failures: closed.refused.length + closed.dropped.length, ...clipCount(state, closed), ...qffl(state, closed) }],
  };
}

/** q-FFL's scale of the round's weighted mean, from the counted updates' losses and (clipped) norms. */
function qffl(state: CoordinatorState, closed: RoundState): { scale?: number } {
  const config = state.run?.config;
  if (config?.strategy !== 'qffl') return {};
  const clip = config.clipNorm;
  return { scale: qfflScale(closed.accepted.map((c) => ({ loss: c.metrics.lossBefore, norm: clip > 0 ? Math.min(c.norm, clip) : c.norm })), config.q, config.learningRate) };
}

/** Under adaptive clipping, what the aggregation must release of the round's norms: how many the bound left unclipped, with its noise. */
function clipCount(state: CoordinatorState, cur: RoundState): { clipCount?: { unclipped: number; noiseStd: number; expected: number } } {
  const dp = state.run?.config.dp;
  if (!dp || dp.clipNorm !== 'adaptive' || !cur.privacy) return {};
  return { clipCount: { unclipped: cur.accepted.filter((c) => c.norm <= cur.privacy!.clip).length, noiseStd: countNoise(dp, cur.privacy.expected), expected: cur.privacy.expected } };
}

/** The round failed: it is recorded, then redone as a new attempt, or the run fails after maxRoundRetries. */
function failRound(state: CoordinatorState, now: number, reason: string, before: Effect[] = []): StepResult {
  const run = state.run as RunState;
  const cur = state.current as RoundState;
  const willRetry = run.attempt <= run.config.maxRoundRetries;
  const devices = freeAll(state.devices, cur.selected);
  const timeline: RoundTimeline = { ...(state.timeline as RoundTimeline), endedAt: now, outcome: 'failed' };
  const effects: Effect[] = [...before, ...lateValidations(cur)];
  if (state.phase === 'training' || cur.secagg?.stage === 'unmask') effects.push(notifyEnd(cur, 'failed'));
  effects.push({ type: 'round:record', record: roundRecord(run.config, { ...cur, late: cur.late + cur.validating.length }, timeline, { status: 'failed', reason, testAccuracy: null, testLoss: null }), willRetry });
  if (!willRetry) {
    const message = `round ${cur.round} failed ${run.attempt} time(s); last: ${reason}`;
    effects.push({ type: 'run:finished', runId: run.id, status: 'failed', reason: message });
    return { state: { ...state, phase: 'failed', devices, run: { ...run, reason: message }, current: undefined, timeline }, effects };
  }
  const next = select({ ...state, devices }, now, run.round, run.attempt + 1);
  return { state: next.state, effects: [...effects, ...next.effects] };
}

/**
 * Moves a secure round through the stages before its inputs (keys, then shares) once everyone
 * expected has answered or the stage's wait is over; fails the round when too few are left.
 */
function advanceSecAgg(state: CoordinatorState, now: number): StepResult {
  const effects: Effect[] = [];
  for (;;) {
    const cur = state.current;
    const run = state.run;
    const s = cur?.secagg;
    if (state.phase !== 'training' || !cur || !run || !s) return { state, effects };
    const gone = new Set([...cur.dropped, ...cur.refused]);
    const ref = { runId: cur.runId, round: cur.round, attempt: cur.attempt };
    const stageEnds = Math.min(now + SECAGG_STAGE_MS, cur.deadline);
    if (s.stage === 'keys') {
      const pending = cur.selected.filter((id) => !gone.has(id) && !s.advertised.includes(id));
      if (pending.length && now < s.stageEnds) return { state, effects };
      const advertised = s.advertised.filter((id) => !gone.has(id));
      const shape = roundShape({ neighbours: run.config.secAggNeighbours, threshold: run.config.secAggThreshold }, advertised.length);
      if (shape.problem) return failRound(state, now, `secure aggregation: ${shape.problem}`, effects);
      const rng = createRng(run.config.seed * 104_729 + cur.round * 31 + cur.attempt);
      const neighbours = Object.fromEntries(ringNeighbours(advertised, shape.k, (xs) => shuffleInPlace(xs, rng)));
      state = { ...state, current: { ...cur, secagg: { ...s, stage: 'shares', stageEnds, began: { ...s.began, shares: now }, advertised, k: shape.k, t: shape.t, neighbours } } };
      effects.push({ type: 'secagg:neighbours', ...ref, neighbours });
      continue;
    }
    if (s.stage === 'shares') {
      const pending = s.advertised.filter((id) => !gone.has(id) && !s.shared.includes(id));
      if (pending.length && now < s.stageEnds) return { state, effects };
      const survivors = keepRebuildable(s.shared.filter((id) => !gone.has(id)), s.neighbours, s.t);
      const need = Math.max(3, requiredUpdates(cur, run.config));
      if (survivors.length < need) return failRound(state, now, `secure aggregation: ${survivors.length} devices shared their keys in time with enough neighbours to be unmasked, ${need} are needed`, effects);
      state = { ...state, current: { ...cur, secagg: { ...s, stage: 'inputs', began: { ...s.began, inputs: now }, survivors } } };
      effects.push({ type: 'secagg:forward', ...ref, survivors });
      continue;
    }
    return { state, effects };
  }
}

/**
 * Ends the unmask stage once every device in the sum has revealed (or left, or the wait is over):
 * on to aggregation when every secret can be rebuilt from t shares, else the round fails.
 */
function settleUnmask(state: CoordinatorState, now: number): StepResult {
  const cur = state.current as RoundState;
  const s = cur.secagg as SecAggState;
  const inputs = ids(cur.accepted);
  const pending = inputs.filter((id) => !s.revealed.includes(id) && !s.lost.includes(id));
  if (pending.length && now < s.stageEnds) return { state, effects: [] };
  for (const id of s.survivors) {
    const holders = (s.neighbours[id] ?? []).filter((n) => s.survivors.includes(n) && s.revealed.includes(n));
    if (holders.length < s.t) return failRound(state, now, `secure aggregation: ${holders.length} of the ${s.t} shares needed to unmask device ${id} were revealed (of its ${s.k} neighbours, the others are out of the sum or did not reveal)`);
  }
  const done: RoundState = { ...cur, workStartedAt: now, secagg: { ...s, stage: 'done', began: { ...s.began, done: now } } };
  return {
    state: { ...state, current: done },
    effects: [notifyEnd(done, 'completed'), { type: 'round:aggregate', runId: cur.runId, round: cur.round, attempt: cur.attempt, updates: inputs.length, failures: cur.refused.length + cur.dropped.length + s.lost.length, secagg: { t: s.t, neighbours: s.neighbours, shared: s.survivors, inputs } }],
  };
}

/** Closes or fails the round when its updates decide it: K counted, or nobody left to answer. */
function settle(state0: CoordinatorState, now: number): StepResult {
  if (state0.phase === 'aggregating' && state0.current?.secagg?.stage === 'unmask') return settleUnmask(state0, now);
  const before = advanceSecAgg(state0, now);
  const state = before.state;
  const cur = state.current;
  const run = state.run;
  if (state.phase !== 'training' || !cur || !run || (cur.secagg && cur.secagg.stage !== 'inputs')) return before;
  const after = settleInputs(state, now);
  return { state: after.state, effects: [...before.effects, ...after.effects] };
}

/**
 * Whether a secure round's inputs in now could remove every mask: each device that shared keys
 * needs t of its neighbours in the sum (and still connected) to reveal its shares. Over-selected
 * devices still training when K inputs are in would otherwise count as dropouts, and with the
 * default k a round of 20 or more would often lose some device's key with them.
 */
function unmaskableNow(state: CoordinatorState, cur: RoundState): boolean {
  const s = cur.secagg;
  if (!s) return true;
  const revealers = new Set(ids(cur.accepted).filter((id) => state.devices.has(id)));
  return s.survivors.every((id) => (s.neighbours[id] ?? []).filter((n) => revealers.has(n)).length >= s.t);
}

function settleInputs(state: CoordinatorState, now: number): StepResult {
  const cur = state.current as RoundState;
  const run = state.run as RunState;
  const { clientsPerRound } = run.config;
  const minUpdates = requiredUpdates(cur, run.config);
  // (a private round waits for every sampled device: K is only the expected size of its Poisson sample;
  // a secure one closes at K only once its sum can be unmasked without the devices still training)
  if (cur.accepted.length >= clientsPerRound && !cur.privacy && unmaskableNow(state, cur)) return closeRound(state, now, 'quorum');
  // the devices that can still answer: the selected ones, or under secure aggregation those that shared keys
  const answered = new Set([...ids(cur.accepted), ...cur.refused, ...cur.dropped]);
  const waiting = (cur.secagg ? cur.secagg.survivors : cur.selected).filter((id) => !answered.has(id)).length; // validating included
  if (cur.accepted.length + waiting < minUpdates) {
    return failRound(state, now, `${cur.dropped.length} of ${cur.selected.length} selected devices dropped out and ${cur.refused.length} were refused; at most ${cur.accepted.length + waiting} of the ${minUpdates} required updates can arrive`);
  }
  if (waiting === 0) return closeRound(state, now, 'all answered');
  if (now >= cur.deadline && cur.validating.length === 0) {
    if (cur.accepted.length >= minUpdates) return closeRound(state, now, 'deadline');
    return failRound(state, now, `deadline passed with ${cur.accepted.length} of the ${minUpdates} required updates (${cur.dropped.length} dropped, ${cur.refused.length} refused)`);
  }
  return { state, effects: [] };
}

/**
 * Refuses an update. It counts (as rejected, or as late) in the ledger of the round it was meant
 * for while that round's ledger is still open — through its aggregation and its evaluation (off the
 * critical path: the record rewritten with the metrics), so an update that comes after its round
 * closed is counted as late there, not in another round.
 */
function reject(state: CoordinatorState, update: RoundRef & { submission: number; deviceId: string }, code: ErrorCode, message: string, late = false): StepResult {
  const effects: Effect[] = [{ type: 'update:reject', submission: update.submission, deviceId: update.deviceId, code, message, late }];
  const cur = state.current;
  // late: a selected device's first answer after the round closed (it is no longer one that never answered); anything else refused: rejected
  if (cur !== undefined && (state.phase === 'training' || state.phase === 'aggregating' || state.phase === 'evaluating') && same(cur, update)) {
    const isLate = late && silentDevices(cur).includes(update.deviceId);
    const counted: RoundState = isLate ? { ...cur, late: cur.late + 1, answeredLate: [...(cur.answeredLate ?? []), update.deviceId] } : { ...cur, rejected: cur.rejected + 1 };
    return { state: { ...state, current: counted }, effects };
  }
  // its round already recorded, and evaluated off the critical path: the record is rewritten with the metrics, and with this
  const pending = state.evaluations?.find((e) => same(e, update));
  if (!pending) return { state, effects };
  const r = pending.record;
  const counted: PendingEvaluation = pending.silent.includes(update.deviceId) && late
    ? { ...pending, record: { ...r, late: r.late + 1, unanswered: r.unanswered - 1 }, silent: pending.silent.filter((id) => id !== update.deviceId) }
    : { ...pending, record: { ...r, rejected: r.rejected + 1 } };
  return { state: { ...state, evaluations: (state.evaluations ?? []).map((e) => (e === pending ? counted : e)) }, effects };
}

/** The round's selected devices that have not answered it, in time or late, nor dropped. */
function silentDevices(cur: RoundState): string[] {
  const answered = new Set([...ids(cur.accepted), ...ids(cur.validating), ...cur.refused, ...cur.dropped, ...(cur.answeredLate ?? [])]);
  return cur.selected.filter((id) => !answered.has(id));
}

/**
 * The recorded end of a completed round: publish the model, then the next round or the end of the
 * run. `pending`: the model is still being evaluated, so the record is written without its metrics
 * and kept until they come.
 */
function finishRound(state: CoordinatorState, now: number, result: { testAccuracy: number | null; testLoss: number | null; reason: string | null; pending?: boolean }): StepResult {
  let run = state.run as RunState;
  const cur = state.current as RoundState;
  const closedHow = cur.closedBy && { deadline: `closed at the deadline with ${cur.accepted.length} updates`, 'all answered': `closed when every selected device had answered (${cur.accepted.length} updates)`, quorum: `closed when ${cur.accepted.length} updates were counted (K = ${run.config.clientsPerRound})` }[cur.closedBy];
  const reason = [closedHow, result.reason].filter(Boolean).join('; ') || null;
  const timeline: RoundTimeline = { ...(state.timeline as RoundTimeline), evaluatedAt: now, outcome: 'completed' };
  const record = roundRecord(run.config, cur, timeline, { ...result, status: 'completed', reason });
  // the update monitor judges the round's counted devices (its cold start learns from them first)
  const monitored = monitorRound(run.monitor ?? emptyReference(), featuresOf(cur), run.config.monitor);
  record.monitoring = monitored.record;
  const judged = flagDevices(run.monitorHistory ?? {}, monitored.record.devices);
  for (const d of monitored.record.devices) if (judged.flagged.includes(d.id)) d.flagged = true;
  const flagged = judged.flagged;
  run = { ...run, monitor: monitored.reference, monitorHistory: judged.history, ...(flagged.length ? { flagged: [...new Set([...(run.flagged ?? []), ...flagged])] } : {}) };
  state = { ...state, run };
  // A released round spends privacy: the accountant composes it with the run's earlier ones.
  let accounted = run;
  const dp = run.config.dp;
  if (dp && run.privacy && cur.privacy) {
    const skellam = cur.privacy.distributed?.sensitivity;
    const rdp = composeRdp(run.privacy.rdp, cur.privacy.q, dp.noiseMultiplier, 1, skellam);
    const spent = epsilonFromRdp(rdp, dp.targetDelta);
    const serverRdp = skellam ? composeRdp(run.privacy.serverRdp, 1, dp.noiseMultiplier, 1, skellam) : undefined;
    const distributed = cur.privacy.distributed ? { minInputs: cur.privacy.distributed.minInputs, inputs: cur.accepted.length, l2Sensitivity: skellam!.l2, l1Sensitivity: skellam!.l1, epsilonAgainstServer: epsilonFromRdp(serverRdp, dp.targetDelta).epsilon } : null;
    record.privacy = { epsilon: spent.epsilon, delta: dp.targetDelta, noiseMultiplier: dp.noiseMultiplier, clipNorm: cur.privacy.clip, adaptiveClipping: dp.clipNorm === 'adaptive', noiseStd: cur.privacy.noiseStd, samplingRate: cur.privacy.q, expectedDevices: cur.privacy.expected, distributed } satisfies PrivacyRecord;
    accounted = { ...run, privacy: { ...run.privacy, rdp, ...(serverRdp ? { serverRdp } : {}) } };
    state = { ...state, run: accounted };
  }
  if (result.pending) {
    record.evaluationPending = true;
    state = { ...state, evaluations: [...(state.evaluations ?? []), { runId: cur.runId, round: cur.round, attempt: cur.attempt, version: cur.modelVersion as number, startedAt: now, record, silent: silentDevices(cur) }] };
  }
  const effects: Effect[] = [
    { type: 'round:record', record, willRetry: false },
    { type: 'model:publish', version: cur.modelVersion as number, runId: run.id, round: cur.round, testAccuracy: result.testAccuracy, testLoss: result.testLoss },
    ...(result.pending ? [{ type: 'model:evaluate', runId: cur.runId, round: cur.round, attempt: cur.attempt, version: cur.modelVersion as number } satisfies Effect] : []),
  ];
  if (run.round >= run.config.rounds) {
    const done = `completed ${run.round} round${run.round === 1 ? '' : 's'}`;
    effects.push({ type: 'run:finished', runId: run.id, status: 'done', reason: done });
    return { state: { ...state, phase: 'done', current: undefined, run: { ...accounted, reason: done }, timeline }, effects };
  }
  const next = select(state, now, run.round + 1, 1);
  return { state: next.state, effects: [...effects, ...next.effects] };
}

function reduce(state: CoordinatorState, event: CoordinatorEvent, now: number): StepResult {
  const cur = state.current;
  const run = state.run;
  switch (event.type) {
    case 'device:joined': {
      const known = state.devices.get(event.deviceId);
      const slot: DeviceSlot = { busy: known?.busy ?? false, examples: event.examples, ...(event.joinToken !== undefined ? { joinToken: event.joinToken } : {}), ...(event.labelHistogram ? { labelHistogram: event.labelHistogram } : {}), ...(event.quality ? { quality: event.quality } : {}) };
      return trySelect({ ...state, devices: withDevice(state.devices, event.deviceId, slot) }, now);
    }
    case 'device:left': {
      if (!state.devices.has(event.deviceId)) return { state, effects: [] };
      const next: CoordinatorState = { ...state, devices: withDevice(state.devices, event.deviceId, undefined) };
      const id = event.deviceId;
      // A device in a secure sum that leaves before revealing its shares: the others may still be enough.
      if (state.phase === 'aggregating' && cur?.secagg?.stage === 'unmask' && ids(cur.accepted).includes(id) && !cur.secagg.revealed.includes(id)) {
        return settle({ ...next, current: { ...cur, secagg: { ...cur.secagg, lost: [...cur.secagg.lost, id] } } }, now);
      }
      // A device that leaves after its update arrived has answered: the update (being validated or counted) stands.
      if (state.phase !== 'training' || !cur || !cur.selected.includes(id) || cur.dropped.includes(id) || cur.refused.includes(id) || ids(cur.accepted).includes(id) || ids(cur.validating).includes(id)) return { state: next, effects: [] };
      return settle({ ...next, current: { ...cur, dropped: [...cur.dropped, id] } }, now);
    }
    case 'updates:lost': {
      const lost = new Set(event.deviceIds);
      if (state.phase !== 'training' || !cur || !cur.accepted.some((c) => lost.has(c.deviceId))) return { state, effects: [] };
      const gone = ids(cur.accepted).filter((id) => lost.has(id));
      return settle({ ...state, current: { ...cur, accepted: cur.accepted.filter((c) => !lost.has(c.deviceId)), dropped: [...cur.dropped, ...gone.filter((id) => !cur.dropped.includes(id))] } }, now);
    }
    case 'run:start': {
      if (isActive(state)) throw new Error(`coordinator: cannot start run ${event.runId} while ${state.phase}`);
      const dp = event.config.dp;
      // a resumed run starts from what its released rounds spent
      const released = event.released ?? [];
      const rdp = dp ? released.reduce<number[] | undefined>((curve, r) => composeRdp(curve, r.q, dp.noiseMultiplier, r.rounds, r.skellam), undefined) : undefined;
      const serverRdp = dp ? released.reduce<number[] | undefined>((curve, r) => (r.skellam ? composeRdp(curve, 1, dp.noiseMultiplier, r.rounds, r.skellam) : curve), undefined) : undefined;
      const clip = dp ? (dp.clipNorm === 'adaptive' ? (event.clip ?? dp.initialClipNorm) : dp.clipNorm) : 0;
      const privacy = dp ? { privacy: { samplingSeed: event.samplingSeed ?? 0, rdp, clip, ...(event.parameters !== undefined ? { parameters: event.parameters } : {}), ...(serverRdp ? { serverRdp } : {}) } } : {};
      const started: CoordinatorState = { ...state, phase: 'selecting', run: { id: event.runId, config: event.config, round: 1, attempt: 1, selectingSince: now, ...privacy } };
      return select(started, now, event.fromRound ?? 1, event.fromAttempt ?? 1);
    }
    case 'run:stop':
      return endRun(state, now, 'stopped', event.reason ?? 'stopped by admin');
    case 'tick': {
      const expired = state.evaluations?.find((e) => now >= e.startedAt + WORK_TIMEOUT_MS);
      if (expired) return evaluated(state, expired, { testAccuracy: null, testLoss: null, reason: `evaluation did not finish within ${WORK_TIMEOUT_MS / 60_000} min` });
      if (state.phase === 'selecting') return trySelect(state, now);
      if (state.phase === 'training' && cur) {
        // Updates that arrived in time get a grace period to finish validation, not more.
        if (cur.validating.length > 0 && now >= cur.deadline + VALIDATION_GRACE_MS) return closeAfterGrace(state, now);
        return settle(state, now);
      }
      if (state.phase === 'aggregating' && cur?.secagg?.stage === 'unmask') return settle(state, now);
      if ((state.phase === 'aggregating' || state.phase === 'evaluating') && cur?.workStartedAt !== undefined && now >= cur.workStartedAt + WORK_TIMEOUT_MS) {
        const minutes = WORK_TIMEOUT_MS / 60_000;
        if (state.phase === 'aggregating') return failRound(state, now, `aggregation did not finish within ${minutes} min`);
        return finishRound(state, now, { testAccuracy: null, testLoss: null, reason: `evaluation did not finish within ${minutes} min` });
      }
      return { state, effects: [] };
    }
    case 'round:sent': {
      if (!cur || !same(cur, event)) return { state, effects: [] };
      return { state: { ...state, current: { ...cur, bytesDown: cur.bytesDown + event.bytesDown } }, effects: [] };
    }
    case 'update:submitted': {
      const { submission, deviceId } = event;
      const what = `update from device ${deviceId} for run ${event.runId} round ${event.round}.${event.attempt}`;
      if (!state.devices.has(deviceId)) return reject(state, event, 'NOT_JOINED', `${what}: the device has not joined`);
      if (!run || !isActive(state)) return reject(state, event, 'NO_ACTIVE_ROUND', `${what}: no run is active`);
      if (event.runId !== run.id || event.round !== run.round || event.attempt !== run.attempt) {
        return reject(state, event, 'WRONG_ROUND', `${what}: the current round is run ${run.id} round ${run.round}.${run.attempt}`, true);
      }
      if (state.phase !== 'training' || !cur) return reject(state, event, 'ROUND_FULL', `${what}: the round is closed`, true);
      if (!cur.selected.includes(deviceId)) return reject(state, event, 'NOT_SELECTED', `${what}: the device was not selected`);
      if (ids(cur.accepted).includes(deviceId) || ids(cur.validating).includes(deviceId) || cur.refused.includes(deviceId)) return reject(state, event, 'DUPLICATE', `${what}: the device has already answered this round`);
      if (cur.dropped.includes(deviceId)) return reject(state, event, 'NOT_SELECTED', `${what}: the device left the round`);
      if (cur.secagg && cur.secagg.stage !== 'inputs') return reject(state, event, 'WRONG_ROUND', `${what}: the secure round takes masked inputs once its shares are out; it is at its ${cur.secagg.stage} stage`);
      if (cur.secagg && !cur.secagg.survivors.includes(deviceId)) return reject(state, event, 'NOT_SELECTED', `${what}: the device's keys and shares are not in this secure round`);
      const ledger: RoundState = { ...cur, bytesUp: cur.bytesUp + event.bytes };
      const declared = cur.declared[deviceId] ?? 0;
      if (event.numExamples > declared) {
        const refused = { ...state, current: { ...ledger, refused: [...cur.refused, deviceId], rejected: cur.rejected + 1 } };
        const settled = settle(refused, now);
        return { state: settled.state, effects: [{ type: 'update:reject', submission, deviceId, code: 'TOO_MANY_EXAMPLES', message: `${what}: claims ${event.numExamples} examples, the device declared ${declared} when it joined`, late: false }, ...settled.effects] };
      }
      const pending: Submission = { submission, deviceId, numExamples: event.numExamples, bytes: event.bytes, arrivedAt: now, metrics: event.metrics };
      return { state: { ...state, current: { ...ledger, validating: [...cur.validating, pending] } }, effects: [{ type: 'update:validate', submission, deviceId }] };
    }
    case 'update:validated':
    case 'update:invalid': {
      const pending = state.phase === 'training' ? cur?.validating.find((v) => v.submission === event.submission) : undefined;
      if (!cur || !pending || !run) return { state, effects: [] }; // the round closed meanwhile: the update was answered as late then
      const validating = cur.validating.filter((v) => v !== pending);
      if (event.type === 'update:invalid') {
        const refused = { ...state, current: { ...cur, validating, refused: [...cur.refused, pending.deviceId], rejected: cur.rejected + 1 } };
        const settled = settle(refused, now);
        return { state: settled.state, effects: [{ type: 'update:reject', submission: pending.submission, deviceId: pending.deviceId, code: 'BAD_WEIGHTS', message: `update from device ${pending.deviceId} for round ${cur.round}: ${event.reason}`, late: false }, ...settled.effects] };
      }
      // FedAvg weighs an update by its examples (capped); q-FFL by its device's loss, F^q
      const weight = run.config.strategy === 'qffl' ? qfflWeight(pending.metrics.lossBefore, run.config.q) : Math.min(pending.numExamples, run.config.maxExamplesPerDevice);
      const contribution: Contribution = { deviceId: pending.deviceId, numExamples: pending.numExamples, weight, norm: event.norm, clipped: event.clipped, bytes: pending.bytes, arrivedAt: pending.arrivedAt, metrics: pending.metrics, ...(event.sketch ? { sketch: event.sketch } : {}) };
      const timeline = state.timeline && { ...state.timeline, lastUpdateAt: Math.max(state.timeline.lastUpdateAt ?? 0, pending.arrivedAt) };
      const accepted = { ...state, current: { ...cur, validating, accepted: [...cur.accepted, contribution] }, ...(timeline ? { timeline } : {}) };
      const settled = settle(accepted, now);
      return { state: settled.state, effects: [{ type: 'update:accept', submission: pending.submission, deviceId: pending.deviceId, weight: contribution.weight, metrics: pending.metrics }, ...settled.effects] };
    }
    case 'round:aggregated': {
      if (state.phase !== 'aggregating' || !cur || !same(cur, event) || !run) return { state, effects: [] };
      const next: RoundState = { ...cur, modelVersion: event.version, workStartedAt: now };
      // adaptive clipping: the bound moves geometrically toward the target quantile of the norms
      const dp = run.config.dp;
      const moved = dp && dp.clipNorm === 'adaptive' && run.privacy && event.unclippedShare !== undefined ? { run: { ...run, privacy: { ...run.privacy, clip: run.privacy.clip * Math.exp(-dp.clipLearningRate * (event.unclippedShare - dp.targetQuantile)) } } } : {};
      const aggregated: CoordinatorState = { ...state, ...moved, current: next, timeline: { ...(state.timeline as RoundTimeline), aggregatedAt: now } };
      // the last round waits for its evaluation; any other goes on while its model is evaluated
      if (run.round >= run.config.rounds) return { state: { ...aggregated, phase: 'evaluating' }, effects: [{ type: 'model:evaluate', runId: cur.runId, round: cur.round, attempt: cur.attempt, version: event.version }] };
      return finishRound(aggregated, now, { testAccuracy: null, testLoss: null, reason: null, pending: true });
    }
    case 'round:aggregation-failed': {
      if (state.phase !== 'aggregating' || !cur || !same(cur, event)) return { state, effects: [] };
      return failRound(state, now, `aggregation failed: ${event.reason}`);
    }
    case 'round:evaluated':
    case 'round:evaluation-failed': {
      const pending = state.evaluations?.find((e) => same(e, event) && e.version === event.version);
      if (pending) return evaluated(state, pending, event.type === 'round:evaluated' ? { testAccuracy: event.accuracy, testLoss: event.loss, reason: null } : { testAccuracy: null, testLoss: null, reason: `evaluation failed: ${event.reason}` });
      if (state.phase !== 'evaluating' || !cur || !same(cur, event) || event.version !== cur.modelVersion) return { state, effects: [] };
      if (event.type === 'round:evaluation-failed') return finishRound(state, now, { testAccuracy: null, testLoss: null, reason: `evaluation failed: ${event.reason}` });
      return finishRound(state, now, { testAccuracy: event.accuracy, testLoss: event.loss, reason: null });
    }
    case 'secagg:received':
      return receiveSecAgg(state, event, now);
    case 'effect:failed':
      return endRun(state, now, 'failed', `could not ${event.effect}: ${event.reason}`, event.effect !== 'round:record');
    default: {
      const never: never = event;
      throw new Error(`coordinator: unknown event ${JSON.stringify(never)}`);
    }
  }
}

/** A checked secure-aggregation message: taken when its sender may send it now, once; refused otherwise. */
function receiveSecAgg(state: CoordinatorState, event: Extract<CoordinatorEvent, { type: 'secagg:received' }>, now: number): StepResult {
  const { deviceId: id } = event;
  const what = `secagg:${event.what} from device ${id} for run ${event.runId} round ${event.round}.${event.attempt}`;
  const answer = (error?: { code: ErrorCode; message: string }): Effect => ({ type: 'secagg:answer', message: event.message, deviceId: id, ...(error ? { error: { code: error.code, message: `${what}: ${error.message}` } } : {}) });
  const refuse = (code: ErrorCode, message: string): StepResult => ({ state, effects: [answer({ code, message })] });
  const cur = state.current;
  const s = cur?.secagg;
  if (!cur || !s || !same(cur, event) || !isActive(state)) return refuse('WRONG_ROUND', 'it is not the secure round under way');
  const stage = ({ keys: 'keys', shares: 'shares', reveal: 'unmask' } as const)[event.what];
  if (s.stage !== stage) return refuse('WRONG_ROUND', `the round is at its ${s.stage} stage`);
  const gone = cur.dropped.includes(id) || cur.refused.includes(id) || s.lost.includes(id);
  const expected = event.what === 'keys' ? cur.selected : event.what === 'shares' ? s.advertised : ids(cur.accepted);
  if (!expected.includes(id) || gone) return refuse('NOT_SELECTED', 'the device is not expected at this stage');
  const list = event.what === 'keys' ? s.advertised : event.what === 'shares' ? s.shared : s.revealed;
  if (list.includes(id)) return refuse('DUPLICATE', 'the device already sent it');
  if (event.invalid !== undefined) {
    // a device whose message fails its checks takes no further part: in the unmask stage it counts as lost
    const excluded: RoundState = event.what === 'reveal' ? { ...cur, secagg: { ...s, lost: [...s.lost, id] } } : { ...cur, refused: [...cur.refused, id], rejected: cur.rejected + 1 };
    const settled = settle({ ...state, current: excluded }, now);
    return { state: settled.state, effects: [answer({ code: 'BAD_MESSAGE', message: event.invalid }), ...settled.effects] };
  }
  // what the protocol costs in traffic is part of the round's bytes up
  const ledger: RoundState = { ...cur, bytesUp: cur.bytesUp + event.bytes };
  const taken: SecAggState = event.what === 'keys' ? { ...s, advertised: [...s.advertised, id] } : event.what === 'shares' ? { ...s, shared: [...s.shared, id] } : { ...s, revealed: [...s.revealed, id] };
  const settled = settle({ ...state, current: { ...ledger, secagg: taken } }, now);
  return { state: settled.state, effects: [answer(), ...settled.effects] };
}

/** A model evaluated off the critical path (or not: its failure): its round's record, completed, and its metrics published with it. */
function evaluated(state: CoordinatorState, e: PendingEvaluation, result: { testAccuracy: number | null; testLoss: number | null; reason: string | null }): StepResult {
  const reason = [e.record.reason, result.reason].filter(Boolean).join('; ') || null;
  const { evaluationPending: _, ...rest } = e.record;
  const record: RoundRecord = { ...rest, testAccuracy: result.testAccuracy, testLoss: result.testLoss, reason };
  const effects: Effect[] = [{ type: 'round:record', record, willRetry: false, evaluated: true }];
  if (result.testAccuracy !== null) effects.push({ type: 'model:publish', version: e.version, runId: e.runId, round: e.round, testAccuracy: result.testAccuracy, testLoss: result.testLoss });
  return { state: { ...state, evaluations: (state.evaluations ?? []).filter((x) => x !== e) }, effects };
}

/**
 * Ends an active run at once (stopped by the admin, or failed): the round under way ends with it,
 * and is recorded as such — unless the store itself is what failed.
 */
function endRun(state: CoordinatorState, now: number, status: 'stopped' | 'failed', reason: string, record = true): StepResult {
  const { run, current: cur } = state;
  if (!isActive(state) || !run) return { state, effects: [] };
  const effects: Effect[] = [];
  let devices = state.devices;
  const timeline = state.timeline && state.timeline.endedAt === undefined && state.timeline.evaluatedAt === undefined ? { ...state.timeline, endedAt: now, outcome: status } : state.timeline;
  if (cur) {
    devices = freeAll(devices, cur.selected);
    if (state.phase === 'training' || cur.secagg?.stage === 'unmask') effects.push(...lateValidations(cur), notifyEnd(cur, status));
    if (record && timeline) effects.push({ type: 'round:record', record: roundRecord(run.config, { ...cur, late: cur.late + cur.validating.length }, timeline, { status, reason, testAccuracy: null, testLoss: null }), willRetry: false });
  }
  effects.push({ type: 'run:finished', runId: run.id, status, reason });
  return { state: { ...state, phase: status, devices, run: { ...run, reason }, current: undefined, ...(timeline ? { timeline } : {}) }, effects };
}

/** At the end of the validation grace, updates still being validated are late; the round closes or fails on what was counted. */
function closeAfterGrace(state: CoordinatorState, now: number): StepResult {
  const cur = state.current as RoundState;
  const minUpdates = requiredUpdates(cur, (state.run as RunState).config);
  if (cur.accepted.length >= minUpdates) return closeRound(state, now, 'deadline');
  return failRound(state, now, `deadline passed with ${cur.accepted.length} of the ${minUpdates} required updates (${cur.validating.length} still being validated ${VALIDATION_GRACE_MS / 1000} s after it)`);
}

/** One step of the reducer; its last effect always says when the next tick is due. */
export function step(state: CoordinatorState, event: CoordinatorEvent, now: number): StepResult {
  const r = reduce(state, event, now);
  return { state: r.state, effects: [...r.effects, { type: 'timer:set', at: nextWake(r.state, now) }] };
}

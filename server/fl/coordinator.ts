/**
 * The round coordinator: a pure reducer `step(state, event, now) → { state, effects }`.
 * It owns a round's state and its time — who was selected, who answered, what each update weighs,
 * the round's ledger (bytes, timings, metrics), when the round must close, and the record that
 * is stored. It knows nothing of sockets, timers, storage or tensors: time comes in with each
 * event, and what must happen in the world goes out as effects, performed by the federation
 * service (federation.ts), which reports every outcome — success or failure — back as an event.
 *
 *   idle ─run:start→ selecting ─enough devices→ training ─K updates, all answered, or deadline→
 *        aggregating → evaluating → selecting (next round) … → done
 *   training ─deadline with < minUpdates, or too many dropped→ selecting (retry) or failed
 *   aggregating ─failure or timeout→ selecting (retry) or failed
 *   evaluating ─failure or timeout→ the round is recorded without test metrics; the run goes on
 *   any active phase ─run:stop→ stopped
 *
 * Every step ends with one `timer:set` effect: the next moment at which time alone changes
 * something (or null), recomputed from the state. The interpreter arms exactly that, so a tick
 * that comes early, late or twice can never lose a deadline.
 */
import type { DeviceTimings, Phase, RoundRecord, RoundTimeline, Stage } from '../../shared/api.ts';
import { phaseDurations } from '../../shared/phases.ts';
import type { ErrorCode } from '../../shared/protocol.ts';
import { createRng, shuffleInPlace } from '../../shared/rng.ts';
import type { RunConfig, UpdateMetrics } from '../../shared/schemas.ts';

const ACTIVE: ReadonlySet<Phase> = new Set(['selecting', 'training', 'aggregating', 'evaluating']);

/** After its deadline a round waits this long for updates that arrived in time and are still being validated. */
export const VALIDATION_GRACE_MS = 10_000;
/** Aggregating or evaluating longer than this is a failure of that step (the run goes on). */
export const WORK_TIMEOUT_MS = 10 * 60_000;

export interface DeviceSlot {
  busy: boolean;
  joinToken?: string;
  /** training examples the device declared when it joined */
  examples: number;
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
  /** selected devices that had neither answered nor dropped when the round closed */
  unanswered?: number;
  /** when the current step (aggregation, evaluation) began: its timeout runs from here */
  workStartedAt?: number;
  modelVersion?: number;
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
}

export interface CoordinatorState {
  phase: Phase;
  /** connected devices → whether each is busy in a round, its join token and declared examples */
  devices: ReadonlyMap<string, DeviceSlot>;
  run?: RunState;
  current?: RoundState;
  /** the moments that divide the current (or last) round into its phases (phases.ts): the record and the dashboard read them */
  timeline?: RoundTimeline;
}

interface RoundRef {
  runId: number;
  round: number;
  attempt: number;
}

export type CoordinatorEvent =
  | { type: 'device:joined'; deviceId: string; examples: number; joinToken?: string }
  | { type: 'device:left'; deviceId: string }
  | { type: 'run:start'; runId: number; config: RunConfig; fromRound?: number; fromAttempt?: number }
  | { type: 'run:stop'; reason?: string }
  | { type: 'tick' }
  | ({ type: 'round:sent'; bytesDown: number } & RoundRef)
  | ({ type: 'update:submitted'; submission: number; deviceId: string; numExamples: number; bytes: number; metrics: UpdateMetrics } & RoundRef)
  | { type: 'update:validated'; submission: number; norm: number; clipped: boolean }
  | { type: 'update:invalid'; submission: number; reason: string }
  | ({ type: 'round:aggregated'; version: number } & RoundRef)
  | ({ type: 'round:aggregation-failed'; reason: string } & RoundRef)
  | ({ type: 'round:evaluated'; version: number; accuracy: number; loss: number } & RoundRef)
  | ({ type: 'round:evaluation-failed'; version: number; reason: string } & RoundRef)
  /** an effect the service could not perform (the store refused a write, …) */
  | { type: 'effect:failed'; effect: Effect['type']; reason: string };

export type Effect =
  | ({ type: 'round:start'; deviceIds: readonly string[]; deadline: number } & RoundRef)
  | { type: 'update:validate'; submission: number; deviceId: string }
  | { type: 'update:accept'; submission: number; deviceId: string; weight: number; metrics: UpdateMetrics }
  /** `submission` is absent for a refusal decided before the update was taken in */
  | { type: 'update:reject'; submission: number; deviceId: string; code: ErrorCode; message: string; late: boolean }
  | ({ type: 'round:notify-end'; deviceIds: readonly string[]; counted: readonly string[]; outcome: 'completed' | 'failed' | 'stopped' } & RoundRef)
  | ({ type: 'round:aggregate'; updates: number } & RoundRef)
  | ({ type: 'model:evaluate'; version: number } & RoundRef)
  | { type: 'round:record'; record: RoundRecord; willRetry: boolean }
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

const idleDevices = (state: CoordinatorState, config: RunConfig): string[] =>
  [...state.devices].filter(([, d]) => !d.busy && (config.joinToken === undefined || d.joinToken === config.joinToken)).map(([id]) => id);

// ─── time ────────────────────────────────────────────────────────────────────
/** The next moment at which time alone changes the state, or null: a function of the state and the time only. */
export function nextWake(state: CoordinatorState, now: number): number | null {
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
      return now < current.deadline ? current.deadline : current.deadline + VALIDATION_GRACE_MS;
    case 'aggregating':
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
      if (left > 0) return `selecting: need ${config.clientsPerRound} idle device${config.clientsPerRound === 1 ? '' : 's'}, have ${idle}${idle >= config.minUpdates ? `; starts with ${idle} in ${Math.ceil(left / 1000)} s` : ''}`;
      return `waiting for devices: need at least ${config.minUpdates} idle, have ${idle}`;
    }
    case 'training': {
      if (!current) return null;
      const answered = current.accepted.length + current.refused.length + current.dropped.length;
      const of = `${answered} of ${current.selected.length} selected answered`;
      if (now >= current.deadline) return `deadline passed: validating ${current.validating.length} update${current.validating.length === 1 ? '' : 's'} that arrived in time`;
      if (current.accepted.length >= config.minUpdates) return `waiting for the deadline: ${of}, ${current.accepted.length} counted (closes at ${config.clientsPerRound})`;
      return `waiting for updates: ${current.accepted.length} of the ${config.minUpdates} required in; ${of}`;
    }
    case 'aggregating':
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
function roundRecord(cur: RoundState, timeline: RoundTimeline, outcome: { status: RoundRecord['status']; reason: string | null; testAccuracy: number | null; testLoss: number | null }): RoundRecord {
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
    unanswered: cur.unanswered ?? cur.selected.length - m.length - cur.refused.length - cur.dropped.length - cur.validating.length,
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
    devices: m.map((x) => ({ id: x.deviceId, numExamples: x.numExamples, weight: x.weight, accuracyBefore: x.metrics.accuracyBefore, accuracyAfter: x.metrics.accuracyAfter, trainMs: x.metrics.trainMs })),
    modelVersion: outcome.status === 'completed' ? (cur.modelVersion ?? null) : null,
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
  const rng = createRng(config.seed * 7919 + run.round * 31 + run.attempt);
  const selected = shuffleInPlace(idle, rng).slice(0, selectionSize(config));
  const deadline = now + config.roundTimeoutMs;
  const devices = new Map(state.devices);
  const declared: Record<string, number> = {};
  for (const id of selected) {
    const slot = state.devices.get(id) as DeviceSlot;
    devices.set(id, { ...slot, busy: true });
    declared[id] = slot.examples;
  }
  const current: RoundState = { runId: run.id, round: run.round, attempt: run.attempt, selectionStartedAt: run.selectingSince, selectedAt: now, deadline, selected, declared, validating: [], accepted: [], refused: [], dropped: [], late: 0, rejected: 0, bytesDown: 0, bytesUp: 0 };
  return {
    state: { ...state, phase: 'training', devices, current, timeline: { runId: run.id, round: run.round, attempt: run.attempt, selectionStartedAt: run.selectingSince, selectedAt: now } },
    effects: [{ type: 'round:start', runId: run.id, round: run.round, attempt: run.attempt, deviceIds: selected, deadline }],
  };
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
  const closed: RoundState = { ...cur, validating: [], late: cur.late + cur.validating.length, closedBy, workStartedAt: now, unanswered: cur.selected.length - cur.accepted.length - cur.refused.length - cur.dropped.length - cur.validating.length };
  return {
    state: { ...state, phase: 'aggregating', devices: freeAll(state.devices, cur.selected), current: closed, timeline: { ...(state.timeline as RoundTimeline), closedAt: now } },
    effects: [...lateValidations(cur), notifyEnd(closed, 'completed'), { type: 'round:aggregate', runId: cur.runId, round: cur.round, attempt: cur.attempt, updates: closed.accepted.length }],
  };
}

/** The round failed: it is recorded, then redone as a new attempt, or the run fails after maxRoundRetries. */
function failRound(state: CoordinatorState, now: number, reason: string): StepResult {
  const run = state.run as RunState;
  const cur = state.current as RoundState;
  const willRetry = run.attempt <= run.config.maxRoundRetries;
  const devices = freeAll(state.devices, cur.selected);
  const timeline: RoundTimeline = { ...(state.timeline as RoundTimeline), endedAt: now, outcome: 'failed' };
  const effects: Effect[] = [...lateValidations(cur)];
  if (state.phase === 'training') effects.push(notifyEnd(cur, 'failed'));
  effects.push({ type: 'round:record', record: roundRecord({ ...cur, late: cur.late + cur.validating.length }, timeline, { status: 'failed', reason, testAccuracy: null, testLoss: null }), willRetry });
  if (!willRetry) {
    const message = `round ${cur.round} failed ${run.attempt} time(s); last: ${reason}`;
    effects.push({ type: 'run:finished', runId: run.id, status: 'failed', reason: message });
    return { state: { ...state, phase: 'failed', devices, run: { ...run, reason: message }, current: undefined, timeline }, effects };
  }
  const next = select({ ...state, devices }, now, run.round, run.attempt + 1);
  return { state: next.state, effects: [...effects, ...next.effects] };
}

/** Closes or fails the round when its updates decide it: K counted, or nobody left to answer. */
function settle(state: CoordinatorState, now: number): StepResult {
  const cur = state.current;
  const run = state.run;
  if (state.phase !== 'training' || !cur || !run) return { state, effects: [] };
  const { clientsPerRound, minUpdates } = run.config;
  if (cur.accepted.length >= clientsPerRound) return closeRound(state, now, 'quorum');
  const waiting = cur.selected.length - cur.accepted.length - cur.refused.length - cur.dropped.length; // not yet answered, validating included
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
 * for while that round's ledger is still open — through its aggregation and evaluation, so an
 * update that comes after its round closed is counted as late there, not in another round.
 */
function reject(state: CoordinatorState, update: RoundRef & { submission: number; deviceId: string }, code: ErrorCode, message: string, late = false): StepResult {
  const cur = state.current;
  const open = cur !== undefined && (state.phase === 'training' || state.phase === 'aggregating' || state.phase === 'evaluating') && same(cur, update);
  const counted = open ? { ...state, current: { ...cur, rejected: cur.rejected + (late ? 0 : 1), late: cur.late + (late ? 1 : 0) } } : state;
  return { state: counted, effects: [{ type: 'update:reject', submission: update.submission, deviceId: update.deviceId, code, message, late }] };
}

/** The recorded end of a completed round: publish the model, then the next round or the end of the run. */
function finishRound(state: CoordinatorState, now: number, result: { testAccuracy: number | null; testLoss: number | null; reason: string | null }): StepResult {
  const run = state.run as RunState;
  const cur = state.current as RoundState;
  const closedHow = cur.closedBy === 'deadline' ? `closed at the deadline with ${cur.accepted.length} updates` : cur.closedBy === 'all answered' ? `closed when every selected device had answered (${cur.accepted.length} updates)` : null;
  const reason = [closedHow, result.reason].filter(Boolean).join('; ') || null;
  const timeline: RoundTimeline = { ...(state.timeline as RoundTimeline), evaluatedAt: now, outcome: 'completed' };
  const record = roundRecord(cur, timeline, { ...result, status: 'completed', reason });
  const effects: Effect[] = [
    { type: 'round:record', record, willRetry: false },
    { type: 'model:publish', version: cur.modelVersion as number, runId: run.id, round: cur.round, testAccuracy: result.testAccuracy, testLoss: result.testLoss },
  ];
  if (run.round >= run.config.rounds) {
    const done = `completed ${run.round} rounds`;
    effects.push({ type: 'run:finished', runId: run.id, status: 'done', reason: done });
    return { state: { ...state, phase: 'done', current: undefined, run: { ...run, reason: done }, timeline }, effects };
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
      const slot: DeviceSlot = { busy: known?.busy ?? false, examples: event.examples, ...(event.joinToken !== undefined ? { joinToken: event.joinToken } : {}) };
      return trySelect({ ...state, devices: withDevice(state.devices, event.deviceId, slot) }, now);
    }
    case 'device:left': {
      if (!state.devices.has(event.deviceId)) return { state, effects: [] };
      const next: CoordinatorState = { ...state, devices: withDevice(state.devices, event.deviceId, undefined) };
      const id = event.deviceId;
      // A device that leaves after its update arrived has answered: the update (being validated or counted) stands.
      if (state.phase !== 'training' || !cur || !cur.selected.includes(id) || cur.dropped.includes(id) || cur.refused.includes(id) || ids(cur.accepted).includes(id) || ids(cur.validating).includes(id)) return { state: next, effects: [] };
      return settle({ ...next, current: { ...cur, dropped: [...cur.dropped, id] } }, now);
    }
    case 'run:start': {
      if (isActive(state)) throw new Error(`coordinator: cannot start run ${event.runId} while ${state.phase}`);
      const started: CoordinatorState = { ...state, phase: 'selecting', run: { id: event.runId, config: event.config, round: 1, attempt: 1, selectingSince: now } };
      return select(started, now, event.fromRound ?? 1, event.fromAttempt ?? 1);
    }
    case 'run:stop':
      return endRun(state, now, 'stopped', event.reason ?? 'stopped by admin');
    case 'tick': {
      if (state.phase === 'selecting') return trySelect(state, now);
      if (state.phase === 'training' && cur) {
        // Updates that arrived in time get a grace period to finish validation, not more.
        if (cur.validating.length > 0 && now >= cur.deadline + VALIDATION_GRACE_MS) return closeAfterGrace(state, now);
        return settle(state, now);
      }
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
      const contribution: Contribution = { deviceId: pending.deviceId, numExamples: pending.numExamples, weight: Math.min(pending.numExamples, run.config.maxExamplesPerDevice), norm: event.norm, clipped: event.clipped, bytes: pending.bytes, arrivedAt: pending.arrivedAt, metrics: pending.metrics };
      const timeline = state.timeline && { ...state.timeline, lastUpdateAt: Math.max(state.timeline.lastUpdateAt ?? 0, pending.arrivedAt) };
      const accepted = { ...state, current: { ...cur, validating, accepted: [...cur.accepted, contribution] }, ...(timeline ? { timeline } : {}) };
      const settled = settle(accepted, now);
      return { state: settled.state, effects: [{ type: 'update:accept', submission: pending.submission, deviceId: pending.deviceId, weight: contribution.weight, metrics: pending.metrics }, ...settled.effects] };
    }
    case 'round:aggregated': {
      if (state.phase !== 'aggregating' || !cur || !same(cur, event)) return { state, effects: [] };
      const next: RoundState = { ...cur, modelVersion: event.version, workStartedAt: now };
      return { state: { ...state, phase: 'evaluating', current: next, timeline: { ...(state.timeline as RoundTimeline), aggregatedAt: now } }, effects: [{ type: 'model:evaluate', runId: cur.runId, round: cur.round, attempt: cur.attempt, version: event.version }] };
    }
    case 'round:aggregation-failed': {
      if (state.phase !== 'aggregating' || !cur || !same(cur, event)) return { state, effects: [] };
      return failRound(state, now, `aggregation failed: ${event.reason}`);
    }
    case 'round:evaluated':
    case 'round:evaluation-failed': {
      if (state.phase !== 'evaluating' || !cur || !same(cur, event) || event.version !== cur.modelVersion) return { state, effects: [] };
      if (event.type === 'round:evaluation-failed') return finishRound(state, now, { testAccuracy: null, testLoss: null, reason: `evaluation failed: ${event.reason}` });
      return finishRound(state, now, { testAccuracy: event.accuracy, testLoss: event.loss, reason: null });
    }
    case 'effect:failed':
      return endRun(state, now, 'failed', `could not ${event.effect}: ${event.reason}`, event.effect !== 'round:record');
    default: {
      const never: never = event;
      throw new Error(`coordinator: unknown event ${JSON.stringify(never)}`);
    }
  }
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
    if (state.phase === 'training') effects.push(...lateValidations(cur), notifyEnd(cur, status));
    if (record && timeline) effects.push({ type: 'round:record', record: roundRecord({ ...cur, late: cur.late + cur.validating.length }, timeline, { status, reason, testAccuracy: null, testLoss: null }), willRetry: false });
  }
  effects.push({ type: 'run:finished', runId: run.id, status, reason });
  return { state: { ...state, phase: status, devices, run: { ...run, reason }, current: undefined, ...(timeline ? { timeline } : {}) }, effects };
}

/** At the end of the validation grace, updates still being validated are late; the round closes or fails on what was counted. */
function closeAfterGrace(state: CoordinatorState, now: number): StepResult {
  const cur = state.current as RoundState;
  const minUpdates = (state.run as RunState).config.minUpdates;
  if (cur.accepted.length >= minUpdates) return closeRound(state, now, 'deadline');
  return failRound(state, now, `deadline passed with ${cur.accepted.length} of the ${minUpdates} required updates (${cur.validating.length} still being validated ${VALIDATION_GRACE_MS / 1000} s after it)`);
}

/** One step of the reducer; its last effect always says when the next tick is due. */
export function step(state: CoordinatorState, event: CoordinatorEvent, now: number): StepResult {
  const r = reduce(state, event, now);
  return { state: r.state, effects: [...r.effects, { type: 'timer:set', at: nextWake(r.state, now) }] };
}

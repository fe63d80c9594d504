/**
 * The round coordinator: a pure reducer `step(state, event, now) → { state, effects }`.
 * It knows nothing of sockets, timers, storage or tensors. Time comes in with each event; what
 * must happen in the world (send the model to devices, aggregate, persist, arm a timer) goes out
 * as effects, performed by the federation service.
 *
 *   idle ─run:start→ selecting ─enough devices→ training ─K updates or deadline→ aggregating
 *        → evaluating → selecting (next round) … → done
 *   training ─deadline with < minUpdates, or too many dropouts→ selecting (retry) or failed
 *   any active phase ─run:stop→ stopped
 */
import { createRng, shuffleInPlace } from '../../shared/rng.ts';
import type { RunConfig } from '../../shared/schemas.ts';
import type { ErrorCode } from '../../shared/protocol.ts';

export const PHASES = ['idle', 'selecting', 'training', 'aggregating', 'evaluating', 'done', 'failed', 'stopped'] as const;
export type Phase = (typeof PHASES)[number];
const ACTIVE: ReadonlySet<Phase> = new Set(['selecting', 'training', 'aggregating', 'evaluating']);

export interface RoundState {
  round: number;
  attempt: number;
  selectedAt: number;
  deadline: number;
  selected: readonly string[];
  accepted: readonly string[];
  dropped: readonly string[];
  late: number;
  rejected: number;
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

export interface DeviceSlot {
  busy: boolean;
  joinToken?: string;
}

export interface CoordinatorState {
  phase: Phase;
  /** connected devices → whether each is busy in a round, and the join token it presented */
  devices: ReadonlyMap<string, DeviceSlot>;
  run?: RunState;
  current?: RoundState;
}

export type CoordinatorEvent =
  | { type: 'device:joined'; deviceId: string; joinToken?: string }
  | { type: 'device:left'; deviceId: string }
  | { type: 'run:start'; runId: number; config: RunConfig; fromRound?: number; fromAttempt?: number }
  | { type: 'run:stop'; reason?: string }
  | { type: 'tick' }
  | { type: 'update:received'; deviceId: string; runId: number; round: number; attempt: number }
  | { type: 'round:aggregated'; runId: number; round: number }
  | { type: 'round:evaluated'; runId: number; round: number }
  | { type: 'round:aggregation-failed'; runId: number; round: number; reason: string };

export interface ClosedRound {
  runId: number;
  round: number;
  attempt: number;
  selected: readonly string[];
  accepted: readonly string[];
  dropped: readonly string[];
  late: number;
  rejected: number;
  selectedAt: number;
  closedAt: number;
  closedBy: 'quorum' | 'deadline';
}

export type Effect =
  | { type: 'round:start'; runId: number; round: number; attempt: number; deviceIds: readonly string[]; deadline: number }
  | { type: 'update:accept'; deviceId: string; round: number }
  | { type: 'update:reject'; deviceId: string; code: ErrorCode; message: string }
  | { type: 'round:close'; closed: ClosedRound }
  | { type: 'round:failed'; runId: number; round: number; attempt: number; reason: string; willRetry: boolean; selected: readonly string[]; accepted: readonly string[]; dropped: readonly string[]; selectedAt: number; closedAt: number }
  | { type: 'round:notify-end'; runId: number; round: number; attempt: number; deviceIds: readonly string[]; counted: readonly string[]; outcome: 'completed' | 'failed' | 'stopped' }
  | { type: 'run:finished'; runId: number; status: 'done' | 'failed' | 'stopped'; reason: string }
  | { type: 'timer:set'; at: number };

export interface StepResult {
  state: CoordinatorState;
  effects: Effect[];
}

export function initialState(): CoordinatorState {
  return { phase: 'idle', devices: new Map() };
}

export function isActive(state: CoordinatorState): boolean {
  return ACTIVE.has(state.phase);
}

export function selectionSize(config: RunConfig): number {
  return Math.ceil(config.clientsPerRound * config.overSelect - 1e-9);
}

function withDevice(devices: ReadonlyMap<string, DeviceSlot>, id: string, value: DeviceSlot | undefined): Map<string, DeviceSlot> {
  const next = new Map(devices);
  if (value) next.set(id, value);
  else next.delete(id);
  return next;
}

function freeAll(devices: ReadonlyMap<string, DeviceSlot>, ids: readonly string[]): Map<string, DeviceSlot> {
  const next = new Map(devices);
  for (const id of ids) {
    const slot = next.get(id);
    if (slot) next.set(id, { ...slot, busy: false });
  }
  return next;
}

/** Starts a round when enough idle devices are here (or enough for minUpdates once selection has waited long enough). */
function trySelect(state: CoordinatorState, now: number): StepResult {
  const run = state.run;
  if (state.phase !== 'selecting' || !run) return { state, effects: [] };
  const { config } = run;
  // A run that requires a join token selects only the devices that presented it.
  const idle = [...state.devices].filter(([, d]) => !d.busy && (config.joinToken === undefined || d.joinToken === config.joinToken)).map(([id]) => id).sort();
  const waitedEnough = now - run.selectingSince >= config.selectionTimeoutMs;
  if (idle.length < config.clientsPerRound && !(waitedEnough && idle.length >= config.minUpdates)) {
    const effects: Effect[] = waitedEnough ? [] : [{ type: 'timer:set', at: run.selectingSince + config.selectionTimeoutMs }];
    return { state, effects };
  }
  const rng = createRng(config.seed * 7919 + run.round * 31 + run.attempt);
  const selected = shuffleInPlace(idle, rng).slice(0, selectionSize(config));
  const deadline = now + config.roundTimeoutMs;
  let devices = new Map(state.devices);
  for (const id of selected) devices = withDevice(devices, id, { ...(state.devices.get(id) as DeviceSlot), busy: true });
  const current: RoundState = { round: run.round, attempt: run.attempt, selectedAt: now, deadline, selected, accepted: [], dropped: [], late: 0, rejected: 0 };
  return {
    state: { ...state, phase: 'training', devices, current },
    effects: [
      { type: 'round:start', runId: run.id, round: run.round, attempt: run.attempt, deviceIds: selected, deadline },
      { type: 'timer:set', at: deadline },
    ],
  };
}

function closeRound(state: CoordinatorState, now: number, closedBy: 'quorum' | 'deadline'): StepResult {
  const run = state.run as RunState;
  const cur = state.current as RoundState;
  const closed: ClosedRound = { runId: run.id, round: cur.round, attempt: cur.attempt, selected: cur.selected, accepted: cur.accepted, dropped: cur.dropped, late: cur.late, rejected: cur.rejected, selectedAt: cur.selectedAt, closedAt: now, closedBy };
  return {
    state: { ...state, phase: 'aggregating', devices: freeAll(state.devices, cur.selected) },
    effects: [
      { type: 'round:notify-end', runId: run.id, round: cur.round, attempt: cur.attempt, deviceIds: cur.selected.filter((id) => !cur.dropped.includes(id)), counted: cur.accepted, outcome: 'completed' },
      { type: 'round:close', closed },
    ],
  };
}

function failRound(state: CoordinatorState, now: number, reason: string): StepResult {
  const run = state.run as RunState;
  const cur = state.current as RoundState;
  const willRetry = run.attempt <= run.config.maxRoundRetries;
  const devices = freeAll(state.devices, cur.selected);
  const effects: Effect[] = [
    { type: 'round:notify-end', runId: run.id, round: cur.round, attempt: cur.attempt, deviceIds: cur.selected.filter((id) => !cur.dropped.includes(id)), counted: [], outcome: 'failed' },
    { type: 'round:failed', runId: run.id, round: cur.round, attempt: cur.attempt, reason, willRetry, selected: cur.selected, accepted: cur.accepted, dropped: cur.dropped, selectedAt: cur.selectedAt, closedAt: now },
  ];
  if (!willRetry) {
    const message = `round ${cur.round} failed ${run.attempt} time(s); last: ${reason}`;
    effects.push({ type: 'run:finished', runId: run.id, status: 'failed', reason: message });
    return { state: { ...state, phase: 'failed', devices, run: { ...run, reason: message }, current: undefined }, effects };
  }
  const next: CoordinatorState = { ...state, phase: 'selecting', devices, run: { ...run, attempt: run.attempt + 1, selectingSince: now }, current: undefined };
  const selected = trySelect(next, now);
  return { state: selected.state, effects: [...effects, ...selected.effects] };
}

function reject(state: CoordinatorState, deviceId: string, code: ErrorCode, message: string, late = false): StepResult {
  const cur = state.current;
  const counted = cur && state.phase === 'training' ? { ...state, current: { ...cur, rejected: cur.rejected + (late ? 0 : 1), late: cur.late + (late ? 1 : 0) } } : state;
  return { state: counted, effects: [{ type: 'update:reject', deviceId, code, message }] };
}

export function step(state: CoordinatorState, event: CoordinatorEvent, now: number): StepResult {
  switch (event.type) {
    case 'device:joined': {
      const known = state.devices.get(event.deviceId);
      const slot: DeviceSlot = { busy: known?.busy ?? false, ...(event.joinToken !== undefined ? { joinToken: event.joinToken } : {}) };
      const next = { ...state, devices: withDevice(state.devices, event.deviceId, slot) };
      return trySelect(next, now);
    }
    case 'device:left': {
      if (!state.devices.has(event.deviceId)) return { state, effects: [] };
      const next: CoordinatorState = { ...state, devices: withDevice(state.devices, event.deviceId, undefined) };
      const cur = state.current;
      if (state.phase !== 'training' || !cur || !cur.selected.includes(event.deviceId) || cur.accepted.includes(event.deviceId)) return { state: next, effects: [] };
      const dropped = [...cur.dropped, event.deviceId];
      const withDrop: CoordinatorState = { ...next, current: { ...cur, dropped } };
      const stillPossible = cur.accepted.length + (cur.selected.length - cur.accepted.length - dropped.length);
      const { minUpdates } = (state.run as RunState).config;
      if (stillPossible < minUpdates) return failRound(withDrop, now, `${dropped.length} of ${cur.selected.length} selected devices dropped out; at most ${stillPossible} of the ${minUpdates} required updates can arrive`);
      return { state: withDrop, effects: [] };
    }
    case 'run:start': {
      if (isActive(state)) throw new Error(`coordinator: cannot start run ${event.runId} while ${state.phase}`);
      const run: RunState = { id: event.runId, config: event.config, round: event.fromRound ?? 1, attempt: event.fromAttempt ?? 1, selectingSince: now };
      return trySelect({ ...state, phase: 'selecting', run, current: undefined }, now);
    }
    case 'run:stop': {
      if (!isActive(state) || !state.run) return { state, effects: [] };
      const run = state.run;
      const reason = event.reason ?? 'stopped by admin';
      const effects: Effect[] = [];
      let devices = state.devices;
      if (state.phase === 'training' && state.current) {
        const cur = state.current;
        devices = freeAll(devices, cur.selected);
        effects.push({ type: 'round:notify-end', runId: run.id, round: cur.round, attempt: cur.attempt, deviceIds: cur.selected.filter((id) => !cur.dropped.includes(id)), counted: [], outcome: 'stopped' });
      }
      effects.push({ type: 'run:finished', runId: run.id, status: 'stopped', reason });
      return { state: { ...state, phase: 'stopped', devices, run: { ...run, reason }, current: undefined }, effects };
    }
    case 'tick': {
      if (state.phase === 'selecting') return trySelect(state, now);
      if (state.phase === 'training' && state.current && now >= state.current.deadline) {
        const cur = state.current;
        const { minUpdates } = (state.run as RunState).config;
        if (cur.accepted.length >= minUpdates) return closeRound(state, now, 'deadline');
        return failRound(state, now, `deadline passed with ${cur.accepted.length} of the ${minUpdates} required updates (${cur.dropped.length} dropped)`);
      }
      return { state, effects: [] };
    }
    case 'update:received': {
      const { deviceId } = event;
      const run = state.run;
      const cur = state.current;
      if (!run || !isActive(state)) return reject(state, deviceId, 'NO_ACTIVE_ROUND', `update from device ${deviceId}: no run is active`);
      if (event.runId !== run.id || event.round !== run.round || event.attempt !== run.attempt) {
        return reject(state, deviceId, 'WRONG_ROUND', `update from device ${deviceId} for run ${event.runId} round ${event.round}.${event.attempt}: the current round is run ${run.id} round ${run.round}.${run.attempt}`, true);
      }
      if (state.phase !== 'training' || !cur) return reject(state, deviceId, 'ROUND_FULL', `update from device ${deviceId} for round ${event.round}: the round is closed`, true);
      if (!cur.selected.includes(deviceId)) return reject(state, deviceId, 'NOT_SELECTED', `update from device ${deviceId} for round ${event.round}: the device was not selected`);
      if (cur.accepted.includes(deviceId)) return reject(state, deviceId, 'DUPLICATE', `update from device ${deviceId} for round ${event.round}: already received`);
      if (cur.dropped.includes(deviceId)) return reject(state, deviceId, 'NOT_SELECTED', `update from device ${deviceId} for round ${event.round}: the device left the round`);
      const accepted = [...cur.accepted, deviceId];
      const next: CoordinatorState = { ...state, current: { ...cur, accepted } };
      const effects: Effect[] = [{ type: 'update:accept', deviceId, round: cur.round }];
      if (accepted.length >= run.config.clientsPerRound) {
        const closed = closeRound(next, now, 'quorum');
        return { state: closed.state, effects: [...effects, ...closed.effects] };
      }
      return { state: next, effects };
    }
    case 'round:aggregated': {
      if (state.phase !== 'aggregating' || state.run?.id !== event.runId || state.run.round !== event.round) return { state, effects: [] };
      return { state: { ...state, phase: 'evaluating' }, effects: [] };
    }
    case 'round:evaluated': {
      const run = state.run;
      if (state.phase !== 'evaluating' || run?.id !== event.runId || run.round !== event.round) return { state, effects: [] };
      if (run.round >= run.config.rounds) {
        return { state: { ...state, phase: 'done', current: undefined }, effects: [{ type: 'run:finished', runId: run.id, status: 'done', reason: `completed ${run.round} rounds` }] };
      }
      return trySelect({ ...state, phase: 'selecting', current: undefined, run: { ...run, round: run.round + 1, attempt: 1, selectingSince: now } }, now);
    }
    case 'round:aggregation-failed': {
      const run = state.run;
      if (state.phase !== 'aggregating' || run?.id !== event.runId || run.round !== event.round) return { state, effects: [] };
      const message = `round ${event.round}: aggregation failed: ${event.reason}`;
      return { state: { ...state, phase: 'failed', current: undefined, run: { ...run, reason: message } }, effects: [{ type: 'run:finished', runId: run.id, status: 'failed', reason: message }] };
    }
    default: {
      const never: never = event;
      throw new Error(`coordinator: unknown event ${JSON.stringify(never)}`);
    }
  }
}

/**
 * The federation service: holds the coordinator's state, feeds it events with the time, and
 * performs the effects it returns — the only place where rounds meet timers, the store, the
 * evaluator and the devices (through a DevicePort, which the socket transport implements).
 */
import { initialWeights, type ModelName } from '../shared/models.ts';
import type { ErrorCode, ModelPublished, Result, RoundEnd, RoundStart } from '../shared/protocol.ts';
import { decodeUpdate } from '../shared/codec.ts';
import { encodeModelDelta } from '../shared/model-delta.ts';
import { codecConfig, publicConfig, type Hello, type RunConfig, type StateReport, type UpdateSubmit } from '../shared/schemas.ts';
import { decodeWeights, encodeWeights, WeightsFormatError, type FlatWeights } from '../shared/weights.ts';
import { initialState, isActive, step, type ClosedRound, type CoordinatorEvent, type CoordinatorState, type Effect } from './fl/coordinator.ts';
import type { RoundAggregator, Strategy } from './fl/strategy.ts';
import type { RunConfig as RunConfigT } from '../shared/schemas.ts';
import type { Logger } from './log.ts';
import type { Evaluator } from './ml/evaluator.ts';
import type { PhaseTimings, RoundRecord, Store } from './store/store.ts';
import type { DeviceInfo, FederationEvent, RoundTimeline } from '../shared/api.ts';

export type { DeviceInfo, FederationEvent, RoundTimeline } from '../shared/api.ts';

export interface DevicePort {
  sendRoundStart(deviceId: string, msg: RoundStart): void;
  sendRoundEnd(deviceId: string, msg: RoundEnd): void;
  broadcastModel(msg: ModelPublished): void;
}

export interface Clock {
  now(): number;
  setTimer(at: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (at, fn) => {
    const handle = setTimeout(fn, Math.max(0, at - Date.now()));
    return () => clearTimeout(handle);
  },
};

export interface FederationObserver {
  /** something a dashboard shows changed (devices, phase, progress) */
  changed(): void;
  event(e: FederationEvent): void;
}

const EVENT_HISTORY = 200;
/** disconnected devices stay listed (as disconnected) this long */
const FORGET_AFTER_MS = 10 * 60_000;

export class ConflictError extends Error {
  readonly code = 'CONFLICT';
}

interface GlobalModel {
  version: number;
  model: ModelName;
  weights: FlatWeights;
  payload: Uint8Array;
}

interface RoundBook {
  runId: number;
  round: number;
  attempt: number;
  selectionStartedAt: number;
  selectedAt: number;
  aggregator: RoundAggregator;
  bytesDown: number;
  bytesUp: number;
  /** updates scaled down to the run's L2 bound */
  clipped: number;
  metrics: { deviceId: string; numExamples: number; arrivedAt: number; accuracyBefore: number; accuracyAfter: number; downloadMs: number; evaluateMs: number; trainMs: number }[];
}

const median = (xs: number[]): number => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};
const mean = (xs: number[]): number | null => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

export interface FederationDeps {
  store: Store;
  /** the aggregation strategy of a run */
  strategyFor: (config: RunConfigT) => Strategy;
  evaluator: Evaluator;
  clock: Clock;
  logger: Logger;
  port: DevicePort;
}

export class Federation {
  private state: CoordinatorState = initialState();
  private readonly devices = new Map<string, DeviceInfo>();
  private global: GlobalModel | undefined;
  private book: RoundBook | undefined;
  private cancelTimer: (() => void) | undefined;
  private timerAt = Infinity;
  private readonly log: Logger;
  /** work in flight (aggregation, evaluations): shutdown and tests wait for it */
  private readonly inflight = new Set<Promise<void>>();
  readonly counters = { rejectedUpdates: 0, lateUpdates: 0, badMessages: 0 };
  private readonly observers = new Set<FederationObserver>();
  private readonly recent: FederationEvent[] = [];
  /** when the current (or last) round reached each phase, for the dashboard's live timeline */
  private timeline: RoundTimeline | undefined;

  constructor(private readonly deps: FederationDeps) {
    this.log = deps.logger.child('federation');
  }

  // ─── observers (the admin feed) ──────────────────────────────────────────
  observe(observer: FederationObserver): () => void {
    this.observers.add(observer);
    return () => this.observers.delete(observer);
  }

  recentEvents(): FederationEvent[] {
    return [...this.recent];
  }

  private note(level: FederationEvent['level'], kind: FederationEvent['kind'], message: string, fields: Record<string, unknown>): void {
    this.log[level](message, fields);
    const e: FederationEvent = { at: this.deps.clock.now(), level, kind, message };
    this.recent.push(e);
    if (this.recent.length > EVENT_HISTORY) this.recent.shift();
    for (const o of this.observers) o.event(e);
    this.changed();
  }

  private changed(): void {
    for (const o of this.observers) o.changed();
  }

  // ─── devices ─────────────────────────────────────────────────────────────
  join(hello: Hello): void {
    const now = this.deps.clock.now();
    const prev = this.devices.get(hello.deviceId);
    this.devices.set(hello.deviceId, {
      id: hello.deviceId,
      backend: hello.backend,
      backendReason: hello.backendReason,
      examples: hello.examples,
      heldOut: hello.heldOut,
      labelHistogram: hello.labelHistogram,
      state: 'idle',
      progress: null,
      loss: null,
      connected: true,
      joinedAt: prev?.connected ? prev.joinedAt : now,
      lastSeen: now,
      rounds: prev?.rounds ?? 0,
      lastAccuracyBefore: prev?.lastAccuracyBefore ?? null,
      lastAccuracyAfter: prev?.lastAccuracyAfter ?? null,
      modelVersion: hello.modelVersion || null,
    });
    this.note('info', 'device:joined', `device ${hello.deviceId} joined (${hello.backend}, ${hello.examples} examples)`, { deviceId: hello.deviceId, backend: hello.backend, examples: hello.examples });
    this.dispatch({ type: 'device:joined', deviceId: hello.deviceId, ...(hello.joinToken !== undefined ? { joinToken: hello.joinToken } : {}) });
  }

  leave(deviceId: string): void {
    const info = this.devices.get(deviceId);
    if (!info) return;
    info.connected = false;
    info.lastSeen = this.deps.clock.now();
    for (const [id, d] of this.devices) if (!d.connected && info.lastSeen - d.lastSeen > FORGET_AFTER_MS) this.devices.delete(id);
    this.note('info', 'device:left', `device ${deviceId} left`, { deviceId });
    this.dispatch({ type: 'device:left', deviceId });
  }

  report(deviceId: string, report: StateReport): void {
    const info = this.devices.get(deviceId);
    if (!info) return;
    info.state = report.state;
    info.progress = report.progress ?? null;
    const t = this.timeline;
    if (t && report.runId === t.runId && report.round === t.round && t.selectedAt !== undefined && t.closedAt === undefined) {
      const now = this.deps.clock.now();
      if ((report.state === 'evaluating' || report.state === 'training') && t.trainingStartedAt === undefined) t.trainingStartedAt = now;
      if (report.state === 'uploading' && t.uploadStartedAt === undefined) t.uploadStartedAt = now;
    }
    info.loss = report.loss ?? info.loss;
    if (report.modelVersion !== undefined) info.modelVersion = report.modelVersion || null;
    info.lastSeen = this.deps.clock.now();
    this.changed();
  }

  listDevices(includeDisconnected = false): DeviceInfo[] {
    return [...this.devices.values()].filter((d) => includeDisconnected || d.connected);
  }

  // ─── runs ────────────────────────────────────────────────────────────────
  startRun(config: RunConfig): number {
    if (isActive(this.state)) throw new ConflictError(`run ${this.state.run?.id} is ${this.state.phase}; stop it first`);
    const now = this.deps.clock.now();
    const runId = this.deps.store.createRun(config, now);
    const weights = initialWeights(config.model, config.seed);
    const payload = encodeWeights(weights);
    const version = this.deps.store.saveModel({ runId, round: 0, model: config.model, weights: payload }, now);
    this.global = { version, model: config.model, weights, payload };
    this.note('info', 'run:started', `run ${runId} started: ${config.model}, ${config.rounds} rounds, K=${config.clientsPerRound}`, { runId, config: publicConfig(config) });
    this.dispatch({ type: 'run:start', runId, config });
    // The initial model is evaluated too, so round 0 of the accuracy curve is known.
    this.track(
      this.deps.evaluator
        .evaluate(config.model, weights)
        .then((r) => this.deps.store.setModelMetrics(version, r.accuracy, r.loss))
        .catch((err: unknown) => this.log.error('evaluation of the initial model failed', { error: String(err) })),
    );
    return runId;
  }

  /**
   * Resumes the run a previous process left running (a crash, a kill -9, a deploy): from the model
   * of its last completed round, at the next round. A round that was half done when the process
   * died is redone from the start, as a new attempt; nothing it had received is counted.
   * Returns the run id, or undefined when there was nothing to resume.
   */
  resumeInterruptedRun(): number | undefined {
    if (isActive(this.state)) return undefined;
    const now = this.deps.clock.now();
    const running = this.deps.store.listRuns().filter((r) => r.status === 'running');
    const run = running.at(-1);
    for (const older of running.slice(0, -1)) this.deps.store.finishRun(older.id, 'failed', 'interrupted by a server restart (a later run was resumed instead)', now);
    if (!run) return undefined;
    const rounds = this.deps.store.listRounds(run.id);
    const last = rounds.filter((r) => r.status === 'completed' && r.modelVersion !== null).at(-1);
    const version = last?.modelVersion ?? this.deps.store.listModels().find((m) => m.runId === run.id && m.round === 0)?.version;
    const payload = version === undefined ? undefined : this.deps.store.getModelWeights(version);
    if (version === undefined || !payload) {
      this.deps.store.finishRun(run.id, 'failed', 'interrupted by a server restart, and no model of it was stored', now);
      return undefined;
    }
    const next = (last?.round ?? 0) + 1;
    if (next > run.config.rounds) {
      this.deps.store.finishRun(run.id, 'done', `completed ${run.config.rounds} rounds`, now);
      return undefined;
    }
    const attempt = Math.max(0, ...rounds.filter((r) => r.round === next).map((r) => r.attempt)) + 1;
    this.global = { version, model: run.config.model, weights: decodeWeights(payload), payload };
    this.note('info', 'run:started', `run ${run.id} resumed after a restart: round ${next} (attempt ${attempt}) from model v${version}`, { runId: run.id, round: next, attempt });
    this.dispatch({ type: 'run:start', runId: run.id, config: run.config, fromRound: next, fromAttempt: attempt });
    return run.id;
  }

  stopRun(reason = 'stopped by admin'): boolean {
    if (!isActive(this.state)) return false;
    this.dispatch({ type: 'run:stop', reason });
    return true;
  }

  status() {
    const { phase, run, current } = this.state;
    return {
      phase,
      run: run ? { id: run.id, config: publicConfig(run.config), round: run.round, attempt: run.attempt, reason: run.reason ?? null } : null,
      round: current ? { round: current.round, attempt: current.attempt, selected: current.selected.length, accepted: current.accepted.length, dropped: current.dropped.length, deadline: current.deadline } : null,
      modelVersion: this.global?.version ?? this.deps.store.latestModel()?.version ?? null,
      devices: this.listDevices().map((d) => ({ ...d })),
      counters: { ...this.counters },
    };
  }

  /** What the dashboard shows: the status, every known device (disconnected ones too) and the round's timeline. */
  adminSnapshot() {
    return { ...this.status(), devices: this.listDevices(true).map((d) => ({ ...d })), timeline: this.timeline ? { ...this.timeline } : null, now: this.deps.clock.now() };
  }

  /**
   * Stops timers for a shutdown without ending the run: it stays `running` in the store, and the
   * next process resumes it (resumeInterruptedRun).
   */
  shutdown(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    this.timerAt = Infinity;
  }

  /** Settles once the work in flight (a round's aggregation and evaluation, an initial evaluation) is done. */
  async idle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
  }

  private track(work: Promise<void>): void {
    this.inflight.add(work);
    void work.finally(() => this.inflight.delete(work));
  }

  // ─── updates ─────────────────────────────────────────────────────────────
  submitUpdate(deviceId: string, msg: UpdateSubmit): Result<{ accepted: true }> {
    const fail = (code: ErrorCode, message: string): Result<{ accepted: true }> => {
      this.counters.rejectedUpdates++;
      this.note('warn', 'update:rejected', `update rejected (${code}): ${message}`, { deviceId, code });
      return { ok: false, error: { code, message } };
    };
    const cur = this.state.current;
    const book = this.book;
    const global = this.global;
    if (!this.devices.get(deviceId)?.connected) return fail('NOT_JOINED', `update from device ${deviceId}: the device has not joined`);
    // Cheap checks before decoding several megabytes: the reducer makes the final call below.
    if (this.state.phase === 'training' && cur && book && global && cur.selected.includes(deviceId) && !cur.accepted.includes(deviceId) && msg.runId === book.runId && msg.round === book.round && msg.attempt === book.attempt) {
      let delta: FlatWeights;
      try {
        delta = decodeUpdate(msg.delta, global.weights.specs, codecConfig((this.state.run as NonNullable<CoordinatorState['run']>).config));
      } catch (err) {
        if (err instanceof WeightsFormatError) return fail('BAD_WEIGHTS', `update from device ${deviceId} for round ${msg.round}: ${err.message}`);
        throw err;
      }
      const effects = this.dispatch({ type: 'update:received', deviceId, runId: msg.runId, round: msg.round, attempt: msg.attempt }, (effect) => {
        if (effect.type === 'update:accept') {
          if (book.aggregator.add(delta.values, msg.numExamples).clipped) book.clipped++;
          book.bytesUp += msg.delta.byteLength;
          book.metrics.push({ deviceId, numExamples: msg.numExamples, arrivedAt: this.deps.clock.now(), ...msg.metrics });
          const info = this.devices.get(deviceId);
          if (info) {
            info.rounds += 1;
            info.lastAccuracyBefore = msg.metrics.accuracyBefore;
            info.lastAccuracyAfter = msg.metrics.accuracyAfter;
          }
        }
      });
      const rejection = effects.find((e) => e.type === 'update:reject');
      return rejection?.type === 'update:reject' ? fail(rejection.code, rejection.message) : { ok: true, data: { accepted: true } };
    }
    if (this.book && msg.runId === this.book.runId) this.book.bytesUp += msg.delta.byteLength;
    const effects = this.dispatch({ type: 'update:received', deviceId, runId: msg.runId, round: msg.round, attempt: msg.attempt });
    const rejection = effects.find((e) => e.type === 'update:reject');
    if (rejection?.type === 'update:reject') {
      if (rejection.code === 'ROUND_FULL' || rejection.code === 'WRONG_ROUND') this.counters.lateUpdates++;
      return fail(rejection.code, rejection.message);
    }
    return fail('INTERNAL', `update from device ${deviceId}: not accepted`);
  }

  // ─── the reducer loop ────────────────────────────────────────────────────
  private dispatch(event: CoordinatorEvent, onEffect?: (effect: Effect) => void): Effect[] {
    const now = this.deps.clock.now();
    const { state, effects } = step(this.state, event, now);
    const changed = state !== this.state;
    this.state = state;
    if (changed && state.run && (state.phase === 'selecting' || state.phase === 'training') && (this.timeline?.round !== state.run.round || this.timeline.attempt !== state.run.attempt || this.timeline.runId !== state.run.id)) {
      this.timeline = { runId: state.run.id, round: state.run.round, attempt: state.run.attempt, selectionStartedAt: state.run.selectingSince };
    }
    for (const effect of effects) {
      onEffect?.(effect);
      this.perform(effect, now);
    }
    if (changed) this.changed();
    return effects;
  }

  private perform(effect: Effect, now: number): void {
    switch (effect.type) {
      case 'round:start': {
        const global = this.global as GlobalModel;
        const run = this.state.run;
        if (!run) return;
        if (this.timeline) this.timeline.selectedAt = now;
        this.book = {
          runId: effect.runId,
          round: effect.round,
          attempt: effect.attempt,
          selectionStartedAt: run.selectingSince,
          selectedAt: now,
          aggregator: this.deps.strategyFor(run.config).createAggregator(global.weights.values.length, run.config),
          bytesDown: 0,
          bytesUp: 0,
          clipped: 0,
          metrics: [],
        };
        const msg: RoundStart = {
          runId: effect.runId,
          round: effect.round,
          attempt: effect.attempt,
          model: global.model,
          modelVersion: global.version,
          plan: this.deps.strategyFor(run.config).configureFit(run.config, effect.round, effect.attempt),
          deadline: effect.deadline,
          weights: global.payload,
        };
        const deltas = new Map<number, Uint8Array | null>();
        for (const id of effect.deviceIds) {
          const info = this.devices.get(id);
          if (info) info.state = 'selected';
          const base = run.config.downlink === 'delta' ? info?.modelVersion : null;
          const delta = base ? this.modelDelta(base, global, deltas) : null;
          const sent: RoundStart = delta && base ? { ...msg, weights: delta, baseVersion: base } : msg;
          this.book.bytesDown += sent.weights.byteLength;
          this.deps.port.sendRoundStart(id, sent);
        }
        this.note('info', 'round:started', `round ${effect.round}${effect.attempt > 1 ? ` (try ${effect.attempt})` : ''} started with ${effect.deviceIds.length} selected devices`, { runId: effect.runId, round: effect.round, attempt: effect.attempt });
        return;
      }
      case 'update:accept':
      case 'update:reject':
        return; // answered to the caller of submitUpdate
      case 'round:notify-end': {
        for (const id of effect.deviceIds) {
          this.deps.port.sendRoundEnd(id, { runId: effect.runId, round: effect.round, attempt: effect.attempt, outcome: effect.outcome, counted: effect.counted.includes(id) });
        }
        return;
      }
      case 'round:close': {
        const book = this.book;
        this.book = undefined;
        if (!book) return;
        if (this.timeline) this.timeline.closedAt = now;
        this.track(
          this.finishRound(effect.closed, book).catch((err: unknown) => {
            this.log.error('aggregation failed', { round: effect.closed.round, error: String(err) });
            this.dispatch({ type: 'round:aggregation-failed', runId: effect.closed.runId, round: effect.closed.round, reason: err instanceof Error ? err.message : String(err) });
          }),
        );
        return;
      }
      case 'round:failed': {
        const book = this.book;
        this.book = undefined;
        if (this.timeline) this.timeline.failedAt = now;
        this.note('warn', 'round:failed', `round ${effect.round} failed: ${effect.reason}${effect.willRetry ? '; retrying' : ''}`, { runId: effect.runId, round: effect.round, attempt: effect.attempt, willRetry: effect.willRetry });
        this.deps.store.recordRound({
          runId: effect.runId,
          round: effect.round,
          attempt: effect.attempt,
          status: 'failed',
          reason: effect.reason,
          participants: effect.selected.length,
          completed: effect.accepted.length,
          dropped: effect.dropped.length,
          late: 0,
          rejected: 0,
          clipped: book?.clipped ?? 0,
          startedAt: effect.selectedAt,
          durationMs: effect.closedAt - effect.selectedAt,
          timings: null,
          bytesUp: book?.bytesUp ?? 0,
          bytesDown: book?.bytesDown ?? 0,
          testAccuracy: null,
          testLoss: null,
          localAccuracyBefore: null,
          localAccuracyAfter: null,
          devices: [],
          modelVersion: null,
        });
        return;
      }
      case 'run:finished': {
        this.book = undefined;
        this.deps.store.finishRun(effect.runId, effect.status, effect.reason, now);
        this.note(effect.status === 'done' ? 'info' : 'warn', 'run:finished', `run ${effect.runId} ${effect.status}: ${effect.reason}`, { runId: effect.runId, status: effect.status });
        return;
      }
      case 'timer:set': {
        if (effect.at >= this.timerAt && this.cancelTimer) return;
        this.cancelTimer?.();
        this.timerAt = effect.at;
        this.cancelTimer = this.deps.clock.setTimer(effect.at, () => {
          this.cancelTimer = undefined;
          this.timerAt = Infinity;
          this.dispatch({ type: 'tick' });
        });
        return;
      }
      default: {
        const never: never = effect;
        throw new Error(`federation: unknown effect ${JSON.stringify(never)}`);
      }
    }
  }

  /**
   * The global model as a lossless delta against a version a device holds, or null when a full
   * download is needed (unknown or foreign version, or no smaller than the model). One per base a round.
   */
  private modelDelta(base: number, global: GlobalModel, cache: Map<number, Uint8Array | null>): Uint8Array | null {
    if (base === global.version) return null;
    if (cache.has(base)) return cache.get(base) ?? null;
    let delta: Uint8Array | null = null;
    const record = this.deps.store.getModel(base);
    const payload = record?.model === global.model ? this.deps.store.getModelWeights(base) : undefined;
    if (payload) {
      try {
        const weights = decodeWeights(payload, global.weights.specs);
        delta = encodeModelDelta(weights.values, global.weights.values, base, global.version);
        if (delta.byteLength >= global.payload.byteLength) delta = null;
      } catch (err) {
        this.log.warn('stored model unreadable; sending the full model', { version: base, error: String(err) });
      }
    }
    cache.set(base, delta);
    return delta;
  }

  private async finishRound(closed: ClosedRound, book: RoundBook): Promise<void> {
    const global = this.global as GlobalModel;
    const t0 = this.deps.clock.now();
    const next = book.aggregator.result(global.weights.values);
    if (!next) throw new Error('no update to aggregate');
    for (let i = 0; i < next.length; i++) if (!Number.isFinite(next[i])) throw new Error(`aggregate has a non-finite value at ${i}`);
    const weights: FlatWeights = { specs: global.weights.specs, values: next };
    const payload = encodeWeights(weights);
    const version = this.deps.store.saveModel({ runId: closed.runId, round: closed.round, model: global.model, weights: payload }, this.deps.clock.now());
    this.global = { version, model: global.model, weights, payload };
    const aggregationMs = this.deps.clock.now() - t0;
    if (this.timeline) this.timeline.aggregatedAt = this.deps.clock.now();
    this.dispatch({ type: 'round:aggregated', runId: closed.runId, round: closed.round });

    const t1 = this.deps.clock.now();
    const result = await this.deps.evaluator.evaluate(global.model, weights);
    this.deps.store.setModelMetrics(version, result.accuracy, result.loss);
    const evaluationMs = this.deps.clock.now() - t1;
    if (this.timeline) this.timeline.evaluatedAt = this.deps.clock.now();

    const m = book.metrics;
    const timings: PhaseTimings = {
      selectionMs: book.selectedAt - book.selectionStartedAt,
      downloadMs: median(m.map((x) => x.downloadMs)),
      evaluateMs: median(m.map((x) => x.evaluateMs)),
      trainMs: median(m.map((x) => x.trainMs)),
      uploadMs: median(m.map((x) => Math.max(0, x.arrivedAt - book.selectedAt - x.downloadMs - x.evaluateMs - x.trainMs))),
      aggregationMs,
      evaluationMs,
    };
    const record: RoundRecord = {
      runId: closed.runId,
      round: closed.round,
      attempt: closed.attempt,
      status: 'completed',
      reason: closed.closedBy === 'deadline' ? `closed at the deadline with ${closed.accepted.length} updates` : null,
      participants: closed.selected.length,
      completed: closed.accepted.length,
      dropped: closed.dropped.length,
      late: closed.late,
      rejected: closed.rejected,
      clipped: book.clipped,
      startedAt: closed.selectedAt,
      durationMs: this.deps.clock.now() - closed.selectedAt,
      timings,
      bytesUp: book.bytesUp,
      bytesDown: book.bytesDown,
      testAccuracy: result.accuracy,
      testLoss: result.loss,
      localAccuracyBefore: mean(m.map((x) => x.accuracyBefore)),
      localAccuracyAfter: mean(m.map((x) => x.accuracyAfter)),
      devices: m.map((x) => ({ id: x.deviceId, numExamples: x.numExamples, accuracyBefore: x.accuracyBefore, accuracyAfter: x.accuracyAfter, trainMs: x.trainMs })),
      modelVersion: version,
    };
    this.deps.store.recordRound(record);
    this.note('info', 'round:completed', `round ${closed.round} completed: ${closed.accepted.length} updates, test accuracy ${(result.accuracy * 100).toFixed(2)} %`, { runId: closed.runId, round: closed.round, testAccuracy: result.accuracy, durationMs: record.durationMs });
    this.deps.port.broadcastModel({ version, runId: closed.runId, round: closed.round, testAccuracy: result.accuracy, testLoss: result.loss });
    this.dispatch({ type: 'round:evaluated', runId: closed.runId, round: closed.round });
  }
}

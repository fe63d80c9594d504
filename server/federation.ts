/**
 * The federation service: a thin interpreter around the round coordinator (fl/coordinator.ts).
 * It feeds the reducer events with the time, performs the effects it returns — send to devices,
 * validate, aggregate, evaluate, persist, arm the one timer — and reports each outcome, failures
 * included, back as an event. It keeps no round state and takes no round decision of its own;
 * what it holds are resources: the device registry, the global model, the round's aggregator, the
 * updates being validated and the acks waiting for an answer.
 */
import type { AdminSnapshot, DeviceInfo, FederationEvent, FederationStatus } from '../shared/api.ts';
import type { CanaryEnd, EvalStart, ModelPublished, Result, RoundEnd, RoundStart, ServerToClientEvents } from '../shared/protocol.ts';
import { roundContext } from '../shared/secagg/plan.ts';
import { neighbourToWire, sharesToWire } from '../shared/secagg/wire.ts';
import { publicConfig, type DeviceHello, type EvalReport, type RunConfig, type StateReport, type UpdateSubmit } from '../shared/schemas.ts';
import { encodeWeights, totalSize, WeightsFormatError } from '../shared/weights.ts';
import { DeviceRegistry } from './devices.ts';
import { EvaluationService } from './evaluations.ts';
import { describeWaiting, initialState, isActive, selectionSize, stageOf, step, type CoordinatorEvent, type CoordinatorState, type Effect } from './fl/coordinator.ts';
import { SecureRound, verifyInput, type SecAggMessage } from './fl/secagg.ts';
import { aggregationBase, dpFedAvgAggregator, serverControl, updateSpecs, type RoundAggregator, type Strategy } from './fl/strategy.ts';
import { addGaussianNoise } from '../shared/privacy/noise.ts';
import { validateUpdate, type ValidatedUpdate } from './fl/validate.ts';
import type { Logger } from './log.ts';
import type { Evaluator } from './ml/evaluator.ts';
import { ModelBook, type DeltaEncoder, type DownloadsOf, type GlobalModel, type StepQuantizer } from './model-book.ts';
import type { KeptUpdate, ThreadSums } from './work-pool.ts';
import type { PartialSum } from '../shared/fedavg.ts';
import type { Store } from './store/store.ts';

export type { DeviceInfo, FederationEvent, RoundTimeline } from '../shared/api.ts';

export interface DevicePort {
  sendRoundStart(deviceId: string, msg: RoundStart): void;
  sendRoundEnd(deviceId: string, msg: RoundEnd): void;
  broadcastModel(msg: ModelPublished): void;
  /**
   * set when the far end makes each device's download itself (a cluster node, from the store): it
   * is sent the whole model with `baseVersion` naming the version the device holds, and sends the
   * device a delta against it when that is smaller — no delta is encoded here
   */
  readonly downloadsElsewhere?: boolean;
  /** a secure-aggregation message for one device (secagg/) */
  sendSecAgg<E extends 'secagg:neighbours' | 'secagg:shares' | 'secagg:unmask'>(deviceId: string, event: E, msg: Parameters<ServerToClientEvents[E]>[0]): void;
  /** evaluation rounds and the canary (evaluations.ts); a port without them does not offer them */
  sendEvalStart?(deviceId: string, msg: EvalStart): void;
  sendCanaryEnd?(deviceId: string, msg: CanaryEnd): void;
}

export interface Clock {
  now(): number;
  /** calls fn once at (or after) `at`; returns a function that cancels it */
  setTimer(at: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (at, fn) => {
    const handle = setTimeout(fn, Math.max(0, at - Date.now()));
    return () => clearTimeout(handle);
  },
};

/** Decodes, checks and clips an update; it may take the payload's buffer (the federation does not read a payload after handing it over). */
export type UpdateValidator = (payload: Uint8Array, specs: Parameters<typeof validateUpdate>[1], config: RunConfig) => Promise<ValidatedUpdate>;

export const inlineValidator: UpdateValidator = async (payload, specs, config) => validateUpdate(payload, specs, config);

export interface FederationObserver {
  /** something a dashboard shows changed (devices, phase, progress) */
  changed(): void;
  event(e: FederationEvent): void;
}

const EVENT_HISTORY = 200;

export class ConflictError extends Error {
  readonly code = 'CONFLICT';
}

/** A run config this federation cannot run (checked beyond its schema). */
export class RunConfigError extends Error {
  readonly code = 'BAD_CONFIG';
}

/** Why a run cannot be spread over a cluster's nodes (undefined: it can). */
export function clusterRefuses(config: RunConfig): string | undefined {
  if (config.secureAggregation) return 'secure aggregation runs on one server node only (its masked sum is not split across nodes yet)';
  if (config.dp) return 'differential privacy runs on one server node only (its noised sum is not split across nodes yet)';
  if (config.aggregation !== 'fedavg') return `aggregation "${config.aggregation}" needs every update in one place; across a cluster's nodes only fedavg is summed`;
  if (config.strategy === 'scaffold') return 'scaffold runs on one server node only (its control variate is not sent by the nodes yet)';
  return undefined;
}

/** An update held by a node of a cluster (cluster/): decoded, validated, kept and summed there. */
export interface RemoteRef {
  node: string;
  id: number;
}

/**
 * The updates of a cluster's devices, as the coordinating node sees them: each stays on the node
 * its device sent it to, which validates it, adds it to its share of the round's sum once it is
 * accepted, and hands that share over when the round is aggregated (O(nodes × model) here).
 */
export interface RemoteUpdates {
  validate(ref: RemoteRef, modelVersion: number, config: RunConfig): Promise<{ norm: number; clipped: boolean }>;
  add(ref: RemoteRef, key: string, weight: number): void;
  drop(ref: RemoteRef): void;
  /**
   * the shares of round `key`'s sum, from each node with the number of updates counted from it
   * (a share that holds another number fails: an add was lost on the way); size 0: discard them
   */
  take(key: string, counted: ReadonlyMap<string, number>, size: number): Promise<PartialSum[]>;
}

/** What the device transport calls: one federation, or a cluster node that relays to the coordinating one. */
export interface DeviceGateway {
  readonly counters: { rejectedUpdates: number; lateUpdates: number; badMessages: number };
  join(hello: DeviceHello, identityKey?: Uint8Array): void;
  leave(deviceId: string): void;
  report(deviceId: string, report: StateReport): void;
  latestModel(): ModelPublished | null;
  submitUpdate(deviceId: string, msg: UpdateSubmit): Promise<Result<{ accepted: true }>>;
  secAggMessage(deviceId: string, ref: { runId: number; round: number; attempt: number }, message: SecAggMessage, bytes: number): Promise<Result<null>>;
  /** a device's evaluation report (evaluation rounds and the canary); absent where they are not offered */
  evaluationReport?(deviceId: string, report: EvalReport): Result<null>;
}

interface Submission {
  deviceId: string;
  payload: Uint8Array;
  /** an update held by a cluster node (its payload is there, not here) */
  remote?: RemoteRef;
  /** a masked input's signature, under secure aggregation */
  signature?: Uint8Array;
  answer: (result: Result<{ accepted: true }>) => void;
  validated?: ValidatedUpdate;
  /** validated and kept in a work thread, to be added to the round's sum there */
  kept?: KeptUpdate;
}

export interface FederationDeps {
  store: Store;
  /** the aggregation strategy of a run */
  strategyFor: (config: RunConfig) => Strategy;
  evaluator: Evaluator;
  clock: Clock;
  logger: Logger;
  port: DevicePort;
  validate?: UpdateValidator;
  /** how model deltas for downloads are encoded (default: inline) */
  encodeDelta?: DeltaEncoder;
  /** how a lossy downlink's steps are made (default: inline) */
  quantizeStep?: StepQuantizer;
  /** FedAvg's sum kept in work threads (default: on the event loop, as each update is accepted) */
  sums?: ThreadSums;
  /** the updates held by the nodes of a cluster (cluster/leader.ts) */
  remote?: RemoteUpdates;
}

/** how many updates were counted from each node */
const counts = (nodes: ReadonlyMap<string, readonly string[]>): Map<string, number> => new Map([...nodes].map(([node, ids]) => [node, ids.length]));

const roundKey = (r: { runId: number; round: number; attempt: number }) => `${r.runId}:${r.round}:${r.attempt}`;
const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));

export class Federation implements DeviceGateway {
  private state: CoordinatorState = initialState();
  private readonly devices = new DeviceRegistry();
  private readonly models: ModelBook;
  /** evaluation rounds, the canary and the live version (evaluations.ts) */
  readonly evaluations: EvaluationService;
  /** the round's aggregator; `inThreads`: accepted updates were added to the work threads' sums, merged at aggregation */
  private aggregator: { key: string; sum: RoundAggregator; inThreads?: boolean; nodes?: Map<string, string[]> } | undefined;
  private readonly submissions = new Map<number, Submission>();
  private nextSubmission = 1;
  /** devices' identity keys (proven at hello) and whether they do X25519: secure aggregation checks and picks with them */
  private readonly identityKeys = new Map<string, { key: Uint8Array<ArrayBuffer>; x25519: boolean }>();
  /** the secure round under way: its adverts, shares, reveals and the sum of masked inputs */
  private secure: SecureRound | undefined;
  private readonly secAggPending = new Map<number, { deviceId: string; message: SecAggMessage; answer: (r: Result<null>) => void }>();
  private timer: { at: number; cancel: () => void } | undefined;
  private closed = false;
  /** a run being created in the store: no second start meanwhile */
  private starting = false;
  /** the store's writes, one after another */
  private writes: Promise<void> = Promise.resolve();
  private readonly queue: CoordinatorEvent[] = [];
  private draining = false;
  private readonly log: Logger;
  /** work in flight (validation, aggregation, evaluations): shutdown and tests wait for it */
  private readonly inflight = new Set<Promise<void>>();
  readonly counters = { rejectedUpdates: 0, lateUpdates: 0, badMessages: 0 };
  private readonly observers = new Set<FederationObserver>();
  private readonly recent: FederationEvent[] = [];

  constructor(private readonly deps: FederationDeps) {
    this.log = deps.logger.child('federation');
    this.models = new ModelBook(deps.store, this.log, deps.encodeDelta, deps.quantizeStep);
    const port = deps.port;
    this.evaluations = new EvaluationService({
      store: deps.store,
      clock: deps.clock,
      port: port.sendEvalStart && port.sendCanaryEnd ? { sendEvalStart: (id, m) => port.sendEvalStart!(id, m), sendCanaryEnd: (id, m) => port.sendCanaryEnd!(id, m) } : undefined,
      log: this.log.child('evaluations'),
      devices: () => this.devices.list(),
      busy: () => (this.starting ? 'a run is starting' : isActive(this.state) ? `run ${this.state.run?.id} is ${this.state.phase}: its devices train; evaluate once it ends` : undefined),
      note: (level, kind, message, fields) => this.note(level, kind, message, fields),
    });
  }

  /** A device's evaluation report, taken or refused by the evaluation round under way. */
  evaluationReport(deviceId: string, report: EvalReport): Result<null> {
    return this.evaluations.report(deviceId, report);
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
  }

  private changed(): void {
    for (const o of this.observers) o.changed();
  }

  // ─── devices ─────────────────────────────────────────────────────────────
  /** A device whose identity the transport has proven joins (or rejoins) with its claims. */
  join(hello: DeviceHello, identityKey?: Uint8Array): void {
    this.devices.join(hello, this.deps.clock.now());
    if (identityKey) this.identityKeys.set(hello.deviceId, { key: Uint8Array.from(identityKey), x25519: hello.x25519 === true });
    this.note('info', 'device:joined', `device ${hello.deviceId} joined (${hello.backend}, ${hello.examples} examples)`, { deviceId: hello.deviceId, backend: hello.backend, examples: hello.examples });
    this.dispatch({ type: 'device:joined', deviceId: hello.deviceId, examples: hello.examples, labelHistogram: hello.labelHistogram, ...(hello.joinToken !== undefined ? { joinToken: hello.joinToken } : {}), ...(hello.quality ? { quality: hello.quality } : {}) });
  }

  leave(deviceId: string): void {
    if (!this.devices.leave(deviceId, this.deps.clock.now())) return;
    this.note('info', 'device:left', `device ${deviceId} left`, { deviceId });
    this.evaluations.left(deviceId);
    this.dispatch({ type: 'device:left', deviceId });
  }

  report(deviceId: string, report: StateReport): void {
    if (!this.devices.isConnected(deviceId)) return;
    this.devices.report(deviceId, report, this.deps.clock.now());
    this.changed();
  }

  /** Reads what the store holds that the federation answers from at once (the newest model). */
  async open(): Promise<void> {
    await this.models.open();
    await this.evaluations.open();
  }

  /** The latest global model of any run, as devices are told of it. */
  latestModel(): ModelPublished | null {
    const m = this.models.latest;
    return m ? { version: m.version, runId: m.runId ?? 0, round: m.round, testAccuracy: m.testAccuracy, testLoss: m.testLoss } : null;
  }

  /** the devices the current run's monitor flagged, and whether it quarantines them */
  private monitored(): { flagged: readonly string[]; quarantine: boolean } | undefined {
    const run = this.state.run;
    return run?.flagged?.length ? { flagged: run.flagged, quarantine: run.config.monitor.quarantine } : undefined;
  }

  listDevices(includeDisconnected = false): DeviceInfo[] {
    return this.devices.list(includeDisconnected, this.state.run?.config.dataQuality, this.monitored());
  }

  // ─── runs ────────────────────────────────────────────────────────────────
  async startRun(config: RunConfig): Promise<number> {
    if (isActive(this.state)) throw new ConflictError(`run ${this.state.run?.id} is ${this.state.phase}; stop it first`);
    if (this.starting) throw new ConflictError('a run is being started; stop it first');
    const evaluating = this.evaluations.running();
    if (evaluating) throw new ConflictError(`${evaluating}; start the run once it ends`);
    const refused = this.deps.remote ? clusterRefuses(config) : undefined;
    if (refused) throw new RunConfigError(refused);
    this.starting = true;
    const { runId, initial } = await (async () => {
      const problem = await this.models.initialProblem(config);
      if (problem) throw new RunConfigError(problem);
      return this.createRun(config);
    })().finally(() => (this.starting = false));
    this.note('info', 'run:started', `run ${runId} started: ${config.model}, ${config.rounds} rounds, K=${config.clientsPerRound}`, { runId, config: publicConfig(config) });
    // under DP, devices are sampled from a secret seed (the config's seed is public)
    this.dispatch({ type: 'run:start', runId, config, ...(config.dp ? { samplingSeed: crypto.getRandomValues(new Uint32Array(1))[0]!, parameters: initial.weights.values.length } : {}) });
    // The initial model is evaluated too, so round 0 of the accuracy curve is known; it is no round's business.
    this.track(
      this.deps.evaluator.evaluate(config.model, initial.weights).then(
        (r) => this.persist('model:publish', () => this.models.setMetrics(initial.version, r.accuracy, r.loss)),
        (err: unknown) => this.log.error('evaluation of the initial model failed', { error: errorText(err) }),
      ),
    );
    return runId;
  }

  /** The run's record and its initial model (seeded), stored as its round 0. */
  private async createRun(config: RunConfig): Promise<{ runId: number; initial: GlobalModel }> {
    const now = this.deps.clock.now();
    const runId = await this.deps.store.createRun(config, now);
    return { runId, initial: await this.models.createInitial(runId, config, now) };
  }

  /**
   * Resumes the run a previous process left running (a crash, a kill -9, a deploy): from the model
   * of its last completed round, at the next round. A round that was half done when the process
   * died is redone from the start, as a new attempt; nothing it had received is counted.
   * Returns the run id, or undefined when there was nothing to resume.
   */
  async resumeInterruptedRun(): Promise<number | undefined> {
    if (isActive(this.state) || this.starting) return undefined;
    const now = this.deps.clock.now();
    const store = this.deps.store;
    // rounds whose model was still being evaluated when the last process ended: say so, rather than "evaluating" forever
    for (const r of await store.listRuns()) {
      for (const round of await store.listRounds(r.id)) {
        if (!round.evaluationPending) continue;
        const { evaluationPending: _, ...rest } = round;
        await store.recordRound({ ...rest, reason: [round.reason, 'not evaluated: the server restarted before its evaluation finished'].filter(Boolean).join('; ') });
      }
    }
    const running = (await store.listRuns()).filter((r) => r.status === 'running');
    const run = running.at(-1);
    for (const older of running.slice(0, -1)) await store.finishRun(older.id, 'failed', 'interrupted by a server restart (a later run was resumed instead)', now);
    if (!run) return undefined;
    const rounds = await store.listRounds(run.id);
    const last = rounds.filter((r) => r.status === 'completed' && r.modelVersion !== null).at(-1);
    const version = last?.modelVersion ?? (await store.listModels()).find((m) => m.runId === run.id && m.round === 0)?.version;
    if (version === undefined || !(await this.models.load(version, run.config.model))) {
      await store.finishRun(run.id, 'failed', 'interrupted by a server restart, and no model of it was stored', now);
      return undefined;
    }
    const next = (last?.round ?? 0) + 1;
    if (next > run.config.rounds) {
      await store.finishRun(run.id, 'done', `completed ${run.config.rounds} rounds`, now);
      return undefined;
    }
    if (isActive(this.state) || this.starting) return undefined; // a run was started meanwhile
    const attempt = Math.max(0, ...rounds.filter((r) => r.round === next).map((r) => r.attempt)) + 1;
    this.note('info', 'run:started', `run ${run.id} resumed after a restart: round ${next} (attempt ${attempt}) from model v${version}`, { runId: run.id, round: next, attempt });
    // a private run resumes its accounting: the sampling rates of the rounds it released
    const released = rounds
      .filter((r) => r.status === 'completed' && r.privacy)
      .map((r) => {
        const d = r.privacy!.distributed;
        return { q: r.privacy!.samplingRate, rounds: 1, ...(d ? { skellam: { l2: d.l2Sensitivity, l1: d.l1Sensitivity } } : {}) };
      });
    const clip = rounds.filter((r) => r.status === 'completed' && r.privacy).at(-1)?.privacy?.clipNorm; // adaptive clipping goes on from its last bound
    const parameters = this.models.current?.weights.values.length;
    this.dispatch({ type: 'run:start', runId: run.id, config: run.config, fromRound: next, fromAttempt: attempt, ...(run.config.dp ? { samplingSeed: crypto.getRandomValues(new Uint32Array(1))[0]!, released, ...(clip !== undefined ? { clip } : {}), ...(parameters !== undefined ? { parameters } : {}) } : {}) });
    return run.id;
  }

  stopRun(reason = 'stopped by admin'): boolean {
    if (!isActive(this.state)) return false;
    this.dispatch({ type: 'run:stop', reason });
    return true;
  }

  /** What anyone may see: no device ids, histograms or accuracies (those are in the admin snapshot). */
  status(): FederationStatus {
    const { phase, run, current } = this.state;
    const live = current && phase === 'training' ? current : undefined;
    return {
      phase,
      stage: stageOf(this.state),
      run: run ? { id: run.id, config: publicConfig(run.config), round: run.round, attempt: run.attempt, reason: run.reason ?? null } : null,
      round: live ? { round: live.round, attempt: live.attempt, selected: live.selected.length, accepted: live.accepted.length, validating: live.validating.length, refused: live.refused.length, dropped: live.dropped.length, deadline: live.deadline } : null,
      waiting: describeWaiting(this.state, this.deps.clock.now()),
      modelVersion: this.models.current?.version ?? this.models.latest?.version ?? null,
      devices: this.devices.connectedCount(),
      counters: { ...this.counters },
    };
  }

  /** What the dashboard shows: the status, every known device (disconnected ones too) and the round's timeline. */
  adminSnapshot(): AdminSnapshot {
    return { ...this.status(), devices: this.devices.list(true, this.state.run?.config.dataQuality, this.monitored()), timeline: this.state.timeline ? { ...this.state.timeline } : null, now: this.deps.clock.now() };
  }

  /**
   * Stops the timer for a shutdown without ending the run: it stays `running` in the store, and
   * the next process resumes it (resumeInterruptedRun). No timer is armed after this.
   */
  shutdown(): void {
    this.closed = true;
    this.evaluations.shutdown();
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** Settles once the store's writes asked for so far are done. */
  flushed(): Promise<void> {
    return Promise.all([this.writes, this.evaluations.flushed()]).then(() => undefined);
  }

  /** Settles once the work in flight (validation, aggregation, evaluations) is done. */
  async idle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
  }

  /**
   * Writes to the store in the order the coordinator asked for them (a round's record, then its
   * evaluated rewrite); a write that fails goes back to the coordinator as the effect's failure.
   */
  private persist(effect: Effect['type'], write: () => Promise<void>): void {
    const done = this.writes.then(write).catch((err: unknown) => {
      this.log.error(`could not perform ${effect}`, { error: errorText(err) });
      if (effect !== 'run:finished') this.dispatch({ type: 'effect:failed', effect, reason: errorText(err) });
    });
    this.writes = done;
    this.track(done);
  }

  private track(work: Promise<void>): void {
    this.inflight.add(work);
    void work.finally(() => this.inflight.delete(work));
  }

  // ─── updates ─────────────────────────────────────────────────────────────
  /** Takes an update in; the answer comes once the coordinator has counted or refused it. */
  submitUpdate(deviceId: string, msg: UpdateSubmit): Promise<Result<{ accepted: true }>> {
    const submission = this.nextSubmission++;
    return new Promise((answer) => {
      this.submissions.set(submission, { deviceId, payload: msg.delta, answer, ...(msg.signature ? { signature: msg.signature } : {}) });
      this.dispatch({ type: 'update:submitted', submission, deviceId, runId: msg.runId, round: msg.round, attempt: msg.attempt, numExamples: msg.numExamples, bytes: msg.delta.byteLength, metrics: msg.metrics });
    });
  }

  /** An update a cluster node holds: counted or refused as any other; the answer goes back to the node. */
  submitRemoteUpdate(deviceId: string, msg: Omit<UpdateSubmit, 'delta' | 'signature'> & { bytes: number }, ref: RemoteRef, answer: (result: Result<{ accepted: true }>) => void): void {
    const submission = this.nextSubmission++;
    this.submissions.set(submission, { deviceId, payload: new Uint8Array(0), remote: ref, answer });
    this.dispatch({ type: 'update:submitted', submission, deviceId, runId: msg.runId, round: msg.round, attempt: msg.attempt, numExamples: msg.numExamples, bytes: msg.bytes, metrics: msg.metrics });
  }

  /**
   * A cluster node is gone (killed, or cut off): its devices have left, the updates it was
   * validating are refused, and those it had counted into its share of the round's sum are lost
   * with it — the coordinator counts them as dropped, so none is counted twice or summed half.
   */
  nodeLost(node: string, deviceIds: readonly string[]): void {
    for (const id of deviceIds) this.leave(id);
    for (const [n, s] of this.submissions) {
      if (s.remote?.node === node) this.dispatch({ type: 'update:invalid', submission: n, reason: `the server node holding it (${node}) is gone` });
    }
    const lost = this.aggregator?.nodes?.get(node);
    this.aggregator?.nodes?.delete(node);
    if (lost?.length) {
      this.note('warn', 'update:rejected', `server node ${node} is gone with ${lost.length} counted updates: they are dropped from the round`, { node, devices: lost.length });
      this.dispatch({ type: 'updates:lost', deviceIds: lost, reason: `server node ${node} is gone` });
    }
  }

  /**
   * A secure-aggregation message (keys, shares or reveal): checked against the round and the
   * sender's identity key, then given to the coordinator, which takes or refuses it.
   */
  async secAggMessage(deviceId: string, ref: { runId: number; round: number; attempt: number }, message: SecAggMessage, bytes: number): Promise<Result<null>> {
    const identity = this.identityKeys.get(deviceId);
    if (!identity) return { ok: false, error: { code: 'IDENTITY', message: `secagg:${message.what} from ${deviceId}: the device has not proven an identity key` } };
    const secure = this.secure;
    const current = secure && secure.key === roundKey(ref) ? secure : undefined;
    const invalid = current ? await current.check(deviceId, identity.key, message) : undefined;
    const id = this.nextSubmission++;
    return new Promise((answer) => {
      this.secAggPending.set(id, { deviceId, message, answer });
      this.dispatch({ type: 'secagg:received', what: message.what, message: id, deviceId, bytes, ...ref, ...(invalid !== undefined ? { invalid } : {}) });
    });
  }

  // ─── the reducer loop ────────────────────────────────────────────────────
  /** Feeds one event to the reducer; events raised while effects are performed queue behind it. */
  private dispatch(event: CoordinatorEvent): void {
    this.queue.push(event);
    if (this.draining) return;
    this.draining = true;
    try {
      for (let next = this.queue.shift(); next; next = this.queue.shift()) {
        const now = this.deps.clock.now();
        const { state, effects } = step(this.state, next, now);
        this.state = state;
        for (const effect of effects) this.performSafely(effect, now);
      }
    } finally {
      this.draining = false;
    }
    this.changed();
  }

  /** A failure to perform an effect goes back to the coordinator, which decides what it means. */
  private performSafely(effect: Effect, now: number): void {
    try {
      this.perform(effect, now);
    } catch (err) {
      this.log.error(`could not perform ${effect.type}`, { error: errorText(err) });
      if (effect.type !== 'run:finished') this.queue.push({ type: 'effect:failed', effect: effect.type, reason: errorText(err) });
    }
  }

  private perform(effect: Effect, now: number): void {
    switch (effect.type) {
      case 'round:start':
        return this.startRound(effect);
      case 'update:validate':
        return this.validate(effect.submission);
      case 'update:accept': {
        const s = this.submissions.get(effect.submission);
        this.submissions.delete(effect.submission);
        if (this.secure && s) this.secure.add(s.payload);
        else if (s?.remote && this.aggregator && this.deps.remote) {
          this.deps.remote.add(s.remote, this.aggregator.key, effect.weight);
          const nodes = (this.aggregator.nodes ??= new Map());
          nodes.set(s.remote.node, [...(nodes.get(s.remote.node) ?? []), effect.deviceId]);
        } else if (s?.kept && this.aggregator && this.deps.sums) {
          this.deps.sums.add(s.kept, this.aggregator.key, effect.weight);
          this.aggregator.inThreads = true;
        } else if (!s?.validated || !this.aggregator) throw new Error(`update ${effect.submission} of device ${effect.deviceId} has no validated payload or no round to add to`);
        else this.aggregator.sum.add(s.validated.delta, effect.weight);
        this.devices.counted(effect.deviceId, effect.metrics);
        s.answer({ ok: true, data: { accepted: true } });
        return;
      }
      case 'update:reject': {
        const s = this.submissions.get(effect.submission);
        this.submissions.delete(effect.submission);
        if (s?.kept) this.deps.sums?.drop(s.kept);
        if (s?.remote) this.deps.remote?.drop(s.remote);
        if (effect.late) this.counters.lateUpdates++;
        this.counters.rejectedUpdates++;
        this.note('warn', 'update:rejected', `update rejected (${effect.code}): ${effect.message}`, { deviceId: effect.deviceId, code: effect.code });
        s?.answer({ ok: false, error: { code: effect.code, message: effect.message } });
        return;
      }
      case 'round:notify-end':
        for (const id of effect.deviceIds) this.deps.port.sendRoundEnd(id, { runId: effect.runId, round: effect.round, attempt: effect.attempt, outcome: effect.outcome, counted: effect.counted.includes(id) });
        return;
      case 'round:aggregate':
        return this.aggregate(effect);
      case 'model:evaluate':
        return this.evaluate(effect);
      case 'round:record': {
        const r = effect.record;
        this.persist(effect.type, () => this.deps.store.recordRound(r));
        if (effect.evaluated) {
          const acc = r.testAccuracy === null ? `not evaluated (${r.reason})` : `test accuracy ${(r.testAccuracy * 100).toFixed(2)} %`;
          this.note('info', 'round:evaluated', `round ${r.round} evaluated: ${acc}`, { runId: r.runId, round: r.round, testAccuracy: r.testAccuracy });
          return;
        }
        // a round that ends without aggregation leaves its share of the sum in the threads: released
        if (r.status !== 'completed' && this.aggregator?.inThreads) void this.deps.sums?.take(this.aggregator.key, 0).catch(() => undefined);
        if (r.status !== 'completed' && this.aggregator?.nodes?.size) void this.deps.remote?.take(this.aggregator.key, counts(this.aggregator.nodes), 0).catch(() => undefined);
        this.aggregator = undefined;
        if (r.status === 'completed') {
          const acc = r.evaluationPending ? 'its model is being evaluated' : r.testAccuracy === null ? 'not evaluated' : `test accuracy ${(r.testAccuracy * 100).toFixed(2)} %`;
          this.note('info', 'round:completed', `round ${r.round} completed: ${r.completed} updates, ${acc}${r.reason ? ` (${r.reason})` : ''}`, { runId: r.runId, round: r.round, testAccuracy: r.testAccuracy, durationMs: r.durationMs });
        } else if (r.status === 'stopped') {
          this.note('warn', 'round:stopped', `round ${r.round} stopped: ${r.reason}`, { runId: r.runId, round: r.round, attempt: r.attempt });
        } else {
          this.note('warn', 'round:failed', `round ${r.round} failed: ${r.reason}${effect.willRetry ? '; retrying' : ''}`, { runId: r.runId, round: r.round, attempt: r.attempt, willRetry: effect.willRetry });
        }
        return;
      }
      case 'model:publish':
        const { testAccuracy: accuracy, testLoss: loss } = effect;
        if (accuracy !== null && loss !== null) this.persist(effect.type, () => this.models.setMetrics(effect.version, accuracy, loss));
        this.deps.port.broadcastModel({ version: effect.version, runId: effect.runId, round: effect.round, testAccuracy: effect.testAccuracy, testLoss: effect.testLoss });
        return;
      case 'run:finished':
        this.aggregator = undefined;
        this.persist(effect.type, () => this.deps.store.finishRun(effect.runId, effect.status, effect.reason, now));
        this.note(effect.status === 'done' ? 'info' : 'warn', 'run:finished', `run ${effect.runId} ${effect.status}: ${effect.reason}`, { runId: effect.runId, status: effect.status });
        // a run that completed hands its final version on: live at once, or a candidate for a canary
        if (effect.status === 'done' && this.state.run?.config && this.models.current) {
          const [config, version] = [this.state.run.config, this.models.current.version];
          this.track(this.writes.then(() => this.evaluations.runFinished(config, version)));
        }
        return;
      case 'timer:set':
        return this.arm(effect.at);
      case 'secagg:answer': {
        const p = this.secAggPending.get(effect.message);
        this.secAggPending.delete(effect.message);
        if (!p) return;
        if (effect.error) {
          this.counters.badMessages++;
          this.log.warn('secure aggregation message refused', { deviceId: effect.deviceId, code: effect.error.code, message: effect.error.message });
          return p.answer({ ok: false, error: effect.error });
        }
        this.secure?.keep(p.deviceId, this.identityKeys.get(p.deviceId)!.key, p.message);
        return p.answer({ ok: true, data: null });
      }
      case 'secagg:neighbours': {
        const secure = this.requireSecure(effect);
        secure.neighbours = effect.neighbours;
        const devices = Object.keys(effect.neighbours).length;
        let sent = 0;
        for (const id of Object.keys(effect.neighbours)) sent += this.sendSecAgg(id, 'secagg:neighbours', { runId: effect.runId, round: effect.round, attempt: effect.attempt, devices, neighbours: secure.neighbourKeys(id).map(neighbourToWire) });
        this.queue.push({ type: 'round:sent', runId: effect.runId, round: effect.round, attempt: effect.attempt, bytesDown: sent });
        return;
      }
      case 'secagg:forward': {
        const secure = this.requireSecure(effect);
        const survivors = new Set(effect.survivors);
        let sent = 0;
        for (const id of effect.survivors) sent += this.sendSecAgg(id, 'secagg:shares', { runId: effect.runId, round: effect.round, attempt: effect.attempt, shares: sharesToWire(secure.sharesFor(id, survivors)) });
        this.queue.push({ type: 'round:sent', runId: effect.runId, round: effect.round, attempt: effect.attempt, bytesDown: sent });
        return;
      }
      case 'secagg:unmask': {
        const secure = this.requireSecure(effect);
        secure.requests = effect.requests;
        let sent = 0;
        for (const [id, request] of Object.entries(effect.requests)) sent += this.sendSecAgg(id, 'secagg:unmask', { runId: effect.runId, round: effect.round, attempt: effect.attempt, ...request });
        this.queue.push({ type: 'round:sent', runId: effect.runId, round: effect.round, attempt: effect.attempt, bytesDown: sent });
        return;
      }
      default: {
        const never: never = effect;
        throw new Error(`federation: unknown effect ${JSON.stringify(never)}`);
      }
    }
  }

  /** Sends a secure-aggregation message; returns its size on the wire (its text: the byte fields are base64). */
  private sendSecAgg<E extends 'secagg:neighbours' | 'secagg:shares' | 'secagg:unmask'>(deviceId: string, event: E, msg: Parameters<ServerToClientEvents[E]>[0]): number {
    this.deps.port.sendSecAgg(deviceId, event, msg);
    return JSON.stringify(msg).length;
  }

  private requireSecure(ref: { runId: number; round: number; attempt: number }): SecureRound {
    if (!this.secure || this.secure.key !== roundKey(ref)) throw new Error(`round ${ref.round}: no secure round material`);
    return this.secure;
  }

  /** Keeps exactly one timer, at the moment the coordinator named (none for null). */
  private arm(at: number | null): void {
    if (this.timer && this.timer.at === at) return;
    this.timer?.cancel();
    this.timer = undefined;
    if (at === null || this.closed) return;
    const timer = { at, cancel: () => undefined as void };
    timer.cancel = this.deps.clock.setTimer(at, () => {
      if (this.timer === timer) this.timer = undefined;
      this.dispatch({ type: 'tick' });
    });
    this.timer = timer;
  }

  private startRound(effect: Extract<Effect, { type: 'round:start' }>): void {
    const run = this.state.run;
    const global = this.models.current;
    if (!run || !global) throw new Error(`round ${effect.round}: no run or no global model`);
    const strategy = this.deps.strategyFor(run.config);
    const dp = run.config.dp;
    const size = global.weights.values.length;
    this.aggregator = { key: roundKey(effect), sum: dp && effect.privacy ? dpFedAvgAggregator(size, effect.privacy.noiseStd, effect.privacy.expected) : strategy.createAggregator(totalSize(updateSpecs(run.config, global.weights.specs)), run.config) };
    // the strategy's hooks: the training plan, and what the devices evaluate with (the population's label distribution)
    const msg: RoundStart = { runId: effect.runId, round: effect.round, attempt: effect.attempt, model: global.model, modelVersion: global.version, plan: strategy.configureFit(run.config, effect.round, effect.attempt), deadline: effect.deadline, weights: global.payload, ...strategy.configureEvaluate(this.devices.list()) };
    // SCAFFOLD: the server's control variate goes with the model
    if (run.config.strategy === 'scaffold') msg.control = encodeWeights({ specs: global.weights.specs, values: serverControl(global.optimizerState, size) });
    this.secure = undefined;
    if (run.config.secureAggregation) {
      // X25519 when every selected device has it, else P-256 (all of a round's keys must agree)
      const curve = effect.deviceIds.every((id) => this.identityKeys.get(id)?.x25519) ? 'X25519' : 'P-256';
      // under distributed DP the round's bounds (unit weights, the noise's room) come from its sample
      const bounds = effect.privacy?.distributed?.bounds ?? { maxInputs: selectionSize(run.config), maxWeight: run.config.maxExamplesPerDevice, clipNorm: run.config.clipNorm };
      const plan = { context: roundContext(effect.runId, effect.round, effect.attempt), curve, neighbours: run.config.secAggNeighbours, threshold: run.config.secAggThreshold, bounds } as const;
      this.secure = new SecureRound(roundKey(effect), plan, global.weights.values.length, effect.privacy?.distributed ? effect.privacy.expected : undefined);
      msg.secureAggregation = plan;
    }
    const held = effect.deviceIds.map((id) => this.devices.heldVersion(id));
    this.devices.selected(effect.deviceIds);
    if (this.deps.port.downloadsElsewhere) {
      const whole = { weights: global.payload };
      return this.sendRoundStart(effect, msg, (v) => (run.config.downlink === 'delta' && v !== null && v !== global.version ? { ...whole, baseVersion: v } : whole));
    }
    const downloads = this.models.downloads(run.config, held);
    if (typeof downloads === 'function') return this.sendRoundStart(effect, msg, downloads);
    // deltas are encoded off the event loop first; a round that ended meanwhile sends nothing
    this.track(
      downloads.then((ready) => {
        const cur = this.state.current;
        if (this.state.phase === 'training' && cur && roundKey(cur) === roundKey(effect)) this.sendRoundStart(effect, msg, ready);
      }),
    );
  }

  private sendRoundStart(effect: Extract<Effect, { type: 'round:start' }>, msg: RoundStart, download: DownloadsOf): void {
    let bytesDown = 0;
    for (const id of effect.deviceIds) {
      const d = download(this.devices.heldVersion(id));
      bytesDown += d.weights.byteLength + (msg.control?.byteLength ?? 0); // SCAFFOLD sends its control variate with the model
      this.deps.port.sendRoundStart(id, d.baseVersion === undefined ? msg : { ...msg, weights: d.weights, baseVersion: d.baseVersion, ...(d.baseSeed !== undefined ? { baseSeed: d.baseSeed } : {}) });
    }
    this.note('info', 'round:started', `round ${effect.round}${effect.attempt > 1 ? ` (try ${effect.attempt})` : ''} started with ${effect.deviceIds.length} selected devices`, { runId: effect.runId, round: effect.round, attempt: effect.attempt });
    this.dispatch({ type: 'round:sent', runId: effect.runId, round: effect.round, attempt: effect.attempt, bytesDown });
  }

  private validate(submission: number): void {
    const s = this.submissions.get(submission);
    const run = this.state.run;
    const global = this.models.current;
    if (!s || !run || !global) throw new Error(`update ${submission}: nothing to validate it against`);
    const secure = this.secure;
    if (secure) {
      // a masked input: only its size and its signature can be checked; its content is the sum's
      const signature = s.signature ? Uint8Array.from(s.signature) : undefined;
      const key = this.identityKeys.get(s.deviceId)?.key;
      this.track(
        (signature && key ? verifyInput(secure.plan.context, s.deviceId, key, new Uint8Array(s.payload), signature, secure.sum.length) : Promise.resolve('a masked input must be signed by a device with a proven identity key')).then((problem) =>
          this.dispatch(problem === undefined ? { type: 'update:validated', submission, norm: 0, clipped: false } : { type: 'update:invalid', submission, reason: problem }),
        ),
      );
      return;
    }
    // under DP the round's own bound (adaptive clipping moves it from round to round)
    const clip = this.state.current?.privacy?.clip;
    const config = run.config.dp && clip !== undefined ? { ...run.config, dp: { ...run.config.dp, clipNorm: clip } } : run.config;
    const remote = this.deps.remote;
    if (s.remote) {
      const ref = s.remote;
      if (!remote || !this.aggregator?.sum.merge) throw new Error(`update ${submission}: held by node ${ref.node}, and this round's rule cannot add shares of its sum made elsewhere`);
      this.track(
        remote.validate(ref, global.version, config).then(
          (v) => {
            if (this.submissions.get(submission) !== s) return remote.drop(ref); // refused (late, or its node lost) meanwhile
            this.dispatch({ type: 'update:validated', submission, norm: v.norm, clipped: v.clipped });
          },
          (err: unknown) => this.invalid(submission, s.deviceId, err),
        ),
      );
      return;
    }
    const validate = this.deps.validate ?? inlineValidator;
    // a linear rule's sum can be kept in the work threads: the update stays where it is decoded
    const sums = this.deps.sums;
    if (sums && this.aggregator?.sum.merge) {
      this.track(
        sums.validate(s.payload, updateSpecs(config, global.weights.specs), config).then(
          (v) => {
            if (this.submissions.get(submission) !== s) return sums.drop(v.kept); // refused (late) while it was being validated
            s.kept = v.kept;
            this.dispatch({ type: 'update:validated', submission, norm: v.norm, clipped: v.clipped, ...(v.sketch ? { sketch: v.sketch } : {}) });
          },
          (err: unknown) => this.invalid(submission, s.deviceId, err),
        ),
      );
      return;
    }
    this.track(
      validate(s.payload, updateSpecs(config, global.weights.specs), config).then(
        (v) => {
          s.validated = v;
          this.dispatch({ type: 'update:validated', submission, norm: v.norm, clipped: v.clipped, sketch: v.sketch });
        },
        (err: unknown) => this.invalid(submission, s.deviceId, err),
      ),
    );
  }

  private invalid(submission: number, deviceId: string, err: unknown): void {
    if (!(err instanceof WeightsFormatError)) this.log.error('update validation failed unexpectedly', { deviceId, error: errorText(err) });
    this.dispatch({ type: 'update:invalid', submission, reason: err instanceof WeightsFormatError ? err.message : `could not be validated (${errorText(err)})` });
  }

  private aggregate(effect: Extract<Effect, { type: 'round:aggregate' }>): void {
    const ref = { runId: effect.runId, round: effect.round, attempt: effect.attempt };
    const aggregator = this.aggregator;
    const global = this.models.current;
    this.track(
      (async () => {
        await new Promise<void>((resolve) => setImmediate(resolve)); // off the caller's stack: a deadline may pass meanwhile
        if (!aggregator || aggregator.key !== roundKey(ref) || !global) throw new Error('no aggregator for this round');
        const config = this.state.run?.config;
        if (!config) throw new Error('no run to aggregate for');
        // the vector the mean update is added to: the model (and SCAFFOLD's control variate)
        const base = aggregationBase(config, global.weights.values, global.optimizerState);
        // the threads' shares of the sum, merged: O(threads × model)
        if (aggregator.inThreads && this.deps.sums) for (const p of await this.deps.sums.take(aggregator.key, base.length)) aggregator.sum.merge!(p);
        // and the cluster nodes' shares: O(nodes × model), whatever the number of devices
        if (aggregator.nodes?.size && this.deps.remote) for (const p of await this.deps.remote.take(aggregator.key, counts(aggregator.nodes), base.length)) aggregator.sum.merge!(p);
        const aggregated = effect.secagg ? await this.unmasked(ref, effect.secagg, global.weights.values) : aggregator.sum.result(base);
        if (!aggregated) throw new Error('no update to aggregate');
        // the strategy's step from the round's mean: q-FFL's scale, a server optimizer's state, SCAFFOLD's share of the devices
        const share = Math.min(1, effect.updates / Math.max(1, this.devices.connectedCount()));
        const next = this.deps.strategyFor(config).aggregateFit(config, { global: global.weights.values, aggregated, failures: effect.failures, share, ...(effect.scale !== undefined ? { scale: effect.scale } : {}), ...(global.optimizerState ? { state: global.optimizerState } : {}) });
        for (let i = 0; i < next.values.length; i++) if (!Number.isFinite(next.values[i])) throw new Error(`the aggregate has a non-finite value at ${i}`);
        const saved = await this.models.publish(effect.runId, effect.round, config, { specs: global.weights.specs, values: next.values }, this.deps.clock.now(), { state: next.state, parent: global.version });
        // adaptive clipping releases the share of updates its bound left unclipped, noised like the sum
        const count = effect.clipCount;
        const unclippedShare = count ? (count.unclipped - effect.updates / 2 + addGaussianNoise(new Float64Array(1), count.noiseStd)[0]!) / count.expected + 0.5 : undefined;
        this.dispatch({ type: 'round:aggregated', ...ref, version: saved.version, ...(unclippedShare !== undefined ? { unclippedShare } : {}) });
      })().catch((err: unknown) => {
        this.log.error('aggregation failed', { round: effect.round, error: errorText(err) });
        this.dispatch({ type: 'round:aggregation-failed', ...ref, reason: errorText(err) });
      }),
    );
  }

  /** The secure round's new global model: the old one plus the unmasked FedAvg mean. */
  private async unmasked(ref: { runId: number; round: number; attempt: number }, a: NonNullable<Extract<Effect, { type: 'round:aggregate' }>['secagg']>, global: Float32Array): Promise<Float32Array> {
    const secure = this.requireSecure(ref);
    const { mean, totalWeight } = await secure.mean(a, secure.divideBy);
    this.log.info('secure round unmasked', { round: ref.round, inputs: a.inputs.length, totalWeight });
    return global.map((w, i) => w + mean[i]!);
  }

  private evaluate(effect: Extract<Effect, { type: 'model:evaluate' }>): void {
    const ref = { runId: effect.runId, round: effect.round, attempt: effect.attempt };
    const global = this.models.current;
    if (!global || global.version !== effect.version) throw new Error(`model v${effect.version} is not the current model`);
    this.track(
      this.deps.evaluator.evaluate(global.model, global.weights).then(
        (r) => this.dispatch({ type: 'round:evaluated', ...ref, version: effect.version, accuracy: r.accuracy, loss: r.loss }),
        (err: unknown) => {
          this.log.error('evaluation failed', { round: effect.round, error: errorText(err) });
          this.dispatch({ type: 'round:evaluation-failed', ...ref, version: effect.version, reason: errorText(err) });
        },
      ),
    );
  }
}

/**
 * The device's protocol client: proves its identity and joins the federation, and for each round
 * it is selected for runs the device's round (shared/device.ts) and submits the update.
 * Reconnects by itself. Holds no DOM: the page subscribes to snapshots.
 */
import * as tf from '@tensorflow/tfjs';
import { io, type Socket } from 'socket.io-client';
import { keepRoundState, memoryInProcess, runDeviceRound, runEvaluation, type DeviceMemory, type HeldModel } from '../../shared/device.ts';
import type { DeviceIdentity } from '../../shared/identity.ts';
import { buildModel, setFlatWeights, weightSpecs, type ModelName } from '../../shared/models.ts';
import { decodeWeights } from '../../shared/weights.ts';
import type { ClientToServerEvents, EvalStart, RoundEnd, RoundStart, ServerToClientEvents } from '../../shared/protocol.ts';
import type { DEVICE_STATES, UpdateSubmit } from '../../shared/schemas.ts';
import type { LocalData } from '../../shared/train.ts';
import type { RoundHooks, RoundRunner } from '../ml/trainer.ts';
import { createYielder } from '../../shared/yield.ts';
import { SecAggSession, type SecAggStage } from '../../shared/secagg/session.ts';
import { advertToWire, neighbourFromWire, revealToWire, sharesFromWire, sharesToWire, toBase64 } from '../../shared/secagg/wire.ts';
import { codecSeed } from '../../shared/device.ts';
import { joinFederation, type HelloClaims } from './join.ts';

export { memoryInProcess, type DeviceMemory, type HeldModel } from '../../shared/device.ts';

export type DeviceState = (typeof DEVICE_STATES)[number];
export type Connection = 'offline' | 'connecting' | 'connected' | 'disconnected';

export interface RoundHistoryEntry {
  runId: number;
  round: number;
  attempt: number;
  modelVersion: number;
  accuracyBefore: number | null;
  accuracyAfter: number | null;
  /** personalization: the held-out accuracy of the mix of personal and global models, and the label distance that weighs it */
  accuracyMixed: number | null;
  labelDistance: number | null;
  lossAfter: number | null;
  trainMs: number | null;
  bytesDown: number;
  bytesUp: number;
  outcome: 'trained' | 'counted' | 'not counted' | 'rejected' | 'not sent' | 'stopped' | 'failed';
  message?: string;
}

export interface DeviceSnapshot {
  connection: Connection;
  state: DeviceState;
  progress: number | null;
  batches: { done: number; total: number } | null;
  loss: number | null;
  current: { runId: number; round: number; attempt: number } | null;
  history: RoundHistoryEntry[];
  globalModel: { version: number; round: number; testAccuracy: number | null } | null;
  /** the stage of the secure-aggregation protocol, in a round that aggregates securely */
  secure: SecAggStage | null;
  /** what the protocol cost this device in its last secure rounds (ms per step), newest last */
  secureCosts: { runId: number; round: number; attempt: number; keys: number; shares: number; mask: number; reveal: number }[];
  /** the model this device serves predictions from: a canary's candidate while it is tried here, else the live or latest global model it received */
  serving: { version: number; why: 'canary' | 'live' | 'trained' } | null;
  /** its evaluation rounds, newest last: what it reported (or why it could not) */
  evaluations: { evalId: number; purpose: 'evaluate' | 'canary'; results: { version: number; accuracy: number }[]; outcome: 'reported' | 'refused' | 'failed'; message?: string }[];
  error: string | null;
}

const yieldToHost = createYielder();

/** The entry's outcome once the server has said how the round ended. */
function settle(h: RoundHistoryEntry, end: RoundEnd): RoundHistoryEntry {
  if (h.runId !== end.runId || h.round !== end.round || h.attempt !== end.attempt || (h.outcome !== 'trained' && h.outcome !== 'stopped')) return h;
  const outcome = end.outcome === 'completed' ? (end.counted ? 'counted' : 'not counted') : end.outcome;
  return { ...h, outcome };
}

/**
 * What happens to an update between training and sending it: the identity for an honest device.
 * Fault injection (a silent or late device) and tests (a gated or hostile device) replace it;
 * returning undefined sends nothing.
 */
export type BeforeSubmit = (submission: UpdateSubmit, round: RoundStart) => Promise<UpdateSubmit | undefined>;

export interface DeviceClientOptions {
  identity: DeviceIdentity;
  /** what the device says about itself at hello (its id comes from the identity) */
  hello: Omit<HelloClaims, 'modelVersion'>;
  train: LocalData;
  heldOut: LocalData;
  url?: string;
  memory?: DeviceMemory;
  beforeSubmit?: BeforeSubmit;
  /**
   * Where the device's part of a round runs: in the page's training worker (ml/trainer.ts), which
   * reads the data and keeps the held model in the tab's IndexedDB as `memory` does; absent, on
   * the page's main thread with `train`, `heldOut` and `memory`.
   */
  runRound?: RoundRunner;
}

export class DeviceClient {
  private socket: Socket<ServerToClientEvents, ClientToServerEvents> | undefined;
  private readonly listeners = new Set<(s: DeviceSnapshot) => void>();
  private readonly models = new Map<ModelName, tf.LayersModel>();
  private stopRound: { runId: number; round: number } | undefined;
  private busy = false;
  /** a round:start that came while the last round was still unwinding */
  private nextStart: RoundStart | undefined;
  /** settles when the round in progress (if any) has unwound */
  private working: Promise<void> = Promise.resolve();
  private lastEnd: RoundEnd | undefined;
  /** the global model version held, as last told to the server */
  private heldVersion = 0;
  snapshot: DeviceSnapshot = { connection: 'offline', state: 'idle', progress: null, batches: null, loss: null, current: null, history: [], globalModel: null, secure: null, secureCosts: [], serving: null, evaluations: [], error: null };
  /** the weights of the model served (snapshot.serving), when they came other than as the held global model */
  private served: HeldModel | undefined;
  /** the secure-aggregation session of the current round: it outlives the round's work until the round ends (the reveal comes after the upload) */
  private secure: { key: string; session: Promise<SecAggSession> } | undefined;

  private readonly memory: DeviceMemory;

  constructor(private readonly options: DeviceClientOptions) {
    this.memory = options.memory ?? memoryInProcess();
  }

  get deviceId(): string {
    return this.options.identity.deviceId;
  }

  subscribe(listener: (s: DeviceSnapshot) => void): () => void {
    this.listeners.add(listener);
    listener(this.snapshot);
    return () => this.listeners.delete(listener);
  }

  private set(patch: Partial<DeviceSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const l of this.listeners) l(this.snapshot);
  }

  join(): void {
    if (this.socket) return;
    const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(this.options.url ?? '/', { transports: ['websocket'] });
    this.socket = socket;
    this.set({ connection: 'connecting' });
    socket.on('connect', () => {
      this.hello(socket).catch((err: unknown) => this.set({ error: `could not join: ${err instanceof Error ? err.message : String(err)}` }));
    });
    socket.on('disconnect', () => {
      // the server dropped this device from a secure round: nothing more will come for it
      void this.secure?.session.then((s) => s.abort('disconnected'), () => undefined);
      this.set({ connection: this.socket ? 'disconnected' : 'offline' });
    });
    socket.on('round:start', (msg) => void this.runRound(msg));
    socket.on('round:end', (msg) => this.onRoundEnd(msg));
    socket.on('secagg:neighbours', (msg) =>
      void this.secureStep(msg, async (session) => {
        const reply = await session.onNeighbours({ devices: msg.devices, neighbours: msg.neighbours.map(neighbourFromWire) });
        return socket.timeout(30_000).emitWithAck('secagg:shares', { runId: msg.runId, round: msg.round, attempt: msg.attempt, shares: sharesToWire(reply.shares), signature: toBase64(reply.signature) });
      }),
    );
    socket.on('secagg:shares', (msg) => void this.secureStep(msg, async (session) => void (await session.onShares(sharesFromWire(msg.shares)))));
    socket.on('secagg:unmask', (msg) =>
      void this.secureStep(msg, async (session) => {
        const reveal = await session.onUnmask({ survivors: msg.survivors, dropped: msg.dropped });
        this.set({ secureCosts: [...this.snapshot.secureCosts.slice(-49), { runId: msg.runId, round: msg.round, attempt: msg.attempt, ...session.spentMs }] });
        return socket.timeout(30_000).emitWithAck('secagg:reveal', { runId: msg.runId, round: msg.round, attempt: msg.attempt, ...revealToWire(reveal) });
      }),
    );
    // a model's metrics come in a second publication once it is evaluated, maybe after a newer model's: never go back
    socket.on('model:published', (msg) => {
      const known = this.snapshot.globalModel;
      if (!known || known.version <= msg.version) this.set({ globalModel: { version: msg.version, round: msg.round, testAccuracy: msg.testAccuracy } });
    });
    socket.on('eval:start', (msg) => void this.evaluate(msg));
    socket.on('canary:end', (msg) => {
      // the canary is over: serve the live model (the candidate, if it was promoted)
      const live = this.canaryModels?.find((m) => m.version === msg.live);
      this.canaryModels = undefined;
      if (live) this.serve(live, 'live');
    });
    socket.on('server:error', (err) => this.set({ error: `${err.code}: ${err.message}` }));
  }

  /** the canary's [live, candidate], while this device tries the candidate */
  private canaryModels: HeldModel[] | undefined;

  private serve(m: HeldModel, why: NonNullable<DeviceSnapshot['serving']>['why']): void {
    this.served = m;
    this.set({ serving: { version: m.version, why } });
  }

  /**
   * The model this device serves predictions from (the drawing pad): a canary's candidate while it
   * tries one, else the live version — the global model it holds when that is the live one, or the
   * live one fetched once from the server — and, offline, the global model it holds.
   */
  async servingModel(): Promise<{ version: number; model: tf.LayersModel } | undefined> {
    if (!this.served || this.snapshot.serving?.why !== 'canary') {
      const live = await this.fetchLive().catch(() => undefined);
      if (live) this.serve(live, 'live');
    }
    const m = this.served ?? (await this.memory.loadModel().catch(() => undefined));
    if (!m) return undefined;
    if (!this.served) this.set({ serving: { version: m.version, why: 'trained' } });
    const model = this.model(m.model);
    setFlatWeights(model, m.weights);
    return { version: m.version, model };
  }

  /** The live version from the server (its record, then its weights unless this device already has them). */
  private async fetchLive(): Promise<HeldModel | undefined> {
    const base = this.options.url ?? globalThis.location?.origin;
    if (!base) return undefined;
    const card = (await (await fetch(new URL('/api/models/latest/card.json', base))).json()) as { version?: number; model?: ModelName };
    if (!card.version || !card.model) return undefined;
    if (this.served?.version === card.version) return this.served;
    const held = await this.memory.loadModel().catch(() => undefined);
    if (held?.version === card.version) return held;
    const res = await fetch(new URL(`/api/models/${card.version}/weights.bin`, base));
    if (!res.ok) return undefined;
    const values = new Float32Array(await res.arrayBuffer());
    const specs = weightSpecs(this.model(card.model));
    return { version: card.version, model: card.model, weights: { specs, values } };
  }

  /** An evaluation round: the versions evaluated on held-out data, aggregates reported; a canary's candidate is served meanwhile. */
  private async evaluate(msg: EvalStart): Promise<void> {
    const entry: DeviceSnapshot['evaluations'][number] = { evalId: msg.evalId, purpose: msg.purpose, results: [], outcome: 'failed' };
    const previous = this.snapshot.state;
    try {
      if (this.busy) throw new Error('the device is training');
      this.set({ state: 'evaluating' });
      const report = await runEvaluation(msg, { model: (name) => this.model(name), heldOut: this.options.heldOut });
      entry.results = report.results.map((r) => ({ version: r.version, accuracy: r.accuracy }));
      if (msg.purpose === 'canary' && msg.models.length === 2) {
        this.canaryModels = msg.models.map((m) => ({ version: m.version, model: m.model, weights: decodeWeights(m.weights instanceof Uint8Array ? m.weights : new Uint8Array(m.weights as ArrayBuffer)) }));
        this.serve(this.canaryModels[1]!, 'canary');
      }
      const ack = await this.socket?.timeout(30_000).emitWithAck('eval:report', report);
      entry.outcome = ack?.ok ? 'reported' : 'refused';
      if (ack && !ack.ok) entry.message = `${ack.error.code}: ${ack.error.message}`;
    } catch (err) {
      entry.message = err instanceof Error ? err.message : String(err);
    } finally {
      if (this.snapshot.state === 'evaluating') this.set({ state: previous === 'evaluating' ? 'idle' : previous });
      this.set({ evaluations: [...this.snapshot.evaluations.slice(-19), entry] });
    }
  }

  /** Proves the identity: the server's challenge, signed with the device's key, goes with the hello. */
  private async hello(socket: Socket<ServerToClientEvents, ClientToServerEvents>): Promise<void> {
    const held = await this.memory.loadModel().catch(() => undefined);
    this.heldVersion = held?.version ?? 0;
    const result = await joinFederation(socket, this.options.identity, { ...this.options.hello, ...(this.heldVersion ? { modelVersion: this.heldVersion } : {}) });
    if (result.ok) this.set({ connection: 'connected', error: null, ...(result.data.globalModel ? { globalModel: { version: result.data.globalModel.version, round: result.data.globalModel.round, testAccuracy: result.data.globalModel.testAccuracy } } : {}) });
    else this.set({ error: `the server refused to join: ${result.error.code}: ${result.error.message}` });
  }

  /**
   * Disconnects, stops the round in progress at its next batch, and frees the models' tensors.
   * Resolves once nothing uses the device's data any more (the caller may then dispose it); the
   * device can join again.
   */
  async leave(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    if (this.snapshot.current) this.stopRound = { ...this.snapshot.current };
    socket?.disconnect();
    this.set({ connection: 'offline', state: 'idle', progress: null, batches: null, current: null });
    await this.working;
    if (!this.socket) this.disposeModels();
  }

  private disposeModels(): void {
    for (const m of this.models.values()) m.dispose();
    this.models.clear();
  }

  private report(state: DeviceState, extra: { progress?: number; loss?: number } = {}): void {
    const current = this.snapshot.current;
    this.socket?.emit('device:state', { state, ...(current ? { runId: current.runId, round: current.round, attempt: current.attempt } : {}), modelVersion: this.heldVersion, ...extra });
  }

  /** One step of the round's secure-aggregation session; a refusal or failure shows as the device's error. */
  private async secureStep(ref: { runId: number; round: number; attempt: number }, act: (s: SecAggSession) => Promise<{ ok: boolean; error?: { code: string; message: string } } | void>): Promise<void> {
    const secure = this.secure;
    if (!secure || secure.key !== `${ref.runId}:${ref.round}:${ref.attempt}`) return;
    try {
      const ack = await act(await secure.session);
      if (ack && !ack.ok) this.set({ error: `secure aggregation, round ${ref.round}: ${ack.error?.code}: ${ack.error?.message}` });
    } catch (err) {
      this.set({ error: `secure aggregation, round ${ref.round}: ${err instanceof Error ? err.message : String(err)}` });
    }
  }

  private onRoundEnd(msg: RoundEnd): void {
    const next = this.nextStart;
    if (next && next.runId === msg.runId && next.round === msg.round && next.attempt === msg.attempt) this.nextStart = undefined;
    if (this.secure?.key === `${msg.runId}:${msg.round}:${msg.attempt}`) {
      const ended = this.secure;
      this.secure = undefined;
      void ended.session.then((s) => s.abort('the round ended'), () => undefined);
      this.set({ secure: null });
    }
    const current = this.snapshot.current;
    if (this.busy && current && current.runId === msg.runId && current.round === msg.round) {
      // The round closed (quorum, failure or stop) while this device still works on it; the
      // entry is settled when the work unwinds, or now if it already has.
      this.stopRound = { runId: msg.runId, round: msg.round };
      this.lastEnd = msg;
      return;
    }
    this.set({ history: this.snapshot.history.map((h) => settle(h, msg)) });
  }

  private model(name: ModelName): tf.LayersModel {
    let m = this.models.get(name);
    if (!m) {
      m = buildModel(name);
      this.models.set(name, m);
    }
    return m;
  }

  private runRound(msg: RoundStart): Promise<void> {
    // The server frees a device once its update is counted, and may select it for the next round
    // before this device has finished with the last one (its ack, keeping its residual): that round
    // starts as soon as this one unwinds. Only the latest such start is kept.
    if (this.busy) {
      this.nextStart = msg;
      return Promise.resolve();
    }
    this.busy = true;
    this.working = this.round(msg);
    return this.working;
  }

  /** Starts the round's secure-aggregation session and sends its key advert. */
  private startSecure(msg: RoundStart, plan: NonNullable<RoundStart['secureAggregation']>): Promise<SecAggSession> {
    const key = `${msg.runId}:${msg.round}:${msg.attempt}`;
    const session = SecAggSession.begin(this.options.identity, plan, (stage) => this.set({ secure: stage }));
    this.secure = { key, session };
    session.catch(() => undefined);
    void this.secureStep(msg, async (s) => {
      return this.socket?.timeout(30_000).emitWithAck('secagg:keys', { runId: msg.runId, round: msg.round, attempt: msg.attempt, ...advertToWire(s.advert) });
    });
    return session;
  }

  private async round(msg: RoundStart): Promise<void> {
    this.stopRound = undefined;
    // outside a canary the device serves the newest global model it trains on
    if (!this.canaryModels && this.served) {
      this.served = undefined;
      this.set({ serving: null });
    }
    const entry: RoundHistoryEntry = { runId: msg.runId, round: msg.round, attempt: msg.attempt, modelVersion: msg.modelVersion, accuracyBefore: null, accuracyAfter: null, accuracyMixed: null, labelDistance: null, lossAfter: null, trainMs: null, bytesDown: msg.weights.byteLength, bytesUp: 0, outcome: 'trained' };
    // The round's model is the latest global model, even if this device missed its publication.
    const known = this.snapshot.globalModel;
    const globalModel = !known || known.version < msg.modelVersion ? { version: msg.modelVersion, round: msg.round - 1, testAccuracy: null } : known;
    this.set({ current: { runId: msg.runId, round: msg.round, attempt: msg.attempt }, state: 'downloading', progress: null, batches: null, loss: null, globalModel });
    this.report('downloading');
    const shouldStop = () => this.stopRound !== undefined && this.stopRound.runId === msg.runId && this.stopRound.round === msg.round;
    // A secure round: keys go out at once, while the device trains.
    const plan = msg.secureAggregation;
    const secure = plan ? this.startSecure(msg, plan) : undefined;
    try {
      const hooks: RoundHooks = {
        onPhase: (phase) => {
          this.heldVersion = msg.modelVersion; // the download is done: the device holds this version now
          this.set({ state: phase });
          this.report(phase, phase === 'training' ? { progress: 0 } : {});
        },
        onProgress: (done, total, loss) => {
          this.set({ progress: done / total, batches: { done, total }, loss });
          this.report('training', { progress: done / total, ...(Number.isFinite(loss) ? { loss } : {}) });
        },
        shouldStop,
      };
      const round = this.options.runRound
        ? await this.options.runRound(msg, this.deviceId, hooks)
        : await runDeviceRound(msg, { deviceId: this.deviceId, model: this.model(msg.model), train: this.options.train, heldOut: this.options.heldOut, memory: this.memory, hooks: { ...hooks, yieldToHost } });
      Object.assign(entry, { accuracyBefore: round.accuracyBefore, accuracyAfter: round.accuracyAfter, accuracyMixed: round.personalization?.accuracyMixed ?? null, labelDistance: round.personalization?.distance ?? null, lossAfter: round.lossAfter, trainMs: round.trainMs });
      const socket = this.socket;
      if (!round.submission || shouldStop() || !socket) {
        entry.outcome = 'stopped';
        entry.message = 'the round closed before local training finished';
        return;
      }
      let prepared = round.submission;
      if (secure) {
        const session = await secure;
        const masked = await session.maskedInput(round.delta as Float32Array, round.submission.numExamples, codecSeed(msg.plan.seed, this.deviceId));
        prepared = { ...round.submission, delta: masked.payload, signature: masked.signature };
      }
      const submission = this.options.beforeSubmit ? await this.options.beforeSubmit(prepared, msg) : prepared;
      if (!submission) {
        entry.outcome = 'not sent';
        return;
      }
      entry.bytesUp = submission.delta.byteLength;
      this.set({ state: 'uploading', progress: null });
      this.report('uploading');
      const ack = await socket.timeout(60_000).emitWithAck('update:submit', submission);
      if (!ack.ok) {
        entry.outcome = 'rejected';
        entry.message = `${ack.error.code}: ${ack.error.message}`;
      }
      await keepRoundState(msg, round, ack.ok, this.memory);
    } catch (err) {
      entry.outcome = shouldStop() ? 'stopped' : 'failed';
      entry.message = err instanceof Error ? err.message : String(err);
      if (msg.baseVersion !== undefined) this.heldVersion = 0; // a delta that cannot be applied: ask for the full model
      this.set({ error: `round ${msg.round}: ${entry.message}` });
    } finally {
      this.busy = false;
      const settled = this.lastEnd ? settle(entry, this.lastEnd) : entry;
      this.lastEnd = undefined;
      this.set({ state: 'idle', progress: null, batches: null, current: null, history: [...this.snapshot.history, settled] });
      this.report('idle');
      const next = this.nextStart;
      this.nextStart = undefined;
      if (next) void this.runRound(next);
    }
  }
}

/**
 * The device's protocol client: joins the federation, and for each round it is selected for,
 * downloads the global model, evaluates it, trains, and uploads Δ and n. Reconnects by itself.
 * Holds no DOM: the page subscribes to snapshots.
 */
import * as tf from '@tensorflow/tfjs';
import { io, type Socket } from 'socket.io-client';
import { buildModel, type ModelName } from '../../shared/models.ts';
import type { ClientToServerEvents, RoundEnd, RoundStart, ServerToClientEvents } from '../../shared/protocol.ts';
import type { DEVICE_STATES, Hello } from '../../shared/schemas.ts';
import { encodeWithFeedback } from '../../shared/codec.ts';
import { applyModelDelta } from '../../shared/model-delta.ts';
import { createRng, hashString } from '../../shared/rng.ts';
import { computeUpdate, type LocalData } from '../../shared/train.ts';
import { decodeWeights, type FlatWeights } from '../../shared/weights.ts';
import { createYielder } from '../../shared/yield.ts';

export type DeviceState = (typeof DEVICE_STATES)[number];
export type Connection = 'offline' | 'connecting' | 'connected' | 'disconnected';

export interface RoundHistoryEntry {
  runId: number;
  round: number;
  attempt: number;
  modelVersion: number;
  accuracyBefore: number | null;
  accuracyAfter: number | null;
  lossAfter: number | null;
  trainMs: number | null;
  bytesDown: number;
  bytesUp: number;
  outcome: 'trained' | 'counted' | 'not counted' | 'rejected' | 'stopped' | 'failed';
  message?: string;
}

export interface DeviceSnapshot {
  connection: Connection;
  state: DeviceState;
  progress: number | null;
  batches: { done: number; total: number } | null;
  loss: number | null;
  current: { runId: number; round: number } | null;
  history: RoundHistoryEntry[];
  globalModel: { version: number; round: number; testAccuracy: number | null } | null;
  error: string | null;
}

const yieldToHost = createYielder();

/** The entry's outcome once the server has said how the round ended. */
function settle(h: RoundHistoryEntry, end: RoundEnd): RoundHistoryEntry {
  if (h.runId !== end.runId || h.round !== end.round || h.attempt !== end.attempt || (h.outcome !== 'trained' && h.outcome !== 'stopped')) return h;
  const outcome = end.outcome === 'completed' ? (end.counted ? 'counted' : 'not counted') : end.outcome;
  return { ...h, outcome };
}

/** The last global model this device downloaded: the base a server may send the next one against. */
export interface HeldModel {
  version: number;
  model: ModelName;
  weights: FlatWeights;
}

/**
 * What the device keeps between rounds and across reloads: the held global model, and the error-
 * feedback residual of a topk codec (what it has not sent yet), per run. The page keeps them in
 * IndexedDB; tests and Node keep them in memory.
 */
export interface DeviceMemory {
  loadModel(): Promise<HeldModel | undefined>;
  saveModel(model: HeldModel | undefined): Promise<void>;
  loadResidual(key: string): Promise<Float32Array | undefined>;
  saveResidual(key: string, residual: Float32Array | undefined): Promise<void>;
}

export function memoryInProcess(): DeviceMemory {
  let model: HeldModel | undefined;
  const residuals = new Map<string, Float32Array>();
  return {
    loadModel: async () => model,
    saveModel: async (m) => {
      model = m;
    },
    loadResidual: async (key) => residuals.get(key),
    saveResidual: async (key, r) => {
      residuals.clear(); // one run at a time: an older run's residual is of no use
      if (r) residuals.set(key, r);
    },
  };
}

export interface DeviceClientOptions {
  hello: Hello;
  train: LocalData;
  heldOut: LocalData;
  url?: string;
  memory?: DeviceMemory;
}

export class DeviceClient {
  private socket: Socket<ServerToClientEvents, ClientToServerEvents> | undefined;
  private readonly listeners = new Set<(s: DeviceSnapshot) => void>();
  private readonly models = new Map<ModelName, tf.LayersModel>();
  private stopRound: { runId: number; round: number; attempt: number } | undefined;
  private busy = false;
  private lastEnd: RoundEnd | undefined;
  snapshot: DeviceSnapshot = { connection: 'offline', state: 'idle', progress: null, batches: null, loss: null, current: null, history: [], globalModel: null, error: null };

  private readonly memory: DeviceMemory;
  private held: HeldModel | undefined;

  constructor(private readonly options: DeviceClientOptions) {
    this.memory = options.memory ?? memoryInProcess();
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
    socket.on('connect', async () => {
      this.held ??= await this.memory.loadModel().catch(() => undefined);
      socket.emit('device:hello', { ...this.options.hello, ...(this.held ? { modelVersion: this.held.version } : {}) }, (result) => {
        if (result.ok) this.set({ connection: 'connected', error: null });
        else this.set({ error: `the server refused to join: ${result.error.message}` });
      });
    });
    socket.on('disconnect', () => this.set({ connection: this.socket ? 'disconnected' : 'offline' }));
    socket.on('round:start', (msg) => void this.runRound(msg));
    socket.on('round:end', (msg) => this.onRoundEnd(msg));
    socket.on('model:published', (msg) => this.set({ globalModel: { version: msg.version, round: msg.round, testAccuracy: msg.testAccuracy } }));
    socket.on('server:error', (err) => this.set({ error: `${err.code}: ${err.message}` }));
  }

  leave(): void {
    const socket = this.socket;
    this.socket = undefined;
    if (this.snapshot.current) this.stopRound = { ...this.snapshot.current, attempt: -1 };
    socket?.disconnect();
    this.set({ connection: 'offline', state: 'idle', progress: null, batches: null, current: null });
  }

  private report(state: DeviceState, extra: { progress?: number; loss?: number } = {}): void {
    const current = this.snapshot.current;
    this.socket?.emit('device:state', { state, ...(current ? { runId: current.runId, round: current.round } : {}), modelVersion: this.held?.version ?? 0, ...extra });
  }

  /** The round's global model: in full, or rebuilt from the held model and the server's delta. */
  private async receiveModel(msg: RoundStart, bytes: Uint8Array, model: tf.LayersModel): Promise<FlatWeights> {
    let weights: FlatWeights;
    if (msg.baseVersion !== undefined) {
      const held = this.held;
      if (!held || held.version !== msg.baseVersion || held.model !== msg.model) {
        this.held = undefined;
        throw new Error(`the server sent a delta against model v${msg.baseVersion}, this device holds ${held ? `v${held.version}` : 'none'}`);
      }
      weights = applyModelDelta(held.weights, held.version, bytes).weights;
    } else {
      const specs = model.weights.map((w) => ({ name: w.originalName, shape: [...w.shape] as number[] }));
      weights = decodeWeights(bytes, specs);
    }
    this.held = { version: msg.modelVersion, model: msg.model, weights };
    await this.memory.saveModel(this.held).catch(() => undefined); // a lost copy only costs a full download
    return weights;
  }

  private onRoundEnd(msg: RoundEnd): void {
    const current = this.snapshot.current;
    if (this.busy && current && current.runId === msg.runId && current.round === msg.round) {
      // The round closed (quorum, failure or stop) while this device still works on it; the
      // entry is settled when the work unwinds, or now if it already has.
      this.stopRound = { runId: msg.runId, round: msg.round, attempt: msg.attempt };
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

  private async runRound(msg: RoundStart): Promise<void> {
    if (this.busy) return; // the server never selects a busy device; ignore defensively
    this.busy = true;
    this.stopRound = undefined;
    const entry: RoundHistoryEntry = { runId: msg.runId, round: msg.round, attempt: msg.attempt, modelVersion: msg.modelVersion, accuracyBefore: null, accuracyAfter: null, lossAfter: null, trainMs: null, bytesDown: 0, bytesUp: 0, outcome: 'trained' };
    this.set({ current: { runId: msg.runId, round: msg.round }, state: 'downloading', progress: null, batches: null, loss: null });
    this.report('downloading');
    const t0 = performance.now();
    try {
      // socket.io delivers binary as ArrayBuffer in the browser.
      const raw = msg.weights as unknown as ArrayBuffer | Uint8Array;
      const bytes = raw instanceof Uint8Array ? raw : new Uint8Array(raw);
      entry.bytesDown = bytes.byteLength;
      const model = this.model(msg.model);
      let global: FlatWeights;
      try {
        global = await this.receiveModel(msg, bytes, model);
      } finally {
        this.report('downloading'); // tells the server which model this device now holds (or none)
      }
      const downloadMs = performance.now() - t0;
      const shouldStop = () => this.stopRound !== undefined && this.stopRound.runId === msg.runId && this.stopRound.round === msg.round;
      const result = await computeUpdate(model, global, this.options.train, this.options.heldOut, msg.plan, {
        onPhase: (phase) => {
          this.set({ state: phase });
          this.report(phase, phase === 'training' ? { progress: 0 } : {});
        },
        onProgress: (done, total, loss) => {
          this.set({ progress: done / total, batches: { done, total }, loss });
          this.report('training', { progress: done / total, ...(Number.isFinite(loss) ? { loss } : {}) });
        },
        shouldStop,
        yieldToHost,
      });
      entry.accuracyBefore = result.before.accuracy;
      entry.accuracyAfter = result.after.accuracy;
      entry.lossAfter = result.after.loss;
      entry.trainMs = result.trainMs;
      if (result.stopped || shouldStop() || !this.socket) {
        entry.outcome = 'stopped';
        entry.message = 'the round closed before local training finished';
        return;
      }
      // Encode with the run's codec; a topk codec adds what earlier rounds left out (error feedback).
      const residualKey = `${msg.runId}:${msg.model}`;
      const residual = await this.memory.loadResidual(residualKey).catch(() => undefined);
      const encoded = encodeWithFeedback(result.delta, residual, msg.plan.codec, createRng((msg.plan.seed ^ hashString(this.options.hello.deviceId)) >>> 0));
      const delta = encoded.payload;
      entry.bytesUp = delta.byteLength;
      this.set({ state: 'uploading', progress: null });
      this.report('uploading');
      const ack = await this.socket.timeout(60_000).emitWithAck('update:submit', {
        runId: msg.runId,
        round: msg.round,
        attempt: msg.attempt,
        numExamples: result.numExamples,
        delta,
        metrics: { accuracyBefore: result.before.accuracy, lossBefore: result.before.loss, accuracyAfter: result.after.accuracy, lossAfter: result.after.loss, downloadMs, evaluateMs: result.evaluateMs, trainMs: result.trainMs },
      });
      if (!ack.ok) {
        entry.outcome = 'rejected';
        entry.message = `${ack.error.code}: ${ack.error.message}`;
      } else if (encoded.residual) {
        await this.memory.saveResidual(residualKey, encoded.residual).catch(() => undefined);
      }
    } catch (err) {
      entry.outcome = 'failed';
      entry.message = err instanceof Error ? err.message : String(err);
      this.set({ error: `round ${msg.round}: ${entry.message}` });
    } finally {
      this.busy = false;
      const settled = this.lastEnd ? settle(entry, this.lastEnd) : entry;
      this.lastEnd = undefined;
      this.set({ state: 'idle', progress: null, batches: null, current: null, history: [...this.snapshot.history, settled] });
      this.report('idle');
    }
  }
}

/**
 * A device's part of a round — one implementation for the browser page, the Node simulation and
 * the tests, with no transport of its own: receive the global model (in full, or rebuilt from the
 * version it holds and the server's delta), evaluate it on held-out data, train, evaluate again,
 * and encode Δ = w_local − w_global with the run's codec (adding the error-feedback residual of a
 * topk codec). The caller sends the submission it returns, then calls `keepRoundState` with the
 * server's answer.
 */
import type * as tf from '@tensorflow/tfjs';
import { encodeWithFeedback } from './codec.ts';
import { applyModelDelta } from './model-delta.ts';
import { applyModelChain, isModelChain } from './model-steps.ts';
import { initialWeights, weightSpecs, type ModelName } from './models.ts';
import type { EvalStart, RoundStart } from './protocol.ts';
import { createRng, hashString } from './rng.ts';
import type { EvalReport, UpdateSubmit } from './schemas.ts';
import { computeUpdate, evaluateLocal, type LocalData, type TrainHooks } from './train.ts';
import { pairedCounts } from './canary.ts';
import { mixedAccuracies, mixWeight, totalVariation } from './personalize.ts';
import { controlCorrection, deviceControlStep, scaffoldUpdateSpecs } from './scaffold.ts';
import { setFlatWeights } from './models.ts';
import { decodeWeights, WeightsFormatError, type FlatWeights, type TensorSpec } from './weights.ts';

/** The last global model this device downloaded: the base a server may send the next one against. */
export interface HeldModel {
  version: number;
  model: ModelName;
  weights: FlatWeights;
}

/**
 * What a device keeps between rounds and across reloads: the held global model, the error-feedback
 * residual of a topk codec (what it has not sent yet), and SCAFFOLD's control variate c_i, per run.
 * The page keeps them in IndexedDB; the simulation and the tests in memory.
 */
export interface DeviceMemory {
  loadModel(): Promise<HeldModel | undefined>;
  saveModel(model: HeldModel | undefined): Promise<void>;
  /** the device's personal model: the round's global model fine-tuned on its own data (personalize.ts) */
  savePersonal?(model: HeldModel): Promise<void>;
  loadResidual(key: string): Promise<Float32Array | undefined>;
  saveResidual(key: string, residual: Float32Array | undefined): Promise<void>;
  /** SCAFFOLD: the device's control variate of a run (absent: 0, the device's first round in it) */
  loadControl(key: string): Promise<Float32Array | undefined>;
  saveControl(key: string, control: Float32Array): Promise<void>;
}

/** A value kept for one run at a time (an older run's is of no use): the codec's residual, the control variate. */
export interface Keyed {
  key: string;
  values: Float32Array;
}

export function memoryInProcess(initial: { model?: HeldModel | undefined; residual?: Keyed | undefined; control?: Keyed | undefined } = {}): DeviceMemory & { residual(): Keyed | undefined; control(): Keyed | undefined; model(): HeldModel | undefined; personal(): HeldModel | undefined } {
  let model = initial.model;
  let residual = initial.residual;
  let control = initial.control;
  let personal: HeldModel | undefined;
  return {
    savePersonal: async (m) => {
      personal = m;
    },
    personal: () => personal,
    loadModel: async () => model,
    saveModel: async (m) => {
      model = m;
    },
    // one run at a time: an older run's residual is of no use
    loadResidual: async (key) => (residual?.key === key ? residual.values : undefined),
    saveResidual: async (key, values) => {
      residual = values ? { key, values } : undefined;
    },
    residual: () => residual,
    loadControl: async (key) => (control?.key === key ? control.values : undefined),
    saveControl: async (key, values) => {
      control = { key, values };
    },
    control: () => control,
    model: () => model,
  };
}

/** Seeds the device's stochastic rounding and random mask: the round's plan seed mixed with the device id. */
export const codecSeed = (planSeed: number, deviceId: string): number => (planSeed ^ hashString(deviceId)) >>> 0;

/** The residual of a run's topk codec, and its SCAFFOLD control variate, are kept per run and model. */
export const residualKey = (runId: number, model: ModelName): string => `${runId}:${model}`;

/** The server sent a delta against a model this device does not hold: it must ask for the full model. */
export class MissingBaseError extends Error {}

/**
 * The round's global model from what the server sent: in full, or rebuilt from the held model (or
 * the run's seeded initial model) and a delta or a chain of steps, which must end at the round's
 * version. `specs`: the architecture a full model must have.
 */
export function rebuildModel(msg: RoundStart, held: HeldModel | undefined, specs?: readonly TensorSpec[]): FlatWeights {
  const bytes = msg.weights instanceof Uint8Array ? msg.weights : new Uint8Array(msg.weights as ArrayBuffer); // socket.io gives browsers ArrayBuffers
  if (msg.baseVersion === undefined) return decodeWeights(bytes, specs);
  const holds = (h: HeldModel | undefined): h is HeldModel => h !== undefined && h.version === msg.baseVersion && h.model === msg.model;
  // the run's seeded initial model: built here, not downloaded
  const base = !holds(held) && msg.baseSeed !== undefined ? { version: msg.baseVersion, model: msg.model, weights: initialWeights(msg.model, msg.baseSeed) } : held;
  if (!holds(base)) throw new MissingBaseError(`the server sent a delta against model v${msg.baseVersion}, this device holds ${held ? `v${held.version}` : 'none'}`);
  const rebuilt = isModelChain(bytes) ? applyModelChain(base.weights, base.version, bytes) : applyModelDelta(base.weights, base.version, bytes);
  if (rebuilt.version !== msg.modelVersion) throw new WeightsFormatError(`the server's delta leads to model v${rebuilt.version}, the round's model is v${msg.modelVersion}`);
  return rebuilt.weights;
}

/** The round's global model (rebuildModel), then held; a delta against a model it lost makes it say it holds none. */
export async function receiveModel(msg: RoundStart, model: tf.LayersModel, memory: DeviceMemory): Promise<FlatWeights> {
  const held = msg.baseVersion === undefined ? undefined : await memory.loadModel().catch(() => undefined);
  let weights: FlatWeights;
  try {
    weights = rebuildModel(msg, held, msg.baseVersion === undefined ? weightSpecs(model) : undefined);
  } catch (err) {
    if (err instanceof MissingBaseError) await memory.saveModel(undefined).catch(() => undefined); // say "none" next time, and get the full model
    throw err;
  }
  await memory.saveModel({ version: msg.modelVersion, model: msg.model, weights }).catch(() => undefined); // a lost copy only costs a full download
  return weights;
}

export interface DeviceRoundContext {
  deviceId: string;
  /** a model of the round's architecture (its weights are overwritten) */
  model: tf.LayersModel;
  train: LocalData;
  heldOut: LocalData;
  memory: DeviceMemory;
  hooks?: TrainHooks & { onPhase?: (phase: 'evaluating' | 'training') => void };
}

export interface DeviceRound {
  /** what to send (absent when training was stopped because the round closed) */
  submission?: UpdateSubmit;
  /** the topk codec's residual, to keep once the server has counted the update */
  residual: Float32Array | undefined;
  /** SCAFFOLD: the device's new control variate c_i⁺, to keep once the server has counted the update (with c_i − c_i⁺ in it) */
  control?: Float32Array;
  /** Δ itself, unencoded: what a secure-aggregation round masks instead (secagg/session.ts) */
  delta?: Float32Array;
  bytesDown: number;
  accuracyBefore: number;
  accuracyAfter: number;
  lossAfter: number;
  /** personalization, when the round named the population's label distribution */
  personalization?: { distance: number; mix: number; accuracyMixed: number; accuracyHalfMix: number };
  downloadMs: number;
  evaluateMs: number;
  trainMs: number;
  encodeMs: number;
}

/** Runs the device's part of one round and returns the update to submit. */
export async function runDeviceRound(msg: RoundStart, ctx: DeviceRoundContext): Promise<DeviceRound> {
  const t0 = performance.now();
  const global = await receiveModel(msg, ctx.model, ctx.memory);
  const downloadMs = performance.now() - t0;
  // SCAFFOLD: the server's control variate c and this device's c_i correct every local step
  const control = msg.control ? await controlsOf(msg, global, ctx.memory) : undefined;
  const u = await computeUpdate(ctx.model, global, ctx.train, ctx.heldOut, msg.plan, ctx.hooks, control ? controlCorrection(control.local, control.server) : undefined);
  if (u.stopped) return { bytesDown: msg.weights.byteLength, accuracyBefore: u.before.accuracy, accuracyAfter: u.after.accuracy, lossAfter: u.after.loss, downloadMs, evaluateMs: u.evaluateMs, trainMs: u.trainMs, residual: undefined, encodeMs: 0 };
  // the trained model is the device's personal one: kept, and mixed with the global one by its distance to the population
  const personal = { specs: u.delta.specs, values: global.values.map((w, i) => w + u.delta.values[i]!) };
  await ctx.memory.savePersonal?.({ version: msg.modelVersion, model: msg.model, weights: personal }).catch(() => undefined);
  const personalization = await personalize(msg, ctx, global, personal);
  const round = { bytesDown: msg.weights.byteLength, accuracyBefore: u.before.accuracy, accuracyAfter: u.after.accuracy, lossAfter: u.after.loss, ...(personalization ? { personalization } : {}), downloadMs, evaluateMs: u.evaluateMs, trainMs: u.trainMs };
  const residual = await ctx.memory.loadResidual(residualKey(msg.runId, msg.model)).catch(() => undefined);
  const t1 = performance.now();
  // SCAFFOLD's update: Δy, then the control variate's change Δc (scaffold.ts)
  const step = control ? deviceControlStep(control.local, control.server, u.delta.values, u.steps, msg.plan.learningRate) : undefined;
  const sent = step ? { specs: scaffoldUpdateSpecs(u.delta.specs), values: concat(u.delta.values, step.change) } : u.delta;
  const encoded = encodeWithFeedback(sent, residual, msg.plan.codec, createRng(codecSeed(msg.plan.seed, ctx.deviceId)));
  const encodeMs = performance.now() - t1;
  const submission: UpdateSubmit = {
    runId: msg.runId,
    round: msg.round,
    attempt: msg.attempt,
    numExamples: u.numExamples,
    delta: encoded.payload,
    metrics: {
      accuracyBefore: u.before.accuracy,
      lossBefore: u.before.loss,
      accuracyAfter: u.after.accuracy,
      lossAfter: u.after.loss,
      downloadMs,
      evaluateMs: u.evaluateMs,
      trainMs: u.trainMs,
      ...(personalization ? { labelDistance: personalization.distance, accuracyMixed: personalization.accuracyMixed, accuracyHalfMix: personalization.accuracyHalfMix } : {}),
    },
  };
  return { ...round, submission, residual: encoded.residual, delta: u.delta.values, encodeMs, ...(step ? { control: step.next } : {}) };
}

/** SCAFFOLD's two control variates for a round: the server's, as sent, and this device's (0 in its first round of the run). */
async function controlsOf(msg: RoundStart, global: FlatWeights, memory: DeviceMemory): Promise<{ server: Float32Array; local: Float32Array }> {
  const bytes = msg.control instanceof Uint8Array ? msg.control : new Uint8Array(msg.control as unknown as ArrayBuffer); // socket.io gives browsers ArrayBuffers
  const server = decodeWeights(bytes, global.specs).values;
  const kept = await memory.loadControl(residualKey(msg.runId, msg.model)).catch(() => undefined);
  return { server, local: kept && kept.length === server.length ? kept : new Float32Array(server.length) };
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** The device's label histogram: what its training data holds of each class. */
export function labelHistogramOf(data: LocalData, classes = 10): number[] {
  const h = new Array<number>(classes).fill(0);
  if (data.labels) for (const l of data.labels) if (l >= 0 && l < classes) h[l] = h[l]! + 1;
  return h;
}

/** The distance-aware mix's accuracy (and an even mix's, for comparison) on held-out data, when the round names the population. */
async function personalize(msg: RoundStart, ctx: DeviceRoundContext, global: FlatWeights, personal: FlatWeights): Promise<DeviceRound['personalization']> {
  const population = msg.population;
  if (!population || ctx.heldOut.count === 0 || population.length !== 10 || !population.every((p) => Number.isFinite(p) && p >= 0)) return undefined;
  const distance = totalVariation(labelHistogramOf(ctx.train), population);
  const mix = mixWeight(distance);
  const [accuracyMixed, accuracyHalfMix] = await mixedAccuracies(ctx.model, global, personal, ctx.heldOut, [mix, 0.5]);
  setFlatWeights(ctx.model, personal);
  return { distance, mix, accuracyMixed: accuracyMixed!, accuracyHalfMix: accuracyHalfMix! };
}

/** Keeps the codec's residual and SCAFFOLD's control variate once the server has counted the update (a refused update leaves the old ones). */
export async function keepRoundState(msg: RoundStart, round: DeviceRound, counted: boolean, memory: DeviceMemory): Promise<void> {
  if (!counted) return;
  const key = residualKey(msg.runId, msg.model);
  if (round.residual) await memory.saveResidual(key, round.residual).catch(() => undefined);
  if (round.control) await memory.saveControl(key, round.control).catch(() => undefined);
}

/**
 * The device's part of an evaluation round (evaluations on the server): each version it was sent,
 * evaluated on its held-out data — no training — and, for a canary's [live, candidate], how often
 * each got right what the other got wrong (canary.ts). Aggregates only leave the device.
 */
export async function runEvaluation(msg: EvalStart, ctx: { model: (name: ModelName) => tf.LayersModel; heldOut: LocalData }): Promise<EvalReport> {
  if (ctx.heldOut.count === 0 || !ctx.heldOut.labels) throw new Error(`evaluation ${msg.evalId}: this device holds no held-out data`);
  const predictions: Int32Array[] = [];
  const results: EvalReport['results'] = [];
  for (const m of msg.models) {
    const bytes = m.weights instanceof Uint8Array ? m.weights : new Uint8Array(m.weights as ArrayBuffer); // socket.io gives browsers ArrayBuffers
    const model = ctx.model(m.model);
    setFlatWeights(model, decodeWeights(bytes, weightSpecs(model)));
    const predicted = new Int32Array(ctx.heldOut.count);
    const r = await evaluateLocal(model, ctx.heldOut, 100, undefined, predicted);
    predictions.push(predicted);
    results.push({ version: m.version, accuracy: r.accuracy, loss: r.loss });
  }
  const paired = msg.purpose === 'canary' && predictions.length === 2 ? pairedCounts(ctx.heldOut.labels, predictions[0]!, predictions[1]!) : undefined;
  return { evalId: msg.evalId, examples: ctx.heldOut.count, results, ...(paired ? { paired: { b: paired.b, c: paired.c } } : {}) };
}

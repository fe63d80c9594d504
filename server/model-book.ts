/**
 * The global model: the version a run trains, stored as a version in the store, and what each
 * device downloads of it — the whole model, or a lossless delta against a version the device holds.
 */
import { encodeModelDelta } from '../shared/model-delta.ts';
import { encodeModelChain, quantizeStep } from '../shared/model-steps.ts';
import type { CodecConfig } from '../shared/codec.ts';
import { createRng, hashString } from '../shared/rng.ts';
import { initialWeights, type ModelName } from '../shared/models.ts';
import { decodeWeights, encodeWeights, type FlatWeights } from '../shared/weights.ts';
import { downlinkCodecConfig, type RunConfig } from '../shared/schemas.ts';
import { decodeServerState, encodeServerState, type ServerState } from '../shared/server-optimizer.ts';
import type { Logger } from './log.ts';
import { EMPTY_META, type ModelRecord, type Store } from './store/store.ts';

export interface GlobalModel {
  version: number;
  model: ModelName;
  weights: FlatWeights;
  /** the binary weight payload (weights.ts), as stored and as sent in full */
  payload: Uint8Array;
  /** the strategy's state after the round that made this version: a server optimizer's moments, SCAFFOLD's control variate (server-optimizer.ts) */
  optimizerState?: ServerState;
}

export interface Download {
  weights: Uint8Array;
  /** set when `weights` is a delta against this version */
  baseVersion?: number;
  /** set when that version is the run's seeded initial model, which a device builds from the seed */
  baseSeed?: number;
}

/** How a delta is encoded (model-delta.ts): inline, or in a worker thread off the event loop. */
export type DeltaEncoder = (base: Float32Array, target: Float32Array, baseVersion: number, targetVersion: number) => Promise<Uint8Array>;

/** What to send a device that holds version `held` (null: none). */
export type DownloadsOf = (held: number | null) => Download;

export const inlineDeltaEncoder: DeltaEncoder = async (base, target, baseVersion, targetVersion) => encodeModelDelta(base, target, baseVersion, targetVersion);

/** How a lossy downlink's step is made (model-steps.ts quantizeStep, its rounding seeded by `seed`): inline, or in a work thread off the event loop. */
export type StepQuantizer = (base: FlatWeights, target: Float32Array, residual: Float32Array | undefined, config: CodecConfig, seed: number) => Promise<{ payload: Uint8Array; values: Float32Array; residual: Float32Array }>;

export const inlineStepQuantizer: StepQuantizer = async (base, target, residual, config, seed) => quantizeStep(base, target, residual, config, createRng(seed));

export class ModelBook {
  current: GlobalModel | undefined;
  /** the newest stored version of any run, as devices are told of it (kept here: read on every hello) */
  latest: ModelRecord | undefined;
  /**
   * A lossy downlink's steps (model-steps.ts): each recent version's step from the one before it,
   * as sent, kept while a chain of them back from the current version is smaller than the model;
   * and what the last step left out (the server's error feedback). In memory: after a restart
   * devices get the full model once, and the residual starts again from zero.
   */
  private readonly steps = new Map<number, { base: number; payload: Uint8Array }>();
  private stepCodec: CodecConfig | undefined;
  private residual: { version: number; values: Float32Array } | undefined;
  /** the run's initial version when it is seeded (not a stored version it starts from): devices can build it */
  private seeded: { version: number; seed: number } | undefined;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly encodeDelta: DeltaEncoder = inlineDeltaEncoder,
    private readonly makeStep: StepQuantizer = inlineStepQuantizer,
  ) {}

  /** Reads the newest stored version (once, at start). */
  async open(): Promise<void> {
    this.latest = await this.store.latestModel();
  }

  /** Why a run cannot start from `config.initialVersion` (undefined: it can, or it starts fresh). */
  async initialProblem(config: RunConfig): Promise<string | undefined> {
    if (config.initialVersion === undefined) return undefined;
    const stored = await this.store.getModel(config.initialVersion);
    if (!stored) return `initialVersion: model version ${config.initialVersion} is not stored`;
    if (stored.model !== config.model) return `initialVersion: version ${config.initialVersion} is a ${stored.model}, the run trains a ${config.model}`;
    return undefined;
  }

  /** A run's initial model — seeded, or the stored version it starts from (its parent in the lineage) — stored as its round 0. */
  async createInitial(runId: number, config: RunConfig, now: number): Promise<GlobalModel> {
    this.forgetSteps();
    const from = config.initialVersion;
    if (from === undefined) {
      const initial = await this.save(runId, 0, config.model, initialWeights(config.model, config.seed), now, { parent: null });
      if (downlinkCodecConfig(config)) {
        this.seeded = { version: initial.version, seed: config.seed };
        this.stepCodec = downlinkCodecConfig(config);
      }
      return initial;
    }
    const payload = await this.store.getModelWeights(from);
    if (!payload) throw new Error(`model version ${from} is not stored`);
    return this.save(runId, 0, config.model, decodeWeights(payload, initialWeights(config.model, config.seed).specs), now, { parent: from });
  }

  /** Stores a new version: its weights, the strategy's state after it, and the version it was made from. */
  async save(runId: number, round: number, model: ModelName, weights: FlatWeights, now: number, o: { state?: ServerState | undefined; parent: number | null }): Promise<GlobalModel> {
    const payload = encodeWeights(weights);
    const optimizerState = o.state;
    const version = await this.store.saveModel({ runId, round, model, weights: payload, parentVersion: o.parent, ...(optimizerState ? { optimizerState: encodeServerState(optimizerState) } : {}) }, now);
    this.current = { version, model, weights, payload, ...(optimizerState ? { optimizerState } : {}) };
    this.latest = { version, runId, round, model, createdAt: now, testAccuracy: null, testLoss: null, parentVersion: o.parent, meta: { ...EMPTY_META } };
    return this.current;
  }

  /**
   * Stores a round's new model. With a lossy downlink codec the version stored is what devices
   * rebuild from the compressed step towards `next` (so both ends hold it bit for bit), and what
   * the step left out is carried into the next round's step.
   */
  async publish(runId: number, round: number, config: RunConfig, next: FlatWeights, now: number, o: { state?: ServerState | undefined; parent: number | null }): Promise<GlobalModel> {
    const codec = downlinkCodecConfig(config);
    const base = this.current;
    if (!codec || !base || base.version !== o.parent) return this.save(runId, round, config.model, next, now, o);
    const residual = this.residual?.version === base.version ? this.residual.values : undefined;
    const step = await this.makeStep(base.weights, next.values, residual, codec, hashString(`downlink:${config.seed}:${runId}:${round}:${base.version}`));
    const saved = await this.save(runId, round, config.model, { specs: next.specs, values: step.values }, now, o);
    this.residual = { version: saved.version, values: step.residual };
    if (JSON.stringify(this.stepCodec) !== JSON.stringify(codec)) {
      this.steps.clear();
      this.seeded = undefined;
    }
    this.stepCodec = codec;
    this.steps.set(saved.version, { base: base.version, payload: step.payload });
    // steps further back than a chain smaller than the model are of no use
    let bytes = 0;
    for (let v: number | undefined = saved.version; v !== undefined; ) {
      const s = this.steps.get(v);
      if (!s) break;
      bytes += s.payload.byteLength;
      if (bytes >= saved.payload.byteLength) {
        for (const key of [...this.steps.keys()]) if (key <= v) this.steps.delete(key);
        break;
      }
      v = s.base;
    }
    return saved;
  }

  private forgetSteps(): void {
    this.steps.clear();
    this.stepCodec = undefined;
    this.residual = undefined;
    this.seeded = undefined;
  }

  /** The chain from the run's seeded initial model (none in round 1), when it is smaller than the model. */
  private chainFromSeed(global: GlobalModel): Download | undefined {
    if (!this.seeded) return undefined;
    const chain = this.chain(this.seeded.version, global);
    return chain ? { ...chain, baseSeed: this.seeded.seed } : undefined;
  }

  /** The chain of steps from `held` to the current version, when there is one and it is smaller than the model. */
  private chain(held: number, global: GlobalModel): Download | undefined {
    if (!this.stepCodec) return undefined;
    const steps: { version: number; payload: Uint8Array }[] = [];
    let bytes = 0;
    for (let v = global.version; v !== held; ) {
      const s = this.steps.get(v);
      if (!s) return undefined;
      steps.unshift({ version: v, payload: s.payload });
      bytes += s.payload.byteLength;
      if (bytes >= global.payload.byteLength) return undefined;
      v = s.base;
    }
    const weights = encodeModelChain(held, { version: global.version, values: global.weights.values }, steps, this.stepCodec);
    return weights.byteLength < global.payload.byteLength ? { weights, baseVersion: held } : undefined;
  }

  /** Stores a version's test metrics. */
  async setMetrics(version: number, accuracy: number, loss: number): Promise<void> {
    await this.store.setModelMetrics(version, accuracy, loss);
    if (this.latest?.version === version) this.latest = { ...this.latest, testAccuracy: accuracy, testLoss: loss };
  }

  /** Makes a stored version the current model (a resumed run); false when it is not stored. `optimizer: false`: without the server optimizer's state (a cluster node only serves the weights). */
  async load(version: number, model: ModelName, o: { optimizer?: boolean } = {}): Promise<boolean> {
    const [payload, state] = await Promise.all([this.store.getModelWeights(version), o.optimizer === false ? undefined : this.store.getOptimizerState(version)]);
    if (!payload) return false;
    this.forgetSteps();
    const weights = decodeWeights(payload);
    this.current = { version, model, weights, payload, ...(state ? { optimizerState: decodeServerState(state, weights.values.length) } : {}) };
    return true;
  }

  /**
   * The downloads of one round, for devices that hold the versions `held`: `(held) → what to send a
   * device that holds version held`. With `downlink: delta`, a device holding an older version of
   * the same model gets a delta against it when that is smaller than the model; one delta is
   * encoded per base version, all of them at once (off the event loop with a threaded encoder).
   */
  downloads(config: RunConfig, held: readonly (number | null)[]): DownloadsOf | Promise<DownloadsOf> {
    const global = this.current;
    if (!global) throw new Error('model book: no current model');
    const full: Download = { weights: global.payload };
    const bases = config.downlink === 'delta' ? [...new Set(held.filter((v): v is number => v !== null && v !== global.version))] : [];
    // a lossy downlink's chains are assembled from the steps as sent; the others need a lossless delta
    const ready = new Map<number, Download>();
    for (const base of bases) {
      const chain = this.chain(base, global);
      if (chain) ready.set(base, chain);
    }
    const rest = bases.filter((b) => !ready.has(b));
    // a device that holds nothing builds the run's seeded initial model and gets the chain from it
    const fromSeed = config.downlink === 'delta' && held.includes(null) ? this.chainFromSeed(global) : undefined;
    const of: DownloadsOf = (v) => (v === null ? (fromSeed ?? full) : (ready.get(v) ?? full));
    if (rest.length === 0) return of; // nothing to encode: the round can start at once
    return Promise.all(rest.map(async (base) => [base, (await this.delta(base, global)) ?? full] as const)).then((pairs) => {
      for (const [base, d] of pairs) ready.set(base, d);
      return of;
    });
  }

  /** What to send one device that holds version `held` (a cluster node, for its own devices): a delta when that is smaller. */
  async download(held: number | null): Promise<Download> {
    const global = this.current;
    if (!global) throw new Error('model book: no current model');
    if (held === null) return this.chainFromSeed(global) ?? { weights: global.payload };
    if (held === global.version) return { weights: global.payload };
    return this.chain(held, global) ?? (await this.delta(held, global)) ?? { weights: global.payload };
  }

  private async delta(base: number, global: GlobalModel): Promise<Download | undefined> {
    const record = await this.store.getModel(base);
    const payload = record?.model === global.model ? await this.store.getModelWeights(base) : undefined;
    if (!payload) return undefined;
    try {
      const weights = decodeWeights(payload, global.weights.specs);
      const delta = await this.encodeDelta(weights.values, global.weights.values, base, global.version);
      return delta.byteLength < global.payload.byteLength ? { weights: delta, baseVersion: base } : undefined;
    } catch (err) {
      this.log.warn('stored model unreadable; sending the full model', { version: base, error: String(err) });
      return undefined;
    }
  }
}

/**
 * The global model: the version a run trains, stored as a version in the store, and what each
 * device downloads of it — the whole model, or a lossless delta against a version the device holds.
 */
import { encodeModelDelta } from '../shared/model-delta.ts';
import { initialWeights, type ModelName } from '../shared/models.ts';
import { decodeWeights, encodeWeights, type FlatWeights } from '../shared/weights.ts';
import type { RunConfig } from '../shared/schemas.ts';
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
}

/** How a delta is encoded (model-delta.ts): inline, or in a worker thread off the event loop. */
export type DeltaEncoder = (base: Float32Array, target: Float32Array, baseVersion: number, targetVersion: number) => Promise<Uint8Array>;

/** What to send a device that holds version `held` (null: none). */
export type DownloadsOf = (held: number | null) => Download;

export const inlineDeltaEncoder: DeltaEncoder = async (base, target, baseVersion, targetVersion) => encodeModelDelta(base, target, baseVersion, targetVersion);

export class ModelBook {
  current: GlobalModel | undefined;
  /** the newest stored version of any run, as devices are told of it (kept here: read on every hello) */
  latest: ModelRecord | undefined;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly encodeDelta: DeltaEncoder = inlineDeltaEncoder,
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
    const from = config.initialVersion;
    if (from === undefined) return this.save(runId, 0, config.model, initialWeights(config.model, config.seed), now, { parent: null });
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

  /** Stores a version's test metrics. */
  async setMetrics(version: number, accuracy: number, loss: number): Promise<void> {
    await this.store.setModelMetrics(version, accuracy, loss);
    if (this.latest?.version === version) this.latest = { ...this.latest, testAccuracy: accuracy, testLoss: loss };
  }

  /** Makes a stored version the current model (a resumed run); false when it is not stored. `optimizer: false`: without the server optimizer's state (a cluster node only serves the weights). */
  async load(version: number, model: ModelName, o: { optimizer?: boolean } = {}): Promise<boolean> {
    const [payload, state] = await Promise.all([this.store.getModelWeights(version), o.optimizer === false ? undefined : this.store.getOptimizerState(version)]);
    if (!payload) return false;
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
    if (bases.length === 0) return () => full; // nothing to encode: the round can start at once
    return Promise.all(bases.map(async (base) => [base, (await this.delta(base, global)) ?? full] as const)).then((pairs) => {
      const deltas = new Map(pairs);
      return (v) => (v === null ? full : (deltas.get(v) ?? full));
    });
  }

  /** What to send one device that holds version `held` (a cluster node, for its own devices): a delta when that is smaller. */
  async download(held: number | null): Promise<Download> {
    const global = this.current;
    if (!global) throw new Error('model book: no current model');
    return (held !== null && held !== global.version ? await this.delta(held, global) : undefined) ?? { weights: global.payload };
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

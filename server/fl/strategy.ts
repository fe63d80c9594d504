/**
 * Strategies, after Flower's four hooks: configure a round's training, aggregate its training
 * results, configure the devices' evaluation, aggregate their evaluation results. A run's strategy
 * is its aggregation rule (`aggregation`: FedAvg, coordinate-wise median, trimmed mean — how the
 * updates are summed, streaming) composed with its strategy for non-IID data (`strategy`: what the
 * round's aggregate becomes — a server optimizer's step, q-FFL's scaled step — and FedProx's term
 * in the training plan). Updates arrive validated and, when the run sets `clipNorm`, already clipped
 * (validate.ts) for every strategy alike. Failures (refused and dropped devices) come in as data.
 */
import { applyDelta, WeightedDeltaSum, type PartialSum } from '../../shared/fedavg.ts';
import type { TrainingPlan } from '../../shared/protocol.ts';
import { addGaussianNoise } from '../../shared/privacy/noise.ts';
import { coordinateMedian, trimmedMean } from '../../shared/robust.ts';
import { codecConfig, DEFAULT_SERVER_LEARNING_RATE, type Aggregation, type RunConfig, type UpdateMetrics } from '../../shared/schemas.ts';
import type { RoundRecord } from '../../shared/api.ts';
import { fairnessOf, type Fairness } from '../../shared/fairness.ts';
import { populationOf } from '../../shared/personalize.ts';
import { initialServerState, isServerOptimizer, serverStep, type ServerState } from '../../shared/server-optimizer.ts';
import { scaffoldServerStep, scaffoldUpdateSpecs } from '../../shared/scaffold.ts';
import type { TensorSpec } from '../../shared/weights.ts';

export interface RoundAggregator {
  /** adds one validated update with its weight (the example count, capped by the run) */
  add(delta: Float32Array, weight: number): void;
  /** a linear rule only: adds a share of the round's weighted sum made elsewhere (a work thread) */
  merge?(p: PartialSum): void;
  readonly count: number;
  /** the new global model, or undefined to keep the old one (nothing to aggregate) */
  result(global: Float32Array): Float32Array | undefined;
}

/** What a round's training came to: the global model it started from, the aggregation rule's result, and the round's failures. */
export interface FitResults {
  global: Float32Array;
  /** the rule's aggregate: the global model plus the round's combined update */
  aggregated: Float32Array;
  /** q-FFL: the coordinator's scale of the combined update */
  scale?: number;
  /** the strategy's state from the previous version: a server optimizer's moments, SCAFFOLD's control variate */
  state?: ServerState;
  /** SCAFFOLD: the share |S|/N of the connected devices whose updates the round counted */
  share?: number;
  /** devices of the round that were refused or dropped out */
  failures: number;
}

/** What the devices evaluate with in a round, besides the global model: the population's label distribution for personalization. */
export interface EvaluatePlan {
  population?: number[];
}

/** What the counted devices' evaluations come to: the global model's fairness across them, and their personal models'. */
export interface EvaluateResults {
  fairness: Fairness | null;
  personalization: RoundRecord['personalization'];
}

export interface Strategy {
  readonly name: Aggregation;
  /** hook 1: the training plan of a round */
  configureFit(config: RunConfig, round: number, attempt: number): TrainingPlan;
  /** hook 2, the streaming half: the round's running aggregate, update by update */
  createAggregator(size: number, config: RunConfig): RoundAggregator;
  /** hook 2, the closing half: the next global model (and the server optimizer's state) */
  aggregateFit(config: RunConfig, fit: FitResults): { values: Float32Array; state?: ServerState };
  /** hook 3: what the devices' evaluation needs, from the connected devices' declared label histograms */
  configureEvaluate(devices: readonly { labelHistogram: readonly number[] }[]): EvaluatePlan;
  /** hook 4: the counted devices' held-out metrics, summed up */
  aggregateEvaluate(metrics: readonly UpdateMetrics[]): EvaluateResults;
}

/** The hooks every rule shares: the non-IID strategy's step, the personalization plan, the fairness figures. */
const sharedHooks: Pick<Strategy, 'aggregateFit' | 'configureEvaluate' | 'aggregateEvaluate'> = {
  aggregateFit: (config, fit) => nextGlobalModel(config, fit.global, fit.aggregated, { ...(fit.scale !== undefined ? { scale: fit.scale } : {}), ...(fit.state ? { state: fit.state } : {}), ...(fit.share !== undefined ? { share: fit.share } : {}) }),
  configureEvaluate: (devices) => {
    const population = populationOf(devices.map((d) => d.labelHistogram));
    return population ? { population } : {};
  },
  aggregateEvaluate: (metrics) => ({ fairness: fairnessOf(metrics.map((x) => x.accuracyBefore)), personalization: personalizationOf(metrics) }),
};

/** The personal, mixed and evenly mixed accuracies of the counted devices that reported them all, beside the global model's on the same devices. */
function personalizationOf(metrics: readonly UpdateMetrics[]): RoundRecord['personalization'] {
  const full = metrics.filter((x) => x.labelDistance !== undefined && x.accuracyMixed !== undefined && x.accuracyHalfMix !== undefined);
  if (full.length === 0) return null;
  return {
    meanDistance: full.reduce((a, x) => a + x.labelDistance!, 0) / full.length,
    global: fairnessOf(full.map((x) => x.accuracyBefore))!,
    personal: fairnessOf(full.map((x) => x.accuracyAfter))!,
    mixed: fairnessOf(full.map((x) => x.accuracyMixed!))!,
    halfMix: fairnessOf(full.map((x) => x.accuracyHalfMix!))!,
  };
}

const configureFit = (config: RunConfig, round: number, attempt: number): TrainingPlan => ({
  localEpochs: config.localEpochs,
  batchSize: config.batchSize,
  learningRate: config.learningRate,
  seed: (config.seed * 1_000_003 + round * 101 + attempt) >>> 0,
  codec: codecConfig(config),
  ...(config.strategy === 'fedprox' ? { mu: config.mu } : {}),
});

export const fedAvgStrategy: Strategy = {
  name: 'fedavg',
  configureFit,
  ...sharedHooks,
  createAggregator(size) {
    const sum = new WeightedDeltaSum(size);
    return {
      add: (delta, weight) => sum.add(delta, weight),
      merge: (p) => sum.merge(p),
      get count() {
        return sum.count;
      },
      result(global) {
        const mean = sum.mean();
        return mean ? applyDelta(global, mean) : undefined;
      },
    };
  },
};

/** Robust rules keep the round's updates (O(model × updates)) and ignore example counts, which a hostile device could inflate. */
function robustStrategy(name: Aggregation, reduce: (updates: Float32Array[], config: RunConfig) => Float32Array): Strategy {
  return {
    name,
    configureFit,
    ...sharedHooks,
    createAggregator(size, config) {
      const updates: Float32Array[] = [];
      return {
        add: (delta) => {
          if (delta.length !== size) throw new RangeError(`${name}: update has ${delta.length} values, expected ${size}`);
          updates.push(delta);
        },
        get count() {
          return updates.length;
        },
        result: (global) => (updates.length ? applyDelta(global, reduce(updates, config)) : undefined),
      };
    },
  };
}

/**
 * DP-FedAvg's noisy mean (McMahan et al. 2018, the fixed-denominator estimator): every clipped update
 * weighs 1 — example counts would make one device's influence depend on what it claims — their sum
 * gets N(0, (z·S)²) per coordinate, and is divided by the round's expected number of devices q·N
 * (not the number that came, which would depend on who took part).
 */
export function dpFedAvgAggregator(size: number, noiseStd: number, expectedDevices: number): RoundAggregator {
  const sum = new Float64Array(size);
  let count = 0;
  return {
    add: (delta) => {
      if (delta.length !== size) throw new RangeError(`dp-fedavg: update has ${delta.length} values, expected ${size}`);
      for (let i = 0; i < size; i++) sum[i] = sum[i]! + delta[i]!;
      count++;
    },
    get count() {
      return count;
    },
    result(global) {
      if (count === 0) return undefined;
      addGaussianNoise(sum, noiseStd);
      const mean = new Float32Array(size);
      for (let i = 0; i < size; i++) mean[i] = sum[i]! / expectedDevices;
      return applyDelta(global, mean);
    },
  };
}

export const STRATEGIES: Record<Aggregation, Strategy> = {
  fedavg: fedAvgStrategy,
  median: robustStrategy('median', (u) => coordinateMedian(u)),
  'trimmed-mean': robustStrategy('trimmed-mean', (u, c) => trimmedMean(u, c.trimFraction)),
};

export const strategyFor = (config: RunConfig): Strategy => STRATEGIES[config.aggregation];

/**
 * The tensors of one device's update in a run: the model's, and for SCAFFOLD the control variate's
 * change after them (scaffold.ts) — what the codec decodes and the validator checks.
 */
export const updateSpecs = (config: RunConfig, specs: readonly TensorSpec[]): readonly TensorSpec[] => (config.strategy === 'scaffold' ? scaffoldUpdateSpecs(specs) : specs);

/** The vector the round's mean update is added to: the global model, and for SCAFFOLD the server's control variate after it. */
export function aggregationBase(config: RunConfig, global: Float32Array, state: ServerState | undefined): Float32Array {
  if (config.strategy !== 'scaffold') return global;
  const base = new Float32Array(2 * global.length);
  base.set(global);
  if (state && 'c' in state) base.set(state.c, global.length);
  return base;
}

/** SCAFFOLD's control variate for a round's devices: the server's c, 0 before the run's first round. */
export const serverControl = (state: ServerState | undefined, size: number): Float32Array => (state && 'c' in state ? state.c : new Float32Array(size));

/**
 * From a round's aggregate (w + the round's mean update) to the next global model, as the run's
 * strategy asks: q-FFL scales the mean by the coordinator's `scale`; a server optimizer takes its
 * step with the mean as the pseudo-gradient and returns its new state, stored with the version;
 * SCAFFOLD's aggregate is [x + mean Δy ; c + mean Δc] (aggregationBase), its step moves x by η_g
 * and c by the share of devices that took part.
 */
export function nextGlobalModel(config: RunConfig, global: Float32Array, aggregated: Float32Array, o: { scale?: number; state?: ServerState; share?: number } = {}): { values: Float32Array; state?: ServerState } {
  const n = global.length;
  if (config.strategy === 'scaffold') {
    if (aggregated.length !== 2 * n) throw new RangeError(`scaffold: the aggregate has ${aggregated.length} values, expected ${2 * n} (model and control)`);
    const c = serverControl(o.state, n);
    const mean = new Float32Array(2 * n);
    for (let i = 0; i < n; i++) {
      mean[i] = aggregated[i]! - global[i]!;
      mean[n + i] = aggregated[n + i]! - c[i]!;
    }
    const { weights, state } = scaffoldServerStep(global, { c }, mean, config.serverLearningRate ?? DEFAULT_SERVER_LEARNING_RATE.scaffold, o.share ?? 1);
    return { values: weights, state };
  }
  const mean = new Float32Array(n);
  const scale = o.scale ?? 1;
  for (let i = 0; i < mean.length; i++) mean[i] = scale * (aggregated[i]! - global[i]!);
  if (!isServerOptimizer(config.strategy)) return { values: o.scale === undefined ? aggregated : applyDelta(global, mean) };
  const params = { learningRate: config.serverLearningRate ?? DEFAULT_SERVER_LEARNING_RATE[config.strategy], beta1: config.beta1, beta2: config.beta2, tau: config.tau };
  const state = o.state && !('c' in o.state) ? o.state : initialServerState(config.strategy, global.length, config.tau);
  const { weights, state: next } = serverStep(config.strategy, params, global, mean, state);
  return { values: weights, state: next };
}

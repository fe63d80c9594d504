/**
 * Pluggable aggregation, after Flower's Strategy: how a round's training is configured and how its
 * results are combined. Each rule is a strategy (FedAvg, coordinate-wise median, trimmed mean),
 * chosen per run by `aggregation`. Updates arrive validated and, when the run sets `clipNorm`,
 * already clipped (validate.ts), whatever the strategy.
 */
import { applyDelta, WeightedDeltaSum, type PartialSum } from '../../shared/fedavg.ts';
import type { TrainingPlan } from '../../shared/protocol.ts';
import { addGaussianNoise } from '../../shared/privacy/noise.ts';
import { coordinateMedian, trimmedMean } from '../../shared/robust.ts';
import { codecConfig, DEFAULT_SERVER_LEARNING_RATE, type Aggregation, type RunConfig } from '../../shared/schemas.ts';
import { initialServerState, isServerOptimizer, serverStep, type ServerOptimizerState } from '../../shared/server-optimizer.ts';

export interface RoundAggregator {
  /** adds one validated update with its weight (the example count, capped by the run) */
  add(delta: Float32Array, weight: number): void;
  /** a linear rule only: adds a share of the round's weighted sum made elsewhere (a work thread) */
  merge?(p: PartialSum): void;
  readonly count: number;
  /** the new global model, or undefined to keep the old one (nothing to aggregate) */
  result(global: Float32Array): Float32Array | undefined;
}

export interface Strategy {
  readonly name: Aggregation;
  configureFit(config: RunConfig, round: number, attempt: number): TrainingPlan;
  createAggregator(size: number, config: RunConfig): RoundAggregator;
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
 * From a round's aggregate (w + the round's mean update) to the next global model, as the run's
 * strategy asks: q-FFL scales the mean by the coordinator's `scale`; a server optimizer takes its
 * step with the mean as the pseudo-gradient and returns its new state, stored with the version.
 */
export function nextGlobalModel(config: RunConfig, global: Float32Array, aggregated: Float32Array, o: { scale?: number; state?: ServerOptimizerState } = {}): { values: Float32Array; state?: ServerOptimizerState } {
  const mean = new Float32Array(global.length);
  const scale = o.scale ?? 1;
  for (let i = 0; i < mean.length; i++) mean[i] = scale * (aggregated[i]! - global[i]!);
  if (!isServerOptimizer(config.strategy)) return { values: o.scale === undefined ? aggregated : applyDelta(global, mean) };
  const params = { learningRate: config.serverLearningRate ?? DEFAULT_SERVER_LEARNING_RATE[config.strategy], beta1: config.beta1, beta2: config.beta2, tau: config.tau };
  const state = o.state ?? initialServerState(config.strategy, global.length, config.tau);
  const { weights, state: next } = serverStep(config.strategy, params, global, mean, state);
  return { values: weights, state: next };
}

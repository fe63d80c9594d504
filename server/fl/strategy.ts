/**
 * Pluggable aggregation, after Flower's Strategy: how a round's training is configured and how its
 * results are combined. Each rule is a strategy (FedAvg, coordinate-wise median, trimmed mean),
 * chosen per run by `aggregation`; the optional L2 bound (`clipNorm`) applies to any of them.
 */
import { applyDelta, WeightedDeltaSum } from '../../shared/fedavg.ts';
import type { TrainingPlan } from '../../shared/protocol.ts';
import { clipToNorm, coordinateMedian, trimmedMean } from '../../shared/robust.ts';
import { codecConfig, type Aggregation, type RunConfig } from '../../shared/schemas.ts';

export interface RoundAggregator {
  /** adds one update; returns whether it was clipped to the run's L2 bound */
  add(delta: Float32Array, numExamples: number): { clipped: boolean; norm: number };
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
});

export const fedAvgStrategy: Strategy = {
  name: 'fedavg',
  configureFit,
  createAggregator(size, config) {
    const sum = new WeightedDeltaSum(size);
    return {
      add: (delta, n) => {
        const c = clipToNorm(delta, config.clipNorm);
        sum.add(c.delta, n);
        return { clipped: c.clipped, norm: c.norm };
      },
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
        add: (delta, _n) => {
          if (delta.length !== size) throw new RangeError(`${name}: update has ${delta.length} values, expected ${size}`);
          const c = clipToNorm(delta, config.clipNorm);
          updates.push(c.delta === delta ? delta.slice() : c.delta);
          return { clipped: c.clipped, norm: c.norm };
        },
        get count() {
          return updates.length;
        },
        result: (global) => (updates.length ? applyDelta(global, reduce(updates, config)) : undefined),
      };
    },
  };
}

export const STRATEGIES: Record<Aggregation, Strategy> = {
  fedavg: fedAvgStrategy,
  median: robustStrategy('median', (u) => coordinateMedian(u)),
  'trimmed-mean': robustStrategy('trimmed-mean', (u, c) => trimmedMean(u, c.trimFraction)),
};

export const strategyFor = (config: RunConfig): Strategy => STRATEGIES[config.aggregation];

/**
 * Pluggable aggregation, after Flower's Strategy: how a round's training is configured and how its
 * results are combined. FedAvg is the one strategy today; robust rules become further strategies.
 */
import { applyDelta, WeightedDeltaSum } from '../../shared/fedavg.ts';
import type { TrainingPlan } from '../../shared/protocol.ts';
import type { RunConfig } from '../../shared/schemas.ts';

export interface RoundAggregator {
  add(delta: Float32Array, numExamples: number): void;
  readonly count: number;
  /** the new global model, or undefined to keep the old one (nothing to aggregate) */
  result(global: Float32Array): Float32Array | undefined;
}

export interface Strategy {
  readonly name: string;
  configureFit(config: RunConfig, round: number, attempt: number): TrainingPlan;
  createAggregator(size: number): RoundAggregator;
}

export const fedAvgStrategy: Strategy = {
  name: 'fedavg',
  configureFit: (config, round, attempt) => ({
    localEpochs: config.localEpochs,
    batchSize: config.batchSize,
    learningRate: config.learningRate,
    seed: (config.seed * 1_000_003 + round * 101 + attempt) >>> 0,
  }),
  createAggregator(size) {
    const sum = new WeightedDeltaSum(size);
    return {
      add: (delta, n) => sum.add(delta, n),
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

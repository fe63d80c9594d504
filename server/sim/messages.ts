/** Messages between the simulation's main thread and its device workers (worker_threads). */
import type { CodecConfig } from '../../shared/codec.ts';
import type { ModelName } from '../../shared/models-names.ts';
import type { TrainingPlan } from '../../shared/protocol.ts';
import type { TensorSpec } from '../../shared/weights.ts';

export interface WorkerInit {
  /** MNIST train and test images and labels, shared by every worker (no copy) */
  trainImages: Uint8Array;
  trainLabels: Uint8Array;
  testImages: Uint8Array;
  testLabels: Uint8Array;
}

export interface TrainJob {
  type: 'train';
  job: number;
  model: ModelName;
  specs: TensorSpec[];
  weights: Float32Array;
  plan: TrainingPlan;
  /** indices into the train set: the device's training examples and its held-out examples */
  train: Int32Array;
  heldOut: Int32Array;
  codec: CodecConfig;
  /** seeds the codec's stochastic rounding */
  codecSeed: number;
  /** the device's error-feedback residual from earlier rounds (topk codecs) */
  residual?: Float32Array | undefined;
}

export interface EvaluateJob {
  type: 'evaluate';
  job: number;
  model: ModelName;
  specs: TensorSpec[];
  weights: Float32Array;
  /** a range of the test set */
  from: number;
  count: number;
}

export type WorkerJob = TrainJob | EvaluateJob;

export interface TrainDone {
  type: 'train';
  job: number;
  /** Δ encoded with the run's codec, as the device uploads it */
  payload: Uint8Array<ArrayBuffer>;
  residual: Float32Array | undefined;
  encodeMs: number;
  numExamples: number;
  accuracyBefore: number;
  lossBefore: number;
  accuracyAfter: number;
  lossAfter: number;
  evaluateMs: number;
  trainMs: number;
}

export interface EvaluateDone {
  type: 'evaluate';
  job: number;
  correct: number;
  lossSum: number;
  count: number;
}

export type WorkerReply = TrainDone | EvaluateDone | { type: 'error'; job: number; message: string } | { type: 'ready'; backend: string };

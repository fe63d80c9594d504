/** Messages between the simulation's main thread and its device workers (worker_threads). */
import type { HeldModel } from '../../shared/device.ts';
import type { ModelName } from '../../shared/models-names.ts';
import type { RoundStart } from '../../shared/protocol.ts';
import type { UpdateSubmit } from '../../shared/schemas.ts';
import type { Corruption } from '../../shared/data-quality.ts';
import type { TensorSpec } from '../../shared/weights.ts';

export interface WorkerInit {
  /** MNIST train and test images and labels, shared by every worker (no copy) */
  trainImages: Uint8Array;
  trainLabels: Uint8Array;
  testImages: Uint8Array;
  testLabels: Uint8Array;
}

/** One device's round, as the server sent it, with what the device keeps between rounds. */
export interface TrainJob {
  type: 'train';
  job: number;
  deviceId: string;
  round: RoundStart;
  /** indices into the train set: the device's training examples and its held-out examples */
  train: Int32Array;
  heldOut: Int32Array;
  /** the global model the device holds (the base of a delta download) */
  held: HeldModel | undefined;
  /** its codec's error-feedback residual from earlier rounds (topk codecs) */
  residual: { key: string; values: Float32Array } | undefined;
  /** its SCAFFOLD control variate from earlier rounds of the run */
  control?: { key: string; values: Float32Array } | undefined;
  /** a corrupted client: how its training data is corrupted, and its slot (the corruption's seed) */
  corrupt?: Corruption[];
  slot?: number;
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
  /** what the device submits (absent if training stopped) */
  submission: UpdateSubmit | undefined;
  /** the residual to keep if the update counts */
  residual: Float32Array | undefined;
  /** SCAFFOLD: the control variate to keep if the update counts */
  control?: Float32Array | undefined;
  /** the global model the device holds after the round */
  held: HeldModel | undefined;
  encodeMs: number;
}

export interface EvaluateDone {
  type: 'evaluate';
  job: number;
  correct: number;
  lossSum: number;
  count: number;
}

export type WorkerReply = TrainDone | EvaluateDone | { type: 'error'; job: number; message: string } | { type: 'ready'; backend: string };

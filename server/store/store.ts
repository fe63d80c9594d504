/** Persistence behind a small interface: runs, rounds and model versions. */
import type { ModelName } from '../../shared/models-names.ts';
import type { RunConfig } from '../../shared/schemas.ts';

export type RunStatus = 'running' | 'done' | 'failed' | 'stopped';

export interface RunRecord {
  id: number;
  config: RunConfig;
  status: RunStatus;
  reason: string | null;
  createdAt: number;
  finishedAt: number | null;
}

export interface PhaseTimings {
  /** waiting for enough devices before the round began */
  selectionMs: number;
  /** median over the counted devices, as each reported it */
  downloadMs: number;
  evaluateMs: number;
  trainMs: number;
  /** median over the counted devices of (arrival − start − download − evaluate − train) */
  uploadMs: number;
  aggregationMs: number;
  evaluationMs: number;
}

export interface RoundRecord {
  runId: number;
  round: number;
  attempt: number;
  status: 'completed' | 'failed';
  reason: string | null;
  participants: number;
  completed: number;
  dropped: number;
  late: number;
  rejected: number;
  /** counted updates that were scaled down to the run's L2 bound (clipNorm) */
  clipped: number;
  startedAt: number;
  durationMs: number;
  timings: PhaseTimings | null;
  bytesUp: number;
  bytesDown: number;
  testAccuracy: number | null;
  testLoss: number | null;
  /** mean over the counted devices of their held-out accuracy before/after local training */
  localAccuracyBefore: number | null;
  localAccuracyAfter: number | null;
  /** each counted device: its example count and held-out accuracy before/after local training */
  devices: { id: string; numExamples: number; accuracyBefore: number; accuracyAfter: number; trainMs: number }[];
  modelVersion: number | null;
}

export interface ModelRecord {
  version: number;
  runId: number | null;
  round: number;
  model: ModelName;
  createdAt: number;
  testAccuracy: number | null;
  testLoss: number | null;
}

export interface Store {
  createRun(config: RunConfig, now: number): number;
  finishRun(id: number, status: Exclude<RunStatus, 'running'>, reason: string, now: number): void;
  getRun(id: number): RunRecord | undefined;
  listRuns(): RunRecord[];
  recordRound(round: RoundRecord): void;
  listRounds(runId: number): RoundRecord[];
  /** stores a new model version (the binary weight payload) and returns its number */
  saveModel(model: { runId: number | null; round: number; model: ModelName; weights: Uint8Array }, now: number): number;
  setModelMetrics(version: number, testAccuracy: number, testLoss: number): void;
  getModel(version: number): ModelRecord | undefined;
  latestModel(model?: ModelName): ModelRecord | undefined;
  getModelWeights(version: number): Uint8Array | undefined;
  listModels(): ModelRecord[];
  close(): void;
}

/** Persistence behind a small interface: runs, rounds and model versions. */
import type { ModelName } from '../../shared/models-names.ts';
import type { RunConfig } from '../../shared/schemas.ts';
import type { ModelRecord, RoundRecord, RunRecord, RunStatus } from '../../shared/api.ts';

export type { ModelRecord, RoundRecord, RunRecord, RunStatus } from '../../shared/api.ts';

export interface Store {
  createRun(config: RunConfig, now: number): number;
  finishRun(id: number, status: Exclude<RunStatus, 'running'>, reason: string, now: number): void;
  getRun(id: number): RunRecord | undefined;
  listRuns(): RunRecord[];
  /** per run: completed rounds, failed attempts, and the test accuracy and model of its last completed round */
  runOutcomes(): Map<number, { roundsCompleted: number; failedAttempts: number; finalTestAccuracy: number | null; finalModelVersion: number | null }>;
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

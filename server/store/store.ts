/**
 * Persistence behind a small interface: runs, rounds and model versions. Asynchronous, so that the
 * same interface serves the embedded SQLite file of one process and a PostgreSQL server shared by
 * several (store/postgres.ts); both pass the same suite (test/store.test.ts).
 */
import type { ModelName } from '../../shared/models-names.ts';
import { runConfigSchema, type RunConfig } from '../../shared/schemas.ts';
import type { ModelRecord, RoundRecord, RunRecord, RunStatus } from '../../shared/api.ts';

export type { ModelRecord, RoundRecord, RunRecord, RunStatus } from '../../shared/api.ts';

export interface RunOutcome {
  roundsCompleted: number;
  failedAttempts: number;
  finalTestAccuracy: number | null;
  finalModelVersion: number | null;
}

export interface Store {
  createRun(config: RunConfig, now: number): Promise<number>;
  finishRun(id: number, status: Exclude<RunStatus, 'running'>, reason: string, now: number): Promise<void>;
  getRun(id: number): Promise<RunRecord | undefined>;
  listRuns(): Promise<RunRecord[]>;
  /** per run: completed rounds, failed attempts, and the test accuracy and model of its last completed round */
  runOutcomes(): Promise<Map<number, RunOutcome>>;
  recordRound(round: RoundRecord): Promise<void>;
  listRounds(runId: number): Promise<RoundRecord[]>;
  /** stores a new model version (the binary weight payload, and the server optimizer's state after it) and returns its number */
  saveModel(model: { runId: number | null; round: number; model: ModelName; weights: Uint8Array; optimizerState?: Uint8Array }, now: number): Promise<number>;
  setModelMetrics(version: number, testAccuracy: number, testLoss: number): Promise<void>;
  getModel(version: number): Promise<ModelRecord | undefined>;
  latestModel(model?: ModelName): Promise<ModelRecord | undefined>;
  getModelWeights(version: number): Promise<Uint8Array | undefined>;
  /** the server optimizer's state stored with a version (undefined: none, or no such version) */
  getOptimizerState(version: number): Promise<Uint8Array | undefined>;
  listModels(): Promise<ModelRecord[]>;
  close(): Promise<void>;
}

/** The columns of a run and of a model version as both stores keep them (a run's config: parsed JSON). */
export interface RunRow { id: number; config: unknown; status: RunStatus; reason: string | null; created_at: number; finished_at: number | null }
export interface ModelRow { version: number; run_id: number | null; round: number; model: ModelName; created_at: number; test_accuracy: number | null; test_loss: number | null }
export const MODEL_COLUMNS = 'version, run_id, round, model, created_at, test_accuracy, test_loss';

/** A stored run, its config checked again by the schema (a config stored by older code gets today's defaults). */
export const runFromRow = (row: RunRow): RunRecord => ({ id: row.id, config: runConfigSchema.parse(row.config) as RunConfig, status: row.status, reason: row.reason, createdAt: row.created_at, finishedAt: row.finished_at });
export const modelFromRow = (row: ModelRow): ModelRecord => ({ version: row.version, runId: row.run_id, round: row.round, model: row.model, createdAt: row.created_at, testAccuracy: row.test_accuracy, testLoss: row.test_loss });
/** A byte view as a Buffer over the same memory, as both drivers take binary values. */
export const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/** A store whose every answer is ready at once (SQLite's). */
export type SyncStore = { [K in keyof Store]: (...args: Parameters<Store[K]>) => Awaited<ReturnType<Store[K]>> };

/** The asynchronous interface over a synchronous store; a throw becomes a rejection. */
export function asyncStore(sync: SyncStore): Store {
  const wrap =
    <A extends unknown[], R>(fn: (...args: A) => R) =>
    async (...args: A): Promise<R> =>
      fn(...args);
  return {
    createRun: wrap(sync.createRun),
    finishRun: wrap(sync.finishRun),
    getRun: wrap(sync.getRun),
    listRuns: wrap(sync.listRuns),
    runOutcomes: wrap(sync.runOutcomes),
    recordRound: wrap(sync.recordRound),
    listRounds: wrap(sync.listRounds),
    saveModel: wrap(sync.saveModel),
    setModelMetrics: wrap(sync.setModelMetrics),
    getModel: wrap(sync.getModel),
    latestModel: wrap(sync.latestModel),
    getModelWeights: wrap(sync.getModelWeights),
    getOptimizerState: wrap(sync.getOptimizerState),
    listModels: wrap(sync.listModels),
    close: wrap(sync.close),
  };
}

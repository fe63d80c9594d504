/**
 * Persistence behind a small interface: runs, rounds and model versions. Asynchronous, so that the
 * same interface serves the embedded SQLite file of one process and a PostgreSQL server shared by
 * several (store/postgres.ts); both pass the same suite (test/store.test.ts).
 */
import type { ModelName } from '../../shared/models-names.ts';
import type { RunConfig } from '../../shared/schemas.ts';
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

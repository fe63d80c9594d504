/**
 * Persistence behind a small interface: runs, rounds and model versions. Asynchronous, so that the
 * same interface serves the embedded SQLite file of one process and a PostgreSQL server shared by
 * several (store/postgres.ts); both pass the same suite (test/store.test.ts).
 */
import type { ModelName } from '../../shared/models-names.ts';
import { modelMetaSchema, runConfigSchema, type RunConfig } from '../../shared/schemas.ts';
import type { EvaluationRecord, ModelMeta, ModelRecord, RoundRecord, RunRecord, RunStatus } from '../../shared/api.ts';

export type { EvaluationRecord, ModelMeta, ModelRecord, RoundRecord, RunRecord, RunStatus } from '../../shared/api.ts';

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
  saveModel(model: { runId: number | null; round: number; model: ModelName; weights: Uint8Array; optimizerState?: Uint8Array; parentVersion?: number | null }, now: number): Promise<number>;
  setModelMetrics(version: number, testAccuracy: number, testLoss: number): Promise<void>;
  /** replaces a version's registry metadata; false when there is no such version */
  setModelMeta(version: number, meta: ModelMeta): Promise<boolean>;
  getModel(version: number): Promise<ModelRecord | undefined>;
  latestModel(model?: ModelName): Promise<ModelRecord | undefined>;
  getModelWeights(version: number): Promise<Uint8Array | undefined>;
  /** the server optimizer's state stored with a version (undefined: none, or no such version) */
  getOptimizerState(version: number): Promise<Uint8Array | undefined>;
  listModels(): Promise<ModelRecord[]>;
  /** a new evaluation round's number */
  createEvaluation(now: number): Promise<number>;
  /** stores an evaluation round's record (replacing what its number held) */
  saveEvaluation(record: EvaluationRecord): Promise<void>;
  listEvaluations(): Promise<EvaluationRecord[]>;
  /** a small JSON value kept under a key (the deployment: which version is live) */
  getSetting(key: string): Promise<unknown>;
  setSetting(key: string, value: unknown): Promise<void>;
  close(): Promise<void>;
}

/** The columns of a run and of a model version as both stores keep them (a run's config: parsed JSON). */
export interface RunRow { id: number; config: unknown; status: RunStatus; reason: string | null; created_at: number; finished_at: number | null }
export interface ModelRow { version: number; run_id: number | null; round: number; model: ModelName; created_at: number; test_accuracy: number | null; test_loss: number | null; parent_version: number | null; meta: unknown }
export const MODEL_COLUMNS = 'version, run_id, round, model, created_at, test_accuracy, test_loss, parent_version, meta';

/** Both stores' third migration: a version's parent and registry metadata; the parents of versions stored before it are their run's previous version. */
export const REGISTRY_BACKFILL = 'UPDATE models SET parent_version = (SELECT MAX(p.version) FROM models p WHERE p.run_id = models.run_id AND p.version < models.version) WHERE round > 0';

/** Both stores' fourth migration: evaluation rounds, and small settings such as the deployment. */
export const EVALUATIONS_TABLES = (json: string) => `CREATE TABLE evaluations (id INTEGER PRIMARY KEY, created_at BIGINT NOT NULL, data ${json});
   CREATE TABLE settings (key TEXT PRIMARY KEY, value ${json} NOT NULL);`;

export const EMPTY_META: ModelMeta = { name: null, description: null, owner: null, labels: {} };
/** Stored metadata as the schema reads it: a row from older code, or one edited by hand, gets the empty fields. */
const metaFromColumn = (raw: unknown): ModelMeta => {
  const parsed = modelMetaSchema.safeParse(typeof raw === 'string' ? safeJson(raw) : raw);
  return parsed.success ? { ...EMPTY_META, ...parsed.data } : { ...EMPTY_META };
};
const safeJson = (text: string): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
};

/** A stored run, its config checked again by the schema (a config stored by older code gets today's defaults). */
export const runFromRow = (row: RunRow): RunRecord => ({ id: row.id, config: runConfigSchema.parse(row.config) as RunConfig, status: row.status, reason: row.reason, createdAt: row.created_at, finishedAt: row.finished_at });
export const modelFromRow = (row: ModelRow): ModelRecord => ({ version: row.version, runId: row.run_id, round: row.round, model: row.model, createdAt: row.created_at, testAccuracy: row.test_accuracy, testLoss: row.test_loss, parentVersion: row.parent_version, meta: metaFromColumn(row.meta) });
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
    setModelMeta: wrap(sync.setModelMeta),
    getModel: wrap(sync.getModel),
    latestModel: wrap(sync.latestModel),
    getModelWeights: wrap(sync.getModelWeights),
    getOptimizerState: wrap(sync.getOptimizerState),
    listModels: wrap(sync.listModels),
    createEvaluation: wrap(sync.createEvaluation),
    saveEvaluation: wrap(sync.saveEvaluation),
    listEvaluations: wrap(sync.listEvaluations),
    getSetting: wrap(sync.getSetting),
    setSetting: wrap(sync.setSetting),
    close: wrap(sync.close),
  };
}

/** The Store on SQLite (better-sqlite3): embedded, one file under DATA_DIR; synchronous underneath, so each answer is ready at once. */
import Database from 'better-sqlite3';
import { asBuffer, asyncStore, MODEL_COLUMNS, modelFromRow, REGISTRY_BACKFILL, EVALUATIONS_TABLES, runFromRow, type ModelRow, type EvaluationRecord, type RoundRecord, type RunRow, type Store, type SyncStore } from './store.ts';

export const SQLITE_MIGRATIONS = [
  `CREATE TABLE runs (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     config TEXT NOT NULL,
     status TEXT NOT NULL,
     reason TEXT,
     created_at INTEGER NOT NULL,
     finished_at INTEGER
   );
   CREATE TABLE rounds (
     run_id INTEGER NOT NULL REFERENCES runs(id),
     round INTEGER NOT NULL,
     attempt INTEGER NOT NULL,
     status TEXT NOT NULL,
     data TEXT NOT NULL,
     PRIMARY KEY (run_id, round, attempt)
   );
   CREATE TABLE models (
     version INTEGER PRIMARY KEY AUTOINCREMENT,
     run_id INTEGER REFERENCES runs(id),
     round INTEGER NOT NULL,
     model TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     test_accuracy REAL,
     test_loss REAL,
     weights BLOB NOT NULL
   );`,
  // a server optimizer's state (momentum, second moment) goes with the version it produced
  `ALTER TABLE models ADD COLUMN optimizer_state BLOB;`,
  // the registry: a version's parent (exact from now on, inferred for the versions before) and what the admin says of it
  `ALTER TABLE models ADD COLUMN parent_version INTEGER;
   ALTER TABLE models ADD COLUMN meta TEXT;
   ${REGISTRY_BACKFILL};`,
  // evaluation rounds and canaries; which version is live
  EVALUATIONS_TABLES('TEXT'),
];

/** SQLite keeps a run's config as JSON text */
type SqliteRunRow = Omit<RunRow, 'config'> & { config: string };
const toRun = (row: SqliteRunRow) => runFromRow({ ...row, config: JSON.parse(row.config) });

/** The Store on a SQLite file (':memory:' for tests), answering asynchronously as every store does. */
export function openSqliteStore(file: string): Store {
  return asyncStore(openSqlite(file));
}

/** The same store, answering at once: for tests that read it between two fake-clock steps. */
export function openSqlite(file: string): SyncStore {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  const version = db.pragma('user_version', { simple: true }) as number;
  db.transaction(() => {
    for (let v = version; v < SQLITE_MIGRATIONS.length; v++) db.exec(SQLITE_MIGRATIONS[v] as string);
    db.pragma(`user_version = ${SQLITE_MIGRATIONS.length}`);
  })();

  const q = {
    insertRun: db.prepare('INSERT INTO runs (config, status, created_at) VALUES (?, ?, ?)'),
    finishRun: db.prepare('UPDATE runs SET status = ?, reason = ?, finished_at = ? WHERE id = ?'),
    getRun: db.prepare<[number], SqliteRunRow>('SELECT * FROM runs WHERE id = ?'),
    listRuns: db.prepare<[], SqliteRunRow>('SELECT * FROM runs ORDER BY id'),
    upsertRound: db.prepare('INSERT OR REPLACE INTO rounds (run_id, round, attempt, status, data) VALUES (?, ?, ?, ?, ?)'),
    listRounds: db.prepare<[number], { data: string }>('SELECT data FROM rounds WHERE run_id = ? ORDER BY round, attempt'),
    outcomes: db.prepare<[], { run_id: number; completed: number; failed: number; accuracy: number | null; version: number | null }>(
      `SELECT run_id, SUM(status = 'completed') AS completed, SUM(status = 'failed') AS failed,
         (SELECT json_extract(data, '$.testAccuracy') FROM rounds l WHERE l.run_id = r.run_id AND l.status = 'completed' ORDER BY round DESC, attempt DESC LIMIT 1) AS accuracy,
         (SELECT json_extract(data, '$.modelVersion') FROM rounds l WHERE l.run_id = r.run_id AND l.status = 'completed' ORDER BY round DESC, attempt DESC LIMIT 1) AS version
       FROM rounds r GROUP BY run_id`,
    ),
    insertModel: db.prepare('INSERT INTO models (run_id, round, model, created_at, weights, optimizer_state, parent_version) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    setMeta: db.prepare('UPDATE models SET meta = ? WHERE version = ?'),
    optimizerState: db.prepare<[number], { optimizer_state: Buffer | null }>('SELECT optimizer_state FROM models WHERE version = ?'),
    setMetrics: db.prepare('UPDATE models SET test_accuracy = ?, test_loss = ? WHERE version = ?'),
    getModel: db.prepare<[number], ModelRow>(`SELECT ${MODEL_COLUMNS} FROM models WHERE version = ?`),
    latest: db.prepare<[], ModelRow>(`SELECT ${MODEL_COLUMNS} FROM models ORDER BY version DESC LIMIT 1`),
    latestOf: db.prepare<[string], ModelRow>(`SELECT ${MODEL_COLUMNS} FROM models WHERE model = ? ORDER BY version DESC LIMIT 1`),
    weights: db.prepare<[number], { weights: Buffer }>('SELECT weights FROM models WHERE version = ?'),
    listModels: db.prepare<[], ModelRow>(`SELECT ${MODEL_COLUMNS} FROM models ORDER BY version`),
    createEvaluation: db.prepare<[number]>('INSERT INTO evaluations (id, created_at) VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM evaluations), ?)'),
    saveEvaluation: db.prepare('UPDATE evaluations SET data = ? WHERE id = ?'),
    listEvaluations: db.prepare<[], { data: string }>('SELECT data FROM evaluations WHERE data IS NOT NULL ORDER BY id'),
    getSetting: db.prepare<[string], { value: string }>('SELECT value FROM settings WHERE key = ?'),
    setSetting: db.prepare('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
  };

  return {
    createRun: (config, now) => Number(q.insertRun.run(JSON.stringify(config), 'running', now).lastInsertRowid),
    finishRun: (id, status, reason, now) => void q.finishRun.run(status, reason, now, id),
    getRun: (id) => {
      const row = q.getRun.get(id);
      return row ? toRun(row) : undefined;
    },
    listRuns: () => q.listRuns.all().map(toRun),
    recordRound: (r: RoundRecord) => void q.upsertRound.run(r.runId, r.round, r.attempt, r.status, JSON.stringify(r)),
    listRounds: (runId) => q.listRounds.all(runId).map((row) => JSON.parse(row.data) as RoundRecord),
    runOutcomes: () => new Map(q.outcomes.all().map((r) => [r.run_id, { roundsCompleted: r.completed, failedAttempts: r.failed, finalTestAccuracy: r.accuracy, finalModelVersion: r.version }])),
    saveModel: (m, now) => Number(q.insertModel.run(m.runId, m.round, m.model, now, asBuffer(m.weights), m.optimizerState ? asBuffer(m.optimizerState) : null, m.parentVersion ?? null).lastInsertRowid),
    setModelMetrics: (version, acc, loss) => void q.setMetrics.run(acc, loss, version),
    setModelMeta: (version, meta) => q.setMeta.run(JSON.stringify(meta), version).changes > 0,
    getModel: (version) => {
      const row = q.getModel.get(version);
      return row ? modelFromRow(row) : undefined;
    },
    latestModel: (model) => {
      const row = model ? q.latestOf.get(model) : q.latest.get();
      return row ? modelFromRow(row) : undefined;
    },
    getModelWeights: (version) => {
      const row = q.weights.get(version);
      return row ? new Uint8Array(row.weights.buffer, row.weights.byteOffset, row.weights.byteLength) : undefined;
    },
    getOptimizerState: (version) => {
      const b = q.optimizerState.get(version)?.optimizer_state;
      return b ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : undefined;
    },
    listModels: () => q.listModels.all().map(modelFromRow),
    createEvaluation: (now) => Number(q.createEvaluation.run(now).lastInsertRowid),
    saveEvaluation: (r) => {
      if (q.saveEvaluation.run(JSON.stringify(r), r.id).changes === 0) throw new Error(`evaluation ${r.id} was never created`);
    },
    listEvaluations: () => q.listEvaluations.all().map((row) => JSON.parse(row.data) as EvaluationRecord),
    getSetting: (key) => {
      const row = q.getSetting.get(key);
      return row ? (JSON.parse(row.value) as unknown) : undefined;
    },
    setSetting: (key, value) => void q.setSetting.run(key, JSON.stringify(value)),
    close: () => db.close(),
  };
}
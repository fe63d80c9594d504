/**
 * The Store on PostgreSQL (`DATABASE_URL`): what several server nodes share — runs, rounds and
 * model versions — with the same interface and the same test suite as the SQLite file of one
 * process. Migrations run once, under an advisory lock, whichever node starts first.
 */
import pg from 'pg';
import { asBuffer, MODEL_COLUMNS, modelFromRow, REGISTRY_BACKFILL, EVALUATIONS_TABLES, runFromRow, type ModelRow, type EvaluationRecord, type RoundRecord, type RunRow, type Store } from './store.ts';

const MIGRATIONS = [
  `CREATE TABLE runs (
     id SERIAL PRIMARY KEY,
     config JSONB NOT NULL,
     status TEXT NOT NULL,
     reason TEXT,
     created_at BIGINT NOT NULL,
     finished_at BIGINT
   );
   CREATE TABLE rounds (
     run_id INTEGER NOT NULL REFERENCES runs(id),
     round INTEGER NOT NULL,
     attempt INTEGER NOT NULL,
     status TEXT NOT NULL,
     data JSONB NOT NULL,
     PRIMARY KEY (run_id, round, attempt)
   );
   CREATE TABLE models (
     version SERIAL PRIMARY KEY,
     run_id INTEGER REFERENCES runs(id),
     round INTEGER NOT NULL,
     model TEXT NOT NULL,
     created_at BIGINT NOT NULL,
     test_accuracy DOUBLE PRECISION,
     test_loss DOUBLE PRECISION,
     weights BYTEA NOT NULL
   );
   CREATE INDEX models_run ON models (run_id, version);`,
  // a server optimizer's state (momentum, second moment) goes with the version it produced
  `ALTER TABLE models ADD COLUMN optimizer_state BYTEA;`,
  // the registry: a version's parent (exact from now on, inferred for the versions before) and what the admin says of it
  `ALTER TABLE models ADD COLUMN parent_version INTEGER;
   ALTER TABLE models ADD COLUMN meta JSONB;
   ${REGISTRY_BACKFILL};`,
  // evaluation rounds and canaries; which version is live
  EVALUATIONS_TABLES('JSONB'),
];

/** an arbitrary key for the migration lock (pg_advisory_xact_lock) */
const MIGRATION_LOCK = 0x46_4c_53_54; // "FLST"

/** BIGINT columns hold milliseconds since 1970: well within a double's exact integers */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === pg.types.builtins.INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
};


/** Connects, migrates and returns the store; the connection is checked before this returns. */
export async function openPostgresStore(url: string, options: { maxConnections?: number } = {}): Promise<Store> {
  const pool = new pg.Pool({ connectionString: url, max: options.maxConnections ?? 8, types });
  // an idle connection the server dropped must not take the process down
  pool.on('error', () => undefined);
  try {
    await migrate(pool);
  } catch (err) {
    await pool.end();
    throw new Error(`PostgreSQL at ${redact(url)}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const rows = async <R extends pg.QueryResultRow>(text: string, values: unknown[] = []) => (await pool.query<R>(text, values)).rows;

  return {
    createRun: async (config, now) => (await rows<{ id: number }>('INSERT INTO runs (config, status, created_at) VALUES ($1, $2, $3) RETURNING id', [JSON.stringify(config), 'running', now]))[0]!.id,
    finishRun: async (id, status, reason, now) => void (await pool.query('UPDATE runs SET status = $1, reason = $2, finished_at = $3 WHERE id = $4', [status, reason, now, id])),
    getRun: async (id) => {
      const [row] = await rows<RunRow>('SELECT * FROM runs WHERE id = $1', [id]);
      return row ? runFromRow(row) : undefined;
    },
    listRuns: async () => (await rows<RunRow>('SELECT * FROM runs ORDER BY id')).map(runFromRow),
    recordRound: async (r: RoundRecord) =>
      void (await pool.query('INSERT INTO rounds (run_id, round, attempt, status, data) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id, round, attempt) DO UPDATE SET status = EXCLUDED.status, data = EXCLUDED.data', [r.runId, r.round, r.attempt, r.status, JSON.stringify(r)])),
    listRounds: async (runId) => (await rows<{ data: RoundRecord }>('SELECT data FROM rounds WHERE run_id = $1 ORDER BY round, attempt', [runId])).map((row) => row.data),
    runOutcomes: async () => {
      const outcomes = await rows<{ run_id: number; completed: number; failed: number; accuracy: number | null; version: number | null }>(
        `SELECT run_id,
           COUNT(*) FILTER (WHERE status = 'completed')::int AS completed,
           COUNT(*) FILTER (WHERE status = 'failed')::int AS failed,
           (SELECT (data->>'testAccuracy')::float8 FROM rounds l WHERE l.run_id = r.run_id AND l.status = 'completed' ORDER BY round DESC, attempt DESC LIMIT 1) AS accuracy,
           (SELECT (data->>'modelVersion')::int FROM rounds l WHERE l.run_id = r.run_id AND l.status = 'completed' ORDER BY round DESC, attempt DESC LIMIT 1) AS version
         FROM rounds r GROUP BY run_id`,
      );
      return new Map(outcomes.map((r) => [r.run_id, { roundsCompleted: r.completed, failedAttempts: r.failed, finalTestAccuracy: r.accuracy, finalModelVersion: r.version }]));
    },
    saveModel: async (m, now) =>
      (await rows<{ version: number }>('INSERT INTO models (run_id, round, model, created_at, weights, optimizer_state, parent_version) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING version', [m.runId, m.round, m.model, now, asBuffer(m.weights), m.optimizerState ? asBuffer(m.optimizerState) : null, m.parentVersion ?? null]))[0]!.version,
    setModelMetrics: async (version, acc, loss) => void (await pool.query('UPDATE models SET test_accuracy = $1, test_loss = $2 WHERE version = $3', [acc, loss, version])),
    setModelMeta: async (version, meta) => ((await pool.query('UPDATE models SET meta = $1 WHERE version = $2', [JSON.stringify(meta), version])).rowCount ?? 0) > 0,
    getModel: async (version) => {
      const [row] = await rows<ModelRow>(`SELECT ${MODEL_COLUMNS} FROM models WHERE version = $1`, [version]);
      return row ? modelFromRow(row) : undefined;
    },
    latestModel: async (model) => {
      const [row] = model ? await rows<ModelRow>(`SELECT ${MODEL_COLUMNS} FROM models WHERE model = $1 ORDER BY version DESC LIMIT 1`, [model]) : await rows<ModelRow>(`SELECT ${MODEL_COLUMNS} FROM models ORDER BY version DESC LIMIT 1`);
      return row ? modelFromRow(row) : undefined;
    },
    getModelWeights: async (version) => {
      const [row] = await rows<{ weights: Buffer }>('SELECT weights FROM models WHERE version = $1', [version]);
      return row ? new Uint8Array(row.weights.buffer, row.weights.byteOffset, row.weights.byteLength) : undefined;
    },
    getOptimizerState: async (version) => {
      const [row] = await rows<{ optimizer_state: Buffer | null }>('SELECT optimizer_state FROM models WHERE version = $1', [version]);
      const b = row?.optimizer_state;
      return b ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : undefined;
    },
    listModels: async () => (await rows<ModelRow>(`SELECT ${MODEL_COLUMNS} FROM models ORDER BY version`)).map(modelFromRow),
    createEvaluation: async (now) => (await rows<{ id: number }>('INSERT INTO evaluations (id, created_at) VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM evaluations), $1) RETURNING id', [now]))[0]!.id,
    saveEvaluation: async (r) => {
      if (((await pool.query('UPDATE evaluations SET data = $1 WHERE id = $2', [JSON.stringify(r), r.id])).rowCount ?? 0) === 0) throw new Error(`evaluation ${r.id} was never created`);
    },
    listEvaluations: async () => (await rows<{ data: EvaluationRecord }>('SELECT data FROM evaluations WHERE data IS NOT NULL ORDER BY id')).map((row) => row.data),
    getSetting: async (key) => (await rows<{ value: unknown }>('SELECT value FROM settings WHERE key = $1', [key]))[0]?.value,
    setSetting: async (key, value) => void (await pool.query('INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, JSON.stringify(value)])),
    close: () => pool.end(),
  };
}

async function migrate(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const [row] = (await client.query<{ version: number }>('SELECT version FROM schema_version')).rows;
    const from = row?.version ?? 0;
    if (from > MIGRATIONS.length) throw new Error(`the database's schema is version ${from}, newer than this code's ${MIGRATIONS.length}`);
    for (let v = from; v < MIGRATIONS.length; v++) await client.query(MIGRATIONS[v]!);
    if (!row) await client.query('INSERT INTO schema_version (version) VALUES ($1)', [MIGRATIONS.length]);
    else await client.query('UPDATE schema_version SET version = $1', [MIGRATIONS.length]);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** The URL without its password, for messages. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(an unparsable URL)';
  }
}

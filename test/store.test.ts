/**
 * One suite for every Store: the SQLite file of one process and a real PostgreSQL server (a
 * private one started here, or TEST_DATABASE_URL's). What one stores, the other must give back
 * the same, byte for byte and field for field.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runConfigSchema } from '../shared/schemas.ts';
import type { RoundRecord } from '../shared/api.ts';
import { createDatabase, startPostgres, type Service } from '../server/cluster/services.ts';
import { openPostgresStore } from '../server/store/postgres.ts';
import Database from 'better-sqlite3';
import { openSqliteStore, SQLITE_MIGRATIONS } from '../server/store/sqlite.ts';
import type { Store } from '../server/store/store.ts';

let postgres: Service | undefined;
let serverUrl: string;
let databases = 0;
const dirs: string[] = [];

beforeAll(async () => {
  if (process.env.TEST_DATABASE_URL) serverUrl = process.env.TEST_DATABASE_URL;
  else {
    postgres = await startPostgres();
    serverUrl = postgres.url;
  }
}, 60_000);
afterAll(async () => {
  await postgres?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const kinds: [string, () => Promise<Store>][] = [
  [
    'SQLite',
    async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'fl-store-'));
      dirs.push(dir);
      return openSqliteStore(path.join(dir, 'fl.sqlite'));
    },
  ],
  ['PostgreSQL', async () => openPostgresStore(await createDatabase(serverUrl, `store_test_${process.pid}_${++databases}`))],
];

const config = runConfigSchema.parse({ model: 'cnn-small', rounds: 3, clientsPerRound: 2, minUpdates: 1, dp: undefined });

function round(runId: number, round: number, attempt: number, o: Partial<RoundRecord> = {}): RoundRecord {
  return {
    runId, round, attempt, status: 'completed', startedAt: 1000 + round, durationMs: 12.5, participants: 2, completed: 2, rejected: 0, dropped: 0, modelVersion: null,
    testAccuracy: 0.5 + round / 100, testLoss: 1.25, reason: null, devices: [], ...o,
  } as RoundRecord;
}

describe.each(kinds)('the %s store', (_name, open) => {
  it('creates, lists and finishes runs, keeping their config exactly', async () => {
    const store = await open();
    try {
      const a = await store.createRun(config, 1_700_000_000_123);
      const b = await store.createRun({ ...config, rounds: 7 }, 1_700_000_000_456);
      expect(b).toBeGreaterThan(a);
      expect(await store.getRun(a)).toEqual({ id: a, config, status: 'running', reason: null, createdAt: 1_700_000_000_123, finishedAt: null });
      await store.finishRun(a, 'done', 'completed 3 rounds', 1_700_000_009_999);
      expect(await store.getRun(a)).toMatchObject({ status: 'done', reason: 'completed 3 rounds', finishedAt: 1_700_000_009_999 });
      expect((await store.listRuns()).map((r) => [r.id, r.status, r.config.rounds])).toEqual([[a, 'done', 3], [b, 'running', 7]]);
      expect(await store.getRun(999_999)).toBeUndefined();
    } finally {
      await store.close();
    }
  });

  it('keeps one record per round attempt, the last written wins, listed in order', async () => {
    const store = await open();
    try {
      const run = await store.createRun(config, 1);
      await store.recordRound(round(run, 2, 1, { status: 'failed', testAccuracy: null, reason: 'deadline' }));
      await store.recordRound(round(run, 1, 1, { evaluationPending: true, testAccuracy: null }));
      await store.recordRound(round(run, 2, 2));
      await store.recordRound(round(run, 1, 1)); // the evaluated rewrite
      const rounds = await store.listRounds(run);
      expect(rounds.map((r) => [r.round, r.attempt, r.status])).toEqual([[1, 1, 'completed'], [2, 1, 'failed'], [2, 2, 'completed']]);
      expect(rounds[0]).toEqual(round(run, 1, 1));
      expect(await store.listRounds(run + 1)).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('stores model versions byte for byte with their metrics, and names the latest of each model', async () => {
    const store = await open();
    try {
      const run = await store.createRun(config, 1);
      const bytes = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 7919) % 256);
      const v1 = await store.saveModel({ runId: run, round: 0, model: 'cnn-small', weights: bytes }, 10);
      const state = Uint8Array.from({ length: 999 }, (_, i) => (i * 31) % 256);
      const v2 = await store.saveModel({ runId: null, round: 0, model: 'mlp', weights: bytes.subarray(5, 100), optimizerState: state.subarray(1) }, 11);
      expect(Array.from((await store.getOptimizerState(v2))!)).toEqual(Array.from(state.subarray(1)));
      expect(await store.getOptimizerState(v1)).toBeUndefined();
      expect(v2).toBeGreaterThan(v1);
      expect(Array.from((await store.getModelWeights(v1))!)).toEqual(Array.from(bytes));
      expect(Array.from((await store.getModelWeights(v2))!)).toEqual(Array.from(bytes.subarray(5, 100)));
      await store.setModelMetrics(v1, 0.9375, 0.21);
      expect(await store.getModel(v1)).toEqual({ version: v1, runId: run, round: 0, model: 'cnn-small', createdAt: 10, testAccuracy: 0.9375, testLoss: 0.21, parentVersion: null, meta: { name: null, description: null, owner: null, labels: {} } });
      // the registry's metadata: stored whole, read back as written; a version that is not stored is said so
      const v3 = await store.saveModel({ runId: run, round: 1, model: 'cnn-small', weights: bytes.subarray(0, 10), parentVersion: v1 }, 12);
      const meta = { name: 'digits – ünïcode', description: 'line one\nline two', owner: 'ml-team', labels: { stage: 'candidate', 'team/area': 'vision' } };
      expect(await store.setModelMeta(v3, meta)).toBe(true);
      expect(await store.getModel(v3)).toMatchObject({ parentVersion: v1, meta });
      expect(await store.setModelMeta(v3 + 100, meta)).toBe(false);
      expect((await store.latestModel())?.version).toBe(v3);
      expect((await store.latestModel('mlp'))?.version).toBe(v2);
      expect(await store.latestModel('cnn')).toBeUndefined();
      expect((await store.listModels()).map((m) => m.version)).toEqual([v1, v2, v3]);
      expect(await store.getModel(v3 + 100)).toBeUndefined();
      expect(await store.getModelWeights(v3 + 100)).toBeUndefined();
    } finally {
      await store.close();
    }
  });

  it('keeps evaluation rounds under fresh numbers and small settings by key', async () => {
    const store = await open();
    try {
      const a = await store.createEvaluation(5);
      const b = await store.createEvaluation(6);
      expect(b).toBe(a + 1);
      const record = { id: b, purpose: 'canary' as const, versions: [1, 2], startedAt: 6, endedAt: 9, reason: 'every selected device answered (1 reported)', selected: 1, reported: 1, results: [{ version: 1, examples: 10, accuracy: 0.5, loss: 1, spread: null }, { version: 2, examples: 10, accuracy: 0.6, loss: 0.9, spread: null }] };
      await store.saveEvaluation(record);
      expect(await store.listEvaluations()).toEqual([record]); // one not yet closed is not listed
      await expect(store.saveEvaluation({ ...record, id: b + 5 })).rejects.toThrow(`evaluation ${b + 5} was never created`);
      expect(await store.getSetting('deployment')).toBeUndefined();
      await store.setSetting('deployment', { live: 4, candidate: null });
      await store.setSetting('deployment', { live: 7, candidate: null });
      expect(await store.getSetting('deployment')).toEqual({ live: 7, candidate: null });
    } finally {
      await store.close();
    }
  });

  it('sums up each run: rounds completed, failed attempts, the last completed round\'s accuracy and model', async () => {
    const store = await open();
    try {
      const run = await store.createRun(config, 1);
      const other = await store.createRun(config, 2);
      await store.recordRound(round(run, 1, 1, { modelVersion: 4, testAccuracy: 0.8 }));
      await store.recordRound(round(run, 2, 1, { status: 'failed', testAccuracy: null }));
      await store.recordRound(round(run, 2, 2, { modelVersion: 6, testAccuracy: 0.85 }));
      const outcomes = await store.runOutcomes();
      expect(outcomes.get(run)).toEqual({ roundsCompleted: 2, failedAttempts: 1, finalTestAccuracy: 0.85, finalModelVersion: 6 });
      expect(outcomes.get(other)).toBeUndefined();
    } finally {
      await store.close();
    }
  });

  it('refuses a round of a run it does not hold, and keeps what it held', async () => {
    const store = await open();
    try {
      const run = await store.createRun(config, 1);
      await store.recordRound(round(run, 1, 1));
      await expect(store.recordRound(round(run + 50, 1, 1))).rejects.toThrow();
      expect(await store.listRounds(run)).toHaveLength(1);
    } finally {
      await store.close();
    }
  });
});

describe('the PostgreSQL store', () => {
  it('lets several nodes open the same database at once: the schema is created once', async () => {
    const url = await createDatabase(serverUrl, `store_test_${process.pid}_race`);
    const stores = await Promise.all([1, 2, 3].map(() => openPostgresStore(url)));
    try {
      const id = await stores[0]!.createRun(config, 5);
      for (const s of stores) expect((await s.getRun(id))?.createdAt).toBe(5);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it('says which server it could not reach', async () => {
    await expect(openPostgresStore('postgres://fl:secret@127.0.0.1:1/nowhere')).rejects.toThrow(/PostgreSQL at postgres:\/\/fl:\*\*\*@127\.0\.0\.1:1\/nowhere/);
  });
});

describe('the SQLite store', () => {
  it('migrates a file of the first schema in place, keeping what it held', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fl-store-'));
    dirs.push(dir);
    const file = path.join(dir, 'old.sqlite');
    const old = new Database(file);
    old.exec(SQLITE_MIGRATIONS[0]!);
    old.pragma('user_version = 1');
    old.prepare('INSERT INTO runs (config, status, created_at) VALUES (?, ?, ?)').run(JSON.stringify(config), 'done', 7);
    old.prepare('INSERT INTO models (run_id, round, model, created_at, weights) VALUES (?, ?, ?, ?, ?)').run(1, 0, 'cnn-small', 8, Buffer.from([1, 2, 3]));
    old.prepare('INSERT INTO models (run_id, round, model, created_at, weights) VALUES (?, ?, ?, ?, ?)').run(1, 1, 'cnn-small', 9, Buffer.from([4]));
    old.prepare('INSERT INTO models (run_id, round, model, created_at, weights) VALUES (?, ?, ?, ?, ?)').run(1, 3, 'cnn-small', 10, Buffer.from([5]));
    old.close();
    const store = openSqliteStore(file);
    try {
      expect(await store.getRun(1)).toMatchObject({ status: 'done', createdAt: 7 });
      expect(Array.from((await store.getModelWeights(1))!)).toEqual([1, 2, 3]);
      expect(await store.getOptimizerState(1)).toBeUndefined();
      // the registry's columns: each old version's parent is its run's previous version, no metadata yet
      expect((await store.listModels()).map((m) => [m.version, m.parentVersion])).toEqual([[1, null], [2, 1], [3, 2]]);
      expect((await store.getModel(3))!.meta).toEqual({ name: null, description: null, owner: null, labels: {} });
      const v = await store.saveModel({ runId: 1, round: 4, model: 'cnn-small', weights: Uint8Array.of(4), optimizerState: Uint8Array.of(9, 9), parentVersion: 3 }, 9);
      expect(Array.from((await store.getOptimizerState(v))!)).toEqual([9, 9]);
      expect((await store.getModel(v))!.parentVersion).toBe(3);
    } finally {
      await store.close();
    }
  });
});

/**
 * Hyper-parameter search: the search space (its rules, conditional options, draws in range), ASHA's
 * rungs and stops, the ranking, the saved presets and their route, and `npm run tune` itself on a
 * tiny search (trials stopped at a rung, the results written, the best saved as a preset).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { Asha, rankTrials, rungsOf, sampleTrial, searchSpaceSchema, trialScore } from '../server/sim/tuning.ts';
import { listPresets, savePreset } from '../server/presets.ts';
import { createRng } from '../shared/rng.ts';
import { startServer, type TestServer } from './support/server.ts';

const space = searchSpaceSchema.parse({
  lr: { log: [0.01, 1] },
  epochs: { choice: [1, 2, 5] },
  batch: { int: [10, 12] },
  fraction: { uniform: [0.1, 0.2] },
  strategy: { choice: ['fedavg', 'fedadam', 'fedprox'] },
  'server-lr': [{ when: { strategy: ['fedadam'] }, log: [0.003, 0.03] }],
  mu: { when: { strategy: ['fedprox'] }, log: [0.001, 0.1] },
});

describe('the search space', () => {
  it('draws every option in its range, and a conditional one only when its condition holds', () => {
    const rng = createRng(7);
    const draws = Array.from({ length: 600 }, () => sampleTrial(space, rng));
    for (const d of draws) {
      expect(d.lr).toBeGreaterThanOrEqual(0.01);
      expect(d.lr).toBeLessThanOrEqual(1);
      expect([1, 2, 5]).toContain(d.epochs);
      expect([10, 11, 12]).toContain(d.batch);
      expect(d.fraction).toBeGreaterThanOrEqual(0.1);
      expect(d.fraction).toBeLessThanOrEqual(0.2);
      expect('server-lr' in d).toBe(d.strategy === 'fedadam');
      expect('mu' in d).toBe(d.strategy === 'fedprox');
      if (d.strategy === 'fedadam') expect(d['server-lr']).toBeGreaterThanOrEqual(0.003);
    }
    // log-uniform: as many draws in [0.01, 0.1) as in [0.1, 1]; an int range takes both ends
    const low = draws.filter((d) => (d.lr as number) < 0.1).length;
    expect(low / draws.length).toBeGreaterThan(0.42);
    expect(low / draws.length).toBeLessThan(0.58);
    expect(new Set(draws.map((d) => d.batch))).toEqual(new Set([10, 11, 12]));
    // the same seed draws the same trial
    expect(sampleTrial(space, createRng(3))).toEqual(sampleTrial(space, createRng(3)));
  });

  it('refuses what cannot be drawn, naming it', () => {
    const issues = (s: unknown) => {
      const r = searchSpaceSchema.safeParse(s);
      return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    expect(issues({})).toEqual([expect.stringMatching(/empty/)]);
    expect(issues({ lr: { log: [0.3, 0.1] } }).join()).toMatch(/low ≤ high/);
    expect(issues({ lr: { log: [0, 0.1] } }).join()).toMatch(/lr/);
    expect(issues({ rounds: { choice: [10] } }).join()).toMatch(/rounds/);
    expect(issues({ epochs: { int: [1.5, 3] } }).join()).toMatch(/whole numbers/);
    expect(issues({ mu: { when: { strategy: ['fedprox'] }, log: [0.001, 0.1] } }).join()).toMatch(/depends on "strategy"/);
    expect(issues({ lr: { choice: [0.1], spread: 2 } }).length).toBeGreaterThan(0);
  });
});

describe('ASHA', () => {
  it('judges at rounds min·η^k below the last round', () => {
    expect(rungsOf({ minRounds: 5, maxRounds: 135, reduction: 3 })).toEqual([5, 15, 45]);
    expect(rungsOf({ minRounds: 1, maxRounds: 1, reduction: 3 })).toEqual([]);
    expect(() => rungsOf({ minRounds: 10, maxRounds: 5, reduction: 3 })).toThrow(/at least|≥/);
    expect(() => rungsOf({ minRounds: 5, maxRounds: 50, reduction: 1 })).toThrow(/reduction/);
  });

  it('pauses trials at a rung and promotes only the top ⌊n/η⌋ there, highest rung first, before starting new ones', () => {
    const asha = new Asha({ minRounds: 2, maxRounds: 20, reduction: 3 }, [1, 2, 3, 4, 5, 6, 7]);
    expect(asha.rungs).toEqual([2, 6, 18]);
    // two workers: trials 1 and 2 start
    expect(asha.next()).toEqual({ kind: 'start', id: 1 });
    expect(asha.next()).toEqual({ kind: 'start', id: 2 });
    expect(asha.report(1, 1, 0.3)).toBe('continue'); // not a rung
    expect(asha.report(1, 2, 0.5)).toBe('pause');
    // one trial at the rung: ⌊1/3⌋ = 0 promoted, so a new trial starts instead
    expect(asha.next()).toEqual({ kind: 'start', id: 3 });
    expect(asha.report(2, 2, 0.8)).toBe('pause');
    expect(asha.next()).toEqual({ kind: 'start', id: 4 });
    expect(asha.report(3, 2, 0.6)).toBe('pause');
    // three at rung 2: the best of them (trial 2) is promoted, and resumes
    expect(asha.next()).toEqual({ kind: 'resume', id: 2 });
    expect(asha.report(2, 2, 0.8)).toBe('continue'); // a promoted trial passes its rung on
    expect(asha.report(4, 2, 0.9)).toBe('pause');
    expect(asha.report(2, 6, 0.85)).toBe('pause');
    // four at rung 2: ⌊4/3⌋ = 1, and that one (trial 4, 0.9) is not yet promoted
    expect(asha.next()).toEqual({ kind: 'resume', id: 4 });
    expect(asha.next()).toEqual({ kind: 'start', id: 5 });
    expect(asha.report(5, 2, 0.1)).toBe('pause');
    expect(asha.report(4, 6, 0.95)).toBe('pause');
    expect(asha.next()).toEqual({ kind: 'start', id: 6 });
    expect(asha.report(6, 2, 0.7)).toBe('pause');
    // six at rung 2: the top two (4 and 2) are both promoted already; two at rung 6: none yet
    expect(asha.next()).toEqual({ kind: 'start', id: 7 });
    expect(asha.report(7, 2, 0.95)).toBe('pause');
    // seven at rung 2: top two are 7 and 4; trial 7 is promoted. Then nothing: the search is over.
    expect(asha.next()).toEqual({ kind: 'resume', id: 7 });
    expect(asha.report(7, 6, 0.97)).toBe('pause');
    // three at rung 6 (0.85, 0.95, 0.97): the best, trial 7, goes on to the last rung
    expect(asha.next()).toEqual({ kind: 'resume', id: 7 });
    asha.finished(7, 20, trialScore(0.98, 15, 20));
    expect(asha.next()).toBeUndefined();
    expect([...asha.pausedTrials]).toEqual([[1, 2], [3, 2], [2, 6], [5, 2], [4, 6], [6, 2]]);
  });

  it('counts a trial that reached the target early at the rungs it never reached, above any that did not', () => {
    const asha = new Asha({ minRounds: 2, maxRounds: 20, reduction: 2 }, [1, 2]);
    const reached = trialScore(0.97, 4, 20);
    expect(reached).toBeGreaterThan(1);
    expect(trialScore(0.97, 3, 20)).toBeGreaterThan(reached); // sooner is better
    expect(trialScore(0.9, null, 20)).toBe(0.9);
    asha.next();
    expect(asha.report(1, 2, trialScore(0.8, null, 20))).toBe('pause');
    asha.next();
    expect(asha.report(2, 2, 0.7)).toBe('pause');
    expect(asha.next()).toEqual({ kind: 'resume', id: 1 });
    expect(asha.report(1, 4, reached)).toBe('pause'); // it reached the target at rung 4, and its run ended there
    asha.finished(1, 4, reached);
    expect(asha.recordedScores.map((r) => r.scores.length)).toEqual([2, 1, 1, 1]); // rungs 2, 4, 8, 16
    expect(asha.pausedTrials.has(1)).toBe(false);
    expect(asha.next()).toBeUndefined(); // trial 2 is not in the top half at rung 2
  });

  it('ranks trials by rounds to the target, then best accuracy', () => {
    const ranked = rankTrials([
      { id: 1, reachedAt: null, bestAccuracy: 0.96, rounds: 100 },
      { id: 2, reachedAt: 80, bestAccuracy: 0.97, rounds: 80 },
      { id: 3, reachedAt: 40, bestAccuracy: 0.971, rounds: 40 },
      { id: 4, reachedAt: null, bestAccuracy: 0.9, rounds: 5 },
      { id: 5, reachedAt: null, bestAccuracy: 0.96, rounds: 45 },
    ]);
    expect(ranked.map((t) => t.id)).toEqual([3, 2, 5, 1, 4]);
  });
});

describe('saved presets', () => {
  const dirs: string[] = [];
  let server: TestServer | undefined;
  const tempDir = () => {
    const d = mkdtempSync(path.join(tmpdir(), 'fl-presets-'));
    dirs.push(d);
    return d;
  };
  afterEach(async () => {
    await server?.close();
    server = undefined;
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const good = { name: 'tuned-a', label: 'Tuned A', hint: 'found by npm run tune', config: { model: 'mlp', rounds: 50, clientsPerRound: 10, minUpdates: 10, learningRate: 0.2, strategy: 'fedadam', serverLearningRate: 0.01 }, tuned: { trials: 3 } };

  it('are saved whole and listed; a file that is not a valid preset is skipped with why, and left as it was', async () => {
    const dir = tempDir();
    expect(savePreset(dir, good)).toBe(path.join(dir, 'tuned-a.json'));
    writeFileSync(path.join(dir, 'broken.json'), '{ "name": ');
    writeFileSync(path.join(dir, 'bad-config.json'), JSON.stringify({ ...good, name: 'bad-config', config: { learningRate: -1 } }));
    writeFileSync(path.join(dir, 'renamed.json'), JSON.stringify(good));
    writeFileSync(path.join(dir, 'notes.txt'), 'not a preset');
    const { presets, skipped } = listPresets(dir);
    expect(presets.map((p) => p.name)).toEqual(['tuned-a']);
    expect(presets[0]).toMatchObject({ label: 'Tuned A', config: good.config, tuned: { trials: 3 } });
    expect(Object.fromEntries(skipped.map((s) => [s.file, s.reason]))).toEqual({
      'bad-config.json': expect.stringMatching(/^config: learningRate/),
      'broken.json': expect.stringMatching(/^not JSON/),
      'renamed.json': expect.stringMatching(/not its file's/),
    });
    expect(readFileSync(path.join(dir, 'broken.json'), 'utf8')).toBe('{ "name": ');
    expect(listPresets(path.join(dir, 'missing'))).toEqual({ presets: [], skipped: [] });
  });

  it('refuses to save a preset with a bad name or config', () => {
    const dir = tempDir();
    expect(() => savePreset(dir, { ...good, name: '../escape' })).toThrow(/name/);
    expect(() => savePreset(dir, { ...good, config: { batchSize: 0 } })).toThrow(/batchSize/);
    expect(listPresets(dir).presets).toEqual([]);
  });

  it('are served at /api/presets for the launch form', async () => {
    const dir = tempDir();
    savePreset(dir, good);
    server = await startServer({ presetsDir: dir });
    const body = (await (await fetch(`${server.url}/api/presets`)).json()) as ReturnType<typeof listPresets>;
    expect(body.presets.map((p) => p.name)).toEqual(['tuned-a']);
    expect(body.skipped).toEqual([]);
  });
});

describe('npm run tune', () => {
  it('runs a tiny search: trials stopped at a rung, every trial written, the best saved as a preset', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fl-tune-'));
    try {
      const spaceFile = path.join(dir, 'space.json');
      writeFileSync(spaceFile, JSON.stringify({ fixed: { model: 'mlp', partition: 'iid', clients: 10, examples: 60 }, space: { lr: { log: [0.003, 0.3] }, batch: { choice: [10, 30] } } }));
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/tune.ts', '--space', spaceFile, '--trials', '6', '--parallel', '2', '--min-rounds', '1', '--max-rounds', '3', '--validation', '500', '--fraction', '0.2', '--out', path.join(dir, 'out'), '--name', 'tiny', '--preset', 'tiny-best'], { env: { ...process.env, PRESETS_DIR: path.join(dir, 'presets') }, timeout: 120_000 });
      const written = JSON.parse(readFileSync(path.join(dir, 'out', 'trials.json'), 'utf8')) as { rungs: number[]; trials: { id: number; status: string; rounds: number; accuracy: { round: number; accuracy: number }[]; params: Record<string, number> }[] };
      expect(written.rungs).toEqual([1]);
      expect(written.trials).toHaveLength(6);
      // ASHA stopped some trials at the rung (round 1), and let others run all 3 rounds, each round measured
      const stopped = written.trials.filter((t) => t.status === 'stopped');
      expect(stopped.length).toBeGreaterThan(0);
      for (const t of stopped) expect(t.rounds).toBe(1);
      expect(written.trials.some((t) => t.rounds === 3 && t.accuracy.length === 3)).toBe(true);
      expect(new Set(written.trials.map((t) => t.params.lr)).size).toBe(6);
      const { presets } = listPresets(path.join(dir, 'presets'));
      expect(presets.map((p) => p.name)).toEqual(['tiny-best']);
      expect(presets[0]!.config).toMatchObject({ model: 'mlp', rounds: 3, clientsPerRound: 2 });
      expect(stdout).toMatch(/saved as preset "tiny-best"/);
      expect(readFileSync(path.join(dir, 'out', 'trials.svg'), 'utf8')).toMatch(/<svg/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 150_000);
});

/**
 * Hyper-parameter search over Node-simulated federations, in the spirit of Katib:
 *
 *   npm run tune -- [--space scripts/tune-spaces/2nn-shards.json] [--algorithm asha|random] [--trials 15]
 *     [--parallel 2] [--min-rounds 15] [--max-rounds 135] [--reduction 3] [--target 0.97]
 *     [--validation 5000] [--tune-seed 1] [--name NAME] [--out tune-results/NAME] [--preset NAME|none]
 *     [any simulate:node option, the same for every trial: --model mlp --partition shards --clients 100 …]
 *
 * The space file names the options to vary (`space`) and those to hold (`fixed`, overridden by the
 * command line). Trials are drawn at random from the space; with ASHA (the default) a trial pauses at
 * each rung (rounds min·η^k) and goes on only once it is among the top ⌊n/η⌋ of the n trials recorded
 * there (server/sim/tuning.ts); those never promoted stay stopped at their rung. At most `--parallel`
 * trials train at a time, one device worker each (one per core).
 * Every trial trains on the training set less a validation split carved from it and is measured on
 * that split only: the test set is never used to choose.
 *
 * Writes <out>/trials.json (every trial and its rounds), <out>/trials.svg and .png (validation accuracy
 * of each trial by round), prints the trials ranked, and saves the best as a preset the dashboard's
 * launch form offers (presets/<name>.json; --preset none to skip).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { carveValidation, loadMnist } from '../server/data/mnist.ts';
import { runSimulation, simulationConfig, type SimulationOptions } from '../server/sim/simulation.ts';
import { Asha, rankTrials, sampleTrial, searchSpaceSchema, trialScore, type ParamValue } from '../server/sim/tuning.ts';
import { PRESET_NAME, savePreset } from '../server/presets.ts';
import { createRng, hashString } from '../shared/rng.ts';
import { describeIssues } from '../shared/schemas.ts';
import { writeChart } from './lib/plot.ts';
import { parseSimArgs, rawArgs, simulationOptions } from './lib/sim-args.ts';

const tuneSchema = z.strictObject({
  space: z.string().default('scripts/tune-spaces/2nn-shards.json'),
  algorithm: z.enum(['asha', 'random']).default('asha'),
  trials: z.coerce.number().int().min(1).max(1000).default(15),
  parallel: z.coerce.number().int().min(1).max(64).default(availableParallelism()),
  'min-rounds': z.coerce.number().int().min(1).max(10_000).default(15),
  'max-rounds': z.coerce.number().int().min(1).max(10_000).default(135),
  reduction: z.coerce.number().min(2).max(100).default(3),
  target: z.coerce.number().gt(0).max(1).default(0.97),
  validation: z.coerce.number().int().min(100).max(30_000).default(5000),
  'tune-seed': z.coerce.number().int().min(0).default(1),
  name: z.string().regex(PRESET_NAME, 'a name is lower-case letters, digits and dashes').optional(),
  out: z.string().optional(),
  preset: z.string().optional(),
});
const spaceFileSchema = z.strictObject({ description: z.string().optional(), fixed: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}), space: searchSpaceSchema });
const TUNE_KEYS = new Set(Object.keys(tuneSchema.shape));

interface Trial {
  id: number;
  params: Record<string, ParamValue>;
  options: SimulationOptions;
  status: 'pending' | 'running' | 'paused' | 'stopped' | 'reached' | 'budget' | 'failed';
  /** training now (counted against --parallel) */
  running: boolean;
  reason: string;
  reachedAt: number | null;
  bestAccuracy: number;
  rounds: number;
  accuracy: { round: number; accuracy: number }[];
  wallMs: number;
}

function fail(message: string): never {
  process.stderr.write(`tune: ${message}\n`);
  process.exit(2);
}

// ─── options: the tuner's own, the space file's fixed ones, the command line's simulate:node ones ───
const raw = (() => {
  try {
    return rawArgs(process.argv.slice(2));
  } catch (err) {
    return fail(err instanceof Error ? err.message : String(err));
  }
})();
const tuneParsed = tuneSchema.safeParse(Object.fromEntries(Object.entries(raw).filter(([k]) => TUNE_KEYS.has(k))));
if (!tuneParsed.success) fail(describeIssues(tuneParsed.error));
const t = tuneParsed.data;
if (t['max-rounds'] < t['min-rounds']) fail(`--max-rounds (${t['max-rounds']}) must be at least --min-rounds (${t['min-rounds']})`);
let spaceFile: z.infer<typeof spaceFileSchema>;
try {
  const parsed = spaceFileSchema.safeParse(JSON.parse(readFileSync(t.space, 'utf8')));
  if (!parsed.success) fail(`${t.space}: ${describeIssues(parsed.error)}`);
  spaceFile = parsed.data;
} catch (err) {
  fail(`${t.space}: ${err instanceof Error ? err.message : String(err)}`);
}
const cliFixed = Object.fromEntries(Object.entries(raw).filter(([k]) => !TUNE_KEYS.has(k)));
for (const k of ['rounds', 'target', 'validation', 'workers', 'json', 'plot', 'keep-going']) if (k in cliFixed) fail(`--${k} is the tuner's to set (see --max-rounds, --target, --validation, --parallel)`);
const fixed: Record<string, unknown> = { ...spaceFile.fixed, ...cliFixed };
for (const k of Object.keys(spaceFile.space)) if (k in fixed) fail(`--${k} is both fixed and in the search space`);

// ─── trials: drawn up front, each checked as simulate:node and the run config would check it ───
const trials: Trial[] = [];
for (let id = 1; id <= t.trials; id++) {
  const params = sampleTrial(spaceFile.space, createRng(hashString(`tune:${t['tune-seed']}:${id}`)));
  let options: SimulationOptions;
  try {
    const args = parseSimArgs({ ...fixed, ...Object.fromEntries(Object.entries(params).map(([k, v]) => [k, String(v)])), rounds: String(t['max-rounds']), target: String(t.target), validation: String(t.validation), workers: '1', quiet: true }, `trial ${id}`);
    options = simulationOptions(args);
    simulationConfig(options);
  } catch (err) {
    fail(`trial ${id} (${JSON.stringify(params)}): ${err instanceof Error ? err.message : String(err)}`);
  }
  trials.push({ id, params, options, status: 'pending', running: false, reason: '', reachedAt: null, bestAccuracy: 0, rounds: 0, accuracy: [], wallMs: 0 });
}
const base = trials[0]!.options;
const name = t.name ?? `${base.model}-${base.partition}-${t.algorithm}`;
const out = t.out ?? path.join('tune-results', name);
mkdirSync(out, { recursive: true });
// random search is ASHA without rungs: every trial runs to its last round (or the target)
const asha = new Asha(t.algorithm === 'asha' ? { minRounds: t['min-rounds'], maxRounds: t['max-rounds'], reduction: t.reduction } : { minRounds: t['max-rounds'], maxRounds: t['max-rounds'], reduction: t.reduction }, trials.map((x) => x.id));

const loaded = loadMnist();
const { train, validation } = carveValidation(loaded.train, t.validation, 12345);
const mnist = { train, test: validation };
const describe = (p: Record<string, ParamValue>) => Object.entries(p).map(([k, v]) => `${k} ${v}`).join(', ');
const pct = (v: number) => `${(v * 100).toFixed(2)} %`;
process.stdout.write(
  `tune ${name}: ${t.trials} trials (${t.algorithm}${asha.rungs.length ? `, rungs at rounds ${asha.rungs.join(', ')}, η = ${t.reduction}` : ''}), up to ${t['max-rounds']} rounds each, ${t.parallel} at a time\n` +
    `objective: rounds to ${t.target} validation accuracy (${t.validation} examples carved from the training set, ${train.count} left to train on; the test set is not used)\n`,
);

// ─── run: at most `parallel` trials train at a time; a trial at a rung waits there for promotion ───
const started = Date.now();
const written = () => writeFileSync(path.join(out, 'trials.json'), JSON.stringify({ name, space: t.space, description: spaceFile.description, fixed, tune: t, rungs: asha.rungs, trials: trials.map(({ options: _o, running: _r, ...rest }) => rest), wallMs: Date.now() - started }, null, 1));
/** one latch per trial and rung: its simulation waits on it before the rung's next round (true: promoted) */
const latches = new Map<string, { promise: Promise<true | { stop: string }>; open: (go: true | { stop: string }) => void }>();
const latch = (id: number, rung: number) => {
  const key = `${id}:${rung}`;
  let l = latches.get(key);
  if (!l) {
    let open!: (go: true | { stop: string }) => void;
    const promise = new Promise<true | { stop: string }>((resolve) => (open = resolve));
    latches.set(key, (l = { promise, open }));
  }
  return l;
};
let active = 0;
const running: Promise<void>[] = [];
let finish!: () => void;
const over = new Promise<void>((resolve) => (finish = resolve));
const line = (s: string) => process.stdout.write(s + '\n');

function pump(): void {
  while (active < t.parallel) {
    const job = asha.next();
    if (!job) break;
    const trial = trials[job.id - 1]!;
    active++;
    trial.running = true;
    if (job.kind === 'start') running.push(runTrial(trial));
    else {
      trial.status = 'running';
      line(`trial ${String(trial.id).padStart(3)} promoted past rung ${trial.rounds}: goes on`);
      latch(trial.id, trial.rounds).open(true);
    }
  }
  if (active === 0) {
    // nothing runs and nothing can be taken: the trials still paused stay stopped at their rung
    for (const [id, rung] of asha.pausedTrials) {
      const trial = trials[id - 1]!;
      trial.status = 'stopped';
      trial.reason = `stopped at rung ${rung}: not in the top 1/${t.reduction} there`;
      latch(id, rung).open({ stop: `tune: ${trial.reason}` });
    }
    finish();
  }
}

/** (read through a function: callbacks change it while the simulation runs) */
const statusOf = (trial: Trial): Trial['status'] => trial.status;

function idle(trial: Trial): void {
  if (!trial.running) return;
  trial.running = false;
  active--;
  queueMicrotask(pump);
}

/**
 * The best trial so far that ran to its end (the target or its last round), saved as the preset:
 * after every such trial, so a search cut short keeps what it found. Returns the file (undefined: none yet, or --preset none).
 */
const presetName = t.preset ?? `tuned-${name}`;
function saveBest(): { file: string; trial: Trial } | undefined {
  const best = rankTrials(trials.filter((x) => x.status === 'reached' || x.status === 'budget'))[0];
  if (!best || presetName === 'none') return undefined;
  const config = simulationConfig(best.options);
  const k = config.clientsPerRound;
  const file = savePreset(process.env.PRESETS_DIR ?? 'presets', {
    name: presetName,
    label: `Tuned: ${config.model} on ${best.options.partition} (${config.strategy}, η ${config.learningRate}, E ${config.localEpochs}, B ${config.batchSize}, K ${k})`,
    hint: `Found by npm run tune (${t.algorithm}, ${trials.length} trials): ${best.reachedAt === null ? `best ${pct(best.bestAccuracy)} validation accuracy in ${t['max-rounds']} rounds` : `${t.target} validation accuracy in ${best.reachedAt} rounds`} with ${best.options.clients} ${best.options.partition} clients. Devices join with /?partition=${best.options.partition}&clients=${best.options.clients}&client=N.`,
    config: {
      model: config.model,
      rounds: t['max-rounds'],
      clientsPerRound: k,
      minUpdates: config.minUpdates,
      localEpochs: config.localEpochs,
      batchSize: config.batchSize,
      learningRate: config.learningRate,
      strategy: config.strategy,
      ...Object.fromEntries((['serverLearningRate', 'beta1', 'beta2', 'tau', 'mu', 'q'] as const).filter((f) => best.options.strategy?.[f] !== undefined).map((f) => [f, config[f]])),
    },
    tuned: { command: `npm run tune -- ${process.argv.slice(2).join(' ')}`.trim(), algorithm: t.algorithm, trials: trials.length, objective: `rounds to ${t.target} validation accuracy`, validation: t.validation, trial: best.id, params: best.params, reachedAt: best.reachedAt, bestAccuracy: best.bestAccuracy, at: new Date().toISOString() },
  });
  return { file, trial: best };
}

async function runTrial(trial: Trial): Promise<void> {
  trial.status = 'running';
  const t0 = Date.now();
  try {
    const result = await runSimulation(
      trial.options,
      mnist,
      (r) => {
        trial.rounds = r.round;
        trial.accuracy.push({ round: r.round, accuracy: r.testAccuracy });
        trial.bestAccuracy = Math.max(trial.bestAccuracy, r.testAccuracy);
        if (trial.reachedAt === null && r.testAccuracy >= t.target) trial.reachedAt = r.round;
        if (asha.report(trial.id, r.round, trialScore(trial.bestAccuracy, trial.reachedAt, t['max-rounds'])) === 'pause') {
          trial.status = 'paused';
          line(`trial ${String(trial.id).padStart(3)} at rung ${r.round}: best ${pct(trial.bestAccuracy)}; paused until promoted`);
          idle(trial);
        }
      },
      { gate: (round) => (asha.rungs.includes(round - 1) ? latch(trial.id, round - 1).promise : Promise.resolve(true)) },
    );
    if (result.status === 'failed') throw new Error(result.reason);
    if (trial.reachedAt !== null) {
      trial.status = 'reached';
      trial.reason = `reached ${t.target} in round ${trial.reachedAt}`;
    } else if (statusOf(trial) !== 'stopped') {
      trial.status = 'budget';
      trial.reason = `${t['max-rounds']} rounds without reaching ${t.target}`;
    }
    asha.finished(trial.id, trial.rounds, statusOf(trial) === 'stopped' ? null : trialScore(trial.bestAccuracy, trial.reachedAt, t['max-rounds']));
  } catch (err) {
    trial.status = 'failed';
    trial.reason = err instanceof Error ? err.message : String(err);
    asha.finished(trial.id, trial.rounds, null);
  }
  trial.wallMs += Date.now() - t0;
  line(`trial ${String(trial.id).padStart(3)} [${describe(trial.params)}]: ${trial.reason}; best ${pct(trial.bestAccuracy)} after ${trial.rounds} rounds`);
  written();
  if (trial.status === 'reached' || trial.status === 'budget') saveBest();
  idle(trial);
}
pump();
await over;
await Promise.all(running);
written();

// ─── results: the table, the plot, the preset ───
const ranked = rankTrials(trials.filter((x) => x.status !== 'failed'));
const wall = (Date.now() - started) / 1000;
const roundsRun = trials.reduce((a, x) => a + x.rounds, 0);
process.stdout.write(`\nrank | trial | rounds to ${t.target} | best valid acc | rounds run | status  | parameters\n`);
ranked.forEach((x, i) => process.stdout.write(`${String(i + 1).padStart(4)} | ${String(x.id).padStart(5)} | ${String(x.reachedAt ?? '—').padStart(13)} | ${pct(x.bestAccuracy).padStart(14)} | ${String(x.rounds).padStart(10)} | ${x.status.padEnd(7)} | ${describe(x.params)}\n`));
const failed = trials.filter((x) => x.status === 'failed');
for (const x of failed) process.stdout.write(`trial ${x.id} failed: ${x.reason}\n`);
process.stdout.write(`\n${trials.length} trials, ${roundsRun} rounds in all (${t.algorithm === 'asha' ? `${trials.length * t['max-rounds']} without early stopping` : 'no early stopping'}), wall time ${wall.toFixed(0)} s\n`);
const shown = new Set(ranked.slice(0, 6).map((x) => x.id));
const files = await writeChart(path.join(out, 'trials.png'), {
  title: `${name}: ${trials.length} trials, validation accuracy by round`,
  xLabel: 'round',
  yLabel: 'validation accuracy',
  integerX: true,
  yMin: 0.5,
  yMax: 1,
  hLine: { y: t.target, label: `target ${t.target}` },
  series: [...trials.filter((x) => !shown.has(x.id)), ...ranked.filter((x) => shown.has(x.id))].map((x) => ({ label: `#${x.id} ${x.params.strategy ?? ''} ${x.reachedAt ? `(${x.reachedAt} r)` : ''}`.trim(), muted: !shown.has(x.id), points: x.accuracy.map((a) => ({ x: a.round, y: a.accuracy })) })),
}).catch((err: unknown) => {
  process.stderr.write(`tune: the plot as PNG failed (${err instanceof Error ? err.message : String(err)}); the SVG stands\n`);
  return [path.join(out, 'trials.svg')];
});
process.stdout.write(`wrote ${path.join(out, 'trials.json')}, ${files.join(', ')}\n`);

if (ranked.length === 0) fail('no trial completed: nothing to save');
const saved = saveBest();
if (saved) process.stdout.write(`best run to its end: trial ${saved.trial.id} [${describe(saved.trial.params)}]; saved as preset "${presetName}" (${saved.file}): the dashboard's launch form offers it\n`);

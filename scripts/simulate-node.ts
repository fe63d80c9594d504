/**
 * A whole federation in Node, with the server's round code and simulated devices training in
 * worker threads (TF.js wasm, one worker per core):
 *
 *   npm run simulate:node -- --clients 100 --fraction 0.1 --rounds 50 --epochs 1 --batch 10 --lr 0.1
 *     --partition iid|shards|dirichlet [--alpha 0.5] --model cnn|cnn-small|mlp --seed 1 [--target 0.99]
 *     [--checkpoint FILE.sqlite]   (the run kept in FILE: the same command again continues a run cut short from its last round)
 *     [--keep-going] [--examples N] [--held-out 0] [--over-select 1] [--workers 2] [--json FILE] [--plot FILE.png]
 *     [--codec float32|float16|q8|q4|q2|topk+q8|rand+q2|…[+deflate]] [--topk 0.01] [--rand 0.25] [--quant-block 256] [--downlink delta|full]
 *     [--downlink-codec float32|q8|q4+deflate|topk+q8+deflate|… [--downlink-topk 0.01]]   (lossy downloads: compressed steps, error feedback on the server)
 *     [--secure-aggregation --clip-norm 5]   (SecAgg+: the devices mask their updates; needs a clip bound)
 *     [--drop 0.1]   (each selected device drops out of its round with this probability, after sharing its keys)
 *     [--neighbours K --threshold T]   (secure aggregation's k and t; 0: automatic)
 *     [--strategy fedavg|fedavgm|fedadagrad|fedadam|fedyogi|fedprox|scaffold|qffl] [--server-lr η] [--beta1 0.9] [--beta2 0.99] [--tau 1e-3] [--mu 0.01] [--q 1]
 *     [--poison N] [--monitor-warmup 10] [--false-alarms 1] [--quarantine true]   (the update monitor: poisoning clients sending −10 × their update)
 *     [--corrupt labels:1 [--corrupt-clients 0.2] [--quality-action flag|exclude]]   (data quality: corrupted clients, and what the run does with devices that fail the rules)
 *     [--validation 10000 [--validation-seed 12345]]   (tuning: measure on examples carved from the training set, not on the test set)
 *     [--held-out 0.2 --personal-window 10]   (personalization: each device's personal model and mixes on its held-out data, summarized per window of rounds)
 *     [--dp-noise Z --dp-clip S|adaptive --dp-delta 1e-5 --dp-budget E]   (user-level DP-FedAvg: Poisson sampling at q = C, noise z·S, ε per round;
 *      with --secure-aggregation the devices add Skellam noise (distributed DP), --dp-dropout-tolerance 0.2)
 *
 * Prints one row per round and a summary; writes the same as JSON (default sim-results/<name>.json).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { carveValidation, loadMnist } from '../server/data/mnist.ts';
import { parseSimArgs, rawArgs, simulationOptions, type SimArgs } from './lib/sim-args.ts';
import { runSimulation, type SimRound, type SimulationOptions } from '../server/sim/simulation.ts';
import { writeChart } from './lib/plot.ts';
import { fairnessOf } from '../shared/fairness.ts';

let args: SimArgs;
let options: SimulationOptions;
try {
  args = parseSimArgs(rawArgs(process.argv.slice(2)));
  options = simulationOptions(args);
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(2);
}

const name = `${args.model}-${args.partition}${args.strategy !== 'fedavg' ? `-${args.strategy}${args['server-lr'] ?? ''}${args.mu ?? ''}${args.q ?? ''}` : ''}-C${args.fraction}-E${args.epochs}-B${args.batch}-lr${args.lr}-${args.codec}${args.codec.includes('topk') ? args.topk : args.codec.includes('rand') ? args.rand : ''}${args['downlink-codec'] !== 'float32' ? `-down${args['downlink-codec']}${args['downlink-codec'].includes('topk') ? args['downlink-topk'] : ''}` : ''}${args['secure-aggregation'] ? '-secagg' : ''}${args['clip-norm'] !== undefined ? `-clip${args['clip-norm']}` : ''}${args.drop > 0 ? `-drop${args.drop}` : ''}${args['dp-noise'] !== undefined ? `-dp${args['dp-noise']}x${args['dp-clip']}` : ''}-seed${args.seed}${args.validation ? `-valid${args.validation}` : ''}${args.corrupt ? `-corrupt${args['corrupt-clients']}x${args.corrupt.replace(/[:,]/g, '')}-${args['quality-action'] ?? 'flag'}` : ''}${args.poison ? `-poison${args.poison}${args.quarantine ? '-quarantine' : ''}` : ''}`;
const pct = (v: number) => (v * 100).toFixed(2).padStart(6) + ' %';
const secs = (ms: number) => (ms / 1000).toFixed(1).padStart(7) + ' s';
const kib = (b: number) => (b / 1024).toFixed(1).padStart(8) + ' KiB';
const row = (r: SimRound) => `${String(r.round).padStart(5)} | ${pct(r.testAccuracy)} | ${r.testLoss.toFixed(4)} | ${secs(r.durationMs)} | ${secs(r.elapsedMs)} | ${kib(r.bytesUpPerDevice)} | ${kib(r.bytesDownPerDevice)} | ${String(r.dropped).padStart(7)}${r.epsilon === null ? '' : ` | ε ${r.epsilon.toFixed(3)}`}${r.epsilonAgainstServer === null ? '' : ` (${r.epsilonAgainstServer.toFixed(1)} against the server)`}`;

const jsonFile = args.json ?? path.join('sim-results', `${name}.json`);
mkdirSync(path.dirname(jsonFile), { recursive: true });
const partial: SimRound[] = [];
const loaded = loadMnist();
// with --validation the federation trains on the rest of the training set and is measured on the carved split
const mnist = args.validation ? (({ train, validation }) => ({ train, test: validation }))(carveValidation(loaded.train, args.validation, args['validation-seed'])) : loaded;
const measuredOn = args.validation ? 'valid acc' : ' test acc';
process.stdout.write(`simulate:node ${name}: ${args.clients} clients, C=${args.fraction}, ${args.rounds} rounds${args.target ? `, target ${args.target}` : ''}\n`);
if (args.validation) process.stdout.write(`tuning: ${args.validation} validation examples carved from the training set (seed ${args['validation-seed']}), ${mnist.train.count} left to train on; the test set is not used\n`);
process.stdout.write(`round |  ${measuredOn} | ${args.validation ? 'valid' : ' test'} loss |   round |   elapsed |  up/device | down/device | dropped\n`);
const result = await runSimulation(
  options,

  mnist,
  (r) => {
    if (!args.quiet) process.stdout.write(row(r) + '\n');
    // Rewritten every round, so a run cut short (a time limit, Ctrl-C) leaves what it reached.
    partial.push(r);
    writeFileSync(jsonFile, JSON.stringify({ args, status: 'running', rounds: partial }, null, 1));
  },
);
const last = result.rounds.at(-1);
process.stdout.write(
  `\n${result.status}: ${result.reason}\n` +
    `workers ${result.workers}; initial test accuracy ${pct(result.initial.testAccuracy)}; after ${result.rounds.length} rounds ${last ? pct(last.testAccuracy) : '—'}; ` +
    `best ${pct(Math.max(...result.rounds.map((r) => r.testAccuracy)))}\n` +
    (args.target !== undefined ? `target ${args.target}: ${result.roundsToTarget === null ? 'not reached' : `reached in round ${result.roundsToTarget}, after ${(result.timeToTargetMs! / 1000).toFixed(1)} s`}\n` : '') +
    `wall time ${(result.wallMs / 1000).toFixed(1)} s\n`,
);
// personalization (with --held-out > 0 and at least 3 clients): the counted devices of each window of rounds, pooled
const window = args['personal-window'];
const personalization = [];
for (let from = 1; from <= result.rounds.length; from += window) {
  const pooled = result.rounds.filter((r) => r.round >= from && r.round < from + window).flatMap((r) => r.devices).filter((d) => d.mixed !== undefined && d.halfMix !== undefined);
  if (pooled.length === 0) continue;
  personalization.push({
    rounds: [from, Math.min(from + window - 1, result.rounds.at(-1)!.round)],
    deviceRounds: pooled.length,
    meanDistance: pooled.reduce((a, d) => a + d.distance!, 0) / pooled.length,
    global: fairnessOf(pooled.map((d) => d.global))!,
    personal: fairnessOf(pooled.map((d) => d.personal))!,
    halfMix: fairnessOf(pooled.map((d) => d.halfMix!))!,
    mixed: fairnessOf(pooled.map((d) => d.mixed!))!,
  });
}
if (personalization.length) {
  process.stdout.write(`\npersonalization: the counted devices' held-out accuracy, pooled over windows of ${window} rounds (mean label distance ${personalization[0]!.meanDistance.toFixed(3)}): mean / worst 10 % / variance\n`);
  process.stdout.write(`rounds    | device-rounds | global model             | personal (fine-tuned)    | even mix (0.5)           | distance-aware mix\n`);
  const cell = (f: NonNullable<ReturnType<typeof fairnessOf>>) => `${pct(f.mean)} / ${pct(f.worst10)} / ${f.variance.toFixed(4)}`;
  for (const w of personalization) process.stdout.write(`${`${w.rounds[0]}–${w.rounds[1]}`.padEnd(9)} | ${String(w.deviceRounds).padStart(13)} | ${cell(w.global)} | ${cell(w.personal)} | ${cell(w.halfMix)} | ${cell(w.mixed)}\n`);
}
writeFileSync(jsonFile, JSON.stringify({ ...result, ...(args.validation ? { measuredOn: { validation: args.validation, seed: args['validation-seed'], trainExamples: mnist.train.count } } : {}), ...(personalization.length ? { personalization } : {}) }, null, 1));
const m = result.monitor;
if (m.monitoredRounds) process.stdout.write(`update monitor: ${m.warmupRounds} rounds of cold start, then ${m.monitoredRounds} rounds judged: ${m.outOfControl} honest device-rounds of ${m.honestDeviceRounds} out of control (${Object.entries(m.falseAlarmsBy).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}), ${m.falseAlarms} of them flagged (false alarms)${m.suspects.map((s) => `; ${s.kind === 'poison' ? 'poisoner' : 'corrupted'} ${s.id}: ${s.firstFlagged === null ? `never flagged in ${s.judged} rounds judged` : `flagged in its ${s.firstFlagged}. round judged (of ${s.judged})`}`).join('')}\n`);
if (result.quality.corrupted || result.quality.flagged) process.stdout.write(`data quality: ${result.quality.corrupted} corrupted devices; ${result.quality.flagged} fail the rules (${result.quality.flaggedCorrupted} of them corrupted), ${result.quality.action === 'exclude' ? 'left out of selection' : 'flagged only'}\n`);
process.stdout.write(`wrote ${jsonFile}\n`);
if (args.plot) {
  mkdirSync(path.dirname(args.plot), { recursive: true });
  const files = await writeChart(args.plot, {
    title: `${args.strategy === 'fedavg' ? 'FedAvg' : args.strategy} ${args.model}, ${args.partition}, C=${args.fraction}, E=${args.epochs}, B=${args.batch}, η=${args.lr}`,
    xLabel: 'round',
    yLabel: args.validation ? 'validation accuracy' : 'test accuracy',
    integerX: true,
    yMax: 1,
    series: [{ label: `seed ${args.seed}`, points: [{ x: 0, y: result.initial.testAccuracy }, ...result.rounds.map((r) => ({ x: r.round, y: r.testAccuracy }))] }],
    ...(args.target ? { hLine: { y: args.target, label: `target ${args.target}` } } : {}),
  });
  process.stdout.write(`wrote ${files.join(', ')}\n`);
}
process.exitCode = result.status === 'failed' ? 1 : 0;

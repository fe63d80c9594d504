/**
 * `npm run attack`: gradient inversion against what the server sees. Devices train the 2NN with the
 * device's own code; the attack (shared/privacy/attack.ts) reads device 0's digits back from its
 * plain update, from the round's sum (all a server learns under secure aggregation) and from that
 * sum clipped and noised as DP-FedAvg releases it. Prints the similarity (PSNR against the
 * originals, and how many digits come back above 20 dB) for several local settings, and writes a
 * picture grid of the first setting.
 *
 *   npm run attack -- [--devices 10] [--seed 1] [--out docs/privacy]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { loadMnist } from '../server/data/mnist.ts';
import { runAttack, type AttackOptions } from '../server/sim/attack.ts';
import { registerWasmTrainingKernels } from '../shared/wasm-kernels.ts';
import { parseArgs } from './lib/harness.ts';
import { writeImageGrid } from './lib/plot.ts';

const args = parseArgs(process.argv.slice(2), { devices: '10', seed: '1', out: 'docs/privacy' });
registerWasmTrainingKernels();
await tf.setBackend('wasm');
await tf.ready();
const { train } = loadMnist();
const line = (s = '') => process.stdout.write(s + '\n');
const base: AttackOptions = { devices: Number(args.devices), examples: 8, batch: 8, epochs: 1, lr: 0.1, clipNorm: 1, noiseMultiplier: 1, seed: Number(args.seed) };
const settings: Partial<AttackOptions>[] = [{}, { batch: 1 }, { epochs: 5 }, { examples: 32, batch: 32 }, { examples: 64, batch: 10 }, { examples: 200, batch: 10 }];

line(`# Gradient inversion on the 2NN: device 0's digits read back from what the server sees (${base.devices} devices a round; DP: clip ${base.clipNorm}, z = ${base.noiseMultiplier})`);
line('examples | batch | epochs | plain update: PSNR, digits ≥ 20 dB | secure sum | DP release');
const rows: unknown[] = [];
let first: Awaited<ReturnType<typeof runAttack>> | undefined;
for (const s of settings) {
  const o = { ...base, ...s };
  const r = await runAttack(train, o);
  first ??= r;
  const cell = (name: string) => {
    const v = r.views.find((x) => x.name === name)!.recovery;
    return `${v.meanPsnr.toFixed(1)} dB, ${v.recovered}/${o.examples}`;
  };
  line(`${o.examples} | ${o.batch} | ${o.epochs} | ${cell('plain')} | ${cell('secure')} | ${cell('dp')}`);
  rows.push({ ...o, views: r.views.map((v) => ({ name: v.name, meanPsnr: v.recovery.meanPsnr, recovered: v.recovery.recovered })) });
}
mkdirSync(args.out as string, { recursive: true });
writeFileSync(path.join(args.out as string, 'attack.json'), JSON.stringify({ args, rows }, null, 1));
const grid = first!;
const best = (name: string) => grid.views.find((v) => v.name === name)!.recovery.best.map((b) => b.candidate);
const files = await writeImageGrid(path.join(args.out as string, 'attack.png'), [
  { label: 'device 0 trains on', images: grid.originals },
  { label: 'read from its update', images: best('plain') },
  { label: `from the sum of ${base.devices} (secure agg.)`, images: best('secure') },
  { label: 'from the DP release', images: best('dp') },
]);
line(`\nwritten: ${files.join(', ')}, ${path.join(args.out as string, 'attack.json')}`);

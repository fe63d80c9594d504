/**
 * `npm run codecs`: the update codecs side by side, on the same seed, in the Node simulation (the
 * same coordinator, devices and codec code as the browser). For each codec and partition: upload
 * and download bytes per device per round, the ratio to float32, the device's encode time, the
 * accuracy after R rounds and the rounds to a target; then encode/decode throughput on one real
 * update; then a chart of accuracy against cumulative upload bytes.
 *
 *   npm run codecs -- [--model mlp] [--clients 100] [--fraction 0.1] [--rounds 20] [--lr 0.1]
 *     [--partitions iid,shards] [--codecs float32,float16,q8,topk+q8+deflate@0.03,…] [--target iid=0.95,shards=0.85]
 *     [--only throughput]   (just the encode/decode figures, keeping the simulation rows in docs/codecs)
 *     [--out docs/codecs]
 *
 * A codec written name@f keeps the share f of the entries (topkFraction or randFraction); up/down
 * names the upload codec, then the download codec (downlinkCodec, lossy: compressed steps with error
 * feedback on the server; topk's share after @ is downlinkTopkFraction), e.g.
 * rand+q2+deflate@0.15/topk+q8+deflate@0.01. Without /down, downloads are lossless deltas.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { codecSpec, decodeUpdate, encodeUpdate, type CodecConfig } from '../shared/codec.ts';
import { downlinkCodecProblem } from '../shared/model-steps.ts';
import { createRng } from '../shared/rng.ts';
import type { PartitionKind } from '../shared/partition.ts';
import type { ModelName } from '../shared/models-names.ts';
import { decodeWeights, encodeWeights, type FlatWeights } from '../shared/weights.ts';
import { loadMnist } from '../server/data/mnist.ts';
import { runSimulation, type SimulationResult } from '../server/sim/simulation.ts';
import { median, parseArgs } from './lib/harness.ts';
import { writeChart } from './lib/plot.ts';

const args = parseArgs(process.argv.slice(2), {
  model: 'mlp',
  clients: '100',
  fraction: '0.1',
  rounds: '20',
  epochs: '1',
  batch: '10',
  lr: '0.1',
  seed: '1',
  partitions: 'iid,shards',
  codecs: 'float32,float16,q8,q4+deflate,topk@0.03,topk+q8@0.03,topk+q8+deflate@0.03,topk+q4+deflate@0.03,topk+q8+deflate@0.01',
  target: 'iid=0.95,shards=0.85',
  'quant-block': '256',
  out: 'docs/codecs',
  /** "throughput": only the encode/decode figures, kept beside the simulation rows already in --out */
  only: '',
});
const throughputOnly = args.only === 'throughput';
if (args.only && !throughputOnly) throw new Error(`--only takes "throughput", got "${args.only}"`);
const line = (s = '') => process.stdout.write(s + '\n');
const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');
/** one target for all partitions, or per partition: iid=0.95,shards=0.85 */
const targets = new Map(String(args.target).split(',').map((t) => (t.includes('=') ? (t.split('=') as [string, string]) : ['*', t] as [string, string])).map(([k, v]) => [k, Number(v)]));
const targetFor = (p: string): number => targets.get(p) ?? targets.get('*') ?? 0.95;
const quantBlock = Number(args['quant-block']);

interface Setting {
  label: string;
  config: CodecConfig;
  /** the download codec (lossy), and its label; none: lossless deltas */
  down?: { label: string; codec: string; topkFraction: number };
}
const settings: Setting[] = String(args.codecs)
  .split(',')
  .map((s) => {
    const [upName, downName] = s.split('/') as [string, string | undefined];
    const [name, fraction] = upName.split('@') as [string, string | undefined];
    const spec = codecSpec(name);
    const share = fraction === undefined ? (spec.random ? 0.25 : 0.01) : Number(fraction);
    const setting: Setting = { label: spec.sparse ? `${spec.name} ${+(share * 100).toFixed(2)}%` : spec.name, config: { codec: spec.name, topkFraction: spec.random ? 0.01 : share, randFraction: spec.random ? share : 0.25, quantBlock } };
    if (downName === undefined) return setting;
    const [dName, dFraction] = downName.split('@') as [string, string | undefined];
    const problem = downlinkCodecProblem(dName);
    if (problem) throw new Error(`codecs: download codec ${problem}`);
    const down = codecSpec(dName);
    const dShare = dFraction === undefined ? 0.01 : Number(dFraction);
    return { ...setting, down: { label: down.sparse ? `${down.name} ${+(dShare * 100).toFixed(2)}%` : down.name, codec: down.name, topkFraction: dShare } };
  });
const partitions = String(args.partitions).split(',') as PartitionKind[];
const mnist = loadMnist();

interface Row {
  partition: PartitionKind;
  codec: string;
  /** the download codec ("lossless": deltas of the exact model) */
  down?: string;
  /** up + down per device per round, mean over the rounds; and summed over the rounds to the target */
  totalBytes?: number;
  totalToTarget?: number | null;
  upBytes: number;
  downBytesFirst: number;
  downBytesLater: number;
  upRatio: number;
  encodeMs: number;
  finalAccuracy: number;
  /** the mean over the last 10 rounds (non-IID accuracy swings from round to round) */
  lastTenMean?: number;
  bestAccuracy: number;
  roundsToTarget: number | null;
  wallS: number;
  curve: { round: number; accuracy: number; cumulativeUpBytes: number; cumulativeBytes?: number }[];
}
const rows: Row[] = [];
const kept = path.join(args.out as string, 'codecs.json');
if (throughputOnly && existsSync(kept)) rows.push(...(JSON.parse(readFileSync(kept, 'utf8')) as { rows: Row[] }).rows);

line(`# Update codecs: ${args.model}, ${args.clients} clients, C=${args.fraction}, E=${args.epochs}, B=${args.batch}, η=${args.lr}, ${args.rounds} rounds, seed ${args.seed}`);
for (const partition of throughputOnly ? [] : partitions) {
  const target = targetFor(partition);
  line(`\n## ${partition} (target ${target})`);
  line('codec | download codec | up/device/round | vs float32 | down/device (round 1 → later) | up + down / device / round (vs float32) | to target | encode ms | accuracy after R | mean of the last 10 rounds | best | rounds to target | wall s');
  let float32Up = Number.NaN;
  let float32Acc = Number.NaN;
  let float32Total = Number.NaN;
  let float32Last = Number.NaN;
  for (const s of settings) {
    const r: SimulationResult = await runSimulation(
      { clients: Number(args.clients), fraction: Number(args.fraction), rounds: Number(args.rounds), epochs: Number(args.epochs), batch: Number(args.batch), lr: Number(args.lr), partition, alpha: 0.5, model: args.model as ModelName, seed: Number(args.seed), target, stopAtTarget: false, codec: s.config.codec, topkFraction: s.config.topkFraction, randFraction: s.config.randFraction ?? 0.25, quantBlock: s.config.quantBlock, downlink: 'delta', ...(s.down ? { downlinkCodec: s.down.codec, downlinkTopkFraction: s.down.topkFraction } : {}) },
      mnist,
    );
    const up = median(r.rounds.map((x) => x.bytesUpPerDevice));
    const total = r.rounds.reduce((a, x) => a + x.bytesUpPerDevice + x.bytesDownPerDevice, 0) / Math.max(1, r.rounds.length);
    if (s.config.codec === 'float32' && !s.down && Number.isNaN(float32Up)) {
      float32Up = up;
      float32Acc = r.rounds.at(-1)?.testAccuracy ?? Number.NaN;
      float32Total = total;
      float32Last = r.rounds.slice(-10).reduce((a, x) => a + x.testAccuracy, 0) / Math.min(10, r.rounds.length);
    }
    const toTarget = r.roundsToTarget === null ? null : r.rounds.filter((x) => x.round <= r.roundsToTarget!).reduce((a, x) => a + x.bytesUpPerDevice + x.bytesDownPerDevice, 0);
    let cumulative = 0;
    let both = 0;
    const row: Row = {
      partition,
      codec: s.label,
      down: s.down?.label ?? 'lossless',
      totalBytes: total,
      totalToTarget: toTarget,
      upBytes: up,
      downBytesFirst: r.rounds[0]?.bytesDownPerDevice ?? Number.NaN,
      downBytesLater: median(r.rounds.slice(1).map((x) => x.bytesDownPerDevice)),
      upRatio: float32Up / up,
      encodeMs: r.encodeMsMedian,
      finalAccuracy: r.rounds.at(-1)?.testAccuracy ?? Number.NaN,
      bestAccuracy: Math.max(...r.rounds.map((x) => x.testAccuracy)),
      lastTenMean: r.rounds.slice(-10).reduce((a, x) => a + x.testAccuracy, 0) / Math.min(10, r.rounds.length),
      roundsToTarget: r.roundsToTarget,
      wallS: r.wallMs / 1000,
      curve: r.rounds.map((x) => ({ round: x.round, accuracy: x.testAccuracy, cumulativeUpBytes: (cumulative += x.bytesUpPerDevice * x.updates), cumulativeBytes: (both += x.bytesUpPerDevice * x.updates + x.bytesDownPerDevice * x.updates) })),
    };
    rows.push(row);
    line(`${row.codec} | ${row.down} | ${fmt(up / 1024, 2)} KiB | ${fmt(row.upRatio, 1)}x | ${fmt(row.downBytesFirst / 1024, 1)} → ${fmt(row.downBytesLater / 1024, 1)} KiB | ${fmt(total / 1024, 1)} KiB (${fmt(float32Total / total, 1)}x) | ${toTarget === null ? '—' : `${fmt(toTarget / 1e6, 2)} MB`} | ${fmt(row.encodeMs, 1)} | ${fmt(row.finalAccuracy * 100, 2)} % (${row.finalAccuracy - float32Acc >= 0 ? '+' : ''}${fmt((row.finalAccuracy - float32Acc) * 100, 2)} pp) | ${fmt(row.lastTenMean! * 100, 2)} % (${row.lastTenMean! - float32Last >= 0 ? '+' : ''}${fmt((row.lastTenMean! - float32Last) * 100, 2)} pp) | ${fmt(row.bestAccuracy * 100, 2)} % | ${row.roundsToTarget ?? '—'} | ${fmt(row.wallS, 0)}`);
  }
}

// Encode/decode throughput on a real update: one device's Δ after one epoch on 600 examples.
line('\n## Encode / decode of one real update (median of 7)');
{
  const { initialWeights } = await import('../shared/models.ts');
  const { WorkerPool } = await import('../server/sim/pool.ts');
  const w0 = initialWeights(args.model as ModelName, 1);
  const pool = await WorkerPool.start(mnist.train, mnist.test, 1);
  const plan = { localEpochs: 1, batchSize: 10, learningRate: Number(args.lr), seed: 1, codec: { codec: 'float32', topkFraction: 1, quantBlock: 0 } };
  const round = { runId: 1, round: 1, attempt: 1, model: args.model as ModelName, modelVersion: 1, plan, deadline: 0, weights: encodeWeights(w0) };
  const done = await pool.train({ type: 'train', deviceId: 'codecs-reference', round, train: Int32Array.from({ length: 600 }, (_, i) => i), heldOut: new Int32Array(0), held: undefined, residual: undefined }).finally(() => pool.close());
  if (!done.submission) throw new Error('codecs: the reference update was not computed');
  const reference: FlatWeights = decodeWeights(done.submission.delta, w0.specs);
  const time = (fn: () => void) => median(Array.from({ length: 7 }, () => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  }));
  const mb = (reference.values.length * 4) / 1e6;
  line('codec | bytes | encode MB/s (of float32 input) | decode MB/s | deflate stage: body before → after (order-0 entropy bound of the body)');
  const throughput: unknown[] = [];
  for (const s of settings) {
    const payload = encodeUpdate(reference, s.config, createRng(2));
    const enc = time(() => encodeUpdate(reference, s.config, createRng(2)));
    const dec = time(() => decodeUpdate(payload, reference.specs, s.config));
    // What a Huffman or arithmetic coder over bytes could reach at best: the body's order-0 entropy.
    let entropy = '';
    const spec = codecSpec(s.config.codec);
    if (spec.deflate && (spec.sparse || spec.values !== 'float32')) {
      const body = encodeUpdate(reference, { ...s.config, codec: [spec.sparse ? (spec.random ? 'rand' : 'topk') : '', spec.values].filter(Boolean).join('+') }, createRng(2)).subarray(24);
      const counts = new Array<number>(256).fill(0);
      for (const b of body) counts[b]! += 1;
      const bits = counts.reduce((a, c) => (c ? a - c * Math.log2(c / body.length) : a), 0);
      entropy = `${body.length} → ${payload.byteLength - 24} (${Math.ceil(bits / 8)})`;
    }
    throughput.push({ codec: s.label, bytes: payload.byteLength, encodeMBps: mb / (enc / 1000), decodeMBps: mb / (dec / 1000), deflate: entropy });
    line(`${s.label} | ${payload.byteLength} | ${fmt(mb / (enc / 1000), 0)} | ${fmt(mb / (dec / 1000), 0)} | ${entropy}`);
  }
  mkdirSync(args.out as string, { recursive: true });
  writeFileSync(path.join(args.out as string, 'codecs.json'), JSON.stringify({ args, rows, throughput }, null, 1));
}

for (const partition of throughputOnly ? [] : partitions) {
  const files = await writeChart(path.join(args.out as string, `accuracy-vs-bytes-${partition}.png`), {
    title: `Test accuracy against upload bytes (all devices), ${args.model}, ${partition}`,
    xLabel: 'cumulative bytes uploaded by all devices (log scale)',
    yLabel: 'test accuracy',
    logX: true,
    series: rows.filter((r) => r.partition === partition).map((r) => ({ label: r.codec, points: r.curve.map((c) => ({ x: c.cumulativeUpBytes, y: c.accuracy })) })),
  });
  line(`wrote ${files.join(', ')}`);
  // with download codecs: both directions
  const both = rows.filter((r) => r.partition === partition && r.curve.every((c) => c.cumulativeBytes !== undefined));
  if (!both.some((r) => r.down && r.down !== 'lossless')) continue;
  const total = await writeChart(path.join(args.out as string, `accuracy-vs-total-bytes-${partition}.png`), {
    title: `Test accuracy against bytes up and down (all devices), ${args.model}, ${partition}`,
    xLabel: 'cumulative bytes uploaded and downloaded by all devices (log scale)',
    yLabel: 'test accuracy',
    logX: true,
    series: both.map((r) => ({ label: `${r.codec} / ${r.down}`, points: r.curve.map((c) => ({ x: c.cumulativeBytes!, y: c.accuracy })) })),
  });
  line(`wrote ${total.join(', ')}`);
}
line(`wrote ${path.join(args.out as string, 'codecs.json')}`);

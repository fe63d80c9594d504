/**
 * The data-quality scores measured: over clean slices of each partition (100 clients, 600 examples
 * each) and over one slice under each corruption — what the default rules are set against.
 *   npm run quality
 */
import { loadMnist } from '../server/data/mnist.ts';
import { gatherSamples } from '../shared/dataset.ts';
import { corruptSamples, parseCorruptions, QUALITY_SCORES, qualityFlags, qualityOf, referenceOf, type Corruption, type DataQuality } from '../shared/data-quality.ts';
import { deviceSlice, labelHistogram, partition } from '../shared/partition.ts';
import { dataQualityRulesSchema } from '../shared/schemas.ts';

const { train } = loadMnist();
const reference = referenceOf({ pixels: train.images, labels: train.labels });
const population = labelHistogram(train.labels);
const rules = dataQualityRulesSchema.parse({});
const f = (v: number | null) => (v === null ? '—' : v.toFixed(3));
process.stdout.write(`default rules: ${QUALITY_SCORES.map((s) => (rules[s] > 0 ? `${s} ≥ ${rules[s]}` : `${s} off`)).join(', ')}\n\n`);
process.stdout.write(`clean slices, 100 clients × 600 examples: min / mean of each score, and slices the rules flag\n`);
process.stdout.write(`partition | ${QUALITY_SCORES.join(' | ')} | flagged\n`);
for (const kind of ['iid', 'shards', 'dirichlet'] as const) {
  const parts = partition(train.labels, { kind, clients: 100, seed: 1, alpha: 0.5 });
  const qs: DataQuality[] = parts.map((p, c) => qualityOf(gatherSamples(train.images, train.labels, deviceSlice(p, { examples: 600, heldOut: 0, seed: 1, client: c }).train), { reference, population }));
  const cell = (s: (typeof QUALITY_SCORES)[number]) => {
    const v = qs.map((q) => q[s]!);
    return `${f(Math.min(...v))} / ${f(v.reduce((a, b) => a + b, 0) / v.length)}`;
  };
  process.stdout.write(`${kind} | ${QUALITY_SCORES.map(cell).join(' | ')} | ${qs.filter((q) => qualityFlags(rules, q).length).length} of 100\n`);
}
process.stdout.write(`\none iid slice (600 examples) under each corruption\n`);
process.stdout.write(`corruption | ${QUALITY_SCORES.join(' | ')} | flagged by\n`);
const parts = partition(train.labels, { kind: 'iid', clients: 100, seed: 1, alpha: 0.5 });
const clean = gatherSamples(train.images, train.labels, deviceSlice(parts[0]!, { examples: 600, heldOut: 0, seed: 1, client: 0 }).train);
for (const spec of ['none', 'labels:0.2', 'labels:0.5', 'noise:0.1', 'noise:0.5', 'duplicates:0.5', 'blank:0.3']) {
  const q = qualityOf(spec === 'none' ? clean : corruptSamples(clean, parseCorruptions(spec) as Corruption[], 1), { reference, population });
  process.stdout.write(`${spec} | ${QUALITY_SCORES.map((s) => f(q[s])).join(' | ')} | ${qualityFlags(rules, q).join(', ') || '—'}\n`);
}

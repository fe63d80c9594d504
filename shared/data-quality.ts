/**
 * Data quality on the device: scores of its local data, computed where the data lives — only the
 * scores leave the device. Each is the share of its samples (or of its labels) that pass a check:
 *
 *   conformity    the sample looks like a digit image: a label in 0–9, at most 30 % of the pixels
 *                 inked, and at most 2 inked pixels on the image's edge (MNIST centres its digits)
 *   uniqueness    distinct images over all images (duplicates lower it)
 *   completeness  samples with ink (blank or missing images lower it)
 *   integrity     1 − the total-variation distance of its labels to the population's (null without one)
 *   coherence     samples whose nearest per-label reference centroid is their own label (null
 *                 without a reference): a label that does not match its image lowers it
 *
 * And the other side, to measure them: seeded corruptions of a slice (the provisioning endpoint's
 * `corrupt=labels:0.5,noise:0.2,duplicates:0.3,blank:0.1`). Pure: no DOM, no node:*.
 */
import { PIXELS, type Samples } from './dataset.ts';
import { totalVariation } from './personalize.ts';
import { createRng, shuffleInPlace, standardNormal } from './rng.ts';

export const QUALITY_SCORES = ['conformity', 'uniqueness', 'completeness', 'integrity', 'coherence'] as const;
export type QualityScore = (typeof QUALITY_SCORES)[number];
export type DataQuality = { examples: number } & Record<QualityScore, number | null>;

/** a pixel counts as ink from this value (of 255) */
const INK = 64;
const SIDE = 28;
/** the reference's resolution: 2×2 blocks of the 28×28 image */
const HALF = 14;

/** Per-label mean images at 14×14 (0..1): the reference coherence is measured against. */
export interface QualityReference {
  centroids: number[][];
}

const downsample = (pixels: Uint8Array, i: number, out: Float32Array): void => {
  const base = i * PIXELS;
  for (let y = 0; y < HALF; y++) {
    for (let x = 0; x < HALF; x++) {
      const p = base + 2 * y * SIDE + 2 * x;
      out[y * HALF + x] = (pixels[p]! + pixels[p + 1]! + pixels[p + SIDE]! + pixels[p + SIDE + 1]!) / (4 * 255);
    }
  }
};

/** The reference from a labelled set (the server's: a curated or public set in a deployment; here the provisioning data). */
export function referenceOf(samples: Samples): QualityReference {
  const sums = Array.from({ length: 10 }, () => new Float64Array(HALF * HALF));
  const counts = new Array<number>(10).fill(0);
  const small = new Float32Array(HALF * HALF);
  for (let i = 0; i < samples.labels.length; i++) {
    const l = samples.labels[i]!;
    if (l > 9) continue;
    downsample(samples.pixels, i, small);
    for (let j = 0; j < small.length; j++) sums[l]![j] = sums[l]![j]! + small[j]!;
    counts[l]!++;
  }
  return { centroids: sums.map((s, l) => Array.from(s, (v) => (counts[l] ? v / counts[l]! : 0))) };
}

/** The five scores of a device's samples. */
export function qualityOf(samples: Samples, o: { reference?: QualityReference | undefined; population?: readonly number[] | undefined } = {}): DataQuality {
  const n = samples.labels.length;
  if (n === 0 || samples.pixels.length !== n * PIXELS) return { examples: n, conformity: 0, uniqueness: 0, completeness: 0, integrity: null, coherence: null };
  let conforming = 0;
  let inked = 0;
  let coherent = 0;
  const seen = new Set<string>();
  const histogram = new Array<number>(10).fill(0);
  const small = new Float32Array(HALF * HALF);
  const centroids = o.reference?.centroids.length === 10 && o.reference.centroids.every((c) => c.length === HALF * HALF) ? o.reference.centroids : undefined;
  for (let i = 0; i < n; i++) {
    const label = samples.labels[i]!;
    const image = samples.pixels.subarray(i * PIXELS, (i + 1) * PIXELS);
    let ink = 0;
    let frame = 0;
    for (let p = 0; p < PIXELS; p++) {
      if (image[p]! < INK) continue;
      ink++;
      const x = p % SIDE;
      const y = (p / SIDE) | 0;
      if (x === 0 || x === SIDE - 1 || y === 0 || y === SIDE - 1) frame++;
    }
    if (label <= 9) histogram[label]!++;
    if (label <= 9 && ink <= 0.3 * PIXELS && frame <= 2) conforming++;
    if (ink >= 10) inked++;
    seen.add(hashImage(image));
    if (centroids && label <= 9) {
      downsample(samples.pixels, i, small);
      let best = 0;
      let bestDistance = Infinity;
      for (let c = 0; c < 10; c++) {
        let d = 0;
        const centroid = centroids[c]!;
        for (let j = 0; j < small.length; j++) d += (small[j]! - centroid[j]!) ** 2;
        if (d < bestDistance) (bestDistance = d), (best = c);
      }
      if (best === label) coherent++;
    }
  }
  const population = o.population && o.population.length === 10 && o.population.some((p) => p > 0) ? o.population : undefined;
  return {
    examples: n,
    conformity: conforming / n,
    uniqueness: seen.size / n,
    completeness: inked / n,
    integrity: population ? 1 - totalVariation(histogram, population) : null,
    coherence: centroids ? coherent / n : null,
  };
}

/** FNV-1a over the pixels, twice with different seeds: a 64-bit key for exact duplicates. */
function hashImage(image: Uint8Array): string {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < image.length; i++) {
    a = Math.imul(a ^ image[i]!, 0x01000193) >>> 0;
    b = Math.imul(b ^ image[i]!, 0x5bd1e995) >>> 0;
  }
  return `${a.toString(36)}:${b.toString(36)}`;
}

// ─── corruptions, to measure the scores ───────────────────────────────────────
export const CORRUPTIONS = ['labels', 'noise', 'duplicates', 'blank'] as const;
export type Corruption = { kind: (typeof CORRUPTIONS)[number]; fraction: number };

/** `labels:0.5,blank:0.1` → the corruptions, or the reason it cannot be read. */
export function parseCorruptions(text: string): Corruption[] | string {
  const out: Corruption[] = [];
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [kind, raw] = part.split(':');
    if (!(CORRUPTIONS as readonly string[]).includes(kind ?? '')) return `unknown corruption "${kind}": use ${CORRUPTIONS.join(', ')} (as kind:fraction)`;
    const fraction = Number(raw);
    if (!(fraction > 0 && fraction <= 1)) return `corruption ${kind}: the fraction must be in (0, 1], got "${raw ?? ''}"`;
    if (out.some((c) => c.kind === kind)) return `corruption ${kind} named twice`;
    out.push({ kind: kind as Corruption['kind'], fraction });
  }
  return out;
}

/**
 * A corrupted copy of the samples, seeded: `labels` gives a share of them another label, `noise`
 * covers a share with heavy Gaussian noise (σ = 100 of 255), `duplicates` replaces a share with
 * copies of other samples, `blank` empties a share.
 */
export function corruptSamples(samples: Samples, corruptions: readonly Corruption[], seed: number): Samples {
  const pixels = Uint8Array.from(samples.pixels);
  const labels = Uint8Array.from(samples.labels);
  const n = labels.length;
  const rng = createRng((seed ^ 0x7f4a7c15) >>> 0);
  const pick = (fraction: number) => shuffleInPlace(Array.from({ length: n }, (_, i) => i), rng).slice(0, Math.round(fraction * n));
  for (const c of corruptions) {
    const chosen = pick(c.fraction);
    for (const i of chosen) {
      const image = pixels.subarray(i * PIXELS, (i + 1) * PIXELS);
      switch (c.kind) {
        case 'labels':
          labels[i] = (labels[i]! + 1 + Math.floor(rng() * 9)) % 10;
          break;
        case 'noise':
          for (let p = 0; p < PIXELS; p++) image[p] = Math.max(0, Math.min(255, Math.round(image[p]! + standardNormal(rng) * 100)));
          break;
        case 'duplicates': {
          const from = Math.floor(rng() * n);
          image.set(pixels.subarray(from * PIXELS, (from + 1) * PIXELS));
          labels[i] = labels[from]!;
          break;
        }
        case 'blank':
          image.fill(0);
          break;
        default: {
          const never: never = c.kind;
          throw new Error(`unknown corruption ${String(never)}`);
        }
      }
    }
  }
  return { pixels, labels };
}

/** The scores below a run's rules, each as `coherence 0.40 < 0.55` (an unmeasured score passes). */
export function qualityFlags(rules: Record<QualityScore, number>, q: Partial<Record<QualityScore, number | null>>): string[] {
  return QUALITY_SCORES.filter((s) => rules[s] > 0 && q[s] !== null && q[s] !== undefined && q[s]! < rules[s]).map((s) => `${s} ${q[s]!.toFixed(2)} < ${rules[s]}`);
}

/** A device's integrity — 1 − the distance of its declared labels to the population's — with the scores it measured itself, and those below the rules. */
export function deviceQuality(rules: Record<QualityScore, number>, own: Partial<Record<QualityScore, number | null>> | undefined, histogram: readonly number[] | undefined, population: readonly number[] | undefined): { integrity: number | null; flags: string[] } {
  const integrity = population && histogram ? 1 - totalVariation(histogram, population) : null;
  return { integrity, flags: qualityFlags(rules, { ...(own ?? {}), integrity }) };
}

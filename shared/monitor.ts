/**
 * Monitoring updates: per round and counted device, features of its update and of what it reports
 * — the update's L2 norm, its cosine similarity to the round's aggregate (estimated from count
 * sketches of 1,024 buckets, which keep inner products; the aggregate is the coordinate-wise
 * median of the round's sketches, which one large hostile update cannot drag its way, as it drags
 * the mean), its loss and accuracy before and after training — judged
 * against a reference taken in a cold start (the first rounds' device-rounds) by three monitors.
 * Training moves every device's features together (losses fall, norms shrink and scatter), so each
 * device is compared with its round's peers: the features judged are its robust z-scores within
 * the round (relativeToRound), whose law the cold start's rounds and the later ones share.
 *
 *
 *   control chart    a Shewhart chart of each feature's robust z-score ((x − median) / (1.4826·MAD)
 *                    of the reference); a device-round is out of control when any |z| passes L
 *   KS test          each round's distribution of each feature against the reference's (two-sample
 *                    Kolmogorov–Smirnov): a round-level alert
 *   isolation forest fitted on the reference's feature vectors (Liu et al. 2008); its score is one
 *                    more chart: a device-round is an outlier when its score's robust z over the
 *                    reference's own scores passes L
 *
 * A device is flagged when out of control in 2 of its last 3 judged rounds (flagDevices).
 * Sensitivity is set by the false alarms the admin accepts per 100 rounds (a): the round's budget
 * a/100 is split over its tests (Bonferroni) into a per-test probability p, which sets the KS level
 * and each limit: updates' features have heavier tails than a normal law, so a limit is where the
 * cold start's own tail reaches p — an exponential fitted to the top 10 % of its |z| (peaks over a
 * threshold, its scale from the median exceedance, values beyond |z| = 8 left out as a hostile device
 * in the cold start rather than a tail) — and never below the normal quantile of p.
 * Pure: no TF.js, no I/O; the coordinator owns the state.
 */
import { normalQuantile } from './canary.ts';
import { createRng, type Rng } from './rng.ts';

export const SKETCH_SIZE = 1024;
export const FEATURES = ['norm', 'cosine', 'lossBefore', 'lossAfter', 'accuracyBefore', 'accuracyAfter'] as const;
export type Feature = (typeof FEATURES)[number];
export type Features = Record<Feature, number | null>;

/** A count sketch of a vector (seeded buckets and signs): inner products are kept in expectation, and it is linear. */
export function countSketch(values: Float32Array, seed = 0x5eed, size = SKETCH_SIZE): Float32Array {
  const out = new Float32Array(size);
  for (let i = 0; i < values.length; i++) {
    let h = Math.imul(i ^ seed, 0x9e3779b1);
    h ^= h >>> 15;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    out[(h >>> 1) % size] = out[(h >>> 1) % size]! + (h & 1 ? values[i]! : -values[i]!);
  }
  return out;
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number | null {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) (ab += a[i]! * b[i]!), (aa += a[i]! * a[i]!), (bb += b[i]! * b[i]!);
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : null;
}

/** Median and a robust scale (1.4826 · MAD, never below a small floor) of a sample. */
export function robustStats(xs: readonly number[]): { center: number; scale: number } {
  const median = (v: number[]) => {
    const s = [...v].sort((a, b) => a - b);
    return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  const center = median([...xs]);
  const mad = median(xs.map((x) => Math.abs(x - center)));
  return { center, scale: Math.max(1.4826 * mad, 1e-6 * Math.max(1, Math.abs(center)), 1e-9) };
}

/** The two-sample Kolmogorov–Smirnov statistic and its asymptotic p-value. */
export function ksTest(a: readonly number[], b: readonly number[]): { d: number; p: number } {
  if (a.length === 0 || b.length === 0) return { d: 0, p: 1 };
  const x = [...a].sort((p, q) => p - q);
  const y = [...b].sort((p, q) => p - q);
  let i = 0, j = 0, d = 0;
  while (i < x.length && j < y.length) {
    const v = Math.min(x[i]!, y[j]!);
    while (i < x.length && x[i]! <= v) i++;
    while (j < y.length && y[j]! <= v) j++;
    d = Math.max(d, Math.abs(i / x.length - j / y.length));
  }
  const n = (x.length * y.length) / (x.length + y.length);
  const lambda = (Math.sqrt(n) + 0.12 + 0.11 / Math.sqrt(n)) * d;
  let p = 0;
  for (let k = 1; k <= 100; k++) p += 2 * (k % 2 ? 1 : -1) * Math.exp(-2 * k * k * lambda * lambda);
  return { d, p: Math.min(1, Math.max(0, lambda < 1e-3 ? 1 : p)) };
}

// ─── isolation forest ────────────────────────────────────────────────────────
type Tree = { split: number; at: number; left: Tree; right: Tree } | { size: number };
const EULER = 0.5772156649;
/** the average path length of an unsuccessful search in a binary search tree of n points */
const c = (n: number) => (n > 2 ? 2 * (Math.log(n - 1) + EULER) - (2 * (n - 1)) / n : n === 2 ? 1 : 0);

export class IsolationForest {
  private constructor(private readonly trees: Tree[], private readonly sample: number) {}

  /** Fits `trees` trees, each on a random subsample of `sampleSize` points (seeded). */
  static fit(points: readonly number[][], o: { trees?: number; sampleSize?: number; seed?: number } = {}): IsolationForest {
    if (points.length < 2) throw new RangeError(`isolation forest: ${points.length} points, at least 2 needed`);
    const rng = createRng(o.seed ?? 1);
    const sample = Math.min(o.sampleSize ?? 64, points.length);
    const limit = Math.ceil(Math.log2(sample));
    const trees: Tree[] = [];
    for (let t = 0; t < (o.trees ?? 100); t++) {
      const chosen = Array.from({ length: sample }, () => points[Math.floor(rng() * points.length)]!);
      trees.push(grow(chosen, 0, limit, rng));
    }
    return new IsolationForest(trees, sample);
  }

  /** The anomaly score in (0, 1): about 0.5 for a typical point, near 1 for one isolated at once. */
  score(point: readonly number[]): number {
    const mean = this.trees.reduce((a, t) => a + pathLength(t, point, 0), 0) / this.trees.length;
    return Math.pow(2, -mean / c(this.sample));
  }
}

function grow(points: number[][], depth: number, limit: number, rng: Rng): Tree {
  if (depth >= limit || points.length <= 1) return { size: points.length };
  const dims = points[0]!.length;
  // a feature that varies among these points, and a split between its extremes
  for (let attempt = 0; attempt < dims; attempt++) {
    const split = Math.floor(rng() * dims);
    let lo = Infinity, hi = -Infinity;
    for (const p of points) (lo = Math.min(lo, p[split]!)), (hi = Math.max(hi, p[split]!));
    if (hi <= lo) continue;
    const at = lo + rng() * (hi - lo);
    return { split, at, left: grow(points.filter((p) => p[split]! < at), depth + 1, limit, rng), right: grow(points.filter((p) => p[split]! >= at), depth + 1, limit, rng) };
  }
  return { size: points.length };
}

function pathLength(t: Tree, p: readonly number[], depth: number): number {
  if ('size' in t) return depth + c(t.size);
  return pathLength(p[t.split]! < t.at ? t.left : t.right, p, depth + 1);
}

/** |z| beyond this in the cold start is taken for a hostile device-round, not for the honest tail */
export const TAIL_CAP = 8;

/**
 * The value a non-negative statistic passes with probability p, from a sample of it: an exponential
 * tail fitted to the sample's top 10 % (peaks over threshold; scale from the median exceedance),
 * never below `floor`.
 */
export function tailLimit(sample: readonly number[], p: number, floor: number, cap = TAIL_CAP): number {
  // values beyond the cap are not a tail but a hostile device in the cold start: left out of the fit
  const kept = sample.filter((x) => x <= cap);
  if (kept.length < 10) return floor;
  const sorted = [...kept].sort((a, b) => a - b);
  const u = sorted[Math.floor(0.9 * (sorted.length - 1))]!;
  const over = sorted.filter((x) => x > u).map((x) => x - u);
  const share = over.length / sorted.length;
  if (over.length === 0 || p >= share) return Math.max(floor, u);
  // the exponential's scale from the median exceedance (median = β·ln 2): a few hostile device-rounds in the cold start do not stretch it
  const beta = robustStats(over).center / Math.LN2;
  return Math.max(floor, u + beta * Math.log(share / p));
}

// ─── the monitor ─────────────────────────────────────────────────────────────
/** A device is flagged once out of control in 2 of its last 3 judged rounds: an honest device's lone excursion is not enough, a hostile one is flagged by its second. */
export const FLAG_AFTER = 2;
export const FLAG_WINDOW = 3;

/** Each device's recent judged rounds (true: out of control), newest last, and the devices that now meet the flagging rule. */
export function flagDevices(history: Readonly<Record<string, readonly boolean[]>>, verdicts: readonly DeviceVerdict[]): { history: Record<string, boolean[]>; flagged: string[] } {
  const next: Record<string, boolean[]> = { ...history } as Record<string, boolean[]>;
  const flagged: string[] = [];
  for (const v of verdicts) {
    if (v.isolation === null && Object.keys(v.z).length === 0) continue; // not judged (cold start)
    const h = [...(next[v.id] ?? []), v.reasons.length > 0].slice(-FLAG_WINDOW);
    next[v.id] = h;
    if (h.filter(Boolean).length >= FLAG_AFTER) flagged.push(v.id);
  }
  return { history: next, flagged };
}
export interface MonitorSettings {
  /** rounds whose device-rounds make the reference (the cold start) */
  warmupRounds: number;
  /** the false alarms the admin accepts per 100 rounds (over every device of the round) */
  falseAlarmsPer100Rounds: number;
  /** whether a flagged device is left out of later selections */
  quarantine: boolean;
}

/** What the monitor learned in its cold start: its device-rounds' features. */
export interface MonitorReference {
  rounds: number;
  rows: Features[];
}

const sampleOf = (rows: readonly Features[], f: Feature): number[] => rows.flatMap((r) => (r[f] === null ? [] : [r[f]!]));

export interface DeviceVerdict {
  id: string;
  features: Features;
  /** robust z-score of each measured feature (null while warming up, or unmeasured) */
  z: Partial<Record<Feature, number>>;
  isolation: number | null;
  /** why this device-round is out of control (empty: it is not) */
  reasons: string[];
  /** the device is flagged: out of control in FLAG_AFTER of its last FLAG_WINDOW judged rounds (this one included) */
  flagged?: boolean;
}

/** A round's monitoring, as recorded with it. */
export interface MonitorRecord {
  phase: 'warming up' | 'monitoring';
  /** the control chart's limit on |z| (the largest of the features' limits), and the forest's score threshold (null while warming up) */
  limit: number | null;
  /** each feature's limit on |z| */
  limits?: Partial<Record<Feature, number>>;
  isolationThreshold: number | null;
  devices: DeviceVerdict[];
  /** each feature's distribution this round against the reference (null while warming up) */
  ks: { feature: Feature; d: number; p: number; alert: boolean }[] | null;
}

const vectorOf = (f: Features, ref: Record<Feature, { center: number; scale: number }>): number[] => FEATURES.map((k) => (f[k] === null ? 0 : (f[k]! - ref[k].center) / ref[k].scale));

/**
 * Each device's features relative to its round's peers: (x − the round's median) / the round's
 * robust spread (1.4826·MAD), on the log of the norm; null with fewer than 3 devices to compare.
 * Training changes both the level and the spread of every feature as it goes (norms shrink and
 * scatter as the model converges); within a round, devices are compared under the same model.
 */
export function relativeToRound(devices: readonly { features: Features }[]): Features[] {
  const t = (f: Feature, x: number) => (f === 'norm' ? Math.log(Math.max(x, 1e-12)) : x);
  const stats = Object.fromEntries(
    FEATURES.map((f) => {
      const v = devices.flatMap((d) => (d.features[f] === null ? [] : [t(f, d.features[f]!)]));
      return [f, v.length >= 3 ? robustStats(v) : null];
    }),
  ) as Record<Feature, { center: number; scale: number } | null>;
  return devices.map((d) => Object.fromEntries(FEATURES.map((f) => [f, d.features[f] === null || !stats[f] ? null : (t(f, d.features[f]!) - stats[f]!.center) / stats[f]!.scale])) as Features);
}

/**
 * One round's monitoring: the cold start collects the reference (of features relative to each
 * round); then each device-round is judged by the chart and the forest, and each feature's
 * distribution by the KS test.
 */
export function monitorRound(reference: MonitorReference, raw: { id: string; features: Features }[], s: MonitorSettings): { reference: MonitorReference; record: MonitorRecord } {
  const relative = relativeToRound(raw);
  const devices = raw.map((d, i) => ({ id: d.id, features: relative[i]!, raw: d.features }));
  const samples = Object.fromEntries(FEATURES.map((f) => [f, sampleOf(reference.rows, f)])) as Record<Feature, number[]>;
  if (reference.rounds < s.warmupRounds || FEATURES.every((f) => samples[f].length < 8)) {
    return { reference: { rounds: reference.rounds + 1, rows: [...reference.rows, ...devices.map((d) => d.features)] }, record: { phase: 'warming up', limit: null, isolationThreshold: null, devices: devices.map((d) => ({ id: d.id, features: d.raw, z: {}, isolation: null, reasons: [] })), ks: null } };
  }
  const measured = FEATURES.filter((f) => samples[f].length >= 8);
  const stats = Object.fromEntries(FEATURES.map((f) => [f, robustStats(samples[f].length ? samples[f] : [0])])) as Record<Feature, { center: number; scale: number }>;
  // the round's false-alarm budget, split over its tests: the chart (devices × features), the forest (devices), the KS tests (features)
  const alpha = Math.min(0.5, s.falseAlarmsPer100Rounds / 100);
  const tests = Math.max(1, devices.length) * (measured.length + 1) + measured.length;
  const each = alpha / tests;
  const normal = normalQuantile(1 - each / 2);
  // each feature's limit: where the cold start's own |z| tail reaches the per-test probability
  const limits = Object.fromEntries(measured.map((f) => [f, tailLimit(reference.rows.flatMap((r) => (r[f] === null ? [] : [Math.abs((r[f]! - stats[f].center) / stats[f].scale)])), each, normal)])) as Partial<Record<Feature, number>>;
  const limit = Math.max(normal, ...Object.values(limits).map((l) => l!));
  const points = reference.rows.map((r) => vectorOf(r, stats));
  const forest = points.length >= 8 ? IsolationForest.fit(points, { seed: reference.rounds }) : undefined;
  // the forest's score is charted like a feature, one-sided: its threshold is where the cold start's scores' tail reaches p
  const scores = forest ? points.map((p) => forest.score(p)) : [];
  const scoreStats = forest ? robustStats(scores) : undefined;
  const isolationThreshold = scoreStats ? scoreStats.center + scoreStats.scale * tailLimit(scores.map((x) => Math.max(0, (x - scoreStats.center) / scoreStats.scale)), each, normalQuantile(1 - each)) : null;
  const verdicts = devices.map((d) => {
    const z: Partial<Record<Feature, number>> = {};
    const reasons: string[] = [];
    for (const f of measured) {
      if (d.features[f] === null) continue;
      z[f] = (d.features[f]! - stats[f].center) / stats[f].scale;
      if (Math.abs(z[f]!) > limits[f]!) reasons.push(`${f} z = ${z[f]!.toFixed(1)} beyond ±${limits[f]!.toFixed(1)}`);
    }
    const isolation = forest ? forest.score(vectorOf(d.features, stats)) : null;
    if (isolation !== null && isolationThreshold !== null && isolation > isolationThreshold) reasons.push(`isolation score ${isolation.toFixed(2)} > ${isolationThreshold.toFixed(2)}`);
    return { id: d.id, features: d.raw, z, isolation, reasons };
  });
  const ks = measured.map((f) => {
    const t = ksTest(devices.flatMap((d) => (d.features[f] === null ? [] : [d.features[f]!])), samples[f]);
    return { feature: f, d: t.d, p: t.p, alert: t.p < each };
  });
  return { reference: { ...reference, rounds: reference.rounds + 1 }, record: { phase: 'monitoring', limit, limits, isolationThreshold, devices: verdicts, ks } };
}

export const emptyReference = (): MonitorReference => ({ rounds: 0, rows: [] });

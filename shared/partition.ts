/**
 * Seeded partitions of a labelled data set across N clients, as in McMahan et al. 2017
 * (`iid`, `shards`) and Hsu et al. 2019 (`dirichlet` label skew). Pure: labels in, indices out.
 */
import { createRng, sampleDirichlet, shuffleInPlace } from './rng.ts';

export const PARTITIONS = ['iid', 'shards', 'dirichlet'] as const;
export type PartitionKind = (typeof PARTITIONS)[number];

export interface PartitionSpec {
  kind: PartitionKind;
  clients: number;
  seed: number;
  /** Dirichlet concentration; smaller is more skewed. Used by `dirichlet` only. */
  alpha: number;
}

/** Splits indices 0..labels.length-1 into `clients` disjoint sets that together cover all of them. */
export function partition(labels: ArrayLike<number>, spec: PartitionSpec): number[][] {
  const { kind, clients, seed } = spec;
  if (!Number.isInteger(clients) || clients < 1 || clients > labels.length) {
    throw new RangeError(`partition ${kind}: clients must be an integer in 1..${labels.length}, got ${clients}`);
  }
  const rng = createRng(seed);
  const all = Array.from({ length: labels.length }, (_, i) => i);
  switch (kind) {
    case 'iid': {
      shuffleInPlace(all, rng);
      return Array.from({ length: clients }, (_, c) => all.slice(Math.floor((c * all.length) / clients), Math.floor(((c + 1) * all.length) / clients)));
    }
    case 'shards': {
      // Sort by label (ties broken by index, so the order is fully determined), cut into 2·N shards, 2 per client.
      all.sort((a, b) => (labels[a] as number) - (labels[b] as number) || a - b);
      const shardCount = 2 * clients;
      const shards = Array.from({ length: shardCount }, (_, s) => all.slice(Math.floor((s * all.length) / shardCount), Math.floor(((s + 1) * all.length) / shardCount)));
      const order = shuffleInPlace(Array.from({ length: shardCount }, (_, s) => s), rng);
      return Array.from({ length: clients }, (_, c) => [...(shards[order[2 * c] as number] as number[]), ...(shards[order[2 * c + 1] as number] as number[])]);
    }
    case 'dirichlet': {
      if (!(spec.alpha > 0) || !Number.isFinite(spec.alpha)) throw new RangeError(`partition dirichlet: alpha must be a positive number, got ${spec.alpha}`);
      const byClass = new Map<number, number[]>();
      for (const i of all) {
        const label = labels[i] as number;
        const list = byClass.get(label) ?? [];
        list.push(i);
        byClass.set(label, list);
      }
      const out: number[][] = Array.from({ length: clients }, () => []);
      for (const label of [...byClass.keys()].sort((a, b) => a - b)) {
        const members = shuffleInPlace(byClass.get(label) as number[], rng);
        const proportions = sampleDirichlet(spec.alpha, clients, rng);
        let start = 0;
        let cumulative = 0;
        proportions.forEach((p, c) => {
          cumulative += p;
          const end = c === clients - 1 ? members.length : Math.round(cumulative * members.length);
          (out[c] as number[]).push(...members.slice(start, end));
          start = end;
        });
      }
      return out;
    }
    default: {
      const never: never = kind;
      throw new Error(`unknown partition ${String(never)}`);
    }
  }
}

export interface DeviceSlice {
  train: number[];
  heldOut: number[];
}

/** Share of a browser device's training examples kept aside as its held-out data (never trained on). */
export const HELD_OUT_FRACTION = 1 / 6;

export interface SliceOptions {
  /** the most training examples (default: all the partition holds beside its held-out share) */
  examples?: number | undefined;
  /** held-out examples as a share of the training examples taken (at least 1 when above 0) */
  heldOut: number;
  /** the partition's seed and the client's index: together they seed the slice's shuffle */
  seed: number;
  client: number;
}

/**
 * One device's data from its partition — the one slicing function of the browser's provisioning,
 * the Node simulation and the tests: a seeded shuffle of the partition, then at most `examples`
 * for training and a held-out share beside them (the partition's order never decides which
 * examples a device trains on).
 */
export function deviceSlice(part: readonly number[], o: SliceOptions): DeviceSlice {
  if (!(o.heldOut >= 0 && o.heldOut < 1)) throw new RangeError(`device slice: the held-out share must be in [0, 1), got ${o.heldOut}`);
  const shuffled = shuffleInPlace([...part], createRng(((o.seed + o.client) ^ 0x5eed) >>> 0));
  const wanted = Math.min(o.examples ?? shuffled.length, shuffled.length);
  const heldOut = o.heldOut > 0 ? Math.max(1, Math.round(wanted * o.heldOut)) : 0;
  const train = Math.min(wanted, Math.max(1, shuffled.length - heldOut));
  return { train: shuffled.slice(0, train), heldOut: shuffled.slice(train, train + heldOut) };
}

export function labelHistogram(labels: ArrayLike<number>, classes = 10): number[] {
  const hist = new Array<number>(classes).fill(0);
  for (let i = 0; i < labels.length; i++) hist[labels[i] as number] = (hist[labels[i] as number] ?? 0) + 1;
  return hist;
}

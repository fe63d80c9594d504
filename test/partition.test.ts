import { describe, expect, it } from 'vitest';
import { deviceSlice, labelHistogram, partition, type PartitionSpec } from '../shared/partition.ts';

// Labels like MNIST's: 6,000 of each digit, in a scrambled order.
const labels = Uint8Array.from({ length: 60_000 }, (_, i) => (i * 7919) % 10);

function checkDisjointAndComplete(parts: number[][], n: number) {
  const seen = new Uint8Array(n);
  for (const p of parts) for (const i of p) seen[i]! += 1;
  expect(seen.every((c) => c === 1)).toBe(true);
}

describe('partitions', () => {
  it.each(['iid', 'shards', 'dirichlet'] as const)('%s is disjoint, complete and seeded', (kind) => {
    const spec: PartitionSpec = { kind, clients: 100, seed: 3, alpha: 0.5 };
    const parts = partition(labels, spec);
    expect(parts).toHaveLength(100);
    checkDisjointAndComplete(parts, labels.length);
    expect(partition(labels, spec)).toEqual(parts);
    expect(partition(labels, { ...spec, seed: 4 })).not.toEqual(parts);
  });

  it('iid gives equal sizes and near-uniform labels', () => {
    const parts = partition(labels, { kind: 'iid', clients: 100, seed: 1, alpha: 1 });
    for (const p of parts) {
      expect(p).toHaveLength(600);
      const hist = labelHistogram(p.map((i) => labels[i]!));
      expect(Math.min(...hist)).toBeGreaterThan(25);
    }
  });

  it('shards is the paper pathological split: 200 shards of 300, each client at most 2 labels', () => {
    const parts = partition(labels, { kind: 'shards', clients: 100, seed: 1, alpha: 1 });
    for (const p of parts) {
      expect(p).toHaveLength(600);
      const hist = labelHistogram(p.map((i) => labels[i]!));
      // 6,000 examples per label make exactly 20 shards each, so a shard never spans two labels.
      expect(hist.filter((c) => c > 0).length).toBeLessThanOrEqual(2);
    }
  });

  it('dirichlet skews labels more as alpha shrinks', () => {
    const skew = (alpha: number) => {
      const parts = partition(labels, { kind: 'dirichlet', clients: 20, seed: 5, alpha });
      // mean share of each client's most common label
      return parts.filter((p) => p.length > 0).reduce((a, p) => a + Math.max(...labelHistogram(p.map((i) => labels[i]!))) / p.length, 0) / 20;
    };
    const concentrated = skew(0.1);
    const spread = skew(100);
    expect(concentrated).toBeGreaterThan(0.5);
    expect(spread).toBeLessThan(0.2);
  });

  it('rejects bad specs with a clear message', () => {
    expect(() => partition(labels, { kind: 'iid', clients: 0, seed: 1, alpha: 1 })).toThrow('clients must be an integer');
    expect(() => partition(labels, { kind: 'dirichlet', clients: 3, seed: 1, alpha: 0 })).toThrow('alpha must be a positive number');
  });

  it('a device slice caps training examples and keeps a disjoint held-out split', () => {
    const part = Array.from({ length: 5000 }, (_, i) => i * 3);
    const s = deviceSlice(part, { examples: 600, heldOut: 1 / 6, seed: 4, client: 5 });
    expect(s.train).toHaveLength(600);
    expect(s.heldOut).toHaveLength(100);
    expect(s.train.filter((i) => s.heldOut.includes(i))).toEqual([]);
    expect(deviceSlice(part, { examples: 600, heldOut: 1 / 6, seed: 4, client: 5 })).toEqual(s);
    expect(deviceSlice(part, { examples: 600, heldOut: 1 / 6, seed: 4, client: 6 })).not.toEqual(s);
    const small = deviceSlice(part.slice(0, 60), { examples: 600, heldOut: 1 / 6, seed: 4, client: 5 });
    expect(small.train.length + small.heldOut.length).toBe(60);
    expect(small.heldOut.length).toBeGreaterThan(0);
    expect(() => deviceSlice(part, { heldOut: 1, seed: 1, client: 0 })).toThrow('held-out share must be in [0, 1)');
  });

  it('a device slice never takes the partition in its order: a label-sorted shard gives a device all its labels', () => {
    // The failure this guards against: the first N of a label-sorted partition are its lowest labels only.
    const sortedLabels = [...Array.from({ length: 300 }, () => 3), ...Array.from({ length: 300 }, () => 8)];
    const part = Array.from({ length: 600 }, (_, i) => i);
    for (const heldOut of [0, 0.15]) {
      const s = deviceSlice(part, { examples: 100, heldOut, seed: 1, client: 0 });
      const labelsSeen = new Set(s.train.map((i) => sortedLabels[i]));
      expect(labelsSeen).toEqual(new Set([3, 8]));
    }
    const whole = deviceSlice(part, { heldOut: 0, seed: 1, client: 0 });
    expect([...whole.train].sort((a, b) => a - b)).toEqual(part);
  });
});

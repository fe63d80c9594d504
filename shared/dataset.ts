/**
 * The compact binary form of one device's data slice, as the provisioning endpoint serves it:
 *
 *   bytes 0..3  magic "FLD1"
 *   4..7        train count T (uint32 LE)
 *   8..11       held-out count H (uint32 LE)
 *   12..        (T + H) × 784 pixels (uint8, row-major 28×28), then T + H labels (uint8, 0..9)
 */
export const DATASET_MAGIC = 'FLD1';
export const PIXELS = 28 * 28;

export interface Samples {
  /** count × 784 */
  pixels: Uint8Array;
  labels: Uint8Array;
}

/** The samples at `indices` of a data set held as flat images (count × 784) and labels. */
export function gatherSamples(images: Uint8Array, labels: Uint8Array, indices: ArrayLike<number>): Samples {
  const pixels = new Uint8Array(indices.length * PIXELS);
  const out = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const idx = indices[i] as number;
    if (!(idx >= 0 && idx < labels.length)) throw new RangeError(`samples: index ${idx} is outside the data set of ${labels.length}`);
    pixels.set(images.subarray(idx * PIXELS, (idx + 1) * PIXELS), i * PIXELS);
    out[i] = labels[idx] as number;
  }
  return { pixels, labels: out };
}

export interface DeviceDataset {
  train: Samples;
  heldOut: Samples;
}

export function encodeDataset(d: DeviceDataset): Uint8Array {
  const t = d.train.labels.length;
  const h = d.heldOut.labels.length;
  const out = new Uint8Array(12 + (t + h) * (PIXELS + 1));
  out.set(new TextEncoder().encode(DATASET_MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(4, t, true);
  view.setUint32(8, h, true);
  out.set(d.train.pixels, 12);
  out.set(d.heldOut.pixels, 12 + t * PIXELS);
  out.set(d.train.labels, 12 + (t + h) * PIXELS);
  out.set(d.heldOut.labels, 12 + (t + h) * PIXELS + t);
  return out;
}

export function decodeDataset(buf: Uint8Array): DeviceDataset {
  if (buf.length < 12 || String.fromCharCode(...buf.subarray(0, 4)) !== DATASET_MAGIC) throw new Error('dataset: not a data slice (bad magic)');
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const t = view.getUint32(4, true);
  const h = view.getUint32(8, true);
  const n = t + h;
  if (buf.length !== 12 + n * (PIXELS + 1)) throw new Error(`dataset: header describes ${n} samples, payload has ${buf.length} bytes`);
  const pixels = buf.subarray(12, 12 + n * PIXELS);
  const labels = buf.subarray(12 + n * PIXELS);
  if (labels.some((l) => l > 9)) throw new Error('dataset: a label is outside 0..9');
  return {
    train: { pixels: pixels.slice(0, t * PIXELS), labels: labels.slice(0, t) },
    heldOut: { pixels: pixels.slice(t * PIXELS), labels: labels.slice(t) },
  };
}

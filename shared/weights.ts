/**
 * The binary weight payload: one buffer holding a small JSON manifest (tensor names and shapes)
 * and the flat float32 values, little-endian. Never JSON arrays of numbers.
 *
 *   bytes 0..3   magic "FLW1"
 *   bytes 4..7   format version (uint32 LE) = 1
 *   bytes 8..11  manifest length M in bytes (uint32 LE)
 *   12..12+M     manifest, UTF-8 JSON: { "tensors": [{ "name": string, "shape": number[] }, ...] }
 *   padding      zero bytes up to a multiple of 4
 *   rest         float32 values of every tensor, concatenated in manifest order
 */
export const WEIGHTS_MAGIC = 'FLW1';
export const WEIGHTS_FORMAT_VERSION = 1;
const HEADER_BYTES = 12;
const MAX_MANIFEST_BYTES = 64 * 1024;

export interface TensorSpec {
  name: string;
  shape: number[];
}

export interface FlatWeights {
  specs: TensorSpec[];
  values: Float32Array;
}

export class WeightsFormatError extends Error {
  readonly code = 'BAD_WEIGHTS';
  constructor(message: string) {
    super(message);
    this.name = 'WeightsFormatError';
  }
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function totalSize(specs: readonly TensorSpec[]): number {
  return specs.reduce((a, s) => a + sizeOf(s.shape), 0);
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function encodeWeights(weights: FlatWeights): Uint8Array<ArrayBuffer> {
  if (!littleEndian) throw new Error('weights: big-endian platforms are not supported');
  const expected = totalSize(weights.specs);
  if (weights.values.length !== expected) throw new WeightsFormatError(`weights: manifest describes ${expected} values, got ${weights.values.length}`);
  const manifest = new TextEncoder().encode(JSON.stringify({ tensors: weights.specs.map((s) => ({ name: s.name, shape: s.shape })) }));
  const dataOffset = Math.ceil((HEADER_BYTES + manifest.length) / 4) * 4;
  const out = new Uint8Array(dataOffset + weights.values.byteLength);
  out.set(new TextEncoder().encode(WEIGHTS_MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(4, WEIGHTS_FORMAT_VERSION, true);
  view.setUint32(8, manifest.length, true);
  out.set(manifest, HEADER_BYTES);
  out.set(new Uint8Array(weights.values.buffer, weights.values.byteOffset, weights.values.byteLength), dataOffset);
  return out;
}

function parseManifest(bytes: Uint8Array): TensorSpec[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new WeightsFormatError('weights: manifest is not valid UTF-8 JSON');
  }
  const tensors = (parsed as { tensors?: unknown } | null)?.tensors;
  if (!Array.isArray(tensors) || tensors.length === 0 || tensors.length > 1024) throw new WeightsFormatError('weights: manifest must list 1..1024 tensors');
  return tensors.map((t: unknown, i) => {
    const { name, shape } = (t ?? {}) as { name?: unknown; shape?: unknown };
    if (typeof name !== 'string' || name.length === 0 || name.length > 256) throw new WeightsFormatError(`weights: tensor ${i} has no valid name`);
    if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isInteger(d) && d > 0 && d < 2 ** 31)) {
      throw new WeightsFormatError(`weights: tensor ${name} has an invalid shape`);
    }
    return { name, shape: shape as number[] };
  });
}

/**
 * Decodes and validates a payload: magic, version, manifest, exact length, and (when `expected`
 * is given) the same tensor names and shapes in the same order. Every value must be finite.
 * The returned values are a copy, aligned and independent of the input buffer.
 */
export function decodeWeights(payload: Uint8Array, expected?: readonly TensorSpec[]): FlatWeights {
  if (!(payload instanceof Uint8Array)) throw new WeightsFormatError('weights: payload must be binary');
  if (payload.length < HEADER_BYTES) throw new WeightsFormatError(`weights: payload of ${payload.length} bytes is shorter than the header`);
  const magic = String.fromCharCode(payload[0] ?? 0, payload[1] ?? 0, payload[2] ?? 0, payload[3] ?? 0);
  if (magic !== WEIGHTS_MAGIC) throw new WeightsFormatError('weights: not a weight payload (bad magic)');
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const version = view.getUint32(4, true);
  if (version !== WEIGHTS_FORMAT_VERSION) throw new WeightsFormatError(`weights: format version ${version} is not supported (expected ${WEIGHTS_FORMAT_VERSION})`);
  const manifestLength = view.getUint32(8, true);
  if (manifestLength > MAX_MANIFEST_BYTES || HEADER_BYTES + manifestLength > payload.length) throw new WeightsFormatError('weights: manifest length is out of bounds');
  const specs = parseManifest(payload.subarray(HEADER_BYTES, HEADER_BYTES + manifestLength));
  if (expected) {
    if (specs.length !== expected.length) throw new WeightsFormatError(`weights: expected ${expected.length} tensors, got ${specs.length}`);
    specs.forEach((s, i) => {
      const e = expected[i] as TensorSpec;
      if (s.name !== e.name) throw new WeightsFormatError(`weights: tensor ${i} is ${s.name}, expected ${e.name}`);
      if (s.shape.join('x') !== e.shape.join('x')) throw new WeightsFormatError(`weights: tensor ${s.name} has shape [${s.shape}], expected [${e.shape}]`);
    });
  }
  const dataOffset = Math.ceil((HEADER_BYTES + manifestLength) / 4) * 4;
  const count = totalSize(specs);
  const dataBytes = payload.length - dataOffset;
  if (dataBytes !== count * 4) throw new WeightsFormatError(`weights: manifest describes ${count} values (${count * 4} bytes), payload carries ${Math.max(0, dataBytes)} bytes`);
  const values = new Float32Array(count);
  new Uint8Array(values.buffer).set(payload.subarray(dataOffset));
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) throw new WeightsFormatError(`weights: value ${i} is not finite (${values[i]})`);
  }
  return { specs, values };
}

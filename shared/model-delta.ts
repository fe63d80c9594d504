/**
 * The server → device direction: a new global model sent as a lossless delta against a version the
 * device already holds. The float32 bit patterns are XORed (weights that moved a little share sign,
 * exponent and high mantissa bits, so most XOR bytes are zero), split into byte planes, and
 * deflated. Reconstruction is exact, and checked with a CRC-32 of the target's bytes.
 *
 *   bytes 0..3   magic "FLX1"
 *   4..7         format version (uint32 LE) = 1
 *   8..11        base version (uint32 LE)
 *   12..15       target version (uint32 LE)
 *   16..19       n, the number of values (uint32 LE)
 *   20..23       CRC-32 of the target's float32 bytes (uint32 LE)
 *   24..         deflate(byte plane 0 of every value, then plane 1, 2, 3)
 */
import { deflateSync } from 'fflate';
import { inflateExactly } from './inflate.ts';
import { WeightsFormatError, type FlatWeights } from './weights.ts';

export const MODEL_DELTA_MAGIC = 'FLX1';
const HEADER = 24;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = (CRC_TABLE[(c ^ (bytes[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const bytesOf = (v: Float32Array) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

export function encodeModelDelta(base: Float32Array, target: Float32Array, baseVersion: number, targetVersion: number): Uint8Array {
  if (base.length !== target.length) throw new RangeError(`model delta: base has ${base.length} values, target ${target.length}`);
  const n = target.length;
  const a = new Uint32Array(base.buffer.slice(base.byteOffset, base.byteOffset + base.byteLength));
  const b = new Uint32Array(target.buffer.slice(target.byteOffset, target.byteOffset + target.byteLength));
  const planes = new Uint8Array(4 * n);
  for (let i = 0; i < n; i++) {
    const x = ((a[i] as number) ^ (b[i] as number)) >>> 0;
    planes[i] = x & 0xff;
    planes[n + i] = (x >>> 8) & 0xff;
    planes[2 * n + i] = (x >>> 16) & 0xff;
    planes[3 * n + i] = x >>> 24;
  }
  const packed = deflateSync(planes, { level: 6 });
  const out = new Uint8Array(HEADER + packed.length);
  out.set([0x46, 0x4c, 0x58, 0x31]);
  const view = new DataView(out.buffer);
  view.setUint32(4, 1, true);
  view.setUint32(8, baseVersion, true);
  view.setUint32(12, targetVersion, true);
  view.setUint32(16, n, true);
  view.setUint32(20, crc32(bytesOf(target)), true);
  out.set(packed, HEADER);
  return out;
}

export const isModelDelta = (payload: Uint8Array): boolean => payload.length >= 4 && String.fromCharCode(...payload.subarray(0, 4)) === MODEL_DELTA_MAGIC;

/** Rebuilds the target model from the base the device holds; validates everything before returning a new array. */
export function applyModelDelta(base: FlatWeights, baseVersion: number, payload: Uint8Array): { weights: FlatWeights; version: number } {
  if (!isModelDelta(payload) || payload.length < HEADER) throw new WeightsFormatError('model delta: not a model delta (bad magic or too short)');
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (view.getUint32(4, true) !== 1) throw new WeightsFormatError(`model delta: format version ${view.getUint32(4, true)} is not supported`);
  const from = view.getUint32(8, true);
  if (from !== baseVersion) throw new WeightsFormatError(`model delta: made against version ${from}, this device holds ${baseVersion}`);
  const n = view.getUint32(16, true);
  if (n !== base.values.length) throw new WeightsFormatError(`model delta: ${n} values, the held model has ${base.values.length}`);
  const planes = inflateExactly(payload.subarray(HEADER), 4 * n, 'model delta');
  const a = new Uint32Array(base.values.buffer.slice(base.values.byteOffset, base.values.byteOffset + base.values.byteLength));
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = ((a[i] as number) ^ ((planes[i] as number) | ((planes[n + i] as number) << 8) | ((planes[2 * n + i] as number) << 16) | ((planes[3 * n + i] as number) << 24))) >>> 0;
  const values = new Float32Array(out.buffer);
  if (crc32(bytesOf(values)) !== view.getUint32(20, true)) throw new WeightsFormatError('model delta: the rebuilt model fails its checksum');
  for (let i = 0; i < n; i++) if (!Number.isFinite(values[i])) throw new WeightsFormatError(`model delta: value ${i} is not finite`);
  return { weights: { specs: base.specs, values }, version: view.getUint32(12, true) };
}

/**
 * Update codecs: how a device's Δ travels to the server (Konečný et al. 2016). A codec is a pipeline
 * named by its stages, each optional, in this order:
 *
 *   [topk+ | rand+] (float32 | float16 | q8 | q4 | q2) [+deflate]   e.g. "q8", "topk+q4", "rand+q2+deflate"
 *
 *   topk     keep the k = ⌈fraction·n⌉ largest-magnitude entries of the whole update (indices as
 *            LEB128 gaps); the device keeps what it did not send and adds it to its next update
 *            (error feedback). A k per tensor was measured too, and was no better here.
 *   rand     keep a random share `randFraction` of the entries (each independently), scaled by
 *            1 / randFraction so the estimate stays unbiased; the mask comes from a seed in the
 *            payload, so no index is sent (Konečný et al. 2016, "random mask")
 *   float16  IEEE half precision, round to nearest even
 *   q8/q4/q2 uniform quantization with stochastic rounding (unbiased: E[decode(encode(v))] = v),
 *            one (min, step) pair per block of `quantBlock` values, or per tensor when it is 0
 *   deflate  a lossless entropy-coding stage (DEFLATE, fflate) over the encoded body
 *
 * "float32" alone is the plain weight payload (weights.ts). Every other codec uses this payload:
 *
 *   bytes 0..3   magic "FLU1"
 *   4            format version (uint8) = 1
 *   5            flags (uint8): bit 0 topk, bit 1 deflate, bit 2 rand
 *   6            value format (uint8): 0 float32, 1 float16, 2 q8, 3 q4, 4 q2
 *   7            0
 *   8..11        n, the number of values of the model (uint32 LE)
 *   12..15       quantization block (uint32 LE; 0 = per tensor)
 *   16..19       length of the body before the deflate stage (uint32 LE)
 *   20..23       CRC-32 of that body (uint32 LE)
 *   24..         body, deflated when flag bit 1 is set (and then nothing may follow the deflate stream):
 *                  [topk] k (uint32 LE), then k LEB128 gaps (index − previous index − 1)
 *                  [rand] the mask's seed (uint32 LE) and k, the entries it keeps (uint32 LE)
 *                  values, m = k or n of them: float32 or float16 (LE), or for q8/q4/q2 one
 *                  (min float32, step float32) per block, then the codes packed, lowest bits first
 *
 * Decoding validates everything and returns a new array, or throws a WeightsFormatError with the
 * reason; nothing is ever half-applied.
 */
import { deflateSync } from 'fflate';
import { inflateExactly } from './inflate.ts';
import { crc32 } from './model-delta.ts';
import { createRng, type Rng } from './rng.ts';
import { decodeWeights, encodeWeights, sizeOf, totalSize, WeightsFormatError, type FlatWeights, type TensorSpec } from './weights.ts';

export const VALUE_FORMATS = ['float32', 'float16', 'q8', 'q4', 'q2'] as const;
export type ValueFormat = (typeof VALUE_FORMATS)[number];

export interface CodecSpec {
  /** the canonical name, e.g. "topk+q8+deflate" */
  name: string;
  /** topk or rand: only some entries are sent */
  sparse: boolean;
  /** rand: a seeded random mask (no indices, unbiased scaling) rather than topk */
  random: boolean;
  values: ValueFormat;
  deflate: boolean;
}

export interface CodecConfig {
  codec: string;
  /** share of entries topk keeps, in (0, 1] */
  topkFraction: number;
  /** share of entries rand keeps, in (0, 1] */
  randFraction?: number;
  /** values per quantization block; 0 = one block per tensor */
  quantBlock: number;
}

export const UPDATE_MAGIC = 'FLU1';
const FORMAT_VERSION = 1;
const HEADER = 24;
const FLAG_SPARSE = 1;
const FLAG_DEFLATE = 2;
const FLAG_RANDOM = 4;
const flagsOf = (c: CodecSpec) => (c.sparse && !c.random ? FLAG_SPARSE : 0) | (c.deflate ? FLAG_DEFLATE : 0) | (c.random ? FLAG_RANDOM : 0);

/** Parses a codec name; returns the reason when it is not one. */
export function parseCodec(name: string): CodecSpec | string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 64) return 'must be a codec name such as float32, float16, q8, q4, q2, topk, topk+q8 or q8+deflate';
  const stages = name.split('+');
  let i = 0;
  const random = stages[i] === 'rand';
  const sparse = stages[i] === 'topk' || random;
  if (sparse) i++;
  let values: ValueFormat = 'float32';
  const v = stages[i];
  if (v !== undefined && (VALUE_FORMATS as readonly string[]).includes(v)) {
    values = v as ValueFormat;
    i++;
  }
  const deflate = stages[i] === 'deflate';
  if (deflate) i++;
  if (i !== stages.length || stages.length === 0) {
    return `"${name}" is not a codec: stages are [topk+ or rand+](float32|float16|q8|q4|q2)[+deflate], in that order, each at most once`;
  }
  // float32 is named only when no sparsifier stands in front of it: "topk" is topk of float32 values.
  const canonical = [sparse ? (random ? 'rand' : 'topk') : '', values !== 'float32' || !sparse ? values : '', deflate ? 'deflate' : ''].filter(Boolean).join('+');
  return { name: canonical, sparse, random, values, deflate };
}

export function codecSpec(name: string): CodecSpec {
  const c = parseCodec(name);
  if (typeof c === 'string') throw new RangeError(`codec: ${c}`);
  return c;
}

/** True when decode(encode(x)) may differ from x. */
export const isLossy = (c: CodecSpec): boolean => c.sparse || c.values !== 'float32';

// ─── float16 ─────────────────────────────────────────────────────────────────
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → IEEE half bits, round to nearest even; finite values beyond ±65504 clamp to ±65504. */
export function toHalf(value: number): number {
  f32[0] = value;
  const x = u32[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7bff;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  if ((half & 0x7c00) === 0x7c00) half = 0x7bff;
  return sign | half;
}

export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

// ─── top-k ───────────────────────────────────────────────────────────────────
/** The k-th largest of `a` (destroys `a`): iterative quickselect. */
function kthLargest(a: Float32Array, k: number): number {
  const target = a.length - k;
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const pivot = Math.max(Math.min(a[lo] as number, a[hi] as number), Math.min(Math.max(a[lo] as number, a[hi] as number), a[mid] as number));
    let i = lo;
    let j = hi;
    while (i <= j) {
      while ((a[i] as number) < pivot) i++;
      while ((a[j] as number) > pivot) j--;
      if (i <= j) {
        const t = a[i] as number;
        a[i] = a[j] as number;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else break;
  }
  return a[target] as number;
}

/** Indices (ascending) of the k largest-magnitude entries; ties at the threshold go to the lowest indices. */
export function topkIndices(values: Float32Array, k: number): Uint32Array {
  const n = values.length;
  if (k >= n) return Uint32Array.from({ length: n }, (_, i) => i);
  // (typed-array loops, not Float32Array.from(…, fn): the iterator path is ~10x slower)
  const magnitudes = new Float32Array(n);
  for (let i = 0; i < n; i++) magnitudes[i] = Math.abs(values[i] as number);
  const threshold = kthLargest(magnitudes, k);
  let above = 0;
  for (let i = 0; i < n; i++) if (Math.abs(values[i] as number) > threshold) above++;
  let ties = k - above;
  const out = new Uint32Array(k);
  let j = 0;
  for (let i = 0; i < n && j < k; i++) {
    const a = Math.abs(values[i] as number);
    if (a > threshold || (a === threshold && ties-- > 0)) out[j++] = i;
  }
  return out;
}

/** The entries a random mask keeps: each index independently with probability `fraction`, from `seed`. */
export function randomMask(n: number, fraction: number, seed: number): Uint32Array {
  const rng = createRng(seed);
  let out = new Uint32Array(Math.min(n, Math.ceil(n * fraction * 1.5) + 64));
  let k = 0;
  for (let i = 0; i < n; i++) {
    if (rng() < fraction) {
      if (k === out.length) {
        const grown = new Uint32Array(Math.min(n, out.length * 2));
        grown.set(out);
        out = grown;
      }
      out[k++] = i;
    }
  }
  return out.slice(0, k);
}

export const topkCount = (n: number, fraction: number): number => Math.min(n, Math.max(1, Math.ceil(fraction * n)));

// ─── quantization ────────────────────────────────────────────────────────────
/** Block lengths over m values: fixed blocks, or the tensors' shares (counts per tensor for sparse values). */
function segments(m: number, block: number, specs: readonly TensorSpec[], indices: Uint32Array | undefined): number[] {
  if (block > 0) return Array.from({ length: Math.ceil(m / block) }, (_, b) => Math.min(block, m - b * block));
  const sizes = specs.map((s) => sizeOf(s.shape));
  if (!indices) return sizes;
  const counts = new Array<number>(sizes.length).fill(0);
  let t = 0;
  let end = sizes[0] ?? 0;
  for (const idx of indices) {
    while (idx >= end && t < sizes.length - 1) end += sizes[++t] as number;
    counts[t] = (counts[t] as number) + 1;
  }
  return counts;
}

function quantize(values: Float32Array, bits: 2 | 4 | 8, segs: number[], rng: Rng): { params: Float32Array; codes: Uint8Array } {
  const levels = (1 << bits) - 1;
  const perByte = 8 / bits;
  const params = new Float32Array(segs.length * 2);
  const codes = new Uint8Array(packedBytes(values.length, bits));
  let start = 0;
  segs.forEach((len, s) => {
    let lo = Number.POSITIVE_INFINITY;
    let hi = Number.NEGATIVE_INFINITY;
    for (let i = start; i < start + len; i++) {
      const v = values[i] as number;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (len === 0) lo = hi = 0;
    let step = Math.fround((hi - lo) / levels);
    while (lo + levels * step < hi) step = Math.fround(step * (1 + 2 ** -20) + Number.MIN_VALUE);
    params[2 * s] = lo;
    params[2 * s + 1] = step;
    for (let i = start; i < start + len; i++) {
      const q = step > 0 ? Math.min(levels, Math.max(0, Math.floor(((values[i] as number) - lo) / step + rng()))) : 0;
      if (bits === 8) codes[i] = q;
      else {
        const byte = (i / perByte) | 0;
        codes[byte] = (codes[byte] as number) | (q << ((i % perByte) * bits));
      }
    }
    start += len;
  });
  return { params, codes };
}

// ─── byte helpers ────────────────────────────────────────────────────────────
class Writer {
  private buf: Uint8Array;
  length = 0;
  constructor(capacity: number) {
    this.buf = new Uint8Array(Math.max(64, capacity));
  }
  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }
  u32(v: number): void {
    this.room(4);
    new DataView(this.buf.buffer).setUint32(this.length, v, true);
    this.length += 4;
  }
  varint(v: number): void {
    this.room(5);
    while (v >= 0x80) {
      this.buf[this.length++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.length++] = v;
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  done(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

class Reader {
  offset = 0;
  private readonly view: DataView;
  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  private need(n: number, what: string): void {
    if (this.offset + n > this.buf.length) throw new WeightsFormatError(`update: the payload ends inside ${what}`);
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return v;
  }
  f32(what: string): number {
    this.need(4, what);
    const v = this.view.getFloat32(this.offset, true);
    this.offset += 4;
    return v;
  }
  varint(what: string): number {
    let v = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      this.need(1, what);
      const b = this.buf[this.offset++] as number;
      v += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return v;
    }
    throw new WeightsFormatError(`update: ${what} is not a valid varint`);
  }
  bytes(n: number, what: string): Uint8Array {
    this.need(n, what);
    const b = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }
  get remaining(): number {
    return this.buf.length - this.offset;
  }
}

const VALUE_CODES: Record<ValueFormat, number> = { float32: 0, float16: 1, q8: 2, q4: 3, q2: 4 };
const BITS = { q8: 8, q4: 4, q2: 2 } as const;
const packedBytes = (m: number, bits: number) => Math.ceil((m * bits) / 8);

function assertFinite(values: Float32Array, what: string): void {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) throw new RangeError(`${what}: value ${i} is not finite (${values[i]})`);
}

// ─── encode / decode ─────────────────────────────────────────────────────────
/** Encodes Δ with the run's codec; `rng` drives stochastic rounding (seeded, so a run can be replayed). */
export function encodeUpdate(delta: FlatWeights, config: CodecConfig, rng: Rng): Uint8Array<ArrayBuffer> {
  const codec = codecSpec(config.codec);
  const n = totalSize(delta.specs);
  if (delta.values.length !== n) throw new RangeError(`encode update: the specs describe ${n} values, got ${delta.values.length}`);
  assertFinite(delta.values, 'encode update');
  if (!isLossy(codec) && !codec.deflate) return encodeWeights(delta);
  const block = config.quantBlock;
  if (!Number.isInteger(block) || block < 0) throw new RangeError(`encode update: quantBlock must be a whole number ≥ 0, got ${block}`);
  const body = new Writer(n);
  let indices: Uint32Array | undefined;
  let values = delta.values;
  if (codec.random) {
    const fraction = config.randFraction ?? Number.NaN;
    if (!(fraction > 0 && fraction <= 1)) throw new RangeError(`encode update: randFraction must be in (0, 1], got ${config.randFraction}`);
    const seed = Math.floor(rng() * 2 ** 32) >>> 0;
    indices = randomMask(n, fraction, seed);
    const picked = new Float32Array(indices.length);
    for (let j = 0; j < indices.length; j++) picked[j] = (delta.values[indices[j] as number] as number) / fraction;
    values = picked;
    body.u32(seed);
    body.u32(indices.length);
  } else if (codec.sparse) {
    if (!(config.topkFraction > 0 && config.topkFraction <= 1)) throw new RangeError(`encode update: topkFraction must be in (0, 1], got ${config.topkFraction}`);
    indices = topkIndices(values, topkCount(n, config.topkFraction));
    const picked = new Float32Array(indices.length);
    for (let j = 0; j < indices.length; j++) picked[j] = delta.values[indices[j] as number] as number;
    values = picked;
    body.u32(indices.length);
    let prev = -1;
    for (const i of indices) {
      body.varint(i - prev - 1);
      prev = i;
    }
  }
  switch (codec.values) {
    case 'float32':
      body.bytes(new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength)));
      break;
    case 'float16': {
      const h = new Uint16Array(values.length);
      for (let i = 0; i < values.length; i++) h[i] = toHalf(values[i] as number);
      body.bytes(new Uint8Array(h.buffer));
      break;
    }
    case 'q8':
    case 'q4':
    case 'q2': {
      const q = quantize(values, BITS[codec.values], segments(values.length, block, delta.specs, indices), rng);
      body.bytes(new Uint8Array(q.params.buffer));
      body.bytes(q.codes);
      break;
    }
    default: {
      const never: never = codec.values;
      throw new Error(`encode update: unknown value format ${String(never)}`);
    }
  }
  const inner = body.done();
  const packed = codec.deflate ? deflateSync(inner, { level: 6 }) : inner;
  const out = new Uint8Array(HEADER + packed.length);
  out.set([0x46, 0x4c, 0x55, 0x31, FORMAT_VERSION, flagsOf(codec), VALUE_CODES[codec.values], 0]);
  const view = new DataView(out.buffer);
  view.setUint32(8, n, true);
  view.setUint32(12, block, true);
  view.setUint32(16, inner.length, true);
  view.setUint32(20, crc32(inner), true);
  out.set(packed, HEADER);
  return out;
}

/** The largest body a valid payload of n values can have: bounds the deflate stage's output. */
const maxBody = (n: number): number => 4 + 5 * n + 4 * n + 8 * n + 64;

/**
 * Decodes and validates an update encoded with `config`'s codec for a model with `specs`: header,
 * codec, sizes, indices, scales and every value. Returns Δ as float32 (dense).
 */
export function decodeUpdate(payload: Uint8Array, specs: readonly TensorSpec[], config: CodecConfig): FlatWeights {
  const codec = codecSpec(config.codec);
  if (!(payload instanceof Uint8Array)) throw new WeightsFormatError('update: payload must be binary');
  const magic = String.fromCharCode(...payload.subarray(0, 4));
  if (!isLossy(codec) && !codec.deflate) {
    if (magic === UPDATE_MAGIC) throw new WeightsFormatError(`update: the run's codec is float32, the payload is a compressed update`);
    return decodeWeights(payload, specs);
  }
  if (magic !== UPDATE_MAGIC) throw new WeightsFormatError(`update: the run's codec is ${codec.name}, the payload is not a compressed update (bad magic)`);
  if (payload.length < HEADER) throw new WeightsFormatError(`update: payload of ${payload.length} bytes is shorter than the header`);
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (payload[4] !== FORMAT_VERSION) throw new WeightsFormatError(`update: format version ${payload[4]} is not supported (expected ${FORMAT_VERSION})`);
  const flags = payload[5] as number;
  const valueCode = payload[6] as number;
  const got = [flags & FLAG_SPARSE ? 'topk' : '', flags & FLAG_RANDOM ? 'rand' : '', VALUE_FORMATS[valueCode] ?? `format ${valueCode}`, flags & FLAG_DEFLATE ? 'deflate' : ''].filter(Boolean).join('+');
  if ((flags & ~(FLAG_SPARSE | FLAG_DEFLATE | FLAG_RANDOM)) !== 0 || payload[7] !== 0 || flags !== flagsOf(codec) || valueCode !== VALUE_CODES[codec.values]) {
    throw new WeightsFormatError(`update: the run's codec is ${codec.name}, the payload is ${got}`);
  }
  const n = totalSize(specs);
  const declared = view.getUint32(8, true);
  if (declared !== n) throw new WeightsFormatError(`update: the payload describes ${declared} values, the model has ${n}`);
  const block = view.getUint32(12, true);
  if (block !== config.quantBlock) throw new WeightsFormatError(`update: quantization block ${block}, the run uses ${config.quantBlock}`);
  const innerLength = view.getUint32(16, true);
  if (innerLength > maxBody(n)) throw new WeightsFormatError(`update: a body of ${innerLength} bytes is impossible for ${n} values`);
  let inner: Uint8Array;
  if (codec.deflate) {
    inner = inflateExactly(payload.subarray(HEADER), innerLength, 'update');
  } else {
    inner = payload.subarray(HEADER);
    if (inner.length !== innerLength) throw new WeightsFormatError(`update: the body has ${inner.length} bytes, the header says ${innerLength}`);
  }

  if (crc32(inner) !== view.getUint32(20, true)) throw new WeightsFormatError('update: the body fails its checksum');
  const r = new Reader(inner);
  let indices: Uint32Array | undefined;
  if (codec.random) {
    const seed = r.u32('the mask seed');
    const k = r.u32('the entry count');
    const fraction = config.randFraction ?? Number.NaN;
    if (!(fraction > 0 && fraction <= 1)) throw new WeightsFormatError(`update: the run's randFraction ${config.randFraction} is not in (0, 1]`);
    indices = randomMask(n, fraction, seed);
    if (indices.length !== k) throw new WeightsFormatError(`update: the mask of seed ${seed} keeps ${indices.length} entries, the payload says ${k}`);
  } else if (codec.sparse) {
    const k = r.u32('the entry count');
    if (k < 1 || k > n) throw new WeightsFormatError(`update: ${k} entries for a model of ${n} values`);
    indices = new Uint32Array(k);
    let prev = -1;
    for (let j = 0; j < k; j++) {
      const idx = prev + 1 + r.varint('the indices');
      if (idx >= n) throw new WeightsFormatError(`update: index ${idx} is outside the model's ${n} values`);
      indices[j] = idx;
      prev = idx;
    }
  }
  const m = indices ? indices.length : n;
  let values: Float32Array;
  switch (codec.values) {
    case 'float32': {
      const b = r.bytes(m * 4, 'the values');
      values = new Float32Array(m);
      new Uint8Array(values.buffer).set(b);
      break;
    }
    case 'float16': {
      const b = r.bytes(m * 2, 'the values');
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      values = new Float32Array(m);
      for (let i = 0; i < m; i++) values[i] = fromHalf(dv.getUint16(2 * i, true));
      break;
    }
    case 'q8':
    case 'q4':
    case 'q2': {
      const bits = BITS[codec.values];
      const perByte = 8 / bits;
      const mask = (1 << bits) - 1;
      const segs = segments(m, block, specs, indices);
      const params = segs.map((_, s) => [r.f32(`the scale of block ${s}`), r.f32(`the scale of block ${s}`)] as const);
      params.forEach(([lo, step], s) => {
        if (!Number.isFinite(lo) || !Number.isFinite(step) || step < 0) throw new WeightsFormatError(`update: block ${s} has an invalid scale (min ${lo}, step ${step})`);
      });
      const codes = r.bytes(packedBytes(m, bits), 'the quantized values');
      const used = (m % perByte) * bits;
      if (used !== 0 && (codes[codes.length - 1] as number) >> used !== 0) throw new WeightsFormatError('update: the padding bits of the last byte are not zero');
      values = new Float32Array(m);
      let i = 0;
      segs.forEach((len, s) => {
        const [lo, step] = params[s] as readonly [number, number];
        for (const end = i + len; i < end; i++) {
          const q = bits === 8 ? (codes[i] as number) : ((codes[(i / perByte) | 0] as number) >> ((i % perByte) * bits)) & mask;
          values[i] = lo + q * step;
        }
      });
      break;
    }
    default: {
      const never: never = codec.values;
      throw new Error(`decode update: unknown value format ${String(never)}`);
    }
  }
  if (r.remaining !== 0) throw new WeightsFormatError(`update: ${r.remaining} bytes follow the last value`);
  for (let i = 0; i < m; i++) if (!Number.isFinite(values[i])) throw new WeightsFormatError(`update: value ${indices ? indices[i] : i} is not finite (${values[i]})`);
  if (!indices) return { specs: specs.map((s) => ({ name: s.name, shape: [...s.shape] })), values };
  const dense = new Float32Array(n);
  indices.forEach((idx, j) => (dense[idx] = values[j] as number));
  return { specs: specs.map((s) => ({ name: s.name, shape: [...s.shape] })), values: dense };
}

// ─── error feedback ──────────────────────────────────────────────────────────
export interface FeedbackResult {
  payload: Uint8Array<ArrayBuffer>;
  /** what was not sent, to add to the next update (undefined for codecs without error feedback) */
  residual: Float32Array | undefined;
}

/**
 * Encodes Δ + residual and returns the new residual (Δ + residual − what the server will decode).
 * Error feedback applies to topk codecs (Stich et al. 2018; Karimireddy et al. 2019): what a round
 * leaves out is delayed, not lost. The other codecs (rand and the quantizers) are unbiased and keep
 * no residual.
 */
export function encodeWithFeedback(delta: FlatWeights, residual: Float32Array | undefined, config: CodecConfig, rng: Rng): FeedbackResult {
  const codec = codecSpec(config.codec);
  if (!codec.sparse || codec.random) return { payload: encodeUpdate(delta, config, rng), residual: undefined };
  const corrected = delta.values.slice();
  if (residual && residual.length === corrected.length) for (let i = 0; i < corrected.length; i++) corrected[i] = (corrected[i] as number) + (residual[i] as number);
  const payload = encodeUpdate({ specs: delta.specs, values: corrected }, config, rng);
  const sent = decodeUpdate(payload, delta.specs, config).values;
  for (let i = 0; i < corrected.length; i++) corrected[i] = (corrected[i] as number) - (sent[i] as number);
  return { payload, residual: corrected };
}

/**
 * Hostile but well-formed update payloads: what a selected device could send on purpose. Headers
 * are right and checksums resealed, so only the deeper checks (sizes, indices, scales, values, the
 * deflate stage's bounds, the server's value bound) stand between them and the aggregate.
 */
import { deflateSync } from 'fflate';
import { codecSpec, encodeUpdate, type CodecConfig } from '../../shared/codec.ts';
import { crc32 } from '../../shared/model-delta.ts';
import { createRng } from '../../shared/rng.ts';
import { encodeWeights, totalSize, type FlatWeights, type TensorSpec } from '../../shared/weights.ts';

const HEADER = 24;
const FLAG_DEFLATE = 2;
const BITS = { q8: 8, q4: 4, q2: 2 } as const;

/** A payload of `codec` without its deflate stage: the header, then the body as encoded before deflating. */
function plainFrame(update: FlatWeights, codec: CodecConfig): Uint8Array<ArrayBuffer> {
  const spec = codecSpec(codec.codec);
  return encodeUpdate(update, { ...codec, codec: [spec.sparse ? (spec.random ? 'rand' : 'topk') : '', spec.values].filter(Boolean).join('+') }, createRng(1));
}

/** Seals a (possibly altered) plain frame as a payload of `codec`: the body's length and checksum, deflated when the codec says so. */
function seal(frame: Uint8Array, codec: CodecConfig): Uint8Array<ArrayBuffer> {
  const body = frame.subarray(HEADER);
  const deflate = codecSpec(codec.codec).deflate;
  const packed = deflate ? deflateSync(body, { level: 6 }) : body;
  const out = new Uint8Array(HEADER + packed.length);
  out.set(frame.subarray(0, HEADER));
  if (deflate) out[5] = (out[5] as number) | FLAG_DEFLATE;
  const view = new DataView(out.buffer);
  view.setUint32(16, body.length, true);
  view.setUint32(20, crc32(body), true);
  out.set(packed, HEADER);
  return out;
}

const streams = new Map<number, Uint8Array>();

/** A real high-ratio DEFLATE stream — `mebibytes` MiB of zeros — behind a well-formed header of `codec`. */
export function bomb(update: FlatWeights, codec: CodecConfig, mebibytes = 64): Uint8Array<ArrayBuffer> {
  const frame = plainFrame(update, codec);
  let stream = streams.get(mebibytes);
  if (!stream) streams.set(mebibytes, (stream = deflateSync(new Uint8Array(mebibytes * 1024 * 1024), { level: 9 })));
  const out = new Uint8Array(HEADER + stream.length);
  out.set(frame.subarray(0, HEADER));
  out[5] = (out[5] as number) | FLAG_DEFLATE;
  out.set(stream, HEADER);
  return out;
}

/** Where in a plain body the values begin: after the mask's seed and count (rand), or after the count and indices (topk). */
function valuesOffset(frame: Uint8Array, codec: CodecConfig, specs: readonly TensorSpec[]): number {
  const spec = codecSpec(codec.codec);
  if (!spec.sparse) return 0;
  if (spec.random) return 8;
  const body = frame.subarray(HEADER);
  const k = new DataView(body.buffer, body.byteOffset).getUint32(0, true);
  let end = 4;
  for (let j = 0; j < k; j++) while ((body[end++] as number) & 0x80);
  void specs;
  return end;
}

/** Every kind of hostile payload for `codec` — each must be refused — with what it tries. */
export function hostilePayloads(specs: readonly TensorSpec[], codec: CodecConfig): { name: string; payload: Uint8Array<ArrayBuffer> }[] {
  const rng = createRng(7);
  const n = totalSize(specs);
  const update = (f: (i: number) => number): FlatWeights => ({ specs: specs.map((s) => ({ name: s.name, shape: [...s.shape] })), values: Float32Array.from({ length: n }, (_, i) => f(i)) });
  const honest = update(() => (rng() - 0.5) * 0.01);
  const spec = codecSpec(codec.codec);
  const plainFloat32 = spec.values === 'float32' && !spec.sparse && !spec.deflate;
  const good = encodeUpdate(honest, codec, createRng(1));
  const frame = plainFrame(honest, codec);
  const at = valuesOffset(frame, codec, specs);
  const resealed = (mutate: (body: Uint8Array<ArrayBuffer>, view: DataView) => void) => {
    const f = frame.slice();
    mutate(f.subarray(HEADER) as Uint8Array<ArrayBuffer>, new DataView(f.buffer, HEADER));
    return seal(f, codec);
  };
  const out: { name: string; payload: Uint8Array<ArrayBuffer> }[] = [
    { name: 'truncated', payload: good.slice(0, good.length - 7) },
    { name: 'trailing bytes', payload: new Uint8Array([...good, 0, 1, 2]) },
    { name: 'the header alone', payload: good.slice(0, 16) },
    { name: 'another codec', payload: encodeUpdate(honest, { ...codec, codec: spec.values === 'q8' ? 'q4' : 'q8' }, createRng(1)) },
  ];
  if (spec.values !== 'float16') out.push({ name: 'huge finite values', payload: encodeUpdate(update(() => 3e38), codec, createRng(1)) });
  if (plainFloat32) {
    out.push({ name: 'a NaN value', payload: encodeWeights(update((i) => (i === 5 ? Number.NaN : 0.001))) });
    out.push({ name: 'an infinite value', payload: encodeWeights(update((i) => (i === 9 ? Number.POSITIVE_INFINITY : 0.001))) });
    out.push({ name: 'wrong shapes', payload: encodeWeights({ specs: [{ name: specs[0]!.name, shape: [2] }], values: new Float32Array(2) }) });
    return out;
  }
  out.push({ name: 'a flipped byte (the body has a checksum)', payload: good.map((b, i) => (i === good.length - 3 ? b ^ 0x5a : b)) });
  out.push({ name: 'more values than the model', payload: (() => {
    const p = good.slice();
    new DataView(p.buffer).setUint32(8, n + 1, true);
    return p;
  })() });
  out.push({ name: 'a body one byte short, resealed', payload: seal(frame.slice(0, frame.length - 1), codec) });
  out.push({ name: 'a deflate bomb (64 KiB → 64 MiB)', payload: bomb(honest, codec) });
  if (spec.values === 'float32') out.push({ name: 'a NaN value, resealed', payload: resealed((b, v) => v.setFloat32(b.length - 4, Number.NaN, true)) });
  if (spec.values === 'float16') out.push({ name: 'an infinite half, resealed', payload: resealed((b, v) => v.setUint16(b.length - 2, 0x7c00, true)) });
  if (spec.values in BITS) {
    out.push({ name: 'a NaN scale, resealed', payload: resealed((_b, v) => v.setFloat32(at, Number.NaN, true)) });
    out.push({ name: 'a negative step, resealed', payload: resealed((_b, v) => v.setFloat32(at + 4, -1, true)) });
  }
  if (spec.sparse && !spec.random) out.push({ name: 'an index beyond the model, resealed', payload: resealed((b) => b.set([0xff, 0xff, 0xff, 0x0f], 4)) });
  if (spec.random) out.push({ name: 'a mask count that lies, resealed', payload: resealed((_b, v) => v.setUint32(4, v.getUint32(4, true) + 1, true)) });
  return out;
}

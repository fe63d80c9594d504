/**
 * The lossy downlink (RunConfig.downlinkCodec): the server publishes each new global model as a
 * compressed step from the version before it, with the update codecs (codec.ts), and stores as the
 * new version exactly what a device rebuilds from that step — so the server and every device hold
 * the same model, bit for bit. What a step leaves out is kept on the server and added to the next
 * step (error feedback on the server's side, as in Tang et al. 2019, "DoubleSqueeze"): it is
 * delayed, not lost. A device several versions behind gets the chain of steps since the version it
 * holds, or the full model when that is smaller; a device that holds nothing, the chain from the
 * run's seeded initial model, which it builds itself (no steps at all in round 1).
 *
 * A chain on the wire:
 *   bytes 0..3   magic "FLQ1"
 *   4..7         format version (uint32 LE) = 1
 *   8..11        base version: what the device must hold
 *   12..15       target version
 *   16..19       n, the number of values
 *   20..23       CRC-32 of the target's float32 bytes
 *   24..27       L, the length of the manifest
 *   28..28+L     manifest (JSON): { codec, topkFraction, quantBlock, steps: [{ version, bytes }] }
 *   then         each step's payload (codec.ts's FLU1), in order
 */
import { z } from 'zod';
import { decodeUpdate, encodeUpdate, parseCodec, type CodecConfig } from './codec.ts';
import { crc32 } from './model-delta.ts';
import type { Rng } from './rng.ts';
import { WeightsFormatError, type FlatWeights, type TensorSpec } from './weights.ts';

export const MODEL_CHAIN_MAGIC = 'FLQ1';
const HEADER = 28;
/** a longer chain is never smaller than the model it rebuilds */
export const MAX_CHAIN_STEPS = 256;

const bytesOf = (v: Float32Array) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

/** Why a codec cannot compress downloads (undefined: it can). */
export function downlinkCodecProblem(name: string): string | undefined {
  const c = parseCodec(name);
  if (typeof c === 'string') return c;
  if (c.random) return `${c.name}: a random mask is not offered for downloads (its unbiased scaling suits a sum of many devices, not one model)`;
  return undefined;
}

/** The new model a step rebuilds from `base`: base + the step's decoded values, rounded to float32 (the one rule both ends follow). */
export function applyStep(base: Float32Array, payload: Uint8Array, specs: readonly TensorSpec[], config: CodecConfig): Float32Array {
  const step = decodeUpdate(payload, specs, config).values;
  if (step.length !== base.length) throw new WeightsFormatError(`model step: ${step.length} values, the model has ${base.length}`);
  const out = new Float32Array(base.length);
  for (let i = 0; i < out.length; i++) out[i] = (base[i] as number) + (step[i] as number);
  for (let i = 0; i < out.length; i++) if (!Number.isFinite(out[i])) throw new WeightsFormatError(`model step: value ${i} is not finite`);
  return out;
}

/**
 * The server's step from `base` towards `target`, with what earlier steps left out (`residual`):
 * the step's payload, the model a device rebuilds from it (to store as the new version), and what
 * this step leaves out in turn.
 */
export function quantizeStep(base: FlatWeights, target: Float32Array, residual: Float32Array | undefined, config: CodecConfig, rng: Rng): { payload: Uint8Array; values: Float32Array; residual: Float32Array } {
  const n = base.values.length;
  if (target.length !== n) throw new RangeError(`model step: base has ${n} values, target ${target.length}`);
  if (residual && residual.length !== n) throw new RangeError(`model step: the residual has ${residual.length} values, the model ${n}`);
  const wanted = new Float32Array(n);
  for (let i = 0; i < n; i++) wanted[i] = (target[i] as number) - (base.values[i] as number) + (residual ? (residual[i] as number) : 0);
  const payload = encodeUpdate({ specs: base.specs, values: wanted }, config, rng);
  const values = applyStep(base.values, payload, base.specs, config);
  const left = new Float32Array(n);
  for (let i = 0; i < n; i++) left[i] = (target[i] as number) + (residual ? (residual[i] as number) : 0) - (values[i] as number);
  return { payload, values, residual: left };
}

/** Bytes of the chain of `steps` (the wire size, header and manifest included). */
export function encodeModelChain(baseVersion: number, target: { version: number; values: Float32Array }, steps: readonly { version: number; payload: Uint8Array }[], config: CodecConfig): Uint8Array {
  if (steps.length > MAX_CHAIN_STEPS) throw new RangeError(`model chain: ${steps.length} steps (at most ${MAX_CHAIN_STEPS})`);
  if ((steps.at(-1)?.version ?? baseVersion) !== target.version) throw new RangeError(`model chain: its steps make v${steps.at(-1)?.version ?? baseVersion}, not the target v${target.version}`);
  const manifest = new TextEncoder().encode(JSON.stringify({ codec: config.codec, topkFraction: config.topkFraction, quantBlock: config.quantBlock, steps: steps.map((s) => ({ version: s.version, bytes: s.payload.byteLength })) }));
  const body = steps.reduce((a, s) => a + s.payload.byteLength, 0);
  const out = new Uint8Array(HEADER + manifest.length + body);
  out.set([0x46, 0x4c, 0x51, 0x31]);
  const view = new DataView(out.buffer);
  view.setUint32(4, 1, true);
  view.setUint32(8, baseVersion, true);
  view.setUint32(12, target.version, true);
  view.setUint32(16, target.values.length, true);
  view.setUint32(20, crc32(bytesOf(target.values)), true);
  view.setUint32(24, manifest.length, true);
  out.set(manifest, HEADER);
  let at = HEADER + manifest.length;
  for (const s of steps) {
    out.set(s.payload, at);
    at += s.payload.byteLength;
  }
  return out;
}

export const isModelChain = (payload: Uint8Array): boolean => payload.length >= 4 && String.fromCharCode(...payload.subarray(0, 4)) === MODEL_CHAIN_MAGIC;

const manifestSchema = z.strictObject({
  codec: z.string().max(64),
  topkFraction: z.number().gt(0).max(1),
  quantBlock: z.number().int().min(0).max(1 << 20),
  steps: z.array(z.strictObject({ version: z.number().int().min(0).max(2 ** 32 - 1), bytes: z.number().int().min(1) })).max(MAX_CHAIN_STEPS),
});

/** Rebuilds the target model from the one the device holds, step by step; checks everything, and the result against its checksum. */
export function applyModelChain(held: FlatWeights, heldVersion: number, payload: Uint8Array): { weights: FlatWeights; version: number } {
  if (!isModelChain(payload) || payload.length < HEADER) throw new WeightsFormatError('model chain: not a model chain (bad magic or too short)');
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (view.getUint32(4, true) !== 1) throw new WeightsFormatError(`model chain: format version ${view.getUint32(4, true)} is not supported`);
  const from = view.getUint32(8, true);
  if (from !== heldVersion) throw new WeightsFormatError(`model chain: made against version ${from}, this device holds ${heldVersion}`);
  const n = view.getUint32(16, true);
  if (n !== held.values.length) throw new WeightsFormatError(`model chain: ${n} values, the held model has ${held.values.length}`);
  const manifestLength = view.getUint32(24, true);
  if (manifestLength > 64 * 1024 || HEADER + manifestLength > payload.length) throw new WeightsFormatError(`model chain: a manifest of ${manifestLength} bytes does not fit`);
  let manifest: z.infer<typeof manifestSchema>;
  try {
    const parsed = manifestSchema.safeParse(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload.subarray(HEADER, HEADER + manifestLength))));
    if (!parsed.success) throw new Error(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
    manifest = parsed.data;
  } catch (err) {
    throw new WeightsFormatError(`model chain: bad manifest (${err instanceof Error ? err.message : String(err)})`);
  }
  const problem = downlinkCodecProblem(manifest.codec);
  if (problem) throw new WeightsFormatError(`model chain: ${problem}`);
  const target = view.getUint32(12, true);
  const made = manifest.steps.at(-1)?.version ?? from;
  if (made !== target) throw new WeightsFormatError(`model chain: its steps make v${made}, the header says v${target}`);
  const total = manifest.steps.reduce((a, s) => a + s.bytes, 0);
  if (HEADER + manifestLength + total !== payload.length) throw new WeightsFormatError(`model chain: the steps take ${total} bytes, ${payload.length - HEADER - manifestLength} follow the manifest`);
  const config: CodecConfig = { codec: manifest.codec, topkFraction: manifest.topkFraction, quantBlock: manifest.quantBlock };
  let values = held.values;
  let at = HEADER + manifestLength;
  for (const s of manifest.steps) {
    values = applyStep(values, payload.subarray(at, at + s.bytes), held.specs, config);
    at += s.bytes;
  }
  if (crc32(bytesOf(values)) !== view.getUint32(20, true)) throw new WeightsFormatError('model chain: the rebuilt model fails its checksum');
  return { weights: { specs: held.specs, values }, version: target };
}

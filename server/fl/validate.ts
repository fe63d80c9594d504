/**
 * What the server checks of an update before it can count: the payload decodes with the run's
 * codec against the model's tensors, every value is finite and within a plausible bound, and its
 * L2 norm is measured — and, when the run sets `clipNorm`, the update is scaled down to it here,
 * once, whatever the aggregation rule (clipping wraps every strategy).
 */
import { decodeUpdate } from '../../shared/codec.ts';
import { clipToNorm } from '../../shared/robust.ts';
import { countSketch } from '../../shared/monitor.ts';
import { codecConfig, effectiveClipNorm, type RunConfig } from '../../shared/schemas.ts';
import { WeightsFormatError, type TensorSpec } from '../../shared/weights.ts';

/**
 * No coordinate of an update may move by more than this. No SGD round moves a weight by a million
 * (a diverged device sends NaN, refused anyway), and the bound keeps every weighted sum of updates
 * finite in float32, so one device cannot turn the global model into infinities.
 */
export const MAX_ABS_UPDATE_VALUE = 1e6;

export interface ValidatedUpdate {
  /** Δ, dense, clipped to the run's L2 bound when it has one */
  delta: Float32Array;
  /** ‖Δ‖₂ before clipping */
  norm: number;
  clipped: boolean;
  /** the (clipped) update's count sketch, for the monitor's cosine to the round's aggregate (monitor.ts) */
  sketch: Float32Array;
}

/** Decodes and checks one update; throws WeightsFormatError with the reason when it cannot count. */
export function validateUpdate(payload: Uint8Array, specs: readonly TensorSpec[], config: RunConfig): ValidatedUpdate {
  const { values } = decodeUpdate(payload, specs, codecConfig(config));
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    if (v > MAX_ABS_UPDATE_VALUE || v < -MAX_ABS_UPDATE_VALUE) throw new WeightsFormatError(`update: value ${i} is ${v}, beyond the bound of ±${MAX_ABS_UPDATE_VALUE}`);
  }
  const c = clipToNorm(values, effectiveClipNorm(config));
  return { delta: c.delta, norm: c.norm, clipped: c.clipped, sketch: countSketch(c.delta) };
}

/**
 * DEFLATE decompression that cannot be bombed: the stream is inflated once, in small steps, and
 * refused as soon as its output passes the size the payload declared — so a stream that inflates
 * to gigabytes costs about as much as one of the declared size. The stream must also end exactly
 * where the payload ends: bytes after it are refused.
 *
 * Built on fflate's streaming Inflate. Each step pushes at most enough input to produce the bytes
 * still expected plus 1 MiB, even at DEFLATE's best ratio (~1032:1): a bomb costs at most the
 * declared size and 1 MiB of inflating (a few ms) before it is refused. (Bounding each step by the
 * bytes still expected alone made small bodies inflate in 256-byte steps, 8x slower, because
 * fflate copies its 32 KiB window on every step.)
 */
import { Inflate } from 'fflate';
import { WeightsFormatError } from './weights.ts';

/** DEFLATE's largest expansion: a 258-byte match in ~2 bits. */
const MAX_RATIO = 1032;
/** output a step may overshoot the declared size by */
const SLACK = 1024 * 1024;
const MAX_CHUNK = 64 * 1024;

/**
 * fflate's streaming state after a push: `p` holds the input not yet consumed (from the byte of
 * the current bit position), `s.p` the bit offset within that byte, `s.f`/`s.l` whether the final
 * block was read and is finished. Read only to tell where the stream ended.
 */
interface InflateState {
  p: Uint8Array;
  s: { p?: number; f?: number; l?: unknown };
}

/** Inflates `input` (a raw DEFLATE stream) into exactly `expected` bytes, or throws WeightsFormatError naming `what`. */
export function inflateExactly(input: Uint8Array, expected: number, what: string): Uint8Array {
  const out = new Uint8Array(expected);
  let produced = 0;
  let overflow = false;
  const inflater = new Inflate((chunk) => {
    if (produced + chunk.length > expected) {
      overflow = true;
      return;
    }
    out.set(chunk, produced);
    produced += chunk.length;
  });
  let offset = 0;
  try {
    while (offset < input.length) {
      const size = Math.min(MAX_CHUNK, Math.ceil((expected - produced + SLACK) / MAX_RATIO));
      const end = Math.min(input.length, offset + size);
      inflater.push(input.subarray(offset, end), end === input.length);
      offset = end;
      if (overflow) throw new WeightsFormatError(`${what}: the deflate stage inflates past the declared ${expected} bytes (refused after ${offset} of its ${input.length} bytes)`);
    }
  } catch (err) {
    if (err instanceof WeightsFormatError) throw err;
    throw new WeightsFormatError(`${what}: the deflate stage is corrupt (${err instanceof Error ? err.message : String(err)})`);
  }
  if (input.length === 0) throw new WeightsFormatError(`${what}: the deflate stage is empty`);
  const state = inflater as unknown as InflateState;
  if (!(state.s.f && !state.s.l)) throw new WeightsFormatError(`${what}: the deflate stream ends before its final block`);
  const partial = state.s.p ? 1 : 0; // the final block's last bits share a byte with its padding
  if (state.p.length > partial) throw new WeightsFormatError(`${what}: ${state.p.length - partial} bytes follow the end of the deflate stream`);
  if (produced !== expected) throw new WeightsFormatError(`${what}: the deflate stage inflates to ${produced} bytes, the header says ${expected}`);
  return out;
}

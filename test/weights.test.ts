import { describe, expect, it } from 'vitest';
import { decodeWeights, encodeWeights, type FlatWeights } from '../shared/weights.ts';

const specs = [
  { name: 'conv1/kernel', shape: [3, 3, 1, 2] },
  { name: 'conv1/bias', shape: [2] },
];
const sample = (): FlatWeights => ({ specs, values: Float32Array.from({ length: 20 }, (_, i) => i / 7 - 1) });

describe('weight payload', () => {
  it('round-trips bit for bit', () => {
    const w = sample();
    const decoded = decodeWeights(encodeWeights(w), specs);
    expect(decoded.specs).toEqual(specs);
    expect([...decoded.values]).toEqual([...w.values]);
  });

  it('decodes from an unaligned view (as socket.io delivers Buffers)', () => {
    const payload = encodeWeights(sample());
    const shifted = new Uint8Array(payload.length + 1);
    shifted.set(payload, 1);
    expect([...decodeWeights(shifted.subarray(1)).values]).toEqual([...sample().values]);
  });

  it('rejects a payload with the wrong length', () => {
    const payload = encodeWeights(sample());
    expect(() => decodeWeights(payload.subarray(0, payload.length - 4))).toThrow('manifest describes 20 values (80 bytes), payload carries 76 bytes');
    const longer = new Uint8Array(payload.length + 4);
    longer.set(payload);
    expect(() => decodeWeights(longer)).toThrow('payload carries 84 bytes');
  });

  it('rejects wrong shapes, names and tensor counts against the model', () => {
    const payload = encodeWeights(sample());
    expect(() => decodeWeights(payload, [{ name: 'conv1/kernel', shape: [3, 3, 2, 1] }, specs[1]!])).toThrow('tensor conv1/kernel has shape [3,3,1,2], expected [3,3,2,1]');
    expect(() => decodeWeights(payload, [{ name: 'other', shape: [3, 3, 1, 2] }, specs[1]!])).toThrow('tensor 0 is conv1/kernel, expected other');
    expect(() => decodeWeights(payload, [specs[0]!])).toThrow('expected 1 tensors, got 2');
  });

  it.each([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])('rejects %s values', (bad) => {
    const w = sample();
    w.values[13] = bad;
    expect(() => decodeWeights(encodeWeights(w))).toThrow(/value 13 is not finite/);
  });

  it('rejects garbage: bad magic, bad version, bad manifest, short input', () => {
    const payload = encodeWeights(sample());
    const badMagic = payload.slice();
    badMagic[0] = 0x58;
    expect(() => decodeWeights(badMagic)).toThrow('bad magic');
    const badVersion = payload.slice();
    new DataView(badVersion.buffer).setUint32(4, 9, true);
    expect(() => decodeWeights(badVersion)).toThrow('format version 9 is not supported');
    const badManifest = payload.slice();
    badManifest[12] = 0x7b + 1;
    expect(() => decodeWeights(badManifest)).toThrow('manifest is not valid UTF-8 JSON');
    const hugeManifest = payload.slice();
    new DataView(hugeManifest.buffer).setUint32(8, 2 ** 31, true);
    expect(() => decodeWeights(hugeManifest)).toThrow('manifest length is out of bounds');
    expect(() => decodeWeights(new Uint8Array(5))).toThrow('shorter than the header');
  });

  it('refuses to encode values that do not match the manifest', () => {
    expect(() => encodeWeights({ specs, values: new Float32Array(3) })).toThrow('manifest describes 20 values, got 3');
  });
});

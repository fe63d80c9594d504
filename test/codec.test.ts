import { describe, expect, it } from 'vitest';
import { codecSpec, decodeUpdate, encodeUpdate, encodeWithFeedback, fromHalf, parseCodec, toHalf, topkIndices, type CodecConfig } from '../shared/codec.ts';
import { applyModelDelta, crc32, encodeModelDelta } from '../shared/model-delta.ts';
import { createRng } from '../shared/rng.ts';
import { WeightsFormatError, type FlatWeights, type TensorSpec } from '../shared/weights.ts';
import { validateUpdate } from '../server/fl/validate.ts';
import { runConfigSchema } from '../shared/schemas.ts';
import { bomb, hostilePayloads } from './support/hostile.ts';

const specs: TensorSpec[] = [
  { name: 'conv/kernel', shape: [3, 3, 1, 8] },
  { name: 'conv/bias', shape: [8] },
  { name: 'dense/kernel', shape: [50, 10] },
  { name: 'dense/bias', shape: [10] },
];
const n = 72 + 8 + 500 + 10;

function randomUpdate(seed: number, scale = 0.01): FlatWeights {
  const rng = createRng(seed);
  return { specs, values: Float32Array.from({ length: n }, () => (rng() - 0.5) * 2 * scale * (rng() < 0.1 ? 10 : 1)) };
}
const cfg = (codec: string, extra: Partial<CodecConfig> = {}): CodecConfig => ({ codec, topkFraction: 0.1, randFraction: 0.25, quantBlock: 64, ...extra });
const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - (b[i] as number))), 0);

describe('codec names', () => {
  it('accepts the stages in order and names them canonically', () => {
    expect(codecSpec('float32')).toMatchObject({ sparse: false, values: 'float32', deflate: false });
    expect(codecSpec('topk+q8+deflate')).toMatchObject({ name: 'topk+q8+deflate', sparse: true, values: 'q8', deflate: true });
    expect(codecSpec('topk+float32').name).toBe('topk');
    expect(codecSpec('deflate').name).toBe('float32+deflate');
    expect(codecSpec('topk+q2+deflate')).toMatchObject({ sparse: true, random: false, values: 'q2', deflate: true });
    expect(codecSpec('rand+q2+deflate')).toMatchObject({ name: 'rand+q2+deflate', sparse: true, random: true });
  });
  it('refuses unknown, repeated and misordered stages with a reason', () => {
    for (const bad of ['', 'q16', 'q8+topk', 'topk+topk', 'deflate+q8', 'q8+q4', 'topk+q8+deflate+deflate', 'topk+rand', 'rand+topk+q8']) expect(parseCodec(bad)).toBeTypeOf('string');
  });
});

describe('float16', () => {
  it('round-trips within half precision and keeps exact halves exact', () => {
    for (const v of [0, 1, -2.5, 0.1, 65504, 6.1e-5, 1e-7, -3.14159]) {
      const back = fromHalf(toHalf(v));
      expect(Math.abs(back - v)).toBeLessThanOrEqual(Math.max(Math.abs(v) * 2 ** -11, 2 ** -25));
    }
    expect(fromHalf(toHalf(1e6))).toBe(65504); // clamps, never Infinity
  });
});

describe('lossless stages', () => {
  it('float32, float32+deflate and topk with fraction 1 decode exactly', () => {
    const u = randomUpdate(1);
    for (const c of ['float32', 'float32+deflate', 'topk']) {
      const config = cfg(c, { topkFraction: 1 });
      const back = decodeUpdate(encodeUpdate(u, config, createRng(1)), specs, config);
      expect(Array.from(back.values)).toEqual(Array.from(u.values));
    }
  });
  it('the deflate stage changes the size, not the values, of a lossy codec', () => {
    const u = randomUpdate(2);
    const plain = encodeUpdate(u, cfg('topk+q8'), createRng(5));
    const packed = encodeUpdate(u, cfg('topk+q8+deflate'), createRng(5));
    expect(Array.from(decodeUpdate(packed, specs, cfg('topk+q8+deflate')).values)).toEqual(Array.from(decodeUpdate(plain, specs, cfg('topk+q8')).values));
  });
});

describe('lossy stages stay within their bounds', () => {
  it('q8 and q4 per block and per tensor: every value within one step of its block', () => {
    const u = randomUpdate(3);
    for (const [codec, levels] of [['q8', 255], ['q4', 15], ['q2', 3]] as const) {
      for (const quantBlock of [64, 0]) {
        const config = cfg(codec, { quantBlock });
        const back = decodeUpdate(encodeUpdate(u, config, createRng(9)), specs, config).values;
        const range = Math.max(...u.values) - Math.min(...u.values);
        expect(maxAbsDiff(back, u.values)).toBeLessThanOrEqual((range / levels) * 1.0001);
      }
    }
  });
  it('float16 error is within half precision', () => {
    const u = randomUpdate(4);
    const back = decodeUpdate(encodeUpdate(u, cfg('float16'), createRng(1)), specs, cfg('float16')).values;
    u.values.forEach((v, i) => expect(Math.abs((back[i] as number) - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 2 ** -24));
  });
  it('topk keeps exactly the k largest magnitudes and zeroes the rest', () => {
    const u = randomUpdate(5);
    const config = cfg('topk', { topkFraction: 0.05 });
    const back = decodeUpdate(encodeUpdate(u, config, createRng(1)), specs, config).values;
    const k = Math.ceil(0.05 * n);
    expect(back.reduce((c, v) => c + (v !== 0 ? 1 : 0), 0)).toBe(k);
    const threshold = [...u.values].map(Math.abs).sort((a, b) => b - a)[k - 1] as number;
    back.forEach((v, i) => expect(v === 0 ? Math.abs(u.values[i]!) <= threshold : v === u.values[i]).toBe(true));
  });
  it('topk indices with ties take the lowest positions', () => {
    expect(Array.from(topkIndices(Float32Array.from([1, -3, 3, 0, 3]), 2))).toEqual([1, 2]);
  });
});

describe('q8 and q4 are unbiased', () => {
  it('the mean of many stochastic decodes converges to the value', () => {
    const u = randomUpdate(6);
    for (const codec of ['q8', 'q4', 'q2']) {
      const config = cfg(codec);
      const draws = 2000;
      const sum = new Float64Array(n);
      const rng = createRng(123);
      for (let d = 0; d < draws; d++) decodeUpdate(encodeUpdate(u, config, rng), specs, config).values.forEach((v, i) => (sum[i] = sum[i]! + v));
      // Each decode is within one step of v, with variance ≤ step²/4: the mean's error is ≤ 4σ/√draws.
      const step = (Math.max(...u.values) - Math.min(...u.values)) / ({ q8: 255, q4: 15, q2: 3 } as Record<string, number>)[codec]!;
      const bound = (4 * (step / 2)) / Math.sqrt(draws);
      let worst = 0;
      u.values.forEach((v, i) => (worst = Math.max(worst, Math.abs(sum[i]! / draws - v))));
      expect(worst).toBeLessThan(bound);
      // …whereas rounding to nearest would be off by up to step/2 for some values.
      expect(bound).toBeLessThan(step / 2);
    }
  });
});

describe('rand: a seeded random mask', () => {
  it('sends no indices, keeps about the fraction, and is unbiased over many draws', () => {
    const u = randomUpdate(11);
    const config = cfg('rand+float32', { randFraction: 0.25 });
    const one = encodeUpdate(u, config, createRng(1));
    // header 24 + seed 4 + k 4 + k float32 values: nothing else
    const k = new DataView(one.buffer).getUint32(28, true);
    expect(one.length).toBe(24 + 8 + 4 * k);
    expect(k / n).toBeGreaterThan(0.18);
    expect(k / n).toBeLessThan(0.32);
    const draws = 4000;
    const sum = new Float64Array(n);
    const rng = createRng(5);
    for (let d = 0; d < draws; d++) decodeUpdate(encodeUpdate(u, config, rng), specs, config).values.forEach((v, i) => (sum[i] = sum[i]! + v));
    // Each decode is v/p with probability p, else 0: σ = |v|·√((1−p)/p); the mean is within 4σ/√draws.
    u.values.forEach((v, i) => expect(Math.abs(sum[i]! / draws - v)).toBeLessThanOrEqual((4 * Math.abs(v) * Math.sqrt(3)) / Math.sqrt(draws) + 1e-9));
  });
  it('refuses a payload whose count does not match its mask, and keeps no residual', () => {
    const config = cfg('rand+q2+deflate', { randFraction: 0.25 });
    expect(encodeWithFeedback(randomUpdate(1), undefined, config, createRng(1)).residual).toBeUndefined();
    const plain = cfg('rand+q2', { randFraction: 0.25 });
    const p = encodeUpdate(randomUpdate(12), plain, createRng(3));
    const wrongK = p.slice();
    new DataView(wrongK.buffer).setUint32(28, new DataView(p.buffer).getUint32(28, true) + 1, true);
    new DataView(wrongK.buffer).setUint32(20, crc32(wrongK.subarray(24)), true);
    expect(() => decodeUpdate(wrongK, specs, plain)).toThrow(/keeps \d+ entries, the payload says/);
    expect(() => decodeUpdate(p, specs, cfg('topk+q2'))).toThrow(/the run's codec is topk\+q2, the payload is rand\+q2/);
  });
});

describe('error feedback', () => {
  it('what was sent plus the residual equals the sum of the raw updates, round after round', () => {
    const config = cfg('topk+q8', { topkFraction: 0.02 });
    const rng = createRng(7);
    let residual: Float32Array | undefined;
    const rawSum = new Float64Array(n);
    const sentSum = new Float64Array(n);
    for (let round = 0; round < 30; round++) {
      const u = randomUpdate(100 + round);
      u.values.forEach((v, i) => (rawSum[i] = rawSum[i]! + v));
      const r = encodeWithFeedback(u, residual, config, rng);
      decodeUpdate(r.payload, specs, config).values.forEach((v, i) => (sentSum[i] = sentSum[i]! + v));
      residual = r.residual;
    }
    let worst = 0;
    for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(sentSum[i]! + residual![i]! - rawSum[i]!));
    expect(worst).toBeLessThan(1e-5);
    // The residual stays bounded: it is delayed signal, not accumulated error.
    expect(Math.max(...residual!.map(Math.abs))).toBeLessThan(0.5);
  });
  it('codecs without topk keep no residual', () => {
    expect(encodeWithFeedback(randomUpdate(1), undefined, cfg('q8'), createRng(1)).residual).toBeUndefined();
  });
});

describe('corrupt payloads are rejected with a reason', () => {
  const config = cfg('topk+q8+deflate');
  const good = encodeUpdate(randomUpdate(8), config, createRng(1));
  const expectReject = (payload: Uint8Array, c: CodecConfig, reason: RegExp) => {
    expect(() => decodeUpdate(payload, specs, c)).toThrow(WeightsFormatError);
    expect(() => decodeUpdate(payload, specs, c)).toThrow(reason);
  };
  it('truncated, padded, wrong codec, wrong size, bad magic, corrupt deflate', () => {
    expectReject(good.subarray(0, 10), config, /shorter than the header/);
    expectReject(good.subarray(0, good.length - 5), config, /deflate stage|ends inside/);
    expectReject(new Uint8Array([...good, 1, 2, 3]), config, /deflate|follow/);
    expectReject(good, cfg('topk+q4+deflate'), /the run's codec is topk\+q4\+deflate, the payload is topk\+q8\+deflate/);
    expectReject(good, cfg('float32'), /compressed update/);
    expectReject(encodeUpdate(randomUpdate(1), cfg('float32'), createRng(1)), config, /bad magic/);
    const wrongN = good.slice();
    new DataView(wrongN.buffer).setUint32(8, n + 1, true);
    expectReject(wrongN, config, /describes 591 values, the model has 590/);
    const flipped = good.slice();
    flipped[30] = flipped[30]! ^ 0xff;
    expect(() => decodeUpdate(flipped, specs, config)).toThrow(WeightsFormatError);
  });
  /** a hostile sender recomputes the checksum: the deeper checks must still hold */
  const resealed = (p: Uint8Array) => {
    new DataView(p.buffer).setUint32(20, crc32(p.subarray(24)), true);
    return p;
  };
  it('an index beyond the model, a non-finite scale, a zip bomb header', () => {
    const plain = cfg('topk+q8');
    const p = encodeUpdate(randomUpdate(9), plain, createRng(1));
    const badIndex = p.slice();
    badIndex.set([0xff, 0xff, 0x03], 28); // first gap = 65535
    expectReject(badIndex, plain, /checksum/);
    expectReject(resealed(badIndex), plain, /index 65535 is outside the model's 590 values/);
    const q = encodeUpdate(randomUpdate(9), cfg('q8'), createRng(1));
    const nanScale = q.slice();
    new DataView(nanScale.buffer).setFloat32(24, Number.NaN, true);
    expectReject(nanScale, cfg('q8'), /checksum/);
    expectReject(resealed(nanScale), cfg('q8'), /block 0 has an invalid scale/);
    const bomb = good.slice();
    new DataView(bomb.buffer).setUint32(16, 2 ** 31, true);
    expectReject(bomb, config, /impossible/);
  });
  it('a real deflate bomb is refused as soon as it passes the declared size: it is not inflated to its end', () => {
    for (const c of [cfg('q8+deflate'), cfg('topk+q2+deflate'), cfg('rand+q4+deflate')]) {
      const payload = bomb(randomUpdate(3), c); // 64 KiB of deflate that inflates to 64 MiB
      expect(payload.length).toBeLessThan(70_000);
      let message = '';
      try {
        decodeUpdate(payload, specs, c);
      } catch (err) {
        expect(err).toBeInstanceOf(WeightsFormatError);
        message = (err as Error).message;
      }
      const m = /inflates past the declared (\d+) bytes \(refused after (\d+) of its (\d+) bytes\)/.exec(message);
      expect(m, message).not.toBeNull();
      // It stopped within the first kilobytes of the stream: the work done is bounded by the declared size, not by the bomb.
      expect(Number(m![2])).toBeLessThanOrEqual(2048);
      expect(Number(m![3])).toBe(payload.length - 24);
    }
  });

  it('the encoder refuses non-finite updates', () => {
    const u = randomUpdate(1);
    u.values[3] = Number.NaN;
    expect(() => encodeUpdate(u, config, createRng(1))).toThrow(/value 3 is not finite/);
  });
});

describe('fuzzing the decoder', () => {
  const codecs = ['float32', 'float16', 'q8', 'q4', 'q2+deflate', 'float32+deflate', 'topk', 'topk+q8+deflate', 'topk+q4', 'rand+q2+deflate', 'rand+float16'];

  it('refuses every kind of hostile but well-formed payload, for every codec, in the decoder or at the server\'s value bound', () => {
    for (const codec of codecs) {
      const c = cfg(codec);
      const config = runConfigSchema.parse({ updateCodec: codec, topkFraction: c.topkFraction, randFraction: c.randFraction, quantBlock: c.quantBlock });
      for (const { name, payload } of hostilePayloads(specs, c)) {
        expect(() => validateUpdate(payload, specs, config), `${codec}: ${name}`).toThrow(WeightsFormatError);
      }
    }
  });

  it('10,000 random mutations of valid payloads of every codec: each is refused with a reason or decodes to finite values of the model', () => {
    const rng = createRng(2024);
    let refused = 0;
    let decoded = 0;
    for (let i = 0; i < 10_000; i++) {
      const c = cfg(codecs[i % codecs.length]!);
      const good = encodeUpdate(randomUpdate(i), c, createRng(i));
      const p = good.slice(0, rng() < 0.2 ? Math.floor(rng() * good.length) : good.length);
      for (let k = 1 + Math.floor(rng() * 4); k > 0; k--) if (p.length) p[Math.floor(rng() * p.length)] = Math.floor(rng() * 256);
      try {
        const d = decodeUpdate(p, specs, c);
        expect(d.values.length).toBe(n);
        expect(d.values.every(Number.isFinite)).toBe(true);
        decoded++;
      } catch (err) {
        if (!(err instanceof WeightsFormatError)) throw new Error(`mutation ${i} of ${c.codec}: ${String(err)}`);
        refused++;
      }
    }
    expect(refused + decoded).toBe(10_000);
    expect(refused).toBeGreaterThan(7_000); // most mutations break a checksum, a size or a value
  });
});

describe('model deltas (server → device)', () => {
  it('rebuild the target exactly, are smaller than the model, and refuse a wrong base or corruption', () => {
    const base = randomUpdate(10, 0.2);
    const target = Float32Array.from(base.values, (v, i) => v + (i % 3 === 0 ? 1e-4 * Math.sin(i) : 0));
    const payload = encodeModelDelta(base.values, target, 4, 5);
    const { weights, version } = applyModelDelta(base, 4, payload);
    expect(version).toBe(5);
    expect(Array.from(weights.values)).toEqual(Array.from(target));
    expect(payload.length).toBeLessThan(n * 4 * 0.6);
    expect(() => applyModelDelta(base, 3, payload)).toThrow(/made against version 4, this device holds 3/);
    const corrupt = payload.slice();
    corrupt[corrupt.length - 3] = corrupt[corrupt.length - 3]! ^ 0x55;
    expect(() => applyModelDelta(base, 4, corrupt)).toThrow(WeightsFormatError);
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
  });
});

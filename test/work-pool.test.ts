/**
 * The server's work threads: every payload — honest under each codec, or hostile — gets from a
 * thread exactly what inline validation gives it: the same Δ, norm and clipping, or the same
 * refusal with the same message and kind; a model delta encoded there is the inline one, byte for byte.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeUpdate } from '../shared/codec.ts';
import { createRng } from '../shared/rng.ts';
import { codecConfig, runConfigSchema, type RunConfig } from '../shared/schemas.ts';
import { WeightsFormatError, type FlatWeights } from '../shared/weights.ts';
import { startWorkPool, type WorkPool } from '../server/work-pool.ts';
import { inlineStepQuantizer } from '../server/model-book.ts';
import { applyModelDelta, encodeModelDelta } from '../shared/model-delta.ts';
import { WeightedDeltaSum } from '../shared/fedavg.ts';
import { validateUpdate } from '../server/fl/validate.ts';
import { hostilePayloads } from './support/hostile.ts';

const specs = [
  { name: 'conv/kernel', shape: [5, 5, 1, 8] },
  { name: 'dense/kernel', shape: [200, 10] },
  { name: 'dense/bias', shape: [10] },
];
const n = 5 * 5 * 8 + 2000 + 10;

let pool: WorkPool;
beforeAll(async () => {
  pool = await startWorkPool(2);
});
afterAll(() => pool.close());

async function outcome(run: () => Promise<unknown>): Promise<unknown> {
  try {
    return await run();
  } catch (err) {
    return { error: (err as Error).message, format: err instanceof WeightsFormatError };
  }
}

describe('work threads', () => {
  for (const codec of ['float32', 'q8', 'topk+q8+deflate', 'rand+q2+deflate']) {
    it(`validate ${codec} updates, honest and hostile, exactly as inline validation does`, async () => {
      const config: RunConfig = runConfigSchema.parse({ updateCodec: codec, clipNorm: 0.5 });
      const rng = createRng(3);
      const honest: FlatWeights = { specs, values: Float32Array.from({ length: n }, () => (rng() - 0.5) * 0.05) };
      const payloads = [{ name: 'honest', payload: encodeUpdate(honest, codecConfig(config), createRng(1)) }, ...hostilePayloads(specs, codecConfig(config))];
      expect(payloads.length).toBeGreaterThan(5);
      const inThreads = await Promise.all(payloads.map((p) => outcome(() => pool.validate(p.payload.slice(), specs, config)))); // the pool takes what it is given
      const inline = await Promise.all(payloads.map((p) => outcome(async () => validateUpdate(p.payload, specs, config))));
      expect(inThreads).toEqual(inline);
      // the honest one was decoded (and for the dense codecs clipped: ‖Δ‖ ≈ 0.05·√(n/12) ≈ 0.7 > 0.5), the hostile ones mostly refused as format errors
      expect((inThreads[0] as { delta: Float32Array }).delta).toHaveLength(n);
      if (!codec.startsWith('topk')) expect(inThreads[0]).toMatchObject({ clipped: true });
      expect(inThreads.filter((o) => (o as { format?: boolean }).format === true).length).toBeGreaterThan(3);
    });
  }

  it('spreads the work over its threads and refuses once closed', async () => {
    const config = runConfigSchema.parse({});
    const values = new Float32Array(n).fill(0.001);
    const payload = encodeUpdate({ specs, values }, codecConfig(config), createRng(1));
    const all = Promise.all(Array.from({ length: 8 }, () => pool.validate(payload.slice(), specs, config)));
    expect(pool.load().every((l) => l > 0)).toBe(true);
    expect((await all).every((v) => v.delta.length === n)).toBe(true);
    const closing = await startWorkPool(1);
    await closing.close();
    await expect(closing.validate(payload, specs, config)).rejects.toThrow(/closed/);
  });

  it('takes a payload that is the whole of its buffer without a copy, and copies a view into a larger one', async () => {
    const config = runConfigSchema.parse({});
    const payload = encodeUpdate({ specs, values: new Float32Array(n).fill(0.002) }, codecConfig(config), createRng(1));
    const inside = new Uint8Array(payload.byteLength + 16);
    inside.set(payload, 8);
    const view = inside.subarray(8, 8 + payload.byteLength);
    expect((await pool.validate(view, specs, config)).delta).toHaveLength(n);
    expect(inside.byteLength).toBe(payload.byteLength + 16); // still there
    expect((await pool.validate(payload, specs, config)).delta).toHaveLength(n);
    expect(payload.byteLength).toBe(0); // handed over
  });

  it('encode a model delta byte for byte as inline, and it rebuilds the target exactly', async () => {
    const rng = createRng(5);
    const base = Float32Array.from({ length: n }, () => rng() - 0.5);
    const target = base.map((x, i) => x + ((i % 7) - 3) * 1e-3);
    const inline = encodeModelDelta(base, target, 4, 5);
    const inThread = await pool.encodeDelta(base.slice(), target, 4, 5);
    expect(Buffer.from(inThread).equals(Buffer.from(inline))).toBe(true);
    expect(target.length).toBe(n); // the live model is copied, never taken
    expect(applyModelDelta({ specs, values: base }, 4, inThread).weights.values).toEqual(target);
  });

  it('make a lossy downlink\'s step byte for byte as inline, leaving the live model and the residual as they were', async () => {
    const rng = createRng(6);
    const base: FlatWeights = { specs, values: Float32Array.from({ length: n }, () => rng() - 0.5) };
    const target = base.values.map((x, i) => x + ((i % 5) - 2) * 1e-3);
    const residual = Float32Array.from({ length: n }, () => (rng() - 0.5) * 1e-4);
    const config = { codec: 'topk+q4+deflate', topkFraction: 0.1, quantBlock: 256 };
    const inline = await inlineStepQuantizer(base, target, residual, config, 9);
    const before = [base.values.slice(), target.slice(), residual.slice()];
    const inThread = await pool.quantizeStep(base, target, residual, config, 9);
    expect(Buffer.from(inThread.payload).equals(Buffer.from(inline.payload))).toBe(true);
    expect(Buffer.from(inThread.values.buffer).equals(Buffer.from(inline.values.buffer))).toBe(true);
    expect(Buffer.from(inThread.residual.buffer).equals(Buffer.from(inline.residual.buffer))).toBe(true);
    expect([base.values, target, residual]).toEqual(before); // copied, never taken
  });

  it("keep a round's FedAvg sum: what was added and only that, merged from every thread as on the event loop", async () => {
    const config = runConfigSchema.parse({ clipNorm: 0.5 });
    const rng = createRng(11);
    const updates = Array.from({ length: 6 }, () => Float32Array.from({ length: n }, () => (rng() - 0.5) * 0.02));
    const kept = await Promise.all(updates.map((u) => pool.sums.validate(encodeUpdate({ specs, values: u }, codecConfig(config), createRng(1)), specs, config)));
    expect(new Set(kept.map((k) => k.kept.thread)).size).toBe(2); // both threads hold some
    // four accepted with their weights, one refused late, one never decided (its round ended)
    const weights = [10, 20, 30, 40];
    kept.slice(0, 4).forEach((k, i) => pool.sums.add(k.kept, 'run1:1:1', weights[i]!));
    pool.sums.drop(kept[4]!.kept);
    const parts = await pool.sums.take('run1:1:1', n);
    const merged = new WeightedDeltaSum(n);
    for (const p of parts) merged.merge(p);
    const inline = new WeightedDeltaSum(n);
    updates.slice(0, 4).forEach((u, i) => inline.add(validateUpdate(encodeUpdate({ specs, values: u }, codecConfig(config), createRng(1)), specs, config).delta, weights[i]!));
    expect(merged.count).toBe(4);
    expect(merged.totalWeight).toBe(100);
    const a = merged.mean()!;
    const b = inline.mean()!;
    for (let i = 0; i < n; i++) expect(Math.abs(a[i]! - b[i]!)).toBeLessThan(1e-7);
    // taken once: a second take finds nothing
    expect(await pool.sums.take('run1:1:1', n)).toEqual([]);
  });

  it("refuse to hand over a round's sum when an accepted update could not be added to it", async () => {
    pool.sums.add({ thread: 0, id: 987_654 }, 'run1:2:1', 5); // no such kept update
    await expect(pool.sums.take('run1:2:1', n)).rejects.toThrow(/could not be added to the round's sum: .*no kept update 987654/);
  });
});

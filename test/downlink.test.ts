/**
 * The lossy downlink (model-steps.ts, ModelBook.publish): the server stores as each version exactly
 * what a device rebuilds from the compressed step, so a device holding any recent version rebuilds
 * the current one bit for bit, from one step or a chain; what a step leaves out reaches the devices
 * later (error feedback); bad chains are refused; and a real run's devices hold the stored models.
 */
import { describe, expect, it } from 'vitest';
import { ModelBook, type DownloadsOf } from '../server/model-book.ts';
import { initialWeights } from '../shared/models.ts';
import { createLogger } from '../server/log.ts';
import { openSqliteStore } from '../server/store/sqlite.ts';
import { applyModelDelta, encodeModelDelta, isModelDelta } from '../shared/model-delta.ts';
import { memoryInProcess, MissingBaseError, rebuildModel, receiveModel, type HeldModel } from '../shared/device.ts';
import type { RoundStart } from '../shared/protocol.ts';
import { applyModelChain, encodeModelChain, isModelChain, quantizeStep } from '../shared/model-steps.ts';
import { createRng } from '../shared/rng.ts';
import { runConfigSchema, validateRunConfig } from '../shared/schemas.ts';
import { decodeWeights, WeightsFormatError, type FlatWeights } from '../shared/weights.ts';

const specs = [
  { name: 'dense/kernel', shape: [40, 25] },
  { name: 'dense/bias', shape: [25] },
];
const n = 40 * 25 + 25;
const noise = (seed: number, scale: number) => {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => (rng() - 0.5) * scale);
};

describe('a compressed step and a chain of steps', () => {
  const codec = { codec: 'q8+deflate', topkFraction: 0.01, quantBlock: 256 };

  it('rebuild on the device exactly the model the server stores, and refuse what does not fit', () => {
    let server: FlatWeights = { specs, values: noise(1, 1) };
    const held = server;
    const steps: { version: number; payload: Uint8Array }[] = [];
    let residual: Float32Array | undefined;
    for (let v = 1; v <= 4; v++) {
      const target = server.values.map((x, i) => x + (noise(10 + v, 0.02)[i] as number));
      const step = quantizeStep(server, target, residual, codec, createRng(v));
      residual = step.residual;
      server = { specs, values: step.values };
      steps.push({ version: v, payload: step.payload });
    }
    const chain = encodeModelChain(0, { version: 4, values: server.values }, steps, codec);
    expect(isModelChain(chain)).toBe(true);
    const rebuilt = applyModelChain(held, 0, chain);
    expect(rebuilt.version).toBe(4);
    expect(Buffer.from(rebuilt.weights.values.buffer).equals(Buffer.from(server.values.buffer))).toBe(true);
    // each q8 step about a quarter of the float32 model
    expect(chain.byteLength).toBeLessThan((4 * (4 * n)) / 3);

    const refused = (payload: Uint8Array, base = held, version = 0) => {
      try {
        applyModelChain(base, version, payload);
        return 'accepted';
      } catch (err) {
        expect(err).toBeInstanceOf(WeightsFormatError);
        return (err as Error).message;
      }
    };
    expect(refused(chain, held, 1)).toMatch(/made against version 0, this device holds 1/);
    expect(refused(chain, { specs, values: held.values.map((x, i) => (i === 7 ? x + 1e-3 : x)) })).toMatch(/checksum/);
    const flipped = chain.slice();
    flipped[flipped.length - 3] = flipped[flipped.length - 3]! ^ 0xff;
    expect(refused(flipped)).not.toBe('accepted');
    expect(refused(chain.subarray(0, chain.length - 10))).toMatch(/steps take/);
    expect(refused(encodeModelChain(0, { version: 4, values: server.values }, steps, { ...codec, codec: 'rand+q8' }))).toMatch(/random mask/);
  });

  it('with error feedback, the devices\' model follows the exact sum of the updates; without it, it drifts', () => {
    const topk = { codec: 'topk+q8', topkFraction: 0.05, quantBlock: 256 };
    const start: FlatWeights = { specs, values: noise(2, 1) };
    const run = (feedback: boolean) => {
      let model = start;
      let residual: Float32Array | undefined;
      const exact = Float64Array.from(start.values);
      for (let t = 0; t < 40; t++) {
        // a round's update points the same way every round (plus noise), as a model's early rounds do
        const update = noise(100 + t, 0.002).map((x, i) => x + 0.004 * Math.sin(i));
        update.forEach((u, i) => (exact[i] = exact[i]! + u));
        const step = quantizeStep(model, model.values.map((x, i) => x + (update[i] as number)), feedback ? residual : undefined, topk, createRng(t));
        residual = step.residual;
        model = { specs, values: step.values };
      }
      return Math.sqrt(model.values.reduce((a, x, i) => a + (x - exact[i]!) ** 2, 0));
    };
    const withFeedback = run(true);
    const without = run(false);
    expect(withFeedback).toBeLessThan(without / 3);
  });
});

describe('the model book with a lossy downlink', () => {
  it('stores what devices rebuild, sends chains while they are smaller than the model, and a lossless delta or the model beyond', async () => {
    const store = openSqliteStore(':memory:');
    const book = new ModelBook(store, createLogger('test', () => undefined));
    await book.open();
    const config = runConfigSchema.parse({ model: 'mlp', seed: 3, downlinkCodec: 'q4+deflate' });
    const runId = await store.createRun(config, 0);
    const v0 = await book.createInitial(runId, config, 0);
    // round 1: a device that holds nothing builds the seeded initial model itself; the chain has no step
    const first = (book.downloads(config, [null]) as DownloadsOf)(null);
    expect(first).toMatchObject({ baseVersion: v0.version, baseSeed: 3 });
    expect(first.weights.byteLength).toBeLessThan(200);
    expect(Buffer.from(applyModelChain(initialWeights('mlp', 3), v0.version, first.weights).weights.values.buffer).equals(Buffer.from(v0.weights.values.buffer))).toBe(true);
    const versions = [v0];
    const step = (round: number) => {
      const rng = createRng(round);
      return (x: number) => x + 0.01 * (rng() - 0.5);
    };
    for (let round = 1; round <= 8; round++) {
      const base = book.current!;
      const target = base.weights.values.map(step(round));
      versions.push(await book.publish(runId, round, config, { specs: base.weights.specs, values: target }, round, { parent: base.version }));
    }
    const current = book.current!;
    const of = await book.downloads(config, versions.map((v) => v.version));
    // one step, then chains, each rebuilding the stored payload bit for bit, while smaller than the model
    const sizes: number[] = [];
    for (const held of versions.slice(0, -1)) {
      const d = of(held.version);
      sizes.push(d.weights.byteLength);
      expect(d.baseVersion, `v${held.version}`).toBe(held.version);
      const stored = decodeWeights((await store.getModelWeights(held.version))!);
      const rebuilt = isModelChain(d.weights) ? applyModelChain(stored, held.version, d.weights) : applyModelDelta(stored, held.version, d.weights);
      expect(Buffer.from(rebuilt.weights.values.buffer).equals(Buffer.from(current.weights.values.buffer)), `v${held.version}`).toBe(true);
    }
    const kinds = versions.slice(0, -1).map((v) => (isModelChain(of(v.version).weights) ? 'chain' : isModelDelta(of(v.version).weights) ? 'delta' : 'full'));
    expect(kinds.at(-1)).toBe('chain'); // one step behind
    expect(kinds).toContain('delta'); // far behind: eight q4 steps weigh more than the model, so a lossless delta
    expect(sizes.at(-1)!).toBeLessThan(current.payload.byteLength / 6);
    for (const s of sizes) expect(s).toBeLessThan(current.payload.byteLength);
    // and later from the seeded model while that chain is smaller than the model (eight q4 steps are not)
    expect(of(null).weights).toBe(current.payload);
    // the stored version is the quantized one: not the target it was asked for
    const asked = versions.at(-2)!.weights.values.map(step(8));
    expect(current.weights.values.some((x, i) => x !== asked[i])).toBe(true);
    await store.close();
  });

  it('refuses a downlink codec that cannot work, naming the field', () => {
    const issues = (c: object) => {
      const r = validateRunConfig(c);
      return r.ok ? '' : r.message;
    };
    expect(issues({ downlinkCodec: 'rand+q8' })).toMatch(/downlinkCodec: .*random mask/);
    expect(issues({ downlinkCodec: 'q9' })).toMatch(/downlinkCodec/);
    expect(issues({ downlinkCodec: 'q8', downlink: 'full' })).toMatch(/downlinkCodec: .*downlink "delta"/);
    expect(issues({ downlinkTopkFraction: 0.1 })).toMatch(/downlinkTopkFraction: has no effect/);
    expect(issues({ downlinkCodec: 'topk+q8+deflate', downlinkTopkFraction: 0.1 })).toBe('');
  });
});

describe('the device rebuilding the round\'s model (shared/device.ts, one implementation for the page, the workers and the tests)', () => {
  const round = (o: Partial<RoundStart>): RoundStart => ({ runId: 1, round: 2, attempt: 1, model: 'mlp', modelVersion: 5, ...o }) as RoundStart;
  const v4: HeldModel = { version: 4, model: 'mlp', weights: { specs, values: noise(1, 1) } };
  const v5 = noise(2, 1);

  it('rebuilds from a delta against the model it holds, and refuses a delta that ends elsewhere or stands on a model it lacks', async () => {
    const delta = encodeModelDelta(v4.weights.values, v5, 4, 5);
    expect(rebuildModel(round({ baseVersion: 4, weights: delta }), v4).values).toEqual(v5);
    // a delta whose target is not the round's version (a stale or forged one): refused, not held as v5
    expect(() => rebuildModel(round({ baseVersion: 4, weights: encodeModelDelta(v4.weights.values, v5, 4, 6) }), v4)).toThrow(/leads to model v6, the round's model is v5/);
    expect(() => rebuildModel(round({ baseVersion: 3, weights: delta }), v4)).toThrow(MissingBaseError);
    // the page's memory then says it holds none, so the next round brings the full model
    const memory = memoryInProcess({ model: v4 });
    await expect(receiveModel(round({ baseVersion: 3, weights: delta }), { getWeights: () => [] } as never, memory)).rejects.toThrow(MissingBaseError);
    expect(memory.model()).toBeUndefined();
  });
});

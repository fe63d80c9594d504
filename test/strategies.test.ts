/**
 * The non-IID strategies' math against hand-computed steps: the server optimizers (Reddi et al.
 * 2021), q-FFL's scale and weights, the fairness metrics, FedProx's gradient against a finite
 * difference of its loss, and SCAFFOLD's control-variate rules and corrected steps.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { fairnessOf, qfflScale, qfflWeight, QFFL_MAX_LOSS } from '../shared/fairness.ts';
import { buildModel, getFlatWeights, initialWeights, setFlatWeights } from '../shared/models.ts';
import { runConfigSchema, validateRunConfig } from '../shared/schemas.ts';
import { decodeServerState, encodeServerState, initialServerState, serverStep, type ServerOptimizerName } from '../shared/server-optimizer.ts';
import { computeUpdate, localLoss, toTensors, trainLocal } from '../shared/train.ts';
import { controlCorrection, deviceControlStep, scaffoldServerStep, scaffoldUpdateSpecs } from '../shared/scaffold.ts';
import { mixedAccuracies, mixWeight, populationOf, totalVariation } from '../shared/personalize.ts';
import { keepRoundState, labelHistogramOf, memoryInProcess, runDeviceRound } from '../shared/device.ts';
import { decodeWeights, encodeWeights } from '../shared/weights.ts';
import { loadMnist } from '../server/data/mnist.ts';
import { aggregationBase, nextGlobalModel } from '../server/fl/strategy.ts';
import { useWasm } from './support/server.ts';

const p = { learningRate: 0.5, beta1: 0.9, beta2: 0.99, tau: 0.1 };
const f32 = (xs: number[]) => Float32Array.from(xs);

describe('server optimizers', () => {
  const w = f32([1, -2]);
  const d1 = f32([0.2, -0.4]);
  const d2 = f32([-0.1, 0.3]);

  it('FedAvgM: m ← β·m + Δ, w ← w + η·m', () => {
    const s1 = serverStep('fedavgm', p, w, d1, initialServerState('fedavgm', 2, p.tau));
    expect(Array.from(s1.state.m)).toEqual(Array.from(f32([0.2, -0.4])));
    expect(Array.from(s1.weights)).toEqual(Array.from(f32([1 + 0.5 * 0.2, -2 + 0.5 * -0.4])));
    const s2 = serverStep('fedavgm', p, s1.weights, d2, s1.state);
    // m = 0.9·(0.2, −0.4) + (−0.1, 0.3) = (0.08, −0.06)
    expect(s2.state.m[0]).toBeCloseTo(0.08, 6);
    expect(s2.state.m[1]).toBeCloseTo(-0.06, 6);
    expect(s2.weights[0]).toBeCloseTo(1.1 + 0.5 * 0.08, 6);
    expect(s2.weights[1]).toBeCloseTo(-2.2 + 0.5 * -0.06, 6);
  });

  // one step from v = τ² = 0.01, m = 0: m = 0.1·Δ; v per rule; w += η·m / (√v + τ)
  const cases: [ServerOptimizerName, (v: number, d: number) => number][] = [
    ['fedadagrad', (v, d) => v + d * d],
    ['fedadam', (v, d) => 0.99 * v + 0.01 * d * d],
    ['fedyogi', (v, d) => v - 0.01 * d * d * Math.sign(v - d * d)],
  ];
  for (const [name, rule] of cases) {
    it(`${name}: the first and second steps, coordinate by coordinate`, () => {
      let state = initialServerState(name, 2, p.tau);
      expect(Array.from(state.v!)).toEqual(Array.from(f32([0.01, 0.01])));
      let weights: Float32Array = w;
      const mHand = [0, 0];
      const vHand = [0.01, 0.01];
      const wHand = [1, -2];
      for (const d of [d1, d2]) {
        ({ weights, state } = serverStep(name, p, weights, d, state));
        for (let i = 0; i < 2; i++) {
          mHand[i] = 0.9 * mHand[i]! + 0.1 * d[i]!;
          vHand[i] = rule(vHand[i]!, d[i]!);
          wHand[i] = wHand[i]! + (0.5 * mHand[i]!) / (Math.sqrt(vHand[i]!) + 0.1);
          expect(state.m[i]).toBeCloseTo(mHand[i]!, 6);
          expect(state.v![i]).toBeCloseTo(vHand[i]!, 6);
          expect(weights[i]).toBeCloseTo(wHand[i]!, 5);
        }
      }
    });
  }

  it('keeps its state exactly through the stored form, and refuses a state of another size', () => {
    const { state } = serverStep('fedadam', p, w, d1, initialServerState('fedadam', 2, p.tau));
    const back = decodeServerState(encodeServerState(state), 2);
    if ('c' in back) throw new Error('decoded as a control variate');
    expect(Array.from(back.m)).toEqual(Array.from(state.m));
    expect(Array.from(back.v!)).toEqual(Array.from(state.v!));
    expect(() => decodeServerState(encodeServerState(state), 3)).toThrow(/expected m \(and v\), or c, of 3 values/);
  });

  it('takes the round\'s aggregate as w + mean and steps from it (q-FFL\'s scale first)', () => {
    const config = runConfigSchema.parse({ strategy: 'fedavgm', serverLearningRate: 2, beta1: 0.5 });
    const aggregated = f32([1.2, -2.4]); // mean = (0.2, −0.4)
    const first = nextGlobalModel(config, w, aggregated);
    expect(first.values[0]).toBeCloseTo(1 + 2 * 0.2, 6);
    const second = nextGlobalModel(config, w, aggregated, { state: first.state! });
    expect(second.values[0]).toBeCloseTo(1 + 2 * (0.5 * 0.2 + 0.2), 6);
    const qffl = nextGlobalModel(runConfigSchema.parse({ strategy: 'qffl' }), w, aggregated, { scale: 0.5 });
    expect(qffl.values[1]).toBeCloseTo(-2 + 0.5 * -0.4, 6);
    expect(qffl.state).toBeUndefined();
    expect(nextGlobalModel(runConfigSchema.parse({}), w, aggregated).values).toBe(aggregated);
  });

  it('refuses a strategy parameter the strategy does not use, and q-FFL where weights cannot count', () => {
    const r = validateRunConfig({ strategy: 'fedavgm', beta2: 0.5, mu: 0.1 });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.issues.map((i) => i.field).sort()).toEqual(['beta2', 'mu']);
    const q = validateRunConfig({ strategy: 'qffl', aggregation: 'median', minUpdates: 3 });
    expect(!q.ok && q.issues.some((i) => i.field === 'strategy' && /ignores weights/.test(i.message))).toBe(true);
    expect(validateRunConfig({ strategy: 'fedyogi', serverLearningRate: 0.03, beta2: 0.999, tau: 0.01 }).ok).toBe(true);
  });
});

describe('fairness and q-FFL', () => {
  it('mean, worst and best 10 %, variance of fixed accuracies', () => {
    const acc = [0.5, 0.9, 0.7, 0.8, 0.6, 0.95, 0.85, 0.75, 0.65, 0.55, 0.9, 0.8];
    const f = fairnessOf(acc)!;
    const mean = acc.reduce((a, b) => a + b) / 12;
    expect(f.devices).toBe(12);
    expect(f.mean).toBeCloseTo(mean, 12);
    // ⌈1.2⌉ = 2 devices at each end
    expect(f.worst10).toBeCloseTo((0.5 + 0.55) / 2, 12);
    expect(f.best10).toBeCloseTo((0.95 + 0.9) / 2, 12);
    expect(f.variance).toBeCloseTo(acc.reduce((a, x) => a + (x - mean) ** 2, 0) / 12, 12);
    expect(fairnessOf([0.3])).toEqual({ devices: 1, mean: 0.3, worst10: 0.3, best10: 0.3, variance: 0 });
    expect(fairnessOf([])).toBeNull();
  });

  it('q = 0 is FedAvg with equal weights; q = 1 by hand; a claimed loss is bounded', () => {
    expect(qfflScale([{ loss: 2, norm: 3 }, { loss: 0.5, norm: 1 }], 0, 0.1)).toBeCloseTo(1, 12);
    // L = 10; F = (2, 0.5); h = q·F^0·L²·‖Δ‖² + L·F = (100·9 + 20, 100·1 + 5) = (920, 105); s = L·ΣF/Σh = 10·2.5/1025
    expect(qfflScale([{ loss: 2, norm: 3 }, { loss: 0.5, norm: 1 }], 1, 0.1)).toBeCloseTo(25 / 1025, 12);
    expect(qfflWeight(2, 2)).toBe(4);
    expect(qfflWeight(1e9, 1)).toBe(QFFL_MAX_LOSS);
    expect(qfflWeight(Number.NaN, 1)).toBe(QFFL_MAX_LOSS);
    expect(qfflWeight(-5, 1)).toBe(1e-6);
  });
});

describe('FedProx', () => {
  beforeAll(useWasm);

  it('adds μ(w − w_global) to the gradient, and its loss\'s gradient matches a finite difference', () => {
    const model = buildModel('cnn-small');
    const global = initialWeights('cnn-small', 1);
    // the model a few steps away from the global one
    const moved = { specs: global.specs, values: global.values.map((v, i) => v + 0.05 * Math.sin(i)) };
    setFlatWeights(model, moved);
    const x = tf.randomUniform([4, 28, 28, 1], 0, 1, 'float32', 7);
    const y = tf.tensor1d([1, 7, 3, 0], 'int32');
    const anchors = (() => {
      const m2 = buildModel('cnn-small');
      setFlatWeights(m2, global);
      const a = m2.trainableWeights.map((w) => tf.keep(w.read().clone()));
      m2.dispose();
      return a;
    })();
    const mu = 5;
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
    const grads = (prox?: { mu: number; anchors: tf.Tensor[] }) => tf.variableGrads(() => localLoss(model, x, y, prox), vars).grads;
    const plain = grads();
    const withProx = grads({ mu, anchors });
    // the difference is μ(w − w_global), tensor by tensor
    vars.forEach((v, i) => {
      const diff = tf.sub(withProx[v.name]!, plain[v.name]!).dataSync();
      const expected = tf.mul(mu, tf.sub(v, anchors[i]!)).dataSync();
      for (let j = 0; j < diff.length; j += 97) expect(diff[j]!).toBeCloseTo(expected[j]!, 4);
    });
    // and a central difference of the whole loss along a few coordinates of the first kernel
    const kernel = vars[0]!;
    const g = withProx[kernel.name]!.dataSync();
    const base = kernel.dataSync().slice();
    const eps = 1e-2;
    for (const j of [0, 5, 17, 40]) {
      const at = (delta: number) => {
        const vals = base.slice();
        vals[j] = vals[j]! + delta;
        kernel.assign(tf.tensor(vals, kernel.shape));
        return localLoss(model, x, y, { mu, anchors }).dataSync()[0]!;
      };
      const numeric = (at(eps) - at(-eps)) / (2 * eps);
      expect(Math.abs(numeric - g[j]!)).toBeLessThan(0.02 * Math.max(1, Math.abs(g[j]!)));
    }
    kernel.assign(tf.tensor(base, kernel.shape));
    tf.dispose([x, y, ...anchors, ...Object.values(plain), ...Object.values(withProx)]);
    expect(getFlatWeights(model).values.length).toBe(global.values.length);
    model.dispose();
  });
});

describe('SCAFFOLD', () => {
  beforeAll(useWasm);

  it('the device\'s control variate: c_i⁺ = c_i − c + (x − y)/(Kη), and it reports Δc = c_i⁺ − c_i', () => {
    const local = f32([0.5, -1]);
    const server = f32([0.25, 2]);
    const delta = f32([-0.3, 0.6]); // y − x
    const { next, change } = deviceControlStep(local, server, delta, 4, 0.1);
    // (x − y)/(Kη) = −Δy / 0.4 = (0.75, −1.5)
    expect(next[0]).toBeCloseTo(0.5 - 0.25 + 0.75, 6);
    expect(next[1]).toBeCloseTo(-1 - 2 - 1.5, 6);
    expect(change[0]).toBeCloseTo(next[0]! - 0.5, 6);
    expect(change[1]).toBeCloseTo(next[1]! + 1, 6);
    expect(Array.from(controlCorrection(local, server))).toEqual([0.25 - 0.5, 3]);
    expect(() => deviceControlStep(local, server, delta, 0, 0.1)).toThrow(/at least one step/);
    expect(() => deviceControlStep(f32([1]), server, delta, 1, 0.1)).toThrow(/sizes differ/);
  });

  it('the server: x ← x + η_g·mean Δy, c ← c + (|S|/N)·mean Δc — from the aggregate [x + mean Δy ; c + mean Δc]', () => {
    const x = f32([1, -2]);
    const c = f32([0.5, 0.5]);
    const step = scaffoldServerStep(x, { c }, f32([0.2, -0.4, 1, -3]), 0.5, 0.1);
    expect(step.weights[0]).toBeCloseTo(1.1, 6);
    expect(step.weights[1]).toBeCloseTo(-2.2, 6);
    expect(step.state.c[0]).toBeCloseTo(0.6, 6);
    expect(step.state.c[1]).toBeCloseTo(0.2, 6);
    // the federation adds the round's mean to [x ; c] and the strategy takes the same step from it
    const config = runConfigSchema.parse({ strategy: 'scaffold', serverLearningRate: 0.5 });
    const base = aggregationBase(config, x, { c });
    expect(Array.from(base)).toEqual([1, -2, 0.5, 0.5]);
    const aggregated = base.map((v, i) => v + [0.2, -0.4, 1, -3][i]!);
    const next = nextGlobalModel(config, x, aggregated, { state: { c }, share: 0.1 });
    for (let i = 0; i < 2; i++) {
      expect(next.values[i]).toBeCloseTo(step.weights[i]!, 6);
      expect((next.state as { c: Float32Array }).c[i]).toBeCloseTo(step.state.c[i]!, 6);
    }
    // before the first round c is 0; the state is kept with the version like an optimizer's
    expect(Array.from(aggregationBase(config, x, undefined))).toEqual([1, -2, 0, 0]);
    const back = decodeServerState(encodeServerState(step.state), 2);
    expect('c' in back && Array.from(back.c)).toEqual(Array.from(step.state.c));
    expect(() => nextGlobalModel(config, x, f32([1, 2]))).toThrow(/expected 4 \(model and control\)/);
    expect(() => scaffoldServerStep(x, { c }, f32([0, 0, 0, 0]), 1, 0)).toThrow(/share of devices/);
  });

  it('a corrected step is the plain step minus η·(c − c_i), and the device round sends [Δy ; Δc] and keeps c_i⁺ once counted', async () => {
    const { train } = loadMnist();
    const data = toTensors({ pixels: train.images.slice(0, 20 * 784), labels: train.labels.slice(0, 20) });
    const model = buildModel('mlp');
    const global = initialWeights('mlp', 2);
    const correction = new Float32Array(global.values.length).map((_, i) => ((i % 7) - 3) * 0.01);
    const plan = { localEpochs: 1, batchSize: 20, learningRate: 0.1, seed: 5 }; // one step over all 20 examples
    setFlatWeights(model, global);
    await trainLocal(model, data, plan);
    const plain = getFlatWeights(model).values;
    setFlatWeights(model, global);
    await trainLocal(model, data, plan, {}, correction);
    const corrected = getFlatWeights(model).values;
    for (let i = 0; i < plain.length; i += 997) expect(corrected[i]! - plain[i]!).toBeCloseTo(-0.1 * correction[i]!, 5);
    // the device round: c from the server, c_i from memory, one update of both halves
    const server = new Float32Array(global.values.length).fill(0.02);
    const local = new Float32Array(global.values.length).fill(-0.01);
    const memory = memoryInProcess({ control: { key: '7:mlp', values: local } });
    const msg = { runId: 7, round: 2, attempt: 1, model: 'mlp' as const, modelVersion: 3, deadline: Date.now() + 60_000, weights: encodeWeights(global), control: encodeWeights({ specs: global.specs, values: server }), plan: { ...plan, codec: { codec: 'float32', topkFraction: 0.01, randFraction: 0.25, quantBlock: 256 } } };
    const round = await runDeviceRound(msg, { deviceId: 'dev-s', model, train: data, heldOut: data, memory });
    const sent = decodeWeights(round.submission!.delta, scaffoldUpdateSpecs(global.specs));
    const n = global.values.length;
    const dy = sent.values.subarray(0, n);
    const dc = sent.values.subarray(n);
    // one step (K = 1): Δc = −c − Δy/η
    for (let i = 0; i < n; i += 997) expect(dc[i]).toBeCloseTo(-0.02 - dy[i]! / 0.1, 3);
    expect(memory.control()!.values).toBe(local); // not counted yet
    await keepRoundState(msg, round, false, memory);
    expect(memory.control()!.values).toBe(local);
    await keepRoundState(msg, round, true, memory);
    for (let i = 0; i < n; i += 997) expect(memory.control()!.values[i]).toBeCloseTo(local[i]! + dc[i]!, 5);
    tf.dispose([data.x, data.y]);
    model.dispose();
  });

  it('refuses what would mix its control variates up, with the reason', () => {
    for (const [extra, field, text] of [
      [{ clipNorm: 5 }, 'clipNorm', 'leave clipNorm at 0'],
      [{ aggregation: 'median' }, 'strategy', 'use aggregation fedavg'],
      [{ secureAggregation: true, clientsPerRound: 5, minUpdates: 3, clipNorm: 0 }, 'strategy', 'not masked by secure aggregation'],
    ] as const) {
      const r = validateRunConfig({ strategy: 'scaffold', ...extra });
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.issues).toContainEqual({ field, message: expect.stringContaining(text) });
    }
    expect(validateRunConfig({ strategy: 'scaffold', serverLearningRate: 0.5 }).ok).toBe(true);
  });
});

describe('personalization', () => {
  beforeAll(useWasm);

  it('measures a device\'s label distance to the population and mixes by it', () => {
    expect(totalVariation([1, 1, 0, 0], [1, 1, 0, 0])).toBe(0);
    expect(totalVariation([2, 0, 0, 0], [0, 0, 3, 0])).toBe(1);
    // two labels of ten against a uniform population: ½(2 × |0.5 − 0.1| + 8 × 0.1) = 0.8
    expect(totalVariation([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], new Array(10).fill(1))).toBeCloseTo(0.8, 12);
    expect(mixWeight(0.8)).toBe(0.8);
    expect(mixWeight(-1)).toBe(0);
    expect(mixWeight(2)).toBe(1);
    // never one device's histogram: at least three make up the population
    expect(populationOf([[1, 0], [0, 1]])).toBeUndefined();
    expect(populationOf([[1, 0], [0, 1], [3, 0]])).toEqual([0.8, 0.2]);
    expect(() => totalVariation([1], [1, 2])).toThrow(/2 classes/);
  });

  it('a mix of 0 is the global model\'s accuracy, of 1 the personal model\'s; the device round reports the distance-aware mix', async () => {
    const { train } = loadMnist();
    const samples = (from: number, n: number) => toTensors({ pixels: train.images.slice(from * 784, (from + n) * 784), labels: train.labels.slice(from, from + n) });
    const local = samples(0, 200);
    const heldOut = samples(200, 80);
    const model = buildModel('cnn-small');
    const global = initialWeights('cnn-small', 1);
    const u = await computeUpdate(model, global, local, heldOut, { localEpochs: 1, batchSize: 10, learningRate: 0.1, seed: 3 });
    const personal = { specs: global.specs, values: global.values.map((w, i) => w + u.delta.values[i]!) };
    const [g, p] = await mixedAccuracies(model, global, personal, heldOut, [0, 1]);
    expect(g).toBeCloseTo(u.before.accuracy, 10);
    expect(p).toBeCloseTo(u.after.accuracy, 10);
    // the same through the device's round, with a population to measure against
    const memory = memoryInProcess();
    const msg = { runId: 1, round: 1, attempt: 1, model: 'cnn-small' as const, modelVersion: 1, deadline: Date.now() + 60_000, weights: encodeWeights(global), plan: { localEpochs: 1, batchSize: 10, learningRate: 0.1, seed: 3, codec: { codec: 'float32', topkFraction: 0.01, randFraction: 0.25, quantBlock: 256 } }, population: new Array(10).fill(0.1) };
    const round = await runDeviceRound(msg, { deviceId: 'dev-p', model, train: local, heldOut, memory });
    const d = totalVariation(labelHistogramOf(local), msg.population);
    expect(round.personalization).toMatchObject({ distance: d, mix: d });
    expect(round.submission!.metrics).toMatchObject({ labelDistance: d, accuracyMixed: round.personalization!.accuracyMixed, accuracyHalfMix: round.personalization!.accuracyHalfMix });
    const [expectedMixed] = await mixedAccuracies(model, global, personal, heldOut, [d]);
    expect(round.personalization!.accuracyMixed).toBeCloseTo(expectedMixed!, 10);
    expect(Array.from(memory.personal()!.weights.values.subarray(0, 20))).toEqual(Array.from(personal.values.subarray(0, 20)));
    // without a population (fewer than three devices), no mix is measured
    expect((await runDeviceRound({ ...msg, population: undefined }, { deviceId: 'dev-p', model, train: local, heldOut, memory: memoryInProcess() })).personalization).toBeUndefined();
    tf.dispose([local.x, local.y, heldOut.x, heldOut.y]);
    model.dispose();
  });
});

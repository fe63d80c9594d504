/**
 * The Node simulation runs the server's federation with devices in worker threads. Its devices must
 * compute what a browser device computes, and the same options must give the same run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMnist } from '../server/data/mnist.ts';
import { WorkerPool } from '../server/sim/pool.ts';
import { makeDevices, runSimulation, type SimulationOptions } from '../server/sim/simulation.ts';
import type { RoundStart } from '../shared/protocol.ts';
import type { UpdateSubmit } from '../shared/schemas.ts';
import { decodeWeights } from '../shared/weights.ts';
import { launch, mnistSliceIndices, runEnded, startServer, testDevice, useWasm, type TestServer } from './support/server.ts';

const mnist = loadMnist();
const small: SimulationOptions = { clients: 10, fraction: 0.2, rounds: 2, epochs: 1, batch: 10, lr: 0.1, partition: 'iid', alpha: 0.5, model: 'cnn-small', seed: 3, examples: 100, workers: 2 };

describe('simulate:node', () => {
  it('gives the same rounds and the same final model for the same options, and a different run for another seed', async () => {
    const a = await runSimulation(small, mnist);
    const b = await runSimulation(small, mnist);
    const c = await runSimulation({ ...small, seed: 4 }, mnist);

    expect(a.status).toBe('done');
    expect(a.rounds.map((r) => r.round)).toEqual([1, 2]);
    expect(a.rounds.every((r) => r.updates === 2)).toBe(true);
    expect(b.rounds.map((r) => [r.testAccuracy, r.testLoss])).toEqual(a.rounds.map((r) => [r.testAccuracy, r.testLoss]));
    expect(b.finalModelSha256).toBe(a.finalModelSha256);
    expect(c.finalModelSha256).not.toBe(a.finalModelSha256);
    // Training happened: two rounds of 2 × 100 examples beat the untrained model by far.
    expect(a.rounds[1]!.testAccuracy).toBeGreaterThan(a.initial.testAccuracy + 0.3);
  }, 180_000);

  it('runs secure aggregation with devices that drop out after sharing their keys, and learns as the plain run does', async () => {
    const o: SimulationOptions = { ...small, fraction: 1, rounds: 3, clipNorm: 5 }; // dropouts drawn from the seed and each device's slot
    const plain = await runSimulation(o, mnist);
    const secure = await runSimulation({ ...o, secureAggregation: true, dropout: 0.2 }, mnist);
    expect(secure.status, secure.reason).toBe('done');
    expect(secure.rounds.map((r) => r.round)).toEqual([1, 2, 3]);
    const dropped = secure.rounds.reduce((a, r) => a + r.dropped, 0);
    expect(dropped).toBeGreaterThan(0); // the dropouts did happen, and the rounds were unmasked around them
    for (const r of secure.rounds) expect(r.updates).toBe(10 - r.dropped);
    expect(secure.rounds.map((r) => r.dropped)).toEqual(plain.rounds.map(() => expect.any(Number)));
    expect(secure.rounds.at(-1)!.testAccuracy).toBeGreaterThan(plain.rounds.at(-1)!.testAccuracy - 0.05);
  }, 180_000);

  it('runs a secure round with over-selection: the round closes at K inputs and the devices still training are left out', async () => {
    const r = await runSimulation({ ...small, fraction: 0.5, overSelect: 1.3, clipNorm: 5, secureAggregation: true }, mnist); // K = 5 of 7 selected
    expect(r.status, r.reason).toBe('done');
    expect(r.rounds.map((x) => x.updates)).toEqual([5, 5]);
  }, 180_000);

  it('stops at the target accuracy and reports the round that reached it', async () => {
    const r = await runSimulation({ ...small, rounds: 20, target: 0.5 }, mnist);
    expect(r.status).toBe('stopped');
    const hit = r.roundsToTarget!;
    expect(r.rounds[hit - 1]!.testAccuracy).toBeGreaterThanOrEqual(0.5);
    expect(r.rounds.slice(0, hit - 1).every((x) => x.testAccuracy < 0.5)).toBe(true);
    // the next round runs while the target round's model is evaluated: it may complete before the stop (one round late, no more)
    expect(r.rounds.length - hit).toBeLessThanOrEqual(1);
    expect(r.rounds.map((x) => x.round)).toEqual(Array.from({ length: r.rounds.length }, (_, i) => i + 1));
  }, 180_000);

  it('keeps the held-out share asked for, apart from the training examples', () => {
    for (const heldOut of [0.1, 0.25]) {
      const devices = makeDevices(mnist.train, { ...small, examples: undefined, heldOut });
      for (const d of devices) {
        const size = d.train.length + d.heldOut.length;
        expect(size).toBe(6000); // 60,000 examples over 10 clients
        expect(d.heldOut.length).toBe(Math.round(size * heldOut));
        // drawn from a shuffle of the partition, not from its start
        expect(Math.max(...d.train)).toBeGreaterThan(30_000);
        const train = new Set(d.train);
        expect(Array.from(d.heldOut).some((i) => train.has(i))).toBe(false);
      }
    }
    expect(makeDevices(mnist.train, small).every((d) => d.train.length === 100 && d.heldOut.length === 0)).toBe(true);
  });

  it('refuses a bad configuration with the field named', async () => {
    await expect(runSimulation({ ...small, batch: 0 }, mnist)).rejects.toThrow(/batchSize: must be at least 1/);
    await expect(runSimulation({ ...small, clients: 0 }, mnist)).rejects.toThrow(/clients/);
  });
});

describe('a simulated device and a browser device', () => {
  let server: TestServer;
  beforeAll(async () => {
    await useWasm();
    server = await startServer({ evalLimit: 200 });
  });
  afterAll(async () => {
    await server.close();
  });

  it('produce the same update for the same round, data and seed: they run the same code', async () => {
    // Prepare: one browser device (the page's own DeviceClient, here in Node on wasm) on slice 0.
    const slice = { examples: 150, heldOut: 0.2 };
    let seen: { round: RoundStart; submission: UpdateSubmit } | undefined;
    const device = await testDevice(server.url, 0, { ...slice, beforeSubmit: async (submission, round) => ((seen = { round, submission }), submission) });
    await device.join();

    // Execute: one round with this device alone; then the same round, as the server sent it, in a simulation worker.
    const runId = await launch(server, { model: 'cnn-small', rounds: 1, clientsPerRound: 1, minUpdates: 1, overSelect: 1, localEpochs: 2, batchSize: 10, learningRate: 0.05, seed: 11 });
    expect((await runEnded(server, runId)).status).toBe('done');
    const browserRound = server.db.listRounds(runId)[0]!;
    const indices = mnistSliceIndices(0, slice);
    const pool = await WorkerPool.start(mnist.train, mnist.test, 1);
    const sim = await pool.train({ type: 'train', deviceId: device.identity.deviceId, round: seen!.round, train: Int32Array.from(indices.train), heldOut: Int32Array.from(indices.heldOut), held: undefined, residual: undefined }).finally(() => pool.close());
    await device.dispose();

    // Assert: the same Δ, bit for bit, and the same metrics.
    const browserDelta = decodeWeights(seen!.submission.delta).values;
    const simDelta = decodeWeights(sim.submission!.delta).values;
    expect(simDelta.some((v) => Math.abs(v) > 1e-3)).toBe(true);
    expect(Array.from(simDelta)).toEqual(Array.from(browserDelta));
    expect(sim.submission!.numExamples).toBe(150);
    expect(browserRound.devices[0]!.accuracyBefore).toBeCloseTo(sim.submission!.metrics.accuracyBefore, 6);
    expect(browserRound.devices[0]!.accuracyAfter).toBeCloseTo(sim.submission!.metrics.accuracyAfter, 6);
  }, 120_000);
});

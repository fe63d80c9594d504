/**
 * Secure aggregation against the real server, with the browser's device client in Node: rounds
 * complete with every update masked, the server's model equals plain FedAvg of the same updates
 * within the quantization bound, and dropouts and hostile devices are survived or refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codecSeed } from '../shared/device.ts';
import { epsilonOfRounds } from '../shared/privacy/accountant.ts';
import { createRng } from '../shared/rng.ts';
import { quantizeInput } from '../shared/secagg/quantize.ts';
import { clipToNorm } from '../shared/robust.ts';
import { decodeWeights } from '../shared/weights.ts';
import { chiSquareOfBytes } from './support/secagg.ts';
import { gate, launch, runEnded, startServer, testDevice, until, useWasm, type TestDevice, type TestServer } from './support/server.ts';

const CONFIG = { model: 'cnn-small', rounds: 1, clientsPerRound: 5, overSelect: 1, minUpdates: 3, localEpochs: 1, batchSize: 10, learningRate: 0.1, clipNorm: 5, selectionTimeoutMs: 0, roundTimeoutMs: 60_000 };

let server: TestServer;
let devices: TestDevice[] = [];

beforeAll(async () => {
  await useWasm();
  server = await startServer();
});
afterAll(async () => {
  await Promise.all(devices.map((d) => d.dispose()));
  await server.close();
});

async function fleet(n: number, extra: Parameters<typeof testDevice>[2] extends infer O ? (i: number) => Partial<O> : never = () => ({})): Promise<TestDevice[]> {
  await Promise.all(devices.map((d) => d.dispose()));
  devices = await Promise.all(Array.from({ length: n }, (_, i) => testDevice(server.url, i, { examples: 100, clients: 10, ...extra(i) })));
  await Promise.all(devices.map((d) => d.join()));
  return devices;
}

const modelOf = (version: number) => decodeWeights(server.db.getModelWeights(version)!).values;

describe('secure aggregation in a federation', () => {
  it('trains with masked updates the server cannot read, and lands on plain FedAvg of the same updates within the quantization bound', async () => {
    await fleet(5);
    // Every packet the server receives from the devices during the secure run, as socket.io hands it over.
    const received: (string | Uint8Array)[] = [];
    let capturing = true;
    const engine = server.app.io.engine as unknown as { clients: Record<string, { on(e: 'packet', f: (p: { data?: unknown }) => void): void }> };
    for (const socket of Object.values(engine.clients)) socket.on('packet', (p) => capturing && (typeof p.data === 'string' || p.data instanceof Uint8Array) && received.push(p.data));
    const secureRun = await launch(server, { ...CONFIG, secureAggregation: true });
    expect(await runEnded(server, secureRun)).toMatchObject({ status: 'done' });
    capturing = false;
    const [r1] = server.db.listRounds(secureRun);
    expect(r1).toMatchObject({ status: 'completed', completed: 5, secureAggregation: { neighbours: 4, threshold: 3, selected: 5, advertised: 5, shared: 5, inputs: 5, revealed: 5 } });
    expect(r1!.devices.every((d) => d.weight === null)).toBe(true);
    expect(devices.every((d) => d.masked.length === 1 && d.sent.length === 0)).toBe(true);

    // The same round in the clear: same initial model, data and seeds, so the same updates.
    const plainRun = await launch(server, CONFIG);
    expect(await runEnded(server, plainRun)).toMatchObject({ status: 'done' });
    const [p1] = server.db.listRounds(plainRun);
    const secure = modelOf(r1!.modelVersion!);
    const plain = modelOf(p1!.modelVersion!);
    const initial = modelOf(server.db.listModels().find((m) => m.runId === plainRun && m.round === 0)!.version);
    let maxDiff = 0;
    let moved = 0;
    for (let i = 0; i < plain.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(secure[i]! - plain[i]!));
      moved = Math.max(moved, Math.abs(plain[i]! - initial[i]!));
    }
    expect(moved).toBeGreaterThan(1e-3); // the round did change the model…
    expect(maxDiff).toBeLessThan(1e-5); // …and both ways agree (float32 FedAvg vs a 32-bit fixed-point sum)
    expect(r1!.testAccuracy).toBeCloseTo(p1!.testAccuracy!, 2);

    // What the server received holds no device's update: not its float32 Δ, not its quantized input.
    const binary = received.filter((x): x is Uint8Array => x instanceof Uint8Array);
    const windows = new Set<string>();
    for (const b of binary) for (let i = 0; i + 16 <= b.length; i += 4) windows.add(Buffer.from(b.subarray(i, i + 16)).toString('hex'));
    const leaks = (bytes: Uint8Array) => {
      let found = 0;
      for (let i = 0; i + 16 <= bytes.length; i += 4) {
        const w = bytes.subarray(i, i + 16);
        if (w.some((x) => x !== 0) && windows.has(Buffer.from(w).toString('hex'))) found++;
      }
      return found;
    };
    const chiSquare = chiSquareOfBytes;
    for (const d of devices) {
      const { payload, start } = d.masked[0]!;
      // the capture saw this device's masked input (so the checks below ran on what was sent)…
      expect(binary.some((b) => b.length === payload.length && Buffer.compare(Buffer.from(b), Buffer.from(payload)) === 0)).toBe(true);
      // …which looks like uniform bytes (χ², 255 degrees of freedom, p ≈ 1e-6 at 380)
      expect(chiSquare(payload)).toBeLessThan(380);
      const plainDelta = d.sent[0]!.delta;
      const bounds = start.secureAggregation!.bounds;
      const input = quantizeInput(clipToNorm(plainDelta, bounds.clipNorm).delta, Math.min(d.sent[0]!.numExamples, bounds.maxWeight), bounds, createRng(codecSeed(start.plan.seed, d.identity.deviceId)));
      expect(chiSquare(new Uint8Array(input.buffer))).toBeGreaterThan(10_000); // the input itself is far from uniform
      expect(leaks(new Uint8Array(plainDelta.buffer, plainDelta.byteOffset, plainDelta.byteLength))).toBe(0);
      expect(leaks(new Uint8Array(input.buffer))).toBe(0);
    }
  }, 120_000);

  it('completes a round when a device closes after sending its masked input', async () => {
    const held = gate();
    const ds = await fleet(5, (i) => (i === 0 ? {} : { beforeSubmit: held.beforeSubmit }));
    const runId = await launch(server, { ...CONFIG, secureAggregation: true });
    // device 0 sends its masked input first; then it closes, before anyone is asked to unmask
    await until(() => server.app.federation.status().round?.accepted === 1 || undefined, 60_000, 'the first masked input');
    await ds[0]!.client.leave();
    held.open();
    expect(await runEnded(server, runId)).toMatchObject({ status: 'done' });
    const [r1] = server.db.listRounds(runId);
    expect(r1).toMatchObject({ status: 'completed', completed: 5, secureAggregation: { inputs: 5, revealed: 4 } });
    expect(r1!.testAccuracy).toBeGreaterThan(0.1);
  }, 120_000);

  it('completes a round when a device shares its keys and then never sends its input, and refuses a forged input', async () => {
    const ds = await fleet(6, (i) => ({
      beforeSubmit: async (s) => {
        if (i === 1) return undefined; // silent after sharing
        if (i === 2) return { ...s, signature: new Uint8Array(64) }; // a forged signature
        return s;
      },
    }));
    // six devices: each has five neighbours and any three rebuild its secrets, so two may fall out
    const runId = await launch(server, { ...CONFIG, clientsPerRound: 6, secureAggregation: true, roundTimeoutMs: 8_000 });
    expect(await runEnded(server, runId)).toMatchObject({ status: 'done' });
    const [r1] = server.db.listRounds(runId);
    expect(r1).toMatchObject({ status: 'completed', completed: 4, refused: 1, unanswered: 1, secureAggregation: { neighbours: 5, threshold: 3, shared: 6, inputs: 4, revealed: 4 } });
    expect(ds[2]!.client.snapshot.history.at(-1)).toMatchObject({ outcome: 'rejected', message: expect.stringMatching(/BAD_WEIGHTS: .*not signed/) });
    expect(r1!.testAccuracy).toBeGreaterThan(0.1);
  }, 120_000);

  it('refuses a masked input of the wrong size from a selected device, and unmasks the round around it', async () => {
    const ds = await fleet(6, (i) => ({ beforeSubmit: async (s) => (i === 0 ? { ...s, delta: s.delta.subarray(0, s.delta.length - 4) } : s) }));
    const runId = await launch(server, { ...CONFIG, clientsPerRound: 6, secureAggregation: true, roundTimeoutMs: 8_000 });
    expect(await runEnded(server, runId)).toMatchObject({ status: 'done' });
    const [r1] = server.db.listRounds(runId);
    expect(r1).toMatchObject({ status: 'completed', completed: 5, refused: 1, secureAggregation: { shared: 6, inputs: 5 } });
    expect(ds[0]!.client.snapshot.history.at(-1)).toMatchObject({ outcome: 'rejected', message: expect.stringMatching(/BAD_WEIGHTS: .*a masked input of this model has 21036 bytes, got 21032/) });
  }, 120_000);

  it('fails the round with its reason when more devices drop than the threshold tolerates', async () => {
    await fleet(5, (i) => ({ beforeSubmit: async (s) => (i < 2 ? undefined : s) }));
    const runId = await launch(server, { ...CONFIG, secureAggregation: true, roundTimeoutMs: 5_000, maxRoundRetries: 0 });
    expect(await runEnded(server, runId)).toMatchObject({ status: 'failed' });
    const [r1] = server.db.listRounds(runId);
    expect(r1).toMatchObject({ status: 'failed', reason: expect.stringMatching(/secure aggregation: 2 of the 3 shares needed to unmask device .* were revealed/), secureAggregation: { inputs: 3, revealed: 3 } });
  }, 120_000);

  it('under DP the devices add the noise: the model is secure FedAvg plus noise of the recorded spread, accounted as Skellam noise', async () => {
    await fleet(5);
    const plainRun = await launch(server, { ...CONFIG, secureAggregation: true });
    expect(await runEnded(server, plainRun)).toMatchObject({ status: 'done' });
    // the same round (same model, data, seeds and clip bound; every device holds 100 examples, so FedAvg's weights are equal)
    const privateRun = await launch(server, { ...CONFIG, clipNorm: 0, secureAggregation: true, dp: { noiseMultiplier: 0.5, clipNorm: 5 } });
    expect(await runEnded(server, privateRun)).toMatchObject({ status: 'done' });
    const [p1] = server.db.listRounds(plainRun);
    const [d1] = server.db.listRounds(privateRun);
    expect(d1).toMatchObject({ status: 'completed', completed: 5, secureAggregation: { inputs: 5, revealed: 5 } });
    const privacy = d1!.privacy!;
    // five present, K = 5: q = 1; the noise is calibrated for ⌈0.8 × 5⌉ = 4 inputs, and 5 added theirs
    expect(privacy).toMatchObject({ samplingRate: 1, expectedDevices: 5, clipNorm: 5, distributed: { minInputs: 4, inputs: 5 } });
    const skellam = { l2: privacy.distributed!.l2Sensitivity, l1: privacy.distributed!.l1Sensitivity };
    expect(privacy.epsilon).toBeCloseTo(epsilonOfRounds([{ q: 1, rounds: 1, skellam }], 0.5, 1e-5).epsilon, 9);
    expect(privacy.distributed!.epsilonAgainstServer).toBeCloseTo(privacy.epsilon, 9); // q = 1: the server knows no more than anyone
    // the private model is the plain one plus the devices' noise over the expected round size
    const plain = modelOf(p1!.modelVersion!);
    const noisy = modelOf(d1!.modelVersion!);
    let sq = 0;
    let mean = 0;
    for (let i = 0; i < plain.length; i++) {
      const e = noisy[i]! - plain[i]!;
      sq += e * e;
      mean += e;
    }
    mean /= plain.length;
    const measured = Math.sqrt(sq / plain.length);
    const expected = (privacy.noiseStd * Math.sqrt(5 / 4)) / privacy.expectedDevices;
    expect(Math.abs(mean)).toBeLessThan((4 * expected) / Math.sqrt(plain.length));
    expect(measured / expected).toBeGreaterThan(0.96);
    expect(measured / expected).toBeLessThan(1.04);
    // no device's update was seen in the clear, in either run
    expect(devices.every((d) => d.sent.length === 0 && d.masked.length === 2)).toBe(true);
  }, 180_000);

  it('under distributed DP a round with fewer inputs than its noise is calibrated for fails before anything is unmasked', async () => {
    await fleet(5, (i) => ({ beforeSubmit: async (s) => (i < 2 ? undefined : s) }));
    const runId = await launch(server, { ...CONFIG, clipNorm: 0, secureAggregation: true, dp: { noiseMultiplier: 0.5, clipNorm: 5 }, roundTimeoutMs: 5_000, maxRoundRetries: 0 });
    expect(await runEnded(server, runId)).toMatchObject({ status: 'failed' });
    const [r1] = server.db.listRounds(runId);
    expect(r1).toMatchObject({ status: 'failed', reason: expect.stringMatching(/deadline passed with 3 of the 4 required updates/), secureAggregation: { inputs: 3, revealed: 0 }, privacy: null });
  }, 120_000);
});

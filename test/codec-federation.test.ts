/**
 * Compressed updates and model deltas through the real server and the device's own client
 * (web-client/fl/client.ts, here in Node on wasm): a run with topk+q8+deflate and delta downloads
 * trains, costs a fraction of the bytes, and refuses payloads that do not match its codec.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeUpdate } from '../shared/codec.ts';
import { createRng } from '../shared/rng.ts';
import type { RoundStart } from '../shared/protocol.ts';
import { runConfigSchema } from '../shared/schemas.ts';
import { decodeWeights, encodeWeights } from '../shared/weights.ts';
import { createIdentity, type DeviceIdentity } from '../shared/identity.ts';
import { memoryInProcess, type DeviceMemory } from '../web-client/fl/client.ts';
import { connect, join, startServer, testDevice, until, useWasm, type TestDevice, type TestServer } from './support/server.ts';

const device = (server: TestServer, identity: DeviceIdentity, client: number, memory: DeviceMemory): Promise<TestDevice> => testDevice(server.url, client, { examples: 120, heldOut: 1 / 6, memory, identity });

describe('a run with compressed updates and delta downloads', () => {
  let server: TestServer;
  beforeAll(async () => {
    await useWasm();
    server = await startServer({ evalLimit: 500 });
  });
  afterAll(async () => {
    await server.close();
  });

  it('trains, sends a fraction of the bytes both ways, and survives a device that lost its model', async () => {
    const memories = [memoryInProcess(), memoryInProcess(), memoryInProcess()];
    const identities = await Promise.all(memories.map(() => createIdentity()));
    let devices = await Promise.all(memories.map((m, i) => device(server, identities[i]!, i, m)));
    for (const d of devices) await d.join();

    const config = runConfigSchema.parse({ model: 'cnn-small', rounds: 3, clientsPerRound: 3, minUpdates: 3, overSelect: 1, localEpochs: 1, batchSize: 10, learningRate: 0.1, seed: 5, updateCodec: 'topk+q8+deflate', topkFraction: 0.05, downlink: 'delta' });
    const runId = await server.app.federation.startRun(config);
    await until(() => server.db.getRun(runId)?.status === 'done' || undefined, 90_000, 'the run to finish');
    await server.app.federation.idle();

    const rounds = server.db.listRounds(runId);
    const full = server.db.getModelWeights(server.db.listModels().find((m) => m.runId === runId)!.version)!.byteLength;
    expect(rounds.map((r) => [r.status, r.completed])).toEqual([['completed', 3], ['completed', 3], ['completed', 3]]);
    // Up: 5 % of the entries at 8 bits → far below the float32 payload.
    for (const r of rounds) expect(r.bytesUp / 3).toBeLessThan(full / 8);
    // Down: round 1 sends the whole model; later rounds send deltas against the version each device holds.
    expect(rounds[0]!.bytesDown).toBe(3 * full);
    expect(rounds[1]!.bytesDown).toBeLessThan(3 * full);
    expect(rounds[2]!.bytesDown).toBeLessThan(3 * full);
    expect(rounds[2]!.testAccuracy!).toBeGreaterThan(0.25); // from ~0.10 untrained, with 5 % of each update per round
    for (const d of devices) expect(d.client.snapshot.history.map((h) => h.outcome)).toEqual(['counted', 'counted', 'counted']);
    const held = server.db.listModels().filter((m) => m.runId === runId).at(-2)!.version; // the model of round 3's start
    expect(server.app.federation.listDevices().map((d) => d.modelVersion)).toEqual([held, held, held]);

    // Device 0 comes back with an empty memory (a cleared browser): it gets the full model; the others deltas.
    await Promise.all(devices.map((d) => d.dispose()));
    memories[0] = memoryInProcess();
    devices = await Promise.all(memories.map((m, i) => device(server, identities[i]!, i, m)));
    for (const d of devices) await d.join();
    expect(server.app.federation.listDevices().find((d) => d.id === identities[0]!.deviceId)!.modelVersion).toBeNull();
    const again = await server.app.federation.startRun({ ...config, rounds: 1 });
    await until(() => server.db.getRun(again)?.status === 'done' || undefined, 60_000, 'the second run');
    await server.app.federation.idle();
    const [r] = server.db.listRounds(again);
    expect(r!.completed).toBe(3);
    // One full download (device 0) and two deltas against the previous run's model.
    expect(r!.bytesDown).toBeGreaterThan(full);
    expect(r!.bytesDown).toBeLessThan(3 * full);
    await Promise.all(devices.map((d) => d.dispose()));
  }, 180_000);

  it('with a lossy downlink, every device holds the stored model bit for bit, built from the seed and steps, never downloaded whole', async () => {
    const memories = [memoryInProcess(), memoryInProcess(), memoryInProcess()];
    const identities = await Promise.all(memories.map(() => createIdentity()));
    const devices = await Promise.all(memories.map((m, i) => device(server, identities[i]!, i, m)));
    for (const d of devices) await d.join();
    // two of three devices a round: some come back a version or two behind and get a chain of steps
    const config = runConfigSchema.parse({ model: 'cnn-small', rounds: 4, clientsPerRound: 2, minUpdates: 2, overSelect: 1, localEpochs: 1, batchSize: 10, learningRate: 0.1, seed: 9, downlinkCodec: 'q8+deflate', downlink: 'delta' });
    const runId = await server.app.federation.startRun(config);
    await until(() => server.db.getRun(runId)?.status === 'done' || undefined, 90_000, 'the run to finish');
    await server.app.federation.idle();
    const rounds = server.db.listRounds(runId);
    const versions = server.db.listModels().filter((m) => m.runId === runId);
    const full = server.db.getModelWeights(versions[0]!.version)!.byteLength;
    expect(rounds.map((r) => [r.status, r.completed])).toEqual([['completed', 2], ['completed', 2], ['completed', 2], ['completed', 2]]);
    // round 1 sends no model at all (the devices build it from the seed); later rounds a quarter of it or less
    expect(rounds[0]!.bytesDown).toBeLessThan(2 * 1000);
    for (const r of rounds.slice(1)) expect(r.bytesDown / r.participants).toBeLessThan(full / 2);
    for (const [i, d] of devices.entries()) {
      const held = await memories[i]!.loadModel();
      if (!held) continue;
      const stored = server.db.getModelWeights(held.version)!;
      expect(Buffer.from(encodeWeights(held.weights)).equals(Buffer.from(stored)), `device ${i} holds v${held.version} as stored`).toBe(true);
      expect(d.client.snapshot.history.every((h) => h.outcome === 'counted')).toBe(true);
    }
    expect(rounds.at(-1)!.testAccuracy!).toBeGreaterThan(0.2);
    await Promise.all(devices.map((d) => d.dispose()));
  }, 180_000);

  it('refuses updates that do not match the run codec, with the reason, and closes the round on the one that does', async () => {
    // Four selected devices: three send a payload of the wrong form, one the right one.
    const sockets = await Promise.all([0, 1, 2, 3].map(() => connect(server.url)));
    for (const s of sockets) await join(s, 100);
    const starts = sockets.map((s) => new Promise<RoundStart>((r) => s.once('round:start', r)));
    const config = runConfigSchema.parse({ model: 'cnn-small', rounds: 1, clientsPerRound: 4, minUpdates: 1, overSelect: 1, updateCodec: 'topk+q8+deflate', topkFraction: 0.05 });
    const runId = await server.app.federation.startRun(config);
    const start = await starts[0]!;
    const global = decodeWeights(new Uint8Array(start.weights));
    const delta = { specs: global.specs, values: global.values.map((_, i) => (i % 17 === 0 ? 0.001 : 0)) };
    const submit = (i: number, payload: Uint8Array<ArrayBuffer>) => sockets[i]!.emitWithAck('update:submit', { runId, round: 1, attempt: 1, numExamples: 100, delta: payload, metrics: { accuracyBefore: 0.1, lossBefore: 2, accuracyAfter: 0.2, lossAfter: 1.9, downloadMs: 1, evaluateMs: 1, trainMs: 1 } });
    await Promise.all(starts);

    const plain = await submit(0, encodeWeights(delta));
    expect(plain).toMatchObject({ ok: false, error: { code: 'BAD_WEIGHTS' } });
    expect(!plain.ok && plain.error.message).toMatch(/codec is topk\+q8\+deflate, the payload is not a compressed update/);
    const good = encodeUpdate(delta, start.plan.codec, createRng(1));
    const truncated = await submit(1, good.slice(0, good.length - 4));
    expect(truncated).toMatchObject({ ok: false, error: { code: 'BAD_WEIGHTS' } });
    const wrongCodec = await submit(2, encodeUpdate(delta, { ...start.plan.codec, codec: 'topk+q4+deflate' }, createRng(1)));
    expect(!wrongCodec.ok && wrongCodec.error.message).toMatch(/the payload is topk\+q4\+deflate/);
    expect(server.db.listRounds(runId)).toEqual([]);

    expect(await submit(3, good)).toEqual({ ok: true, data: { accepted: true } });
    await until(() => server.db.getRun(runId)?.status === 'done' || undefined, 30_000, 'the run to finish');
    expect(server.db.listRounds(runId)[0]).toMatchObject({ completed: 1, rejected: 3 });
    for (const s of sockets) s.disconnect();
  });
});

import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fedAvg } from '../shared/fedavg.ts';
import { decodeWeights, encodeWeights } from '../shared/weights.ts';
import { ADMIN_TOKEN, connect, hello, NodeDevice, startServer, until, useWasm, type TestServer } from './support/server.ts';

const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };

describe('federation over real sockets', () => {
  let server: TestServer | undefined;
  const devices: NodeDevice[] = [];
  beforeAll(useWasm);
  afterEach(async () => {
    for (const d of devices.splice(0)) d.dispose();
    await server?.close();
    server = undefined;
  });

  it('runs FedAvg rounds with Node devices, stores each version and serves it as a TF.js model', async () => {
    server = await startServer();
    for (let i = 0; i < 3; i++) {
      const d = new NodeDevice(await connect(server.url), `node-device-${i}`, i * 200, 60 + i * 40);
      await d.join();
      devices.push(d);
    }
    const res = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: admin, body: JSON.stringify({ rounds: 2, clientsPerRound: 3, minUpdates: 3, batchSize: 10, roundTimeoutMs: 30_000 }) });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: number };
    const run = await until(() => {
      const r = server!.store.getRun(id);
      return r?.status !== 'running' ? r : undefined;
    }, 60_000, 'the run to finish');
    expect(run.status).toBe('done');

    const rounds = (await (await fetch(`${server.url}/api/runs/${id}/rounds`)).json()) as { round: number; participants: number; completed: number; dropped: number; durationMs: number; bytesUp: number; bytesDown: number; testAccuracy: number; testLoss: number; modelVersion: number }[];
    expect(rounds.map((r) => [r.round, r.participants, r.completed, r.dropped])).toEqual([[1, 3, 3, 0], [2, 3, 3, 0]]);
    for (const r of rounds) {
      expect(r.testAccuracy).toBeGreaterThanOrEqual(0);
      expect(r.testLoss).toBeGreaterThan(0);
      expect(r.bytesDown).toBe(3 * server.store.getModelWeights(1)!.byteLength);
      expect(r.bytesUp).toBe(r.bytesDown);
    }

    // The stored round-1 model is exactly w0 + Σ nΔ / Σ n of what the devices sent.
    const w0 = decodeWeights(server.store.getModelWeights(1)!);
    const w1 = decodeWeights(server.store.getModelWeights(rounds[0]!.modelVersion)!);
    const expected = fedAvg(w0.values, devices.map((d) => d.deltas.find((x) => x.round === 1)!));
    let worst = 0;
    for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(expected[i]! - w1.values[i]!));
    expect(worst).toBeLessThan(1e-6);

    // The latest version loads with tf.loadLayersModel and predicts with its weights.
    const model = await tf.loadLayersModel(`${server.url}/api/models/latest/model.json`);
    expect(model.countParams()).toBe(5258);
    const loaded = model.getWeights().map((w) => w.dataSync());
    const latest = decodeWeights(server.store.getModelWeights(rounds[1]!.modelVersion)!);
    expect(Array.from(loaded[0]!.slice(0, 5))).toEqual(Array.from(latest.values.slice(0, 5)));
    model.dispose();
  });

  it('rejects bad messages and bad updates with a reason and leaves the model untouched', async () => {
    server = await startServer();
    const honest = new NodeDevice(await connect(server.url), 'honest-device-1', 0, 50);
    await honest.join();
    devices.push(honest);
    const evil = await connect(server.url);
    // Before hello: refused.
    const early = await evil.emitWithAck('update:submit', { runId: 1, round: 1, attempt: 1, numExamples: 5, delta: new Uint8Array(4), metrics: {} } as never);
    expect(early).toMatchObject({ ok: false, error: { code: 'NOT_JOINED' } });
    // Malformed hello.
    const badHello = await evil.emitWithAck('device:hello', { deviceId: 'x', backend: 'quantum' } as never);
    expect(badHello.ok).toBe(false);
    expect(!badHello.ok && badHello.error.code).toBe('BAD_MESSAGE');
    expect(!badHello.ok && badHello.error.message).toContain('deviceId');
    await hello(evil, 'evil-device-1');

    // Hold the round open for a while: K=3 with two devices and a long deadline.
    const started = new Promise<{ runId: number; round: number; attempt: number; weights: Uint8Array }>((resolve) => evil.once('round:start', (m) => resolve(m)));
    await fetch(`${server.url}/api/runs`, { method: 'POST', headers: admin, body: JSON.stringify({ rounds: 1, clientsPerRound: 2, minUpdates: 1, roundTimeoutMs: 6_000, selectionTimeoutMs: 0 }) });
    const round = await started;
    const global = decodeWeights(new Uint8Array(round.weights));
    const submit = (delta: Uint8Array, extra: Record<string, unknown> = {}) =>
      evil.emitWithAck('update:submit', { runId: round.runId, round: round.round, attempt: round.attempt, numExamples: 10, delta, metrics: { accuracyBefore: 0, lossBefore: 1, accuracyAfter: 0, lossAfter: 1, downloadMs: 0, evaluateMs: 0, trainMs: 0 }, ...extra } as never);

    const nan = global.values.slice();
    nan[7] = Number.NaN;
    expect(await submit(encodeWeights({ specs: global.specs, values: nan }))).toMatchObject({ ok: false, error: { code: 'BAD_WEIGHTS', message: expect.stringContaining('value 7 is not finite') } });
    const wrongShape = encodeWeights({ specs: [{ name: 'conv1/kernel', shape: [2] }], values: new Float32Array(2) });
    expect(await submit(wrongShape)).toMatchObject({ ok: false, error: { code: 'BAD_WEIGHTS', message: expect.stringContaining('expected 6 tensors, got 1') } });
    expect(await submit(new Uint8Array([1, 2, 3]))).toMatchObject({ ok: false, error: { code: 'BAD_WEIGHTS' } });
    expect(await submit(encodeWeights({ specs: global.specs, values: new Float32Array(global.values.length) }), { numExamples: -5 })).toMatchObject({ ok: false, error: { code: 'BAD_MESSAGE', message: expect.stringContaining('numExamples') } });
    expect(await submit(encodeWeights({ specs: global.specs, values: new Float32Array(global.values.length) }), { round: 99 })).toMatchObject({ ok: false, error: { code: 'WRONG_ROUND' } });
    const errors: string[] = [];
    evil.on('server:error', (e) => errors.push(e.code));
    evil.emit('device:state', { state: 'dancing' } as never);
    await until(() => errors.length > 0 || undefined, 5_000, 'a server:error');
    expect(errors).toEqual(['BAD_MESSAGE']);
    expect(server.app.federation.counters.rejectedUpdates).toBeGreaterThanOrEqual(4);

    // Nothing was accepted from the hostile device: the round closes on the honest update alone.
    evil.disconnect();
    const done = await until(() => {
      const r = server!.store.getRun(round.runId);
      return r?.status !== 'running' ? r : undefined;
    }, 30_000, 'the run to finish');
    expect(done.status).toBe('done');
    const [rec] = server.store.listRounds(round.runId);
    expect(rec).toMatchObject({ completed: 1, participants: 2, dropped: 1 });
    const w1 = decodeWeights(server.store.getModelWeights(rec!.modelVersion!)!);
    const expected = fedAvg(global.values, [honest.deltas[0]!]);
    expect(Array.from(w1.values.slice(0, 50))).toEqual(Array.from(expected.slice(0, 50)));
  });

  it('drops a connection that sends more than the payload limit and stays up', async () => {
    server = await startServer({ maxPayloadBytes: 64 * 1024 });
    const s = await connect(server.url);
    await hello(s, 'big-sender-1');
    const closed = new Promise<string>((resolve) => s.once('disconnect', (reason) => resolve(reason)));
    s.emit('update:submit', { runId: 1, round: 1, attempt: 1, numExamples: 1, delta: new Uint8Array(256 * 1024), metrics: {} } as never, () => undefined);
    expect(await closed).toBe('transport close');
    expect((await fetch(`${server.url}/api/health`)).status).toBe(200);
    await until(() => server!.app.federation.listDevices().length === 0 || undefined, 5_000, 'the device to leave');
  });

  it('answers the HTTP API with clear errors', async () => {
    server = await startServer();
    expect((await fetch(`${server.url}/api/runs`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status).toBe(401);
    const bad = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: admin, body: JSON.stringify({ model: 'resnet', batchSize: 0 }) });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: string; issues: { field: string }[] };
    expect(body.issues.map((i) => i.field).sort()).toEqual(['batchSize', 'model']);
    const junk = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: admin, body: '{not json' });
    expect(junk.status).toBe(400);
    expect(((await junk.json()) as { error: string }).error).toBe('request body is not valid JSON');
    expect((await fetch(`${server.url}/api/runs`, { method: 'POST', headers: admin, body: JSON.stringify({ minUpdates: 5, clientsPerRound: 2 }) })).status).toBe(400);
    expect((await fetch(`${server.url}/api/runs`, { method: 'POST', headers: admin, body: JSON.stringify({ extra: 1 }) })).status).toBe(400);
    expect((await fetch(`${server.url}/api/runs/42/rounds`)).status).toBe(404);
    expect((await fetch(`${server.url}/api/models/9/model.json`)).status).toBe(404);
    expect((await fetch(`${server.url}/api/data/slice?client=5&clients=4`)).status).toBe(400);
    const first = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: admin, body: '{}' });
    expect(first.status).toBe(201);
    expect((await fetch(`${server.url}/api/runs`, { method: 'POST', headers: admin, body: '{}' })).status).toBe(409);
    expect((await fetch(`${server.url}/api/runs/current/stop`, { method: 'POST', headers: admin })).status).toBe(200);
  });

  it('the admin feed needs the token and pushes snapshots and events live', async () => {
    server = await startServer();
    const { io } = await import('socket.io-client');
    const refused = io(`${server.url}/admin`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: 'wrong' } });
    const error = await new Promise<Error>((resolve) => refused.once('connect_error', resolve));
    expect(error.message).toBe('unauthorized: the admin token is required');
    refused.close();

    const feed = io(`${server.url}/admin`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: ADMIN_TOKEN } });
    const snapshots: { devices: { id: string; connected: boolean }[] }[] = [];
    const events: { kind: string; message: string }[] = [];
    feed.on('admin:snapshot', (s) => snapshots.push(s));
    feed.on('admin:event', (e) => events.push(e));
    await until(() => snapshots.length > 0 || undefined, 5_000, 'the first snapshot');
    const device = await connect(server.url);
    await hello(device, 'watched-device-1');
    await until(() => events.find((e) => e.kind === 'device:joined'), 5_000, 'the join event');
    await until(() => snapshots.at(-1)?.devices.some((d) => d.id === 'watched-device-1' && d.connected) || undefined, 5_000, 'a snapshot with the device');
    device.disconnect();
    await until(() => snapshots.at(-1)?.devices.some((d) => d.id === 'watched-device-1' && !d.connected) || undefined, 5_000, 'the device shown as disconnected');
    expect(events.map((e) => e.kind)).toEqual(['device:joined', 'device:left']);
    feed.close();
  });

  it('completes rounds through a dropout and a silent straggler, and selects a device again when it comes back', async () => {
    server = await startServer();
    let release!: () => void;
    const open = new Promise<void>((r) => (release = r));
    for (let i = 0; i < 2; i++) {
      const d = new NodeDevice(await connect(server.url), `steady-device-${i}`, i * 300, 80);
      d.gate = { fromRound: 1, open }; // they answer only once the dropout has been seen
      await d.join();
      devices.push(d);
    }
    const silent = await connect(server.url);
    await hello(silent, 'silent-device-1'); // joins, never answers a round
    const dropper = await connect(server.url);
    await hello(dropper, 'dropping-device-1');
    dropper.once('round:start', () => dropper.disconnect()); // leaves mid-round
    const res = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: admin, body: JSON.stringify({ rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 2, roundTimeoutMs: 15_000 }) });
    const { id } = (await res.json()) as { id: number };
    await until(() => server!.app.federation.status().round?.dropped === 1 || undefined, 15_000, 'the dropout');
    // The device comes back with the same id while round 1 goes on; it can be selected again in round 2.
    const back = await connect(server.url);
    const reselected = new Promise<number>((resolve) => back.once('round:start', (m) => resolve(m.round)));
    await hello(back, 'dropping-device-1');
    release();
    await until(() => server!.store.listRounds(id).length === 1 || undefined, 30_000, 'round 1');
    const [first] = server.store.listRounds(id);
    expect(first).toMatchObject({ status: 'completed', participants: 4, completed: 2, dropped: 1 });
    expect(await reselected).toBe(2);
    const run = await until(() => {
      const r = server!.store.getRun(id);
      return r?.status !== 'running' ? r : undefined;
    }, 30_000, 'the run to finish');
    expect(run.status).toBe('done');
    expect(server.store.listRounds(id)[1]).toMatchObject({ status: 'completed', participants: 4, completed: 2 });
    silent.disconnect();
    back.disconnect();
  });

  it('never shows a run\'s join token', async () => {
    server = await startServer();
    const res = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: admin, body: JSON.stringify({ joinToken: 'very-secret-token' }) });
    expect(res.status).toBe(201);
    const texts = [await res.text(), await (await fetch(`${server.url}/api/runs`)).text(), await (await fetch(`${server.url}/api/runs/1`)).text(), await (await fetch(`${server.url}/api/status`)).text()];
    for (const t of texts) expect(t).not.toContain('very-secret-token');
    expect(texts[1]).toContain('(set)');
    expect(server.store.getRun(1)!.config.joinToken).toBe('very-secret-token');
  });
});

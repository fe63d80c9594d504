import * as tf from '@tensorflow/tfjs';
import { io } from 'socket.io-client';
import { afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { startWorkPool } from '../server/work-pool.ts';
import type { AdminSnapshot, FederationEvent, RoundRecord } from '../shared/api.ts';
import { fedAvg } from '../shared/fedavg.ts';
import type { AdminServerToClientEvents, RoundStart } from '../shared/protocol.ts';
import { decodeWeights, encodeWeights } from '../shared/weights.ts';
import { ADMIN_TOKEN, adminHeaders, connect, gate, join, launch, runEnded, startServer, testDevice, until, useWasm, type TestDevice, type TestServer, type TestSocket } from './support/server.ts';

describe('federation over real sockets', () => {
  let server: TestServer | undefined;
  const devices: TestDevice[] = [];
  const sockets: TestSocket[] = [];
  beforeAll(useWasm);
  afterEach(async () => {
    await Promise.all(devices.splice(0).map((d) => d.dispose()));
    for (const s of sockets.splice(0)) s.disconnect();
    await server?.close();
    server = undefined;
  });
  const device = async (client: number, o: Parameters<typeof testDevice>[2]) => {
    const d = await testDevice(server!.url, client, o);
    devices.push(d);
    await d.join();
    return d;
  };
  const socket = async () => {
    const s = await connect(server!.url);
    sockets.push(s);
    return s;
  };

  it('runs FedAvg rounds with the browser device client, stores each version and serves it as a TF.js model', async () => {
    // the server's own work threads: each socket payload validated and summed there without a copy, round 2's deltas encoded there
    const work = await startWorkPool(2);
    onTestFinished(() => work.close());
    let merged = 0;
    const take = work.sums.take;
    work.sums.take = async (key, size) => {
      const parts = await take(key, size);
      merged += parts.reduce((n, p) => n + p.updates, 0);
      return parts;
    };
    server = await startServer({ validate: work.validate, encodeDelta: work.encodeDelta, sums: work.sums });
    const trio = [await device(0, { examples: 60 }), await device(1, { examples: 100 }), await device(2, { examples: 140 })];
    const id = await launch(server, { rounds: 2, clientsPerRound: 3, minUpdates: 3, batchSize: 10, roundTimeoutMs: 30_000 });
    const run = await runEnded(server, id);
    expect(run.status, run.reason ?? '').toBe('done');

    const rounds = server.db.listRounds(id);
    expect(rounds.map((r) => [r.round, r.participants, r.completed, r.dropped])).toEqual([[1, 3, 3, 0], [2, 3, 3, 0]]);
    expect(merged).toBe(6); // every counted update was summed in the threads
    const full = server.db.getModelWeights(1)!.byteLength;
    expect(rounds[0]!.bytesDown).toBe(3 * full);
    expect(rounds[1]!.bytesDown).toBeLessThan(3 * full); // each device holds round 1's model: deltas
    for (const r of rounds) {
      expect(r.testAccuracy).toBeGreaterThanOrEqual(0);
      expect(r.testLoss).toBeGreaterThan(0);
      expect(r.bytesUp).toBe(3 * full);
      expect(r.devices.map((d) => d.weight!).sort((a, b) => a - b)).toEqual([60, 100, 140]);
    }
    // Which device sent what and scored how is for admins; anyone sees the rounds' counts and aggregates.
    const seen = async (headers?: Record<string, string>) => (await (await fetch(`${server!.url}/api/runs/${id}/rounds`, headers ? { headers } : {})).json()) as RoundRecord[];
    const [open, withToken] = [await seen(), await seen(adminHeaders)];
    expect(withToken.map((r) => r.devices.length)).toEqual([3, 3]);
    expect(open.map((r) => [r.completed, r.devices.length, r.testAccuracy])).toEqual(rounds.map((r) => [3, 0, r.testAccuracy]));
    for (const d of trio) expect(JSON.stringify(open)).not.toContain(d.identity.deviceId);

    // The stored round-1 model is exactly w0 + Σ nΔ / Σ n of what the devices sent.
    const w0 = decodeWeights(server.db.getModelWeights(1)!);
    const w1 = decodeWeights(server.db.getModelWeights(rounds[0]!.modelVersion!)!);
    const expected = fedAvg(w0.values, trio.map((d) => d.sent.find((x) => x.round === 1)!));
    let worst = 0;
    for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(expected[i]! - w1.values[i]!));
    expect(worst).toBeLessThan(1e-6);

    // The latest version loads with tf.loadLayersModel and predicts with its weights.
    const model = await tf.loadLayersModel(`${server.url}/api/models/latest/model.json`);
    expect(model.countParams()).toBe(5258);
    const loaded = model.getWeights().map((w) => w.dataSync());
    const latest = decodeWeights(server.db.getModelWeights(rounds[1]!.modelVersion!)!);
    expect(Array.from(loaded[0]!.slice(0, 5))).toEqual(Array.from(latest.values.slice(0, 5)));
    model.dispose();
  });

  it('closes every round at its deadline when a selected device goes silent after a quorum round', async () => {
    // The hang seen against the real server: A answers every round; B answers round 1, then stays connected and silent.
    server = await startServer({ evalLimit: 200 });
    await device(0, { examples: 60 });
    const silentLater = await device(1, { examples: 60, beforeSubmit: async (s, r) => (r.round === 1 ? s : undefined) });
    const t0 = Date.now();
    const id = await launch(server, { rounds: 3, clientsPerRound: 2, minUpdates: 1, overSelect: 1, roundTimeoutMs: 4_000 });
    const run = await runEnded(server, id, 60_000);
    expect(run.status, run.reason ?? '').toBe('done');
    const rounds = server.db.listRounds(id);
    expect(rounds.map((r) => [r.round, r.status, r.completed, r.participants])).toEqual([[1, 'completed', 2, 2], [2, 'completed', 1, 2], [3, 'completed', 1, 2]]);
    for (const r of rounds.slice(1)) {
      expect(r.reason).toContain('closed at the deadline');
      expect(r.durationMs).toBeGreaterThanOrEqual(4_000);
      expect(r.durationMs).toBeLessThan(15_000);
    }
    expect(Date.now() - t0).toBeLessThan(45_000);
    expect(silentLater.client.snapshot.history.map((h) => h.outcome)).toEqual(['counted', 'not sent', 'not sent']);
  }, 90_000);

  it('rejects bad messages and bad updates with a reason and leaves the model untouched', async () => {
    server = await startServer();
    const held = gate();
    const honest = await device(0, { examples: 50, beforeSubmit: held.beforeSubmit });
    const evil = await socket();
    // Before hello: refused.
    const early = await evil.emitWithAck('update:submit', { runId: 1, round: 1, attempt: 1, numExamples: 5, delta: new Uint8Array(4), metrics: {} } as never);
    expect(early).toMatchObject({ ok: false, error: { code: 'NOT_JOINED' } });
    // Malformed hello.
    const badHello = await evil.emitWithAck('device:hello', { deviceId: 'x', backend: 'quantum' } as never);
    expect(badHello.ok).toBe(false);
    expect(!badHello.ok && badHello.error.code).toBe('BAD_MESSAGE');
    expect(!badHello.ok && badHello.error.message).toContain('deviceId');
    await join(evil);

    const started = new Promise<RoundStart>((resolve) => evil.once('round:start', (m) => resolve(m)));
    const runId = await launch(server, { rounds: 1, clientsPerRound: 2, minUpdates: 1, roundTimeoutMs: 20_000, selectionTimeoutMs: 0 });
    const round = await started;
    const global = decodeWeights(new Uint8Array(round.weights));
    const submit = (delta: Uint8Array, extra: Record<string, unknown> = {}) =>
      evil.emitWithAck('update:submit', { runId: round.runId, round: round.round, attempt: round.attempt, numExamples: 10, delta, metrics: { accuracyBefore: 0, lossBefore: 1, accuracyAfter: 0, lossAfter: 1, downloadMs: 0, evaluateMs: 0, trainMs: 0 }, ...extra } as never);

    // Refused by the schema, before the round sees them: the device may still answer.
    expect(await submit(encodeWeights({ specs: global.specs, values: new Float32Array(global.values.length) }), { numExamples: -5 })).toMatchObject({ ok: false, error: { code: 'BAD_MESSAGE', message: expect.stringContaining('numExamples') } });
    expect(await submit(encodeWeights({ specs: global.specs, values: new Float32Array(global.values.length) }), { metrics: { accuracyBefore: 2 } })).toMatchObject({ ok: false, error: { code: 'BAD_MESSAGE' } });
    expect(await submit(encodeWeights({ specs: global.specs, values: new Float32Array(global.values.length) }), { round: 99 })).toMatchObject({ ok: false, error: { code: 'WRONG_ROUND' } });
    // Refused by the decoder: the selected device has answered, with a bad update.
    const nan = global.values.slice();
    nan[7] = Number.NaN;
    expect(await submit(encodeWeights({ specs: global.specs, values: nan }))).toMatchObject({ ok: false, error: { code: 'BAD_WEIGHTS', message: expect.stringContaining('value 7 is not finite') } });
    const wrongShape = encodeWeights({ specs: [{ name: 'conv1/kernel', shape: [2] }], values: new Float32Array(2) });
    expect(await submit(wrongShape)).toMatchObject({ ok: false, error: { code: 'DUPLICATE', message: expect.stringContaining('already answered') } });
    const errors: string[] = [];
    evil.on('server:error', (e) => errors.push(e.code));
    evil.emit('device:state', { state: 'dancing' } as never);
    await until(() => errors.length > 0 || undefined, 5_000, 'a server:error');
    expect(errors).toEqual(['BAD_MESSAGE']);
    expect(server.app.federation.counters.rejectedUpdates).toBeGreaterThanOrEqual(3);

    // Nothing was taken from the hostile device: the round closes on the honest update alone, as soon as it arrives.
    held.open();
    const done = await runEnded(server, runId, 30_000);
    expect(done.status).toBe('done');
    const [rec] = server.db.listRounds(runId);
    expect(rec).toMatchObject({ completed: 1, participants: 2, dropped: 0, reason: 'closed when every selected device had answered (1 updates)' });
    const w1 = decodeWeights(server.db.getModelWeights(rec!.modelVersion!)!);
    const expected = fedAvg(global.values, [honest.sent[0]!]);
    expect(Array.from(w1.values.slice(0, 50))).toEqual(Array.from(expected.slice(0, 50)));
  });

  it('drops a connection that sends more than the payload limit and stays up', async () => {
    server = await startServer({ maxPayloadBytes: 64 * 1024 });
    const s = await socket();
    await join(s);
    const closed = new Promise<string>((resolve) => s.once('disconnect', (reason) => resolve(reason)));
    s.emit('update:submit', { runId: 1, round: 1, attempt: 1, numExamples: 1, delta: new Uint8Array(256 * 1024), metrics: {} } as never, () => undefined);
    expect(await closed).toBe('transport close');
    expect((await fetch(`${server.url}/api/health`)).status).toBe(200);
    await until(() => server!.app.federation.listDevices().length === 0 || undefined, 5_000, 'the device to leave');
  });

  it('answers the HTTP API with clear errors, and shows device details to admins only', async () => {
    server = await startServer();
    expect((await fetch(`${server.url}/api/runs`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status).toBe(401);
    const bad = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: adminHeaders, body: JSON.stringify({ model: 'resnet', batchSize: 0 }) });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: string; issues: { field: string }[] };
    expect(body.issues.map((i) => i.field).sort()).toEqual(['batchSize', 'model']);
    const junk = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: adminHeaders, body: '{not json' });
    expect(junk.status).toBe(400);
    expect(((await junk.json()) as { error: string }).error).toBe('request body is not valid JSON');
    expect((await fetch(`${server.url}/api/runs`, { method: 'POST', headers: adminHeaders, body: JSON.stringify({ minUpdates: 5, clientsPerRound: 2 }) })).status).toBe(400);
    expect((await fetch(`${server.url}/api/runs`, { method: 'POST', headers: adminHeaders, body: JSON.stringify({ extra: 1 }) })).status).toBe(400);
    const noop = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: adminHeaders, body: JSON.stringify({ aggregation: 'trimmed-mean', clientsPerRound: 10, minUpdates: 4 }) });
    expect(noop.status).toBe(400);
    expect(((await noop.json()) as { issues: { field: string }[] }).issues).toEqual([{ field: 'trimFraction', message: expect.stringContaining('trims nothing') }]);
    expect((await fetch(`${server.url}/api/runs/42/rounds`)).status).toBe(404);
    expect((await fetch(`${server.url}/api/models/9/model.json`)).status).toBe(404);
    expect((await fetch(`${server.url}/api/data/slice?client=5&clients=4`)).status).toBe(400);

    const s = await socket();
    const identity = await join(s);
    const status = (await (await fetch(`${server.url}/api/status`)).json()) as Record<string, unknown>;
    expect(status).toMatchObject({ phase: 'idle', devices: 1, modelVersion: null });
    expect(JSON.stringify(status)).not.toContain(identity.deviceId);
    expect((await fetch(`${server.url}/api/devices`)).status).toBe(401);
    const listed = (await (await fetch(`${server.url}/api/devices`, { headers: adminHeaders })).json()) as { id: string; labelHistogram: number[] }[];
    expect(listed).toEqual([expect.objectContaining({ id: identity.deviceId, labelHistogram: expect.any(Array) })]);

    const first = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: adminHeaders, body: '{}' });
    expect(first.status).toBe(201);
    expect((await fetch(`${server.url}/api/runs`, { method: 'POST', headers: adminHeaders, body: '{}' })).status).toBe(409);
    expect((await fetch(`${server.url}/api/runs/current/stop`, { method: 'POST', headers: adminHeaders })).status).toBe(200);
  });

  it('the admin feed needs the token and pushes snapshots and events live', async () => {
    server = await startServer();
    const refused = io(`${server.url}/admin`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: 'wrong' } });
    const error = await new Promise<Error>((resolve) => refused.once('connect_error', resolve));
    expect(error.message).toBe('unauthorized: the admin token is required');
    refused.close();

    const feed: import('socket.io-client').Socket<AdminServerToClientEvents> = io(`${server.url}/admin`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: ADMIN_TOKEN } });
    const snapshots: AdminSnapshot[] = [];
    const events: FederationEvent[] = [];
    feed.on('admin:snapshot', (s) => snapshots.push(s));
    feed.on('admin:event', (e) => events.push(e));
    await until(() => snapshots.length > 0 || undefined, 5_000, 'the first snapshot');
    const s = await socket();
    const { deviceId } = await join(s);
    await until(() => events.find((e) => e.kind === 'device:joined'), 5_000, 'the join event');
    await until(() => snapshots.at(-1)?.devices.some((d) => d.id === deviceId && d.connected) || undefined, 5_000, 'a snapshot with the device');
    s.disconnect();
    await until(() => snapshots.at(-1)?.devices.some((d) => d.id === deviceId && !d.connected) || undefined, 5_000, 'the device shown as disconnected');
    expect(events.map((e) => e.kind)).toEqual(['device:joined', 'device:left']);
    feed.close();
  });

  it('completes rounds through a dropout and a silent straggler, and selects a device again when it comes back', async () => {
    server = await startServer();
    const held = gate();
    for (let i = 0; i < 2; i++) await device(i, { examples: 80, beforeSubmit: held.beforeSubmit }); // they answer once the dropout has been seen
    const silent = await socket();
    await join(silent); // joins, never answers a round
    const dropper = await socket();
    const dropperIdentity = await join(dropper);
    dropper.once('round:start', () => dropper.disconnect()); // leaves mid-round
    const id = await launch(server, { rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 2, roundTimeoutMs: 15_000 });
    await until(() => server!.app.federation.status().round?.dropped === 1 || undefined, 15_000, 'the dropout');
    // The device comes back with the same identity while round 1 goes on; it can be selected again in round 2.
    const back = await socket();
    const reselected = new Promise<number>((resolve) => back.once('round:start', (m) => resolve(m.round)));
    await join(back, 100, dropperIdentity);
    held.open();
    await until(() => server!.db.listRounds(id).length === 1 || undefined, 30_000, 'round 1');
    expect(server.db.listRounds(id)[0]).toMatchObject({ status: 'completed', participants: 4, completed: 2, dropped: 1 });
    expect(await reselected).toBe(2);
    const run = await runEnded(server, id);
    expect(run.status).toBe('done');
    expect(server.db.listRounds(id)[1]).toMatchObject({ status: 'completed', participants: 4, completed: 2 });
  });

  it('never shows a run\'s join token', async () => {
    server = await startServer();
    const res = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: adminHeaders, body: JSON.stringify({ joinToken: 'very-secret-token' }) });
    expect(res.status).toBe(201);
    const texts = [await res.text(), await (await fetch(`${server.url}/api/runs`)).text(), await (await fetch(`${server.url}/api/runs/1`)).text(), await (await fetch(`${server.url}/api/status`)).text()];
    for (const t of texts) expect(t).not.toContain('very-secret-token');
    expect(texts[1]).toContain('(set)');
    expect(server.db.getRun(1)!.config.joinToken).toBe('very-secret-token');
  });
});

/**
 * 10,000+ malformed and hostile messages of every event type, sent while a round is open. Then,
 * bit for bit, the stored models and history are what they were, the server is up, and the honest
 * devices still complete the round.
 */
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createRng } from '../shared/rng.ts';
import { decodeWeights, encodeWeights } from '../shared/weights.ts';
import { ADMIN_TOKEN, connect, hello, NodeDevice, startServer, until, useWasm, type TestServer, type TestSocket } from './support/server.ts';

function fingerprint(server: TestServer, runId: number): string {
  const h = createHash('sha256');
  for (const m of server.store.listModels()) {
    h.update(JSON.stringify(m));
    h.update(server.store.getModelWeights(m.version)!);
  }
  h.update(JSON.stringify(server.store.listRounds(runId)));
  h.update(JSON.stringify(server.store.listRuns()));
  return h.digest('hex');
}

describe('fuzzing every event type', () => {
  beforeAll(useWasm);

  it('rejects 10,000 hostile messages and changes nothing stored', async () => {
    // A high rate limit, so the messages reach validation (the limiter has its own test).
    const server = await startServer({ evalLimit: 500, rateLimit: { perSecond: 1e6, burst: 1e6 } });
    const honest: NodeDevice[] = [];
    for (let i = 0; i < 2; i++) {
      const d = new NodeDevice(await connect(server.url), `honest-fuzz-${i}`, i * 300, 100);
      await d.join();
      honest.push(d);
    }
    let release!: () => void;
    const open = new Promise<void>((r) => (release = r));
    for (const d of honest) d.gate = { fromRound: 2, open };
    const res = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 1, roundTimeoutMs: 120_000 }) });
    const { id: runId } = (await res.json()) as { id: number };
    await until(() => server.store.listRounds(runId).length === 1 || undefined, 60_000, 'round 1');
    await until(() => (server.app.federation.status().phase === 'training' && server.app.federation.status().round?.round === 2) || undefined, 30_000, 'round 2 to open');
    const before = fingerprint(server, runId);
    const round = server.app.federation.status();
    const global = decodeWeights(server.store.getModelWeights(round.modelVersion!)!);

    // The hostile side: one socket that never says hello, two that do (after selection, so not selected).
    const anonymous = await connect(server.url);
    const joined: TestSocket[] = [];
    for (let i = 0; i < 2; i++) {
      const s = await connect(server.url);
      await hello(s, `hostile-device-${i}`);
      joined.push(s);
    }
    const rng = createRng(99);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)] as T;
    const junk = (): unknown => pick([null, undefined, 0, -1, 1e308, 'x'.repeat(1 + Math.floor(rng() * 5000)), [], [1, 2, 3], {}, { a: { b: { c: [] } } }, true, new Uint8Array(Math.floor(rng() * 64)), { deviceId: 'x' }, Number.NaN]);
    const nan = global.values.slice();
    nan[Math.floor(rng() * nan.length)] = Number.NaN;
    const valid = { specs: global.specs, values: global.values.map(() => 0.001) };
    const deltas = [
      encodeWeights({ specs: global.specs, values: nan }),
      encodeWeights({ specs: global.specs, values: global.values.map(() => Number.POSITIVE_INFINITY) }),
      encodeWeights({ specs: [{ name: 'conv1/kernel', shape: [3] }], values: new Float32Array(3) }),
      encodeWeights(valid).subarray(0, 1000),
      new Uint8Array(1000).fill(7),
      encodeWeights(valid),
    ];
    const metrics = { accuracyBefore: 0.5, lossBefore: 1, accuracyAfter: 0.6, lossAfter: 0.9, downloadMs: 1, evaluateMs: 1, trainMs: 1 };
    const update = () => {
      const base = { runId: runId, round: 2, attempt: 1, numExamples: 100, delta: pick(deltas), metrics };
      switch (Math.floor(rng() * 8)) {
        case 0: return { ...base, round: pick([1, 3, 999, -1, 0.5]) };
        case 1: return { ...base, runId: pick([0, 7, 12345]) };
        case 2: return { ...base, numExamples: pick([0, -5, 1e9, 0.5, Number.NaN]) };
        case 3: return { ...base, metrics: { ...metrics, accuracyAfter: pick([2, -1, 'high']) } };
        case 4: return { ...base, delta: junk() };
        case 5: return { ...base, extra: 'field' };
        case 6: return junk();
        default: return base; // well-formed, but from a device that was not selected
      }
    };
    const sockets = [anonymous, ...joined];
    let sent = 0;
    const acks: Promise<unknown>[] = [];
    for (let i = 0; i < 10_500; i++) {
      const s = pick(sockets);
      const kind = Math.floor(rng() * 5);
      const withAck = rng() < 0.7;
      const emit = (event: string, payload: unknown) => {
        const untyped = s as unknown as { emit: (e: string, ...a: unknown[]) => void; timeout: (ms: number) => { emitWithAck: (e: string, ...a: unknown[]) => Promise<unknown> } };
        if (withAck) acks.push(untyped.timeout(30_000).emitWithAck(event, payload));
        else untyped.emit(event, payload);
      };
      if (kind === 0) emit('device:hello', pick([junk(), { deviceId: 'short', backend: 'wasm' }, { deviceId: 'ok-device-123', backend: 'tpu', backendReason: '', examples: 1, heldOut: 0, labelHistogram: [] }]));
      else if (kind === 1) emit('device:state', pick([junk(), { state: 'training', progress: 7 }, { state: 'hacking' }]));
      else if (kind === 2) emit('update:submit', update());
      else if (kind === 3) emit(pick(['admin:stop', 'run:start', 'foo', 'update:submit:extra']), junk());
      else emit('update:submit', update());
      sent++;
    }
    const answers = (await Promise.all(acks)) as { ok: boolean; error?: { code: string } }[];
    expect(sent).toBeGreaterThanOrEqual(10_000);
    expect(answers.every((a) => a.ok === false && typeof a.error?.code === 'string')).toBe(true);
    expect((await fetch(`${server.url}/api/health`)).status).toBe(200);

    // Nothing stored changed, and the round is still waiting for its two honest updates.
    expect(fingerprint(server, runId)).toBe(before);
    expect(server.app.federation.status().round).toMatchObject({ round: 2, accepted: 0 });
    const counted = server.app.federation.counters;
    expect(counted.badMessages + counted.rejectedUpdates).toBeGreaterThanOrEqual(acks.length);

    release();
    const run = await until(() => {
      const r = server.store.getRun(runId);
      return r?.status !== 'running' ? r : undefined;
    }, 60_000, 'the run to finish');
    expect(run.status).toBe('done');
    expect(server.store.listRounds(runId).map((r) => [r.round, r.completed])).toEqual([[1, 2], [2, 2]]);
    for (const s of sockets) s.disconnect();
    for (const d of honest) d.dispose();
    await server.close();
  }, 120_000);

  it('refuses a flood past the per-connection rate limit, and drops a connection that keeps flooding', async () => {
    const server = await startServer({ rateLimit: { perSecond: 10, burst: 20 } });
    const s = await connect(server.url);
    const answers = await Promise.all(Array.from({ length: 60 }, () => (s as unknown as { timeout: (ms: number) => { emitWithAck: (e: string, p: unknown) => Promise<unknown> } }).timeout(10_000).emitWithAck('device:state', { state: 'idle' })).map((p) => p.catch(() => ({ ok: 'no ack' }))));
    const limited = answers.filter((a) => (a as { error?: { code: string } }).error?.code === 'RATE_LIMITED');
    expect(limited.length).toBeGreaterThanOrEqual(35);
    const closed = new Promise<string>((r) => s.once('disconnect', r));
    for (let i = 0; i < 1100; i++) s.emit('device:state', { state: 'idle' });
    expect(await closed).toBe('io server disconnect');
    await server.close();
  }, 60_000);
});

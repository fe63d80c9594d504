/**
 * Hostile input at the socket, two ways. First, 10,000+ malformed messages of every event type from
 * devices that were not selected (and one that never said hello), while a round is open: nothing
 * stored changes. Then hostile but well-formed updates of every codec from devices that WERE
 * selected — wrong shapes, NaN/Inf, huge values, truncated, resealed corruptions, deflate bombs —
 * each reaching the decoder (a spy on the validator shows it ran for every one), each refused,
 * and the round's model is exactly what the one honest update makes of it.
 */
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { inlineValidator, type UpdateValidator } from '../server/federation.ts';
import { decodeUpdate, encodeUpdate, type CodecConfig } from '../shared/codec.ts';
import type { RoundStart } from '../shared/protocol.ts';
import { createRng } from '../shared/rng.ts';
import { runConfigSchema } from '../shared/schemas.ts';
import { decodeWeights, encodeWeights, WeightsFormatError } from '../shared/weights.ts';
import { hostilePayloads } from './support/hostile.ts';
import { connect, gate, join, launch, runEnded, startServer, testDevice, until, useWasm, type TestServer, type TestSocket } from './support/server.ts';

function fingerprint(server: TestServer, runId: number): string {
  const h = createHash('sha256');
  for (const m of server.db.listModels()) {
    h.update(JSON.stringify(m));
    h.update(server.db.getModelWeights(m.version)!);
  }
  h.update(JSON.stringify(server.db.listRounds(runId)));
  h.update(JSON.stringify(server.db.listRuns()));
  return h.digest('hex');
}

const METRICS = { accuracyBefore: 0.5, lossBefore: 1, accuracyAfter: 0.6, lossAfter: 0.9, downloadMs: 1, evaluateMs: 1, trainMs: 1 };

/** Wraps the real validator, counting its runs and keeping the reason of each refusal. */
function spyValidator(): { validate: UpdateValidator; runs: number; refusals: string[] } {
  const spy = {
    runs: 0,
    refusals: [] as string[],
    validate: (async (payload, specs, config) => {
      spy.runs++;
      try {
        return await inlineValidator(payload, specs, config);
      } catch (err) {
        if (err instanceof WeightsFormatError) spy.refusals.push(err.message);
        throw err;
      }
    }) as UpdateValidator,
  };
  return spy;
}

describe('fuzzing the sockets', () => {
  beforeAll(useWasm);

  it('rejects 10,000 hostile messages from devices that were not selected, and changes nothing stored', async () => {
    // A high rate limit, so the messages reach validation (the limiter has its own test).
    const server = await startServer({ evalLimit: 500, rateLimit: { perSecond: 1e6, burst: 1e6 } });
    const held = gate();
    const honest = [await testDevice(server.url, 0, { examples: 100, beforeSubmit: async (s, r) => (r.round >= 2 ? held.beforeSubmit(s, r) : s) }), await testDevice(server.url, 1, { examples: 100, beforeSubmit: async (s, r) => (r.round >= 2 ? held.beforeSubmit(s, r) : s) })];
    for (const d of honest) await d.join();
    const runId = await launch(server, { rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 1, roundTimeoutMs: 120_000 });
    // round 1 recorded with its metrics (its model is evaluated while round 2 opens): nothing legitimate writes after this
    await until(() => (server.db.listRounds(runId).length === 1 && !server.db.listRounds(runId)[0]!.evaluationPending) || undefined, 60_000, 'round 1 and its evaluation');
    await until(() => (server.app.federation.status().phase === 'training' && server.app.federation.status().round?.round === 2) || undefined, 30_000, 'round 2 to open');
    await until(() => server.app.federation.status().round?.validating === 0 || undefined, 5_000, 'nothing in validation');
    const before = fingerprint(server, runId);
    const global = decodeWeights(server.db.getModelWeights(server.app.federation.status().modelVersion!)!);

    // The hostile side: one socket that never says hello, two that do (after selection, so not selected).
    const anonymous = await connect(server.url);
    const joined: TestSocket[] = [];
    for (let i = 0; i < 2; i++) {
      const s = await connect(server.url);
      await join(s);
      joined.push(s);
    }
    const rng = createRng(99);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)] as T;
    const junk = (): unknown => pick([null, undefined, 0, -1, 1e308, 'x'.repeat(1 + Math.floor(rng() * 5000)), [], [1, 2, 3], {}, { a: { b: { c: [] } } }, true, new Uint8Array(Math.floor(rng() * 64)), { deviceId: 'x' }, Number.NaN]);
    const deltas = hostilePayloads(global.specs, { codec: 'float32', topkFraction: 0.01, quantBlock: 256 }).map((h) => h.payload);
    const update = () => {
      const base = { runId, round: 2, attempt: 1, numExamples: 100, delta: pick(deltas), metrics: METRICS };
      switch (Math.floor(rng() * 8)) {
        case 0: return { ...base, round: pick([1, 3, 999, -1, 0.5]) };
        case 1: return { ...base, runId: pick([0, 7, 12345]) };
        case 2: return { ...base, numExamples: pick([0, -5, 1e9, 0.5, Number.NaN]) };
        case 3: return { ...base, metrics: { ...METRICS, accuracyAfter: pick([2, -1, 'high']) } };
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
      const kind = Math.floor(rng() * 6);
      const withAck = rng() < 0.7;
      const emit = (event: string, payload: unknown) => {
        const untyped = s as unknown as { emit: (e: string, ...a: unknown[]) => void; timeout: (ms: number) => { emitWithAck: (e: string, ...a: unknown[]) => Promise<unknown> } };
        if (withAck) acks.push(untyped.timeout(30_000).emitWithAck(event, payload));
        else untyped.emit(event, payload);
      };
      if (kind === 0) emit('device:hello', pick([junk(), { deviceId: 'short', backend: 'wasm' }, { deviceId: 'ok-device-123', backend: 'tpu', backendReason: '', examples: 1, heldOut: 0, labelHistogram: [] }, { deviceId: honest[0]!.identity.deviceId, backend: 'wasm', backendReason: '', examples: 10, heldOut: 0, labelHistogram: [10, 0, 0, 0, 0, 0, 0, 0, 0, 0], publicKey: honest[0]!.identity.publicKey, signature: new Uint8Array(64) }]));
      else if (kind === 1) emit('device:state', pick([junk(), { state: 'training', progress: 7 }, { state: 'hacking' }]));
      else if (kind === 2 || kind === 5) emit('update:submit', update());
      else if (kind === 3) emit(pick(['admin:stop', 'run:start', 'foo', 'update:submit:extra']), junk());
      else emit('device:challenge', junk());
      sent++;
    }
    const answers = (await Promise.all(acks)) as { ok: boolean; error?: { code: string } }[];
    expect(sent).toBeGreaterThanOrEqual(10_000);
    // Only a challenge is ever granted; everything else is refused with a code.
    expect(answers.every((a) => (a.ok === false && typeof a.error?.code === 'string') || (a.ok === true && 'challenge' in ((a as { data?: object }).data ?? {})))).toBe(true);
    expect((await fetch(`${server.url}/api/health`)).status).toBe(200);

    // Nothing stored changed, the honest devices kept their connections, and the round still waits for them.
    expect(fingerprint(server, runId)).toBe(before);
    expect(server.app.federation.status().round).toMatchObject({ round: 2, accepted: 0, refused: 0 });
    expect(honest.every((d) => d.client.snapshot.connection === 'connected')).toBe(true);
    const counted = server.app.federation.counters;
    expect(counted.badMessages + counted.rejectedUpdates).toBeGreaterThanOrEqual(acks.length - answers.filter((a) => a.ok).length);

    held.open();
    const run = await runEnded(server, runId);
    expect(run.status).toBe('done');
    expect(server.db.listRounds(runId).map((r) => [r.round, r.completed])).toEqual([[1, 2], [2, 2]]);
    for (const s of sockets) s.disconnect();
    await Promise.all(honest.map((d) => d.dispose()));
    await server.close();
  }, 120_000);

  it('refuses hostile updates of every codec from selected devices, after the decoder has seen each of them', async () => {
    const spy = spyValidator();
    const server = await startServer({ evalLimit: 100, validate: spy.validate });
    const codecs: CodecConfig[] = ['float32', 'float16', 'q8', 'q4+deflate', 'topk+q8+deflate', 'rand+q2+deflate', 'float32+deflate'].map((codec) => ({ codec, topkFraction: codec.startsWith('topk') ? 0.05 : 0.01, randFraction: 0.25, quantBlock: 256 }));
    const most = Math.max(...codecs.map((c) => hostilePayloads([{ name: 'x', shape: [8] }], c).length));
    const hostile: TestSocket[] = [];
    for (let i = 0; i < most; i++) {
      const s = await connect(server.url);
      await join(s, 100);
      hostile.push(s);
    }
    const honest = await connect(server.url);
    await join(honest, 100);
    try {
      for (const codec of codecs) {
        const starts = new Map<TestSocket, Promise<RoundStart>>([honest, ...hostile].map((s) => [s, new Promise<RoundStart>((r) => s.once('round:start', r))]));
        const runId = await launch(server, { rounds: 1, clientsPerRound: hostile.length + 1, minUpdates: 1, overSelect: 1, selectionTimeoutMs: 0, roundTimeoutMs: 60_000, updateCodec: codec.codec, ...(codec.codec.startsWith('topk') ? { topkFraction: codec.topkFraction } : {}) });
        const round = await starts.get(honest)!;
        const w0 = decodeWeights(new Uint8Array(round.weights));
        const payloads = hostilePayloads(w0.specs, codec);
        const runsBefore = spy.runs;
        const refusalsBefore = spy.refusals.length;
        const submit = (s: TestSocket, delta: Uint8Array<ArrayBuffer>, numExamples = 100) => s.timeout(30_000).emitWithAck('update:submit', { runId, round: 1, attempt: 1, numExamples, delta, metrics: METRICS });
        // Every hostile device answers its round with one hostile payload (the extra ones lie about their counts).
        const answers = await Promise.all(
          hostile.map(async (s, i) => {
            await starts.get(s);
            const h = payloads[i];
            return h ? { name: h.name, answer: await submit(s, h.payload) } : { name: 'claims 60000 examples', answer: await submit(s, encodeWeights({ specs: w0.specs, values: new Float32Array(w0.values.length) }), 60_000) };
          }),
        );
        for (const { name, answer } of answers) {
          const code = name.startsWith('claims') ? 'TOO_MANY_EXAMPLES' : 'BAD_WEIGHTS';
          expect(answer, `${codec.codec}: ${name}`).toMatchObject({ ok: false, error: { code } });
        }
        // The decoder ran for every hostile payload (count lies are refused before decoding), and refused each.
        expect(spy.runs - runsBefore, codec.codec).toBe(payloads.length);
        expect(spy.refusals.length - refusalsBefore, codec.codec).toBe(payloads.length);
        expect(spy.refusals.slice(refusalsBefore).every((m) => m.startsWith('update:') || m.startsWith('weights:')), spy.refusals.slice(refusalsBefore).join('\n')).toBe(true);
        // The honest update closes the round at once (everyone has answered), and is all the model takes.
        const delta = encodeUpdate({ specs: w0.specs, values: Float32Array.from({ length: w0.values.length }, (_, i) => ((i % 5) - 2) * 1e-3) }, round.plan.codec, createRng(3));
        expect(await submit(honest, delta)).toEqual({ ok: true, data: { accepted: true } });
        const run = await runEnded(server, runId);
        expect(run.status, run.reason ?? '').toBe('done');
        const [rec] = server.db.listRounds(runId);
        expect(rec).toMatchObject({ completed: 1, participants: hostile.length + 1, rejected: hostile.length, reason: 'closed when every selected device had answered (1 updates)' });
        const expected = decodeUpdate(delta, w0.specs, round.plan.codec).values;
        const w1 = decodeWeights(server.db.getModelWeights(rec!.modelVersion!)!);
        for (let i = 0; i < 200; i++) expect(w1.values[i]).toBe(Math.fround(w0.values[i]! + expected[i]!));
      }
      expect(runConfigSchema.parse({}).maxExamplesPerDevice).toBe(1000);
      expect((await fetch(`${server.url}/api/health`)).status).toBe(200);
    } finally {
      for (const s of [honest, ...hostile]) s.disconnect();
      await server.close();
    }
  }, 180_000);

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

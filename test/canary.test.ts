/**
 * Evaluation rounds and canary promotion: the test's arithmetic by hand, the device's preprocessing
 * of a drawn digit, and the whole federation with a fake clock — a run going live, a canary promoted,
 * one rolled back, a silent device, hostile reports from a device that was asked, the admin deciding.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { nonInferiority, normalQuantile, pairedCounts } from '../shared/canary.ts';
import { closing, evaluationRecord, pickDevices, refusal, type EvaluationState } from '../server/fl/evaluation.ts';
import { liveVersion } from '../server/evaluations.ts';
import { toMnist } from '../web-client/ui/draw.ts';
import { flush, Scenario } from './support/scenario.ts';
import { useWasm } from './support/server.ts';
import { evalReportSchema, type EvalReport } from '../shared/schemas.ts';

beforeAll(useWasm);

describe('the canary\'s test', () => {
  it('counts the examples each model got right that the other got wrong', () => {
    expect(pairedCounts([1, 2, 3, 4, 5], [1, 2, 0, 0, 5], [1, 0, 3, 4, 0])).toEqual({ n: 5, b: 2, c: 2 });
    expect(() => pairedCounts([1], [1, 2], [1])).toThrow(/1 labels, 2 and 1 predictions/);
  });

  it('promotes when the lower one-sided bound of the difference is above −margin (a Wald test of paired proportions)', () => {
    expect(normalQuantile(0.95)).toBeCloseTo(1.6448536, 6);
    expect(normalQuantile(0.5)).toBeCloseTo(0, 9);
    expect(normalQuantile(0.001)).toBeCloseTo(-3.0902323, 6);
    // 1,000 examples over two devices: the candidate wins 40, loses 30: d = 0.01, se = √(70 − 100/1000)/1000
    const t = nonInferiority([{ n: 600, b: 25, c: 20 }, { n: 400, b: 15, c: 10 }], 0.01, 0.05);
    const se = Math.sqrt(70 - 0.1) / 1000;
    expect(t.difference).toBeCloseTo(0.01, 12);
    expect(t.standardError).toBeCloseTo(se, 12);
    expect(t.lowerBound).toBeCloseTo(0.01 - 1.6448536 * se, 6);
    expect(t.decision).toBe('promote');
    // the candidate loses 60 and wins 30 of 1,000: d = −0.03, worse than the margin allows
    expect(nonInferiority([{ n: 1000, b: 30, c: 60 }], 0.01, 0.05).decision).toBe('roll back');
    // identical predictions: no evidence of harm, promoted; no example at all: rolled back
    expect(nonInferiority([{ n: 50, b: 0, c: 0 }], 0.01, 0.05)).toMatchObject({ difference: 0, standardError: 0, decision: 'promote' });
    expect(nonInferiority([], 0.01, 0.05).decision).toBe('roll back');
    expect(() => nonInferiority([], 1, 0.05)).toThrow(/margin/);
  });
});

describe('a drawn digit as the model saw MNIST', () => {
  it('centres the ink by its mass in 28×28, its box scaled to 20 pixels, white on black', () => {
    // a 100×100 white canvas with a black vertical bar at x 70–79, y 10–89
    const w = 100;
    const rgba = new Uint8ClampedArray(w * w * 4).fill(255);
    for (let y = 10; y < 90; y++) for (let x = 70; x < 80; x++) rgba.fill(0, (y * w + x) * 4, (y * w + x) * 4 + 3);
    const img = toMnist(rgba, w, w)!;
    let mass = 0, cx = 0, cy = 0, top = 28, bottom = -1;
    for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) {
      const v = img[y * 28 + x]!;
      if (v > 0) (top = Math.min(top, y)), (bottom = Math.max(bottom, y));
      (mass += v), (cx += x * v), (cy += y * v);
    }
    expect(Math.abs(cx / mass - 14)).toBeLessThanOrEqual(1);
    expect(Math.abs(cy / mass - 14)).toBeLessThanOrEqual(1);
    expect(bottom - top + 1).toBe(20);
    expect(Math.max(...img)).toBeLessThanOrEqual(1);
    expect(toMnist(new Uint8ClampedArray(w * w * 4).fill(255), w, w)).toBeNull();
  });
});

describe('the rules of an evaluation round', () => {
  const state = (): EvaluationState => ({ plan: { id: 3, purpose: 'canary', versions: [4, 7], selected: ['dev-a', 'dev-b'], startedAt: 0, deadline: 1000, canary: { margin: 0.01, alpha: 0.05 } }, reports: [], left: [] });
  const report = (o: Partial<EvalReport> = {}): EvalReport => ({ evalId: 3, examples: 50, results: [{ version: 4, accuracy: 0.8, loss: 0.6 }, { version: 7, accuracy: 0.9, loss: 0.4 }], paired: { b: 6, c: 1 }, ...o });

  it('picks a share of the devices, at least one, the same for the same evaluation', () => {
    const ids = Array.from({ length: 20 }, (_, i) => `device-${i}`);
    expect(pickDevices(ids, 0.1, 1)).toHaveLength(2);
    expect(pickDevices(ids, 0.1, 1)).toEqual(pickDevices([...ids].reverse(), 0.1, 1));
    expect(pickDevices(ids, 0.1, 2)).not.toEqual(pickDevices(ids, 0.1, 1));
    expect(pickDevices(ids.slice(0, 3), 0.01, 1)).toHaveLength(1);
  });

  it('the report\'s schema bounds what it may say before anything reads it', () => {
    const ok = { evalId: 3, examples: 50, results: [{ version: 4, accuracy: 0.8, loss: 0.6 }], paired: { b: 20, c: 30 } };
    expect(evalReportSchema.safeParse(ok).success).toBe(true);
    const issues = (r: unknown) => { const p = evalReportSchema.safeParse(r); return p.success ? [] : p.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`); };
    expect(issues({ ...ok, paired: { b: 30, c: 21 } })).toEqual(['paired: b + c must not exceed examples']);
    expect(issues({ ...ok, examples: 60_001 })[0]).toMatch(/^examples:/);
    expect(issues({ ...ok, results: [{ version: 4, accuracy: 1.5, loss: 0 }] })[0]).toMatch(/^results\.0\.accuracy:/);
    expect(issues({ ...ok, results: Array.from({ length: 9 }, () => ok.results[0]) })[0]).toMatch(/^results:/);
    expect(issues({ ...ok, extra: 1 })).toHaveLength(1);
  });

  it('refuses what a device that was asked cannot claim', () => {
    const s = state();
    expect(refusal(s, 'dev-a', report(), 50)).toBeUndefined();
    expect(refusal(s, 'dev-z', report(), 50)).toMatch(/was not asked/);
    expect(refusal(s, 'dev-a', report({ evalId: 2 }), 50)).toMatch(/names evaluation 2/);
    expect(refusal(s, 'dev-a', report({ examples: 51 }), 50)).toMatch(/51 examples, the device declared 50 held out/);
    expect(refusal(s, 'dev-a', report({ results: [{ version: 7, accuracy: 1, loss: 0 }, { version: 4, accuracy: 1, loss: 0 }] }), 50)).toMatch(/results for 7, 4, expected 4, 7/);
    const { paired: _paired, ...unpaired } = report();
    expect(refusal(s, 'dev-a', unpaired, 50)).toMatch(/needs the paired counts/);
    s.reports.push({ deviceId: 'dev-a', report: report() });
    expect(refusal(s, 'dev-a', report(), 50)).toMatch(/already reported/);
  });

  it('weighs accuracies by examples, and closes when all answered or at the deadline', () => {
    const s = state();
    expect(closing(s, 999)).toBeUndefined();
    expect(closing(s, 1000)).toBe('closed at the deadline with 0 of 2 reports');
    s.reports.push({ deviceId: 'dev-a', report: report() }, { deviceId: 'dev-b', report: report({ examples: 150, results: [{ version: 4, accuracy: 0.6, loss: 1 }, { version: 7, accuracy: 0.5, loss: 1.2 }], paired: { b: 3, c: 18 } }) });
    expect(closing(s, 10)).toBe('every selected device answered (2 reported)');
    const r = evaluationRecord(s, 10, 'done');
    expect(r.results[0]).toMatchObject({ version: 4, examples: 200, accuracy: (50 * 0.8 + 150 * 0.6) / 200 });
    expect(r.results[1]!.accuracy).toBeCloseTo((50 * 0.9 + 150 * 0.5) / 200, 12);
    expect(r.results[1]!.spread).toMatchObject({ devices: 2, worst10: 0.5, best10: 0.9 });
    // pooled: b = 9, c = 19 of 200: d = −0.05 → rolled back
    expect(r.canary).toMatchObject({ live: 4, candidate: 7, n: 200, difference: -0.05, outcome: 'rolled back' });
  });
});

describe('evaluation rounds and the canary, through the federation', () => {
  const runToEnd = async (s: Scenario, config: Parameters<Scenario['start']>[0]) => {
    const runId = await s.start({ rounds: 1, clientsPerRound: 2, minUpdates: 2, overSelect: 1, ...config });
    await flush();
    for (const id of s.port.starts.filter((x) => x.msg.runId === runId).map((x) => x.deviceId)) await s.submit(id);
    await flush();
    await s.federation.flushed();
    expect(s.run(runId)!.status).toBe('done');
    return s.db.listModels().filter((m) => m.runId === runId).at(-1)!.version;
  };
  const reportFor = (s: Scenario, deviceId: string, o: Partial<EvalReport> = {}) => {
    const msg = s.port.evalStarts.filter((e) => e.deviceId === deviceId).at(-1)!.msg;
    const canary = msg.purpose === 'canary';
    return s.federation.evaluationReport(deviceId, { evalId: msg.evalId, examples: 20, results: msg.models.map((m, i) => ({ version: m.version, accuracy: 0.8 + i * 0.05, loss: 0.5 })), ...(canary ? { paired: { b: 4, c: 0 } } : {}), ...o });
  };

  it('a completed run goes live; the next run\'s version is tried on a share of devices and promoted; hostile reports from asked devices are refused', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b', 'device-c', 'device-d');
    const v1 = await runToEnd(s, {});
    expect(s.federation.evaluations.current().live).toBe(v1);
    expect(await liveVersion(s.store)).toBe(v1);

    const v2 = await runToEnd(s, { initialVersion: v1, canary: { share: 0.5, margin: 0.01, alpha: 0.05, timeoutMs: 60_000 } });
    await flush();
    // the canary: [live, candidate] to half the devices; v2 is a candidate, v1 stays live meanwhile
    const asked = [...new Set(s.port.evalStarts.map((e) => e.deviceId))];
    expect(asked).toHaveLength(2);
    expect(s.port.evalStarts[0]!.msg).toMatchObject({ purpose: 'canary', models: [{ version: v1 }, { version: v2 }] });
    expect(s.federation.evaluations.current()).toMatchObject({ live: v1, candidate: { version: v2 } });
    expect(await liveVersion(s.store)).toBe(v1);
    // a training run cannot start while devices evaluate
    await expect(s.start({ rounds: 1 })).rejects.toThrow(/evaluation \d+ is under way/);

    // hostile but well-formed, from an asked device: more examples than it holds, counts beyond its examples, another round's number
    expect(reportFor(s, asked[0]!, { examples: 21 })).toMatchObject({ ok: false, error: { code: 'BAD_MESSAGE', message: expect.stringContaining('21 examples, the device declared 20 held out') } });
    expect(reportFor(s, asked[0]!, { evalId: 99 })).toMatchObject({ ok: false, error: { code: 'WRONG_ROUND' } });
    const notAsked = ['device-a', 'device-b', 'device-c', 'device-d'].find((d) => !asked.includes(d))!;
    expect(s.federation.evaluationReport(notAsked, { evalId: s.port.evalStarts[0]!.msg.evalId, examples: 20, results: [{ version: v1, accuracy: 1, loss: 0 }, { version: v2, accuracy: 0, loss: 9 }], paired: { b: 0, c: 20 } })).toMatchObject({ ok: false, error: { message: expect.stringContaining('was not asked') } });

    expect(reportFor(s, asked[0]!)).toEqual({ ok: true, data: null });
    expect(reportFor(s, asked[0]!)).toMatchObject({ ok: false, error: { code: 'DUPLICATE' } });
    expect(reportFor(s, asked[1]!)).toEqual({ ok: true, data: null });
    await s.federation.flushed();
    // b = 8, c = 0 of 40: promoted; the asked devices are told, and `latest` serves v2
    expect(s.federation.evaluations.current()).toMatchObject({ live: v2, candidate: null, last: { purpose: 'canary', reported: 2, canary: { outcome: 'promoted', n: 40, difference: 0.2 } } });
    expect(s.port.canaryEnds.map((e) => e.deviceId).sort()).toEqual([...asked].sort());
    expect(s.port.canaryEnds[0]!.msg).toMatchObject({ outcome: 'promoted', live: v2 });
    expect(await liveVersion(s.store)).toBe(v2);
    expect((await s.store.listEvaluations()).map((e) => e.canary?.outcome)).toEqual(['promoted']);
  });

  it('rolls a worse candidate back; a silent device does not hold the canary past its deadline', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b', 'device-c');
    const v1 = await runToEnd(s, {});
    const v2 = await runToEnd(s, { initialVersion: v1, canary: { share: 1, margin: 0.01, alpha: 0.05, timeoutMs: 30_000 } });
    await flush();
    const asked = [...new Set(s.port.evalStarts.map((e) => e.deviceId))];
    expect(asked).toHaveLength(3);
    expect(reportFor(s, asked[0]!, { paired: { b: 1, c: 6 } })).toMatchObject({ ok: true });
    s.federation.leave(asked[1]!);
    await s.clock.advance(29_000);
    expect(s.federation.evaluations.current().candidate).toMatchObject({ version: v2 }); // still waiting for the third
    await s.clock.advance(1_000);
    await s.federation.flushed();
    expect(s.federation.evaluations.current()).toMatchObject({ live: v1, candidate: null, last: { reason: 'closed at the deadline with 1 of 3 reports', canary: { outcome: 'rolled back', n: 20 } } });
    expect(s.clock.armed()).toEqual([]);
  });

  it('lets the admin decide before the canary ends, and refuses a decision without a candidate', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const v1 = await runToEnd(s, {});
    const v2 = await runToEnd(s, { initialVersion: v1, canary: { share: 1, margin: 0.01, alpha: 0.05, timeoutMs: 30_000 } });
    await flush();
    expect(s.federation.evaluations.decide('promoted')).toMatchObject({ live: v2, candidate: null, last: { canary: { outcome: 'decided by the admin' } } });
    expect(() => s.federation.evaluations.decide('rolled back')).toThrow('there is no candidate to decide on');
    // a plain evaluation round of two stored versions, on every device
    const id = await s.federation.evaluations.start({ versions: [v1, v2], share: 1, timeoutMs: 10_000 });
    for (const d of ['device-a', 'device-b']) expect(reportFor(s, d, { examples: d === 'device-a' ? 10 : 20 })).toMatchObject({ ok: true });
    await s.federation.flushed();
    const [, plain] = await s.store.listEvaluations();
    expect(plain).toMatchObject({ id, purpose: 'evaluate', reported: 2, results: [{ version: v1, examples: 30, accuracy: expect.closeTo(0.8, 12) }, { version: v2, examples: 30, accuracy: expect.closeTo(0.85, 12) }] });
    expect(plain!.canary).toBeUndefined();
  });
});
